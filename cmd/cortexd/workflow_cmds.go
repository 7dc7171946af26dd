package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

var (
	argWorkflowFile = arg{"FILE", "the workflow, YAML or JSON (- for stdin; see the README's Workflows section)"}
	argWorkflowID   = arg{"ID", "the workflow's ID (as 'workflow run' printed it; 'cortexd workflow list' lists them)"}
)

func (a *app) workflowCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "workflow",
		Short: "Run, follow, cancel and list workflows: tasks that feed each other",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.workflowRunCommand(), a.workflowGetCommand(), a.workflowCancelCommand(), a.workflowListCommand())
	return cmd
}

func (a *app) workflowRunCommand() *cobra.Command {
	var (
		wait    bool
		timeout time.Duration
	)
	cmd := &cobra.Command{
		Use:   "run FILE",
		Short: "Submit a workflow; with --wait, wait for it and print its steps",
		Long: `run reads a workflow (YAML or JSON: named steps, each a task, and the steps
each depends on), checks it here (unknown fields, unknown steps and cycles are
refused before anything is sent) and submits it. It prints the workflow's ID,
or with --wait its steps once it has finished, and the output of each step
no other step depends on.`,
		Example: `  cortexd workflow run configs/workflow-example.yaml --wait
  cortexd workflow get ID`,
		Args: exactArgs(argWorkflowFile),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			var b []byte
			var err error
			if args[0] == "-" {
				b, err = io.ReadAll(io.LimitReader(a.stdin, workflow.MaxSpecSize+1))
			} else {
				b, err = os.ReadFile(args[0])
			}
			if err != nil {
				return usageErrorf("read the workflow: %v", err)
			}
			spec, err := workflow.Parse(b)
			if err != nil {
				return &exitError{code: exitUsage, err: fmt.Errorf("%s: %w", args[0], err)}
			}
			body, err := json.Marshal(spec)
			if err != nil {
				return fmt.Errorf("encode the workflow: %w", err)
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			sctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			wf, err := c.SubmitWorkflow(sctx, body)
			cancel()
			if err != nil {
				return err
			}
			if !wait {
				if a.asJSON {
					return a.printJSON(wf)
				}
				fmt.Fprintln(a.stdout, wf.ID)
				return nil
			}
			ctx := cmd.Context()
			if timeout > 0 {
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			done, err := c.WaitWorkflow(ctx, wf.ID)
			if err != nil {
				if errors.Is(err, context.DeadlineExceeded) {
					return &exitError{code: exitTimeout, err: fmt.Errorf("workflow %s has not finished yet: waiting timed out; `cortexd workflow get %s` shows it", wf.ID, wf.ID)}
				}
				return err
			}
			return a.printWorkflowResult(cmd.Context(), c, done)
		}),
	}
	cmd.Flags().BoolVarP(&wait, "wait", "w", false, "wait for the workflow to finish and print its steps and final outputs")
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "with --wait: give up waiting after this long (exit 4); 0 waits as long as it runs")
	return cmd
}

// printWorkflowResult prints a finished workflow: its steps, then the
// output of each step no other depends on. It returns the error that sets
// the exit code.
func (a *app) printWorkflowResult(ctx context.Context, c *client.Client, wf *apiv1.Workflow) error {
	if a.asJSON {
		if err := a.printJSON(wf); err != nil {
			return err
		}
	} else {
		if err := a.printWorkflow(wf); err != nil {
			return err
		}
		for _, s := range wf.Steps {
			if s.State != apiv1.StateSucceeded || slices.ContainsFunc(wf.Steps, func(o apiv1.WorkflowStep) bool { return slices.Contains(o.DependsOn, s.Name) }) {
				continue
			}
			rctx, cancel := context.WithTimeout(ctx, requestTimeout)
			t, err := c.Task(rctx, s.TaskID)
			cancel()
			if err != nil {
				return err
			}
			if t.Result != nil {
				fmt.Fprintf(a.stdout, "\n%s:\n", s.Name)
				if err := a.writeOutput(t.Result, ""); err != nil {
					return err
				}
			}
		}
		fmt.Fprintf(a.stderr, "workflow %s %s\n", wf.ID, wf.State)
	}
	if wf.State != apiv1.WorkflowSucceeded {
		return &silentError{exitFailed}
	}
	return nil
}

// printWorkflow prints a workflow's state and a table of its steps.
func (a *app) printWorkflow(wf *apiv1.Workflow) error {
	name := ""
	if wf.Name != "" {
		name = " (" + wf.Name + ")"
	}
	fmt.Fprintf(a.stdout, "workflow %s%s %s, created %s\n", wf.ID, name, wf.State, wf.CreatedAt.Local().Format(time.DateTime))
	rows := make([][]string, 0, len(wf.Steps))
	for _, s := range wf.Steps {
		rows = append(rows, []string{s.Name, s.State, orDash(shortPeer(s.Node)), s.TaskID, orDash(strings.Join(s.DependsOn, ","))})
	}
	if err := a.table([]string{"STEP", "STATE", "NODE", "TASK", "DEPENDS ON"}, rows); err != nil {
		return err
	}
	for _, s := range wf.Steps {
		if s.Error != "" {
			fmt.Fprintf(a.stdout, "%s: %s\n", s.Name, s.Error)
		}
	}
	return nil
}

func (a *app) workflowGetCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "get ID",
		Short: "Show a workflow's steps: state, node and task of each",
		Args:  exactArgs(argWorkflowID),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				wf, err := c.Workflow(ctx, args[0])
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(wf)
				}
				return a.printWorkflow(wf)
			})
		}),
	}
}

func (a *app) workflowCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a workflow: its running steps are canceled, the others never run",
		Args:  exactArgs(argWorkflowID),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				wf, err := c.CancelWorkflow(ctx, args[0])
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(wf)
				}
				fmt.Fprintf(a.stdout, "%s %s\n", wf.ID, wf.State)
				return nil
			})
		}),
	}
}

func (a *app) workflowListCommand() *cobra.Command {
	var (
		state string
		limit int
	)
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List workflows, newest first",
		Args:  noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if state != "" && !slices.Contains(apiv1.WorkflowStates, state) {
				return usageErrorf("--state %q: want one of %s", state, strings.Join(apiv1.WorkflowStates, ", "))
			}
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				l, err := c.Workflows(ctx, state, limit)
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(l)
				}
				rows := make([][]string, 0, len(l.Workflows))
				for _, wf := range l.Workflows {
					done := 0
					for _, s := range wf.Steps {
						if apiv1.Terminal(s.State) {
							done++
						}
					}
					rows = append(rows, []string{wf.ID, orDash(wf.Name), wf.State, fmt.Sprintf("%d/%d", done, len(wf.Steps)),
						wf.CreatedAt.Local().Format(time.DateTime)})
				}
				return a.table([]string{"ID", "NAME", "STATE", "STEPS DONE", "CREATED"}, rows)
			})
		}),
	}
	cmd.Flags().StringVar(&state, "state", "", "only workflows in this state: "+strings.Join(apiv1.WorkflowStates, ", "))
	cmd.Flags().IntVar(&limit, "limit", 50, "at most this many workflows")
	return cmd
}
