package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

var (
	argWasmFile  = arg{"FILE.wasm", "the module to add, a WASI command (GOOS=wasip1 GOARCH=wasm go build -o FILE.wasm)"}
	argSkillName = arg{"NAME[@VERSION]", "the wasm skill to remove ('cortexd skill list' lists them); without @VERSION every stored version"}
)

// maxModuleFile is the largest file `skill add` reads: wasm.max_module's
// own upper bound. The daemon applies its configured limit.
const maxModuleFile = int64(wasm.GiB)

// addRequestTimeout bounds `skill add`: the daemon compiles the module
// before it answers, which takes seconds for a large one.
const addRequestTimeout = 5 * time.Minute

func (a *app) skillCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "skill",
		Short: "List the skills here and on the network; add and remove your own wasm skills",
		Long: `skill lists the skills this node offers (built-in, wasm or command) and the
skills its peers announce, and adds and removes wasm skills: your own code,
compiled to a WASI command module, which the running daemon checks, compiles,
stores under DIR/wasm and offers to the grid at once. See "Your own skills:
wasm" in the README for the ABI and the limits.`,
		Args: noArgs,
	}
	cmd.AddCommand(a.skillListCommand("list"), a.skillAddCommand(), a.skillRmCommand())
	return cmd
}

// skillListCommand is `skill list`, and `skills` (use "skills").
func (a *app) skillListCommand(use string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: "List the skills offered by this node and known on the network",
		Long: `list shows every skill this node offers and every skill its peers announce.
KIND is how this node implements it (builtin, wasm or command; "-" for a skill
only peers offer), MODULE the first 12 hex digits of a wasm skill's module
sha256 (--json has all 64, and the limits each run gets).`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				skills, err := c.Skills(ctx)
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(skills)
				}
				rows := make([][]string, 0, len(skills))
				for _, s := range skills {
					rows = append(rows, []string{s.ID, orDash(s.Version), orDash(s.Kind), yesNo(s.Local), shortModule(s.Module),
						strconv.Itoa(len(s.Providers)), shortPeers(s.Providers)})
				}
				return a.table([]string{"SKILL", "VERSION", "KIND", "LOCAL", "MODULE", "PROVIDERS", "PEERS"}, rows)
			})
		}),
	}
}

func shortModule(hash string) string {
	if len(hash) > 12 {
		return hash[:12]
	}
	return orDash(hash)
}

