package main

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// Shell completion: `cortexd completion bash|zsh|fish` prints the script;
// the script calls `cortexd __complete ...`, which runs the functions
// below. Skills, task IDs and peer IDs come from the running daemon (the
// one --repo or --api names), flag values from the tables of the API.

// completionTimeout bounds a completion's call to the daemon: the shell
// waits for it. Without an answer there is nothing to complete.
const completionTimeout = 2 * time.Second

type completeFunc = func(*cobra.Command, []string, string) ([]string, cobra.ShellCompDirective)

// fromDaemon completes the first argument with what list returns from the
// running daemon, and nothing after it.
func (a *app) fromDaemon(list func(context.Context, *client.Client) ([]string, error)) completeFunc {
	return func(cmd *cobra.Command, args []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		if len(args) > 0 {
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		c, err := a.client()
		if err != nil {
			cobra.CompDebugln("completion: "+err.Error(), false) // to $BASH_COMP_DEBUG_FILE
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		ctx, cancel := context.WithTimeout(cmd.Context(), completionTimeout)
		defer cancel()
		out, err := list(ctx, c)
		if err != nil {
			cobra.CompDebugln("completion: "+err.Error(), false) // to $BASH_COMP_DEBUG_FILE
			return nil, cobra.ShellCompDirectiveNoFileComp
		}
		return withPrefix(out, toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// withPrefix keeps the candidates ("value\tdescription") whose value
// starts with prefix.
func withPrefix(cands []string, prefix string) []string {
	out := cands[:0]
	for _, c := range cands {
		if strings.HasPrefix(c, prefix) {
			out = append(out, c)
		}
	}
	return out
}

func listSkills(ctx context.Context, c *client.Client) ([]string, error) {
	skills, err := c.Skills(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(skills))
	for _, s := range skills {
		where := fmt.Sprintf("%d providers", len(s.Providers))
		if s.Local {
			where += ", here"
		}
		out = append(out, s.ID+"\t"+where)
	}
	return out, nil
}

// listWasmSkills lists this node's wasm skills, for `skill rm`.
func listWasmSkills(ctx context.Context, c *client.Client) ([]string, error) {
	skills, err := c.Skills(ctx)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, s := range skills {
		if s.Kind == apiv1.SkillWasm && s.Local {
			out = append(out, s.ID+"	"+s.Version+", module "+shortModule(s.Module))
		}
	}
	return out, nil
}

// listTasks lists the newest task IDs; with live, only unfinished ones.
func listTasks(live bool) func(context.Context, *client.Client) ([]string, error) {
	return func(ctx context.Context, c *client.Client) ([]string, error) {
		l, err := c.Tasks(ctx, client.ListOptions{Limit: 200})
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(l.Tasks))
		for _, t := range l.Tasks {
			if live && apiv1.Terminal(t.State) {
				continue
			}
			out = append(out, t.ID+"\t"+t.Skill+" "+t.State)
		}
		return out, nil
	}
}

// listWorkflows lists the newest workflow IDs; with live, only running ones.
func listWorkflows(live bool) func(context.Context, *client.Client) ([]string, error) {
	return func(ctx context.Context, c *client.Client) ([]string, error) {
		state := ""
		if live {
			state = apiv1.WorkflowRunning
		}
		l, err := c.Workflows(ctx, state, 200)
		if err != nil {
			return nil, err
		}
		out := make([]string, 0, len(l.Workflows))
		for _, w := range l.Workflows {
			out = append(out, w.ID+"\t"+orDash(w.Name)+" "+w.State)
		}
		return out, nil
	}
}

func listPeers(ctx context.Context, c *client.Client) ([]string, error) {
	peers, err := c.Peers(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(peers))
	for _, p := range peers {
		out = append(out, p.ID+"\t"+joinOr(p.Skills, "no skills")+", "+p.Access)
	}
	return out, nil
}

// fixedValues completes a flag with values (each "value\tdescription").
func fixedValues(values ...string) completeFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		return withPrefix(slices.Clone(values), toComplete), cobra.ShellCompDirectiveNoFileComp
	}
}

// commaValues completes a comma-separated list of values, each once.
func commaValues(values ...string) completeFunc {
	return func(_ *cobra.Command, _ []string, toComplete string) ([]string, cobra.ShellCompDirective) {
		done, last := "", toComplete
		if i := strings.LastIndexByte(toComplete, ','); i >= 0 {
			done, last = toComplete[:i+1], toComplete[i+1:]
		}
		taken := strings.Split(strings.TrimSuffix(done, ","), ",")
		var out []string
		for _, v := range values {
			if strings.HasPrefix(v, last) && !slices.Contains(taken, v) {
				out = append(out, done+v)
			}
		}
		return out, cobra.ShellCompDirectiveNoFileComp | cobra.ShellCompDirectiveNoSpace
	}
}

// priorityValues are the completions of --priority.
var priorityValues = []string{"critical\t224", "high\t160", "normal\t96 (the default)", "low\t32"}

// registerCompletions attaches the completion of arguments and flag
// values to the commands of root.
func (a *app) registerCompletions(root *cobra.Command) {
	byPath := map[string]*cobra.Command{}
	var walk func(*cobra.Command)
	walk = func(c *cobra.Command) {
		byPath[strings.TrimPrefix(c.CommandPath(), "cortexd ")] = c
		for _, sub := range c.Commands() {
			walk(sub)
		}
	}
	walk(root)
	args := map[string]completeFunc{
		"task submit": a.fromDaemon(listSkills),
		"task get":    a.fromDaemon(listTasks(false)),
		"task wait":   a.fromDaemon(listTasks(true)),
		"task cancel": a.fromDaemon(listTasks(true)),
		"peers deny":  a.fromDaemon(listPeers),
		"peers allow": a.fromDaemon(listPeers),
		"trust":       a.fromDaemon(listPeers),
		"skill rm":    a.fromDaemon(listWasmSkills),

		"workflow get":    a.fromDaemon(listWorkflows(false)),
		"workflow cancel": a.fromDaemon(listWorkflows(true)),
	}
	for path, fn := range args {
		byPath[path].ValidArgsFunction = fn
	}
	flags := []struct {
		cmd, flag string
		fn        completeFunc
	}{
		{"task submit", "priority", fixedValues(priorityValues...)},
		{"task submit", "retry-on", commaValues(apiv1.RetryCodes...)},
		{"task list", "state", fixedValues(apiv1.States...)},
		{"task list", "after", a.fromDaemon(listTasks(false))},
		{"task submit", "input-from", a.fromDaemon(listTasks(false))},
		{"workflow list", "state", fixedValues(apiv1.WorkflowStates...)},
		{"daemon", "skills", commaValues(builtinNames...)},
		{"daemon", "log-level", fixedValues("debug", "info", "warn", "error")},
		{"daemon", "log-format", fixedValues("text", "json")},
		{"devnet", "log-level", fixedValues("debug", "info", "warn", "error")},
	}
	for _, f := range flags {
		if err := byPath[f.cmd].RegisterFlagCompletionFunc(f.flag, f.fn); err != nil {
			panic(fmt.Sprintf("register completion of %s --%s: %v", f.cmd, f.flag, err)) // a programming error
		}
	}
}
