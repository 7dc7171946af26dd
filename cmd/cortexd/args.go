package main

import (
	"fmt"
	"strings"

	"github.com/spf13/cobra"
)

// arg is a positional argument of a command: its name as the usage line
// shows it, and what it is, for the error that says it is missing.
type arg struct{ name, what string }

var (
	argSkill  = arg{"SKILL", "the skill to run ('cortexd skills' lists them)"}
	argTaskID = arg{"ID", "the task's ID (as 'task submit' printed it; 'cortexd task list' lists them)"}
	argPeer   = arg{"PEER", "a peer ID such as 12D3KooW... ('cortexd peers' lists them)"}
)

// exactArgs wants exactly args. A missing one is named, with what it is
// and the command's usage line.
func exactArgs(args ...arg) cobra.PositionalArgs {
	return func(cmd *cobra.Command, got []string) error {
		path := strings.TrimPrefix(cmd.CommandPath(), "cortexd ")
		switch {
		case len(got) < len(args):
			m := args[len(got)]
			return &exitError{code: exitUsage, err: fmt.Errorf("%s: missing %s, %s", path, m.name, m.what), usage: cmd.UseLine()}
		case len(got) > len(args):
			return &exitError{code: exitUsage, err: fmt.Errorf("%s takes %s, but was given %d arguments (%s)", path, argCount(args), len(got), quoteArgs(got)),
				usage: cmd.UseLine()}
		}
		return nil
	}
}

// maxArgs wants at most args, in order.
func maxArgs(args ...arg) cobra.PositionalArgs {
	return func(cmd *cobra.Command, got []string) error {
		if len(got) > len(args) {
			path := strings.TrimPrefix(cmd.CommandPath(), "cortexd ")
			return &exitError{code: exitUsage, err: fmt.Errorf("%s takes at most %s, but was given %d arguments (%s)", path, argCount(args), len(got), quoteArgs(got)),
				usage: cmd.UseLine()}
		}
		return nil
	}
}

// noArgs wants no argument.
func noArgs(cmd *cobra.Command, got []string) error {
	if len(got) > 0 {
		path := strings.TrimPrefix(cmd.CommandPath(), "cortexd ")
		msg, usage := fmt.Sprintf("%s takes no arguments, but was given %s", path, quoteArgs(got)), cmd.UseLine()
		if cmd.HasSubCommands() {
			msg, usage = fmt.Sprintf("%s has no subcommand %.40q", path, got[0]), cmd.CommandPath()+" [command]"
		}
		return &exitError{code: exitUsage, err: fmt.Errorf("%s", msg), usage: usage}
	}
	return nil
}

func argCount(args []arg) string {
	names := make([]string, len(args))
	for i, a := range args {
		names[i] = a.name
	}
	if len(args) == 1 {
		return "one argument, " + names[0]
	}
	return fmt.Sprintf("%d arguments, %s", len(args), strings.Join(names, " "))
}

// quoteArgs lists args for an error, the first few of them.
func quoteArgs(args []string) string {
	const most = 3
	out := make([]string, 0, most+1)
	for i, a := range args {
		if i == most {
			out = append(out, "...")
			break
		}
		out = append(out, fmt.Sprintf("%.40q", a))
	}
	return strings.Join(out, " ")
}
