package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

func (a *app) taskCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "task",
		Short: "Submit, follow, cancel and list tasks",
		Args:  noArgs, // a subcommand that does not exist is a usage error
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(a.taskSubmitCommand(), a.taskGetCommand(), a.taskWaitCommand(), a.taskCancelCommand(), a.taskListCommand())
	return cmd
}

type submitFlags struct {
	input      string
	raw        bool
	version    string
	priority   string
	timeout    time.Duration
	minTrust   float64
	maxRetries int
	attempts   int
	backoff    time.Duration
	maxBackoff time.Duration
	retryOn    string
	noCache    bool
	inputFrom  string
	wait       bool
	output     string
}

func (a *app) taskSubmitCommand() *cobra.Command {
	var f submitFlags
	cmd := &cobra.Command{
		Use:   "submit SKILL",
		Short: "Submit a task for a skill; with --wait, wait for its result",
		Long: `submit sends a task to the daemon, which runs it here or delegates it to the
best peer that offers SKILL. It prints the task ID, or with --wait the result
(the output on stdout, the outcome on stderr). While it waits, a stderr that is
a terminal shows the task's state and, once the skill reports it, a progress
bar.

--input takes a JSON value, @FILE or - (stdin). A file or stdin that holds JSON
is sent as JSON; anything else, or anything with --raw, as raw bytes.`,
		Example: `  cortexd task submit echo --input '{"hello":"grid"}' --wait
  cortexd task submit hash.sha256 --input '{"data":"aGVsbG8="}' --priority high --wait
  cortexd task submit hash.sha256 --input @photo.jpg --raw --wait
  cortexd task submit image.resize --input @req.json --attempts 5 --backoff 200ms --max-backoff 10s --retry-on execution_failed,timeout`,
		Args: exactArgs(argSkill),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			req, err := a.submitRequest(cmd, args[0], &f)
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			sctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
			var t *apiv1.Task
			if raw := req.InputBase64; raw != nil {
				// Raw bytes go as the body, not base64 in JSON.
				t, err = c.SubmitRaw(sctx, req, bytes.NewReader(raw), int64(len(raw)))
			} else {
				t, err = c.Submit(sctx, req)
			}
			cancel()
			if err != nil {
				return submitError(err)
			}
			if !f.wait {
				if a.asJSON {
					return a.printJSON(t)
				}
				fmt.Fprintln(a.stdout, t.ID)
				return nil
			}
			t, err = a.follow(cmd.Context(), c, t)
			if err != nil {
				return err
			}
			return a.printResult(t, f.output)
		}),
	}
	fl := cmd.Flags()
	fl.StringVarP(&f.input, "input", "i", "", "input: a JSON value, @FILE, or - for stdin (default: null)")
	fl.BoolVar(&f.raw, "raw", false, "send the input as raw bytes even if it is JSON")
	fl.StringVar(&f.version, "skill-version", "", "require this exact skill version")
	fl.StringVarP(&f.priority, "priority", "p", "normal", "critical, high, normal, low, or 0-255")
	fl.DurationVar(&f.timeout, "timeout", 0, "fail the task if it has not finished after this long (default: the node's queue.default_timeout)")
	fl.Float64Var(&f.minTrust, "min-trust", 0, "minimum trust, 0-1, of the node that runs it (default: the node's trust.min_trust_default)")
	fl.IntVar(&f.maxRetries, "max-retries", 0, "attempts after a failed one (default: the node's queue.max_retries)")
	fl.IntVar(&f.attempts, "attempts", 0, "at most this many attempts, the first included, 1-101; overrides --max-retries (0, the default: --max-retries + 1)")
	fl.DurationVar(&f.backoff, "backoff", 0, "wait before the first retry, doubling per retry (default: the node's)")
	fl.DurationVar(&f.maxBackoff, "max-backoff", 0, "longest wait between attempts, not below --backoff (default: the node's)")
	fl.StringVar(&f.retryOn, "retry-on", "", "retry only failures with these error codes, comma-separated: "+strings.Join(apiv1.RetryCodes, ", ")+" (default: all)")
	fl.BoolVar(&f.noCache, "no-cache", false, "run the task even if the node's result cache holds its answer")
	fl.StringVar(&f.inputFrom, "input-from", "", "take the input from the output of task `ID`: wait (state waiting) until it succeeds")
	fl.BoolVarP(&f.wait, "wait", "w", false, "wait for the result, showing the task's state meanwhile")
	fl.StringVarP(&f.output, "output", "o", "", "with --wait: write the output to FILE instead of stdout")
	return cmd
}

