package config

import (
	"fmt"
	"path/filepath"
	"regexp"
	"time"

	"github.com/cortexgrid/cortexd/pkg/command"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// CommandSkill is one entry of skills.commands: a program run as a skill,
// its input on stdin and its output from stdout. See pkg/command.
type CommandSkill struct {
	Name        string   `mapstructure:"name"`    // the skill ID, e.g. "text.upper"
	Version     string   `mapstructure:"version"` // e.g. "1.0.0"
	Description string   `mapstructure:"description"`
	Argv        []string `mapstructure:"argv"` // program and arguments
	// SchemaFile is a JSON Schema file for the input, relative to the repo
	// dir unless absolute. Empty: any input.
	SchemaFile string        `mapstructure:"schema_file"`
	Timeout    time.Duration `mapstructure:"timeout"`    // 0: 60s
	MaxOutput  string        `mapstructure:"max_output"` // size, e.g. "1MiB"; empty: one task's most
	// Env names the daemon's environment variables the program gets;
	// every other one is left out.
	Env []string `mapstructure:"env"`
	// Dir is the working dir. Empty: a fresh dir per task, removed after.
	Dir    string        `mapstructure:"dir"`
	Limits CommandLimits `mapstructure:"limits"`
	FS     CommandFS     `mapstructure:"fs"`
	// DenyNetwork denies TCP connect and bind (and UDP on Linux with
	// Landlock ABI 10) where the kernel has Landlock.
	DenyNetwork bool `mapstructure:"deny_network"`
}

// CommandLimits are a command skill's resource limits; zero or empty: none.
type CommandLimits struct {
	Memory    string        `mapstructure:"memory"`     // address space, e.g. "512MiB"
	CPUTime   time.Duration `mapstructure:"cpu_time"`   // per process, whole seconds
	OpenFiles int           `mapstructure:"open_files"` // file descriptors
	Processes int           `mapstructure:"processes"`  // RLIMIT_NPROC: all of the daemon user's processes
}

// CommandFS lists the paths a command skill may use, enforced with
// Landlock where the kernel has it. Both empty: no filesystem rules.
type CommandFS struct {
	ReadOnly  []string `mapstructure:"read_only"`
	ReadWrite []string `mapstructure:"read_write"`
}

var envVarName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// validateCommands checks skills.commands; paths and the program are
// checked when the daemon builds the skills (command.New).
func (c *Config) validateCommands(p *problems) {
	if sh := c.Skills.CommandShim; sh != "" && !filepath.IsAbs(sh) {
		p.add("skills.command_shim", "%q must be an absolute path, e.g. /usr/local/bin/cortexd-shim", sh)
	}
	seen := map[string]int{}
	for i, cs := range c.Skills.Commands {
		key := fmt.Sprintf("skills.commands[%d]", i)
		if err := reputation.SkillID(cs.Name).Validate(); err != nil {
			p.add(key+".name", "%v", err)
		} else if j, ok := seen[cs.Name]; ok {
			p.add(key+".name", "%q is also skills.commands[%d]; each name once", cs.Name, j)
		} else {
			seen[cs.Name] = i
		}
		for _, b := range c.Skills.Enabled {
			if b == cs.Name {
				p.add(key+".name", "%q is a built-in skill in skills.enabled; pick another name", cs.Name)
			}
		}
		if cs.Version == "" {
			p.add(key+".version", "must not be empty, e.g. \"1.0.0\"")
		}
		if len(cs.Argv) == 0 || cs.Argv[0] == "" {
			p.add(key+".argv", "must name the program, e.g. [\"/usr/bin/jq\", \".\"]")
		}
		if cs.Timeout < 0 {
			p.add(key+".timeout", "must be a positive duration such as 30s, got %s", cs.Timeout)
		}
		if cs.MaxOutput != "" {
			if n, err := wasm.ParseSize(cs.MaxOutput); err != nil {
				p.add(key+".max_output", "%v", err)
			} else if n < 1 || int64(n) > command.DefaultMaxOutput {
				p.add(key+".max_output", "must be from 1 byte to %d bytes (one task's output), got %s", command.DefaultMaxOutput, cs.MaxOutput)
			}
		}
		for j, n := range cs.Env {
			if !envVarName.MatchString(n) {
				p.add(fmt.Sprintf("%s.env[%d]", key, j), "%q is not a variable name: list names only, the value is the daemon's", n)
			}
		}
		l := cs.Limits
		if l.Memory != "" {
			if n, err := wasm.ParseSize(l.Memory); err != nil {
				p.add(key+".limits.memory", "%v", err)
			} else if n < 4*wasm.MiB {
				p.add(key+".limits.memory", "must be at least 4MiB, got %s", l.Memory)
			}
		}
		if l.CPUTime < 0 {
			p.add(key+".limits.cpu_time", "must be a positive duration such as 10s, got %s", l.CPUTime)
		}
		if l.OpenFiles != 0 && l.OpenFiles < 4 {
			p.add(key+".limits.open_files", "must be at least 4 (stdin, stdout, stderr and one), got %d", l.OpenFiles)
		}
		p.nonNegative(key+".limits.processes", l.Processes)
		for _, list := range []struct {
			key   string
			paths []string
		}{{key + ".fs.read_only", cs.FS.ReadOnly}, {key + ".fs.read_write", cs.FS.ReadWrite}} {
			for j, path := range list.paths {
				if !filepath.IsAbs(path) {
					p.add(fmt.Sprintf("%s[%d]", list.key, j), "%q must be an absolute path", path)
				}
			}
		}
	}
}

// CommandSpec returns the command.Spec of cs; dir is the repo dir, which
// a relative schema_file is taken from. Call it on a validated config.
func (cs CommandSkill) CommandSpec(dir string) command.Spec {
	sp := command.Spec{
		Name:        reputation.SkillID(cs.Name),
		Version:     cs.Version,
		Description: cs.Description,
		Argv:        cs.Argv,
		SchemaFile:  cs.SchemaFile,
		Timeout:     cs.Timeout,
		Env:         cs.Env,
		Dir:         cs.Dir,
		Limits: command.Limits{
			CPUTime:   cs.Limits.CPUTime,
			OpenFiles: cs.Limits.OpenFiles,
			Processes: cs.Limits.Processes,
		},
		FS:          command.FSRules{ReadOnly: cs.FS.ReadOnly, ReadWrite: cs.FS.ReadWrite},
		DenyNetwork: cs.DenyNetwork,
	}
	if sp.SchemaFile != "" && !filepath.IsAbs(sp.SchemaFile) {
		sp.SchemaFile = filepath.Join(dir, sp.SchemaFile)
	}
	if n, err := wasm.ParseSize(cs.MaxOutput); err == nil {
		sp.MaxOutput = int64(n)
	}
	if n, err := wasm.ParseSize(cs.Limits.Memory); err == nil {
		sp.Limits.Memory = int64(n)
	}
	return sp
}