func (a *app) skillAddCommand() *cobra.Command {
	var (
		s                              client.WasmSkill
		schemaFile                     string
		memory, input, output, timeout string
	)
	cmd := &cobra.Command{
		Use:   "add FILE.wasm --name NAME --version V",
		Short: "Add a wasm module as a skill of the running node",
		Long: `add sends FILE.wasm to the running daemon, which checks it (the size limit
wasm.max_module, the wasm magic), compiles it, stores it under DIR/wasm and
registers it as skill NAME at once: tasks can use it on this node and on the
grid, and it is loaded again when the daemon restarts (from the compilation
cache, without compiling again). Nothing is stored if any check fails.

The module is a WASI preview1 command: the task's input on stdin, its output
on stdout, exit code 0 for success. Limits left out get the node's defaults
(wasm.default), and every limit is capped by wasm.max. --deterministic gives
the module a fake clock and a seeded random source, so the same input gives
the same output on every node; without it the module sees the real clock.`,
		Args: exactArgs(argWasmFile),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			if s.Name == "" || s.Version == "" {
				return &exitError{code: exitUsage, err: errors.New("skill add: --name and --version are required"), usage: cmd.UseLine()}
			}
			for _, f := range []struct {
				flag, v string
				dst     *string
			}{{"memory", memory, &s.Memory}, {"input", input, &s.Input}, {"output", output, &s.Output}} {
				if f.v == "" {
					continue
				}
				if _, err := wasm.ParseSize(f.v); err != nil {
					return usageErrorf("--%s: %v", f.flag, err)
				}
				*f.dst = f.v
			}
			if timeout != "" {
				if d, err := time.ParseDuration(timeout); err != nil || d <= 0 {
					return usageErrorf("--timeout %q: want a positive duration such as 30s or 2m", timeout)
				}
				s.Timeout = timeout
			}
			if schemaFile != "" {
				b, err := os.ReadFile(schemaFile)
				if err != nil {
					return usageErrorf("--schema: %v", err)
				}
				if !json.Valid(b) {
					return usageErrorf("--schema %s is not JSON: it must hold a JSON Schema, such as {\"type\":\"string\"}", schemaFile)
				}
				s.InputSchema = b
			}
			module, err := readModule(args[0])
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), addRequestTimeout)
			defer cancel()
			sk, err := c.AddSkill(ctx, s, module)
			if err != nil {
				return fmt.Errorf("skill add %s: %w", args[0], err)
			}
			if a.asJSON {
				return a.printJSON(sk)
			}
			fmt.Fprintf(a.stdout, "added wasm skill %s version %s (module %s%s)\n", sk.ID, sk.Version, sk.Module, limitsText(sk.Limits))
			return nil
		}),
	}
	f := cmd.Flags()
	f.StringVar(&s.Name, "name", "", "the skill's name, a lowercase dotted ID such as text.upper (required)")
	f.StringVar(&s.Version, "version", "", `the skill's version, such as 1.0.0 (required)`)
	f.StringVar(&s.Description, "description", "", "a line shown in skill lists")
	f.StringVar(&schemaFile, "schema", "", "a JSON Schema file that JSON inputs must satisfy (checked before the module runs)")
	f.StringVar(&memory, "memory", "", "the most memory the module may have, such as 64MiB (default wasm.default.memory)")
	f.StringVar(&timeout, "timeout", "", "the longest one run may take, such as 30s (default wasm.default.timeout)")
	f.StringVar(&input, "input", "", "the most input bytes a task may give it, such as 1MiB (default wasm.max.input)")
	f.StringVar(&output, "output", "", "the most it may write to stdout, such as 1MiB (default wasm.default.output)")
	f.BoolVar(&s.Deterministic, "deterministic", false, "a fake clock and a seeded random source: the same input gives the same output everywhere")
	return cmd
}

// readModule reads the module file, refusing a directory or a file over
// maxModuleFile before reading it.
func readModule(path string) ([]byte, error) {
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, usageErrorf("skill add: %s does not exist", path)
	case err != nil:
		return nil, fmt.Errorf("skill add: %w", err)
	case st.IsDir():
		return nil, usageErrorf("skill add: %s is a directory; give the .wasm file", path)
	case st.Size() > maxModuleFile:
		return nil, fmt.Errorf("skill add: %s is %d bytes, over the largest module any node accepts (1GiB; each node's limit is its wasm.max_module)", path, st.Size())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("skill add: %w", err)
	}
	return b, nil
}

func limitsText(l *apiv1.SkillLimits) string {
	if l == nil {
		return ""
	}
	return fmt.Sprintf("; each run: memory %s, timeout %s, input %s, output %s", l.Memory, l.Timeout, l.Input, l.Output)
}

func (a *app) skillRmCommand() *cobra.Command {
	return &cobra.Command{
		Use:     "rm NAME[@VERSION]",
		Aliases: []string{"remove"},
		Short:   "Remove a wasm skill from the running node",
		Long: `rm unregisters the wasm skill NAME at once (no new task starts on it; tasks
already running finish) and deletes its manifest and, unless another skill
uses it, its module from DIR/wasm. NAME@VERSION removes that version only.
Built-in and command skills are set in the config and cannot be removed here.`,
		Args: exactArgs(argSkillName),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			name, version, _ := strings.Cut(args[0], "@")
			if name == "" || strings.HasSuffix(args[0], "@") {
				return usageErrorf("skill rm %q: want NAME or NAME@VERSION, such as text.upper@1.0.0", args[0])
			}
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				gone, err := c.RemoveSkill(ctx, name, version)
				if err != nil {
					return fmt.Errorf("skill rm %s: %w", args[0], err)
				}
				if a.asJSON {
					return a.printJSON(apiv1.RemovedSkills{Removed: gone})
				}
				for _, s := range gone {
					fmt.Fprintf(a.stdout, "removed wasm skill %s version %s (module %s)\n", s.ID, s.Version, s.Module)
				}
				return nil
			})
		}),
	}
}