func (a *app) submitRequest(cmd *cobra.Command, skillID string, f *submitFlags) (apiv1.SubmitRequest, error) {
	req := apiv1.SubmitRequest{Skill: skillID, Version: f.version, Timeout: apiv1.Duration(f.timeout), NoCache: f.noCache}
	p, err := apiv1.ParsePriority(f.priority)
	if err != nil {
		return req, usageErrorf("--priority %.40q: want 0-255 or a level name (%s)", f.priority, strings.Join(apiv1.PriorityNames, ", "))
	}
	req.Priority = &p
	fl := cmd.Flags()
	if fl.Changed("min-trust") {
		if f.minTrust < 0 || f.minTrust > 1 {
			return req, usageErrorf("--min-trust must be between 0 and 1, not %s", strconv.FormatFloat(f.minTrust, 'f', -1, 64))
		}
		req.MinTrust = &f.minTrust
	}
	if fl.Changed("max-retries") {
		if f.maxRetries < 0 {
			return req, usageErrorf("--max-retries must not be negative, got %d", f.maxRetries)
		}
		req.MaxRetries = &f.maxRetries
	}
	if f.timeout < 0 {
		return req, usageErrorf("--timeout must be positive, got %s", f.timeout)
	}
	retry, err := retryFlags(fl, f)
	if err != nil {
		return req, err
	}
	req.Retry = retry
	if f.output != "" && !f.wait {
		return req, usageErrorf("--output needs --wait")
	}
	if f.inputFrom != "" {
		if f.input != "" || f.raw {
			return req, usageErrorf("--input-from takes the input from task %.70s: leave out --input and --raw", f.inputFrom)
		}
		req.InputFrom = f.inputFrom
		return req, nil
	}
	in, fromData, err := a.readInput(f.input)
	if err != nil {
		return req, err
	}
	label := f.input
	switch {
	case f.input == "-":
		label = "from stdin"
	case !strings.HasPrefix(f.input, "@"):
		label = "(inline)"
	}
	if err := a.checkInputSize(label, in, f.raw || !json.Valid(in)); err != nil {
		return req, err
	}
	switch {
	case in == nil:
	case f.raw:
		req.InputBase64 = in
	case json.Valid(in):
		req.Input = json.RawMessage(bytes.TrimSpace(in))
	case fromData:
		req.InputBase64 = in
	default:
		return req, usageErrorf("--input %q is not valid JSON: quote strings (--input '\"text\"'), or pass @FILE or - for raw bytes", f.input)
	}
	return req, nil
}

// retryFlags returns the retry policy that --attempts, --backoff,
// --max-backoff and --retry-on ask for, nil if none is set.
func retryFlags(fl *pflag.FlagSet, f *submitFlags) (*apiv1.RetryPolicy, error) {
	if !fl.Changed("attempts") && !fl.Changed("backoff") && !fl.Changed("max-backoff") && !fl.Changed("retry-on") {
		return nil, nil
	}
	p := &apiv1.RetryPolicy{BaseBackoff: apiv1.Duration(f.backoff), MaxBackoff: apiv1.Duration(f.maxBackoff)}
	if fl.Changed("attempts") {
		if f.attempts < 0 || f.attempts > apiv1.MaxAttempts {
			return nil, usageErrorf("--attempts must be between 0 and %d (0: --max-retries + 1), got %d", apiv1.MaxAttempts, f.attempts)
		}
		p.MaxAttempts = f.attempts
	}
	for _, d := range [...]struct {
		flag string
		v    time.Duration
	}{{"--backoff", f.backoff}, {"--max-backoff", f.maxBackoff}} {
		if d.v < 0 || d.v > apiv1.MaxTimeout {
			return nil, usageErrorf("%s must be between 0 and %s, got %s", d.flag, apiv1.MaxTimeout, d.v)
		}
	}
	if f.maxBackoff > 0 && f.maxBackoff < f.backoff {
		return nil, usageErrorf("--max-backoff %s is below --backoff %s", f.maxBackoff, f.backoff)
	}
	if fl.Changed("retry-on") {
		for name := range strings.SplitSeq(f.retryOn, ",") {
			name = strings.TrimSpace(name)
			if name == "" {
				continue
			}
			if err := apiv1.CheckRetryCode(name); err != nil {
				return nil, usageErrorf("--retry-on: %v", err)
			}
			if !slices.Contains(p.RetryOn, name) {
				p.RetryOn = append(p.RetryOn, name)
			}
		}
		if len(p.RetryOn) == 0 {
			return nil, usageErrorf("--retry-on is empty: leave it out to retry every code, or use --attempts 1 for no retries")
		}
	}
	return p, nil
}

