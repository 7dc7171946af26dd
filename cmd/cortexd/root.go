package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// version is set at build time with -ldflags "-X main.version=v1.2.3".
var version = "dev"

// requestTimeout bounds each call of a client command that does not wait
// for a task.
const requestTimeout = 30 * time.Second

// app holds what every command shares: the global flags and the streams.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer

	repoFlag string
	apiURL   string
	asJSON   bool

	started bool // a command's RunE was reached: later errors are not usage errors
}

// run executes the cortexd command line args. It is main without the
// process: tests call it directly.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	a := &app{stdin: os.Stdin, stdout: stdout, stderr: stderr}
	root := a.rootCommand()
	root.SetArgs(args)
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetIn(a.stdin)
	c, err := root.ExecuteContextC(ctx)
	if err != nil && !a.started {
		var ee *exitError
		if !errors.As(err, &ee) {
			err = &exitError{code: exitUsage, err: err}
		}
	}
	var ee *exitError
	if errors.As(err, &ee) && ee.code == exitUsage && ee.help == "" && c != nil {
		ee.help = c.CommandPath()
	}
	return err
}

func (a *app) rootCommand() *cobra.Command {
	root := &cobra.Command{
		Use:   "cortexd",
		Short: "cortexd runs a node of the cortex grid and talks to it",
		Long: `cortexd runs a node of the cortex grid, a peer-to-peer network that delegates
tasks to the nodes that offer the skill they need, and talks to a running node.

Start here: 'cortexd devnet' runs a three-node grid on this machine.

The repo dir (--repo, else $CORTEXD_PATH, else ~/.cortexd) holds a node's
identity and config; 'cortexd init' creates it, 'cortexd daemon' runs it, and
the other commands find the running daemon through DIR/api.

Exit codes: 0 success; 1 the task failed or was canceled, or the daemon refused
the request; 2 usage error; 3 daemon unreachable; 4 timed out.`,
		SilenceUsage:  true,
		SilenceErrors: true,
	}
	pf := root.PersistentFlags()
	pf.StringVar(&a.repoFlag, "repo", "", "repo dir (default $CORTEXD_PATH, else ~/.cortexd)")
	pf.StringVar(&a.apiURL, "api", "", "API URL of the daemon to talk to (default: read from DIR/api)")
	pf.BoolVar(&a.asJSON, "json", false, "print JSON instead of tables")
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		return usageErrorf("%v", err)
	})
	root.AddCommand(
		a.initCommand(),
		a.daemonCommand(),
		a.devnetCommand(),
		a.idCommand(),
		a.peersCommand(),
		a.skillListCommand("skills"),
		a.skillCommand(),
		a.taskCommand(),
		a.workflowCommand(),
		a.metricsCommand(),
		a.trustCommand(),
		a.versionCommand(),
		a.healthCommand(),
		a.shimCommand(),
		a.tokenCommand(),
	)
	a.registerCompletions(root)
	return root
}

// runE wraps a command's body: errors it returns are not usage errors
// unless it says so.
func (a *app) runE(fn func(cmd *cobra.Command, args []string) error) func(*cobra.Command, []string) error {
	return func(cmd *cobra.Command, args []string) error {
		a.started = true
		return fn(cmd, args)
	}
}

// repoDir resolves the repo dir: --repo, else $CORTEXD_PATH, else
// ~/.cortexd.
func (a *app) repoDir() (string, error) {
	dir := a.repoFlag
	if dir == "" {
		dir = os.Getenv("CORTEXD_PATH")
	}
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the repo dir: no --repo, no $CORTEXD_PATH and no home dir: %w", err)
		}
		dir = filepath.Join(home, ".cortexd")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return "", fmt.Errorf("resolve repo dir %s: %w", dir, err)
	}
	return abs, nil
}

// client returns a client for the daemon: the one at --api, else the one
// running on the repo dir.
func (a *app) client() (*client.Client, error) {
	dir, err := a.repoDir()
	if err != nil {
		return nil, err
	}
	tokenFile := ""
	if c := a.repoConfig(dir); c != nil {
		tokenFile = c.API.TokenFile
	}
	if a.apiURL == "" {
		if err := checkRepo(dir); err != nil {
			return nil, err
		}
	}
	if a.apiURL != "" {
		var opts []client.Option
		if tok, err := readToken(dir, tokenFile); err == nil {
			opts = append(opts, client.WithToken(tok))
		}
		c, err := client.New(a.apiURL, opts...)
		if err != nil {
			return nil, usageErrorf("--api: %v", err)
		}
		return c, nil
	}
	return client.FromRepo(dir, tokenFile)
}

// repoConfig returns the repo's config, or nil if it cannot be read: the
// client commands use it for hints (the token file, the body limit) and
// work without it.
func (a *app) repoConfig(dir string) *config.Config {
	c, err := config.Load(filepath.Join(dir, config.FileName), nil)
	if err != nil {
		return nil
	}
	return c
}

// noRepoError is the error of a client command run on a repo
// dir that does not exist or was never initialized: no daemon can be
// running there.
type noRepoError struct{ msg string }

func (e *noRepoError) Error() string { return e.msg }
func (e *noRepoError) Unwrap() error { return client.ErrUnreachable }

// checkRepo returns an error that points to `cortexd init` if dir is not
// an initialized repo.
func checkRepo(dir string) error {
	st, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return &noRepoError{fmt.Sprintf("repo %s does not exist: create it with `cortexd --repo %s init`, or point --repo or $CORTEXD_PATH at an existing one", dir, dir)}
	case err == nil && !st.IsDir():
		return &noRepoError{fmt.Sprintf("repo %s is a file, not a directory: point --repo or $CORTEXD_PATH at a repo dir", dir)}
	case err == nil && !initialized(dir):
		return &noRepoError{fmt.Sprintf("%s is not a cortexd repo (it has no %s): create one with `cortexd --repo %s init`", dir, config.FileName, dir)}
	}
	return nil
}

func readToken(dir, tokenFile string) (string, error) {
	if tokenFile == "" {
		tokenFile = client.DefaultTokenFile
	}
	if !filepath.IsAbs(tokenFile) {
		tokenFile = filepath.Join(dir, tokenFile)
	}
	b, err := os.ReadFile(tokenFile)
	if err != nil {
		return "", err
	}
	return strings.TrimSpace(string(b)), nil
}

// call runs fn with a client and a context bounded by requestTimeout.
func (a *app) call(cmd *cobra.Command, fn func(ctx context.Context, c *client.Client) error) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(cmd.Context(), requestTimeout)
	defer cancel()
	return fn(ctx, c)
}

// printJSON writes v as indented JSON to stdout.
func (a *app) printJSON(v any) error {
	enc := json.NewEncoder(a.stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}

// table writes rows under a header, aligned, to stdout.
func (a *app) table(header []string, rows [][]string) error {
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, r := range rows {
		fmt.Fprintln(tw, strings.Join(r, "\t"))
	}
	if err := tw.Flush(); err != nil {
		return fmt.Errorf("write table: %w", err)
	}
	return nil
}

// flagMap returns the flags of fs by config key, for config.Load.
func flagMap(fs *pflag.FlagSet, keys map[string]string) map[string]*pflag.Flag {
	m := make(map[string]*pflag.Flag, len(keys))
	for key, name := range keys {
		m[key] = fs.Lookup(name)
	}
	return m
}