// readInput reads --input. fromData is true when the bytes came from a file
// or stdin, which may hold raw bytes; an inline value must be JSON. A file
// or stdin larger than a task input may be is refused before it is read
// (a file) or once past the limit (stdin).
func (a *app) readInput(s string) (in []byte, fromData bool, err error) {
	switch {
	case s == "":
		return nil, false, nil
	case s == "-":
		b, err := io.ReadAll(io.LimitReader(a.stdin, apiv1.MaxInputBytes+1))
		if err != nil {
			return nil, false, fmt.Errorf("read input from stdin: %w", err)
		}
		if len(b) > apiv1.MaxInputBytes {
			return nil, false, inputTooLarge("from stdin", -1)
		}
		return b, true, nil
	case strings.HasPrefix(s, "@"):
		st, err := os.Stat(s[1:])
		if err != nil {
			return nil, false, usageErrorf("--input: %v", err)
		}
		if st.Size() > apiv1.MaxInputBytes {
			return nil, false, inputTooLarge(s, st.Size())
		}
		b, err := os.ReadFile(s[1:])
		if err != nil {
			return nil, false, usageErrorf("--input: %v", err)
		}
		return b, true, nil
	}
	return []byte(s), false, nil
}

// inputTooLarge refuses an input over apiv1.MaxInputBytes; size is -1 if
// not known.
func inputTooLarge(what string, size int64) error {
	n := "more than"
	if size >= 0 {
		n = fmt.Sprintf("%s (%d bytes), more than", formatBytes(size), size)
	}
	return usageErrorf("--input %s is %s a task input may be: %d bytes (16 MiB less 4 KiB), the most one task protocol frame carries to a peer, which no config key raises; split it into several tasks",
		what, n, apiv1.MaxInputBytes)
}

// checkInputSize refuses an input whose submission the daemon would refuse
// for its size: over its api.max_body_bytes as the body (raw) or inside
// the JSON body (base64 for raw bytes that must go as JSON is not sent:
// raw bytes always go as the body). The limit is read from the repo's
// config, or is the default.
func (a *app) checkInputSize(what string, in []byte, raw bool) error {
	if len(in) > apiv1.MaxInputBytes {
		return inputTooLarge(what, int64(len(in)))
	}
	limit, where := int64(api.DefaultMaxBodyBytes), "the default"
	if dir, err := a.repoDir(); err == nil {
		if c := a.repoConfig(dir); c != nil {
			limit, where = c.API.MaxBodyBytes, "in "+filepath.Join(dir, config.FileName)
		}
	}
	body := int64(len(in))
	if !raw {
		body += 4 << 10 // the other fields of the JSON body
	}
	if body > limit {
		return usageErrorf("--input %s makes a request body of about %d bytes, more than the daemon's api.max_body_bytes of %d bytes (%s): raise api.max_body_bytes and restart the daemon, or split the input",
			what, body, limit, where)
	}
	return nil
}

func (a *app) taskGetCommand() *cobra.Command {
	var output string
	cmd := &cobra.Command{
		Use:   "get ID",
		Short: "Show a task's state, and its result once it has one",
		Args:  exactArgs(argTaskID),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				t, err := c.Task(ctx, args[0])
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(t)
				}
				if apiv1.Terminal(t.State) {
					return a.printResult(t, output)
				}
				a.printStatus(t)
				return nil
			})
		}),
	}
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the output to FILE instead of stdout")
	return cmd
}

func (a *app) taskWaitCommand() *cobra.Command {
	var (
		timeout time.Duration
		output  string
	)
	cmd := &cobra.Command{
		Use:   "wait ID",
		Short: "Wait for a task to finish and print its result",
		Long: `wait waits for task ID to finish and prints its result (the output on stdout,
the outcome on stderr). While it waits, a stderr that is a terminal shows the
task's state and, once the skill reports it, a progress bar.`,
		Args: exactArgs(argTaskID),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			ctx := cmd.Context()
			if timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, timeout)
				defer cancel()
			}
			t, err := c.Task(ctx, args[0])
			if err != nil {
				return err
			}
			if t, err = a.follow(ctx, c, t); err != nil {
				return err
			}
			return a.printResult(t, output)
		}),
	}
	cmd.Flags().DurationVar(&timeout, "timeout", 0, "give up waiting after this long (exit 4); 0 waits for the task's own deadline")
	cmd.Flags().StringVarP(&output, "output", "o", "", "write the output to FILE instead of stdout")
	return cmd
}

func (a *app) taskCancelCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "cancel ID",
		Short: "Cancel a task",
		Args:  exactArgs(argTaskID),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				t, err := c.Cancel(ctx, args[0])
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(t)
				}
				fmt.Fprintf(a.stdout, "%s %s\n", t.ID, t.State)
				return nil
			})
		}),
	}
}

func (a *app) taskListCommand() *cobra.Command {
	var o client.ListOptions
	cmd := &cobra.Command{
		Use:   "list",
		Short: "List tasks, newest first",
		Args:  noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if o.State != "" && !slices.Contains(apiv1.States, o.State) {
				return usageErrorf("--state %q: want one of %s", o.State, strings.Join(apiv1.States, ", "))
			}
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				l, err := c.Tasks(ctx, o)
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(l)
				}
				rows := make([][]string, 0, len(l.Tasks))
				for _, t := range l.Tasks {
					rows = append(rows, []string{t.ID, t.Skill, t.State, t.Level, fmt.Sprint(t.Attempts),
						orDash(shortPeer(t.Node)), t.CreatedAt.Local().Format(time.DateTime)})
				}
				if err := a.table([]string{"ID", "SKILL", "STATE", "PRIORITY", "ATTEMPTS", "NODE", "CREATED"}, rows); err != nil {
					return err
				}
				if l.Next != "" {
					fmt.Fprintf(a.stderr, "more: cortexd task list --after %s\n", l.Next)
				}
				return nil
			})
		}),
	}
	cmd.Flags().StringVar(&o.State, "state", "", "only tasks in this state: "+strings.Join(apiv1.States, ", "))
	cmd.Flags().IntVar(&o.Limit, "limit", 50, "at most this many tasks")
	cmd.Flags().StringVar(&o.After, "after", "", "the page after this task ID (as printed after a full page)")
	return cmd
}

// printStatus prints a non-terminal task's state.
func (a *app) printStatus(t *apiv1.Task) {
	fmt.Fprintf(a.stdout, "%s %s (%s priority, attempt %d", t.ID, t.State, t.Level, t.Attempts)
	if t.Node != "" {
		fmt.Fprintf(a.stdout, ", on %s", t.Node)
	}
	if p := t.Progress; p != nil && !apiv1.Terminal(t.State) {
		fmt.Fprintf(a.stdout, ", %d%% done", int(min(max(p.Fraction, 0), 1)*100))
		if msg := printableLine(p.Message); msg != "" {
			fmt.Fprintf(a.stdout, ": %s", msg)
		}
	}
	fmt.Fprintln(a.stdout, ")")
}

// printResult prints a finished task: the output on stdout (or to a file),
// the outcome on stderr. It returns the error that sets the exit code.
func (a *app) printResult(t *apiv1.Task, outFile string) error {
	code := taskExitCode(t)
	if a.asJSON {
		if err := a.printJSON(t); err != nil {
			return err
		}
	} else if t.Result != nil && t.Result.Success {
		if err := a.writeOutput(t.Result, outFile); err != nil {
			return err
		}
		fmt.Fprintf(a.stderr, "task %s succeeded in %s on %s (attempt %d)\n",
			t.ID, ms(t.Result.DurationMS), shortPeer(t.Result.ExecutedBy), t.Result.Attempts)
	} else {
		fmt.Fprintf(a.stderr, "task %s %s: %s\n", t.ID, strings.ReplaceAll(t.State, "_", " "), failureMessage(t))
	}
	if code != exitOK {
		return &silentError{code}
	}
	return nil
}

func (a *app) writeOutput(r *apiv1.Result, outFile string) error {
	out := r.OutputBytes()
	if outFile != "" {
		if err := os.WriteFile(outFile, out, 0o644); err != nil {
			return fmt.Errorf("write output: %w", err)
		}
		return nil
	}
	if r.Output != nil {
		var buf bytes.Buffer
		if json.Indent(&buf, r.Output, "", "  ") == nil {
			out = buf.Bytes()
		}
	}
	if _, err := a.stdout.Write(out); err != nil {
		return fmt.Errorf("write output: %w", err)
	}
	if len(out) > 0 && out[len(out)-1] != '\n' {
		fmt.Fprintln(a.stdout)
	}
	return nil
}

// failureMessage says why a finished task did not succeed. Input that the
// node with the skill refused is told as that node's reason alone.
func failureMessage(t *apiv1.Task) string {
	e := t.Error
	switch {
	case e == nil:
		return "no reason given"
	case e.Code == apiv1.CodeInvalidInput && e.Reason != "" && t.Node != "":
		return fmt.Sprintf("node %s refused the input: %s", shortPeer(t.Node), e.Reason)
	case e.Code == apiv1.CodeInvalidInput && e.Reason != "":
		return "the input was refused: " + e.Reason
	}
	return e.Message + " (" + e.Code + ")"
}

// submitError renders the daemon's refusal of a submission as one line. A
// skill no node offers is named, with where to look.
func submitError(err error) error {
	var ce *client.Error
	if !errors.As(err, &ce) {
		return err
	}
	switch ce.Code {
	case apiv1.CodeUnknownSkill:
		return &renderedError{ce.Message + " (see 'cortexd skills')", err}
	case apiv1.CodeNoCapableNode:
		return &renderedError{ce.Message + " (see 'cortexd peers' and 'cortexd trust')", err}
	}
	return err
}

// renderedError shows a message of its own for an error it wraps.
type renderedError struct {
	msg string
	err error
}

func (e *renderedError) Error() string { return e.msg }
func (e *renderedError) Unwrap() error { return e.err }

func taskExitCode(t *apiv1.Task) int {
	switch t.State {
	case apiv1.StateSucceeded:
		return exitOK
	case apiv1.StateTimedOut:
		return exitTimeout
	}
	return exitFailed
}

// follow waits for t to finish. On a terminal, it shows a one-line status
// that the task's events update.
func (a *app) follow(ctx context.Context, c *client.Client, t *apiv1.Task) (*apiv1.Task, error) {
	if apiv1.Terminal(t.State) {
		return t, nil
	}
	var live *liveStatus
	if !a.asJSON && isTerminal(a.stderr) {
		live = startLiveStatus(ctx, c, a.stderr, t)
		defer live.stop()
	}
	done, err := c.Wait(ctx, t.ID)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return nil, &exitError{code: exitTimeout, err: fmt.Errorf("task %s has not finished yet (still %s): waiting timed out; `cortexd task wait %s` waits again", t.ID, lastState(done, t), t.ID)}
		}
		return nil, err
	}
	return done, nil
}

func lastState(ts ...*apiv1.Task) string {
	for _, t := range ts {
		if t != nil {
			return t.State
		}
	}
	return "unknown"
}
