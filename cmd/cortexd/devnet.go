package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// devnetSkills are the skill sets devnet gives its nodes in turn, so that
// most tasks must be delegated.
var devnetSkills = [][]string{{"echo"}, {"hash.sha256"}, {"image.resize", "debug.sleep"}}

// devnetReadyTimeout bounds how long devnet waits for every node to see
// every skill.
const devnetReadyTimeout = 30 * time.Second

type devnetOptions struct {
	nodes    int
	dir      string
	keep     bool
	logLevel string
}

func (a *app) devnetCommand() *cobra.Command {
	var o devnetOptions
	cmd := &cobra.Command{
		Use:   "devnet",
		Short: "Run a grid of N nodes on loopback in this process, to try cortexd",
		Long: `devnet starts N nodes (default 3) on 127.0.0.1 in one process, each with its
own repo dir and API, and with different skills, so that tasks must be
delegated: node 1 offers echo, node 2 hash.sha256, node 3 image.resize and
debug.sleep (and so on, in turn). It prints how to reach each node and an
example command, and runs until Ctrl-C.

The repos go into a new temporary directory, removed at exit, unless --dir
names one (kept, and reused next time).`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			if o.nodes < 1 || o.nodes > 32 {
				return usageErrorf("--nodes must be between 1 and 32, got %d", o.nodes)
			}
			return a.runDevnet(cmd.Context(), o)
		}),
	}
	cmd.Flags().IntVarP(&o.nodes, "nodes", "n", 3, "number of nodes")
	cmd.Flags().StringVar(&o.dir, "dir", "", "directory for the nodes' repos (default: a temporary one, removed at exit)")
	cmd.Flags().BoolVar(&o.keep, "keep", false, "keep the temporary directory at exit")
	cmd.Flags().StringVar(&o.logLevel, "log-level", "warn", "log level of the nodes: debug, info, warn or error")
	return cmd
}

// devnetNodeSkills returns the skills of node i (0-based) of n.
func devnetNodeSkills(i, n int) []string {
	if n == 1 {
		return []string{"echo", "hash.sha256", "image.resize", "debug.sleep"}
	}
	if n == 2 && i == 1 {
		return []string{"hash.sha256", "image.resize", "debug.sleep"}
	}
	return devnetSkills[i%len(devnetSkills)]
}

// devnetConfig is the config.yaml of a devnet node: only what differs from
// the defaults.
func devnetConfig(i, n int) []byte {
	return []byte(fmt.Sprintf(`# Node %d of a cortexd devnet. Every key not set here has its default; see
# configs/cortexd.yaml. devnet passes node 1's address as the bootstrap peer
# at run time, since ports are chosen anew at each start.
network:
  listen_addrs: [/ip4/127.0.0.1/tcp/0]
mdns:
  enabled: false
pubsub:
  announce_interval: 2s
  capability_ttl: 10s
skills:
  enabled: [%s]
  # A wasm skill added on one node runs on the others: they fetch its module.
  fetch_modules: any
api:
  listen: 127.0.0.1:0
admission:
  # Every node of a devnet is yours: none is held to the stranger limits.
  mode: open
shutdown:
  grace: 5s
`, i+1, strings.Join(devnetNodeSkills(i, n), ", ")))
}

func (a *app) runDevnet(ctx context.Context, o devnetOptions) (err error) {
	base := o.dir
	if base == "" {
		if base, err = os.MkdirTemp("", "cortexd-devnet-"); err != nil {
			return fmt.Errorf("create devnet dir: %w", err)
		}
		if !o.keep {
			defer os.RemoveAll(base)
		}
	} else if base, err = filepath.Abs(base); err != nil {
		return fmt.Errorf("devnet dir: %w", err)
	}
	log := newLogger(config.Log{Level: o.logLevel, Format: "text"}, a.stderr)
	var (
		nodes   []*daemon
		running []devnetNode
	)
	defer func() { err = errors.Join(err, stopDevnet(running)) }()
	for i := range o.nodes {
		dir := filepath.Join(base, fmt.Sprintf("node%d", i+1))
		if !initialized(dir) {
			if _, err := initRepo(dir, initOptions{config: devnetConfig(i, o.nodes)}); err != nil {
				return err
			}
		}
		unlock, err := lockRepo(dir)
		if err != nil {
			return err
		}
		cfg, err := config.Load(filepath.Join(dir, config.FileName), nil)
		if err != nil {
			unlock()
			return err
		}
		cfg.Log.Level = o.logLevel
		if i > 0 {
			cfg.Network.BootstrapPeers = nil
			for _, ad := range nodes[0].node.Addrs() {
				cfg.Network.BootstrapPeers = append(cfg.Network.BootstrapPeers, ad.String())
			}
		}
		d, err := newDaemon(cfg, dir, log.With("node", i+1))
		if err != nil {
			unlock()
			return fmt.Errorf("node %d: %w", i+1, err)
		}
		sctx, cancel := context.WithTimeout(ctx, startTimeout)
		err = d.start(sctx)
		cancel()
		if err != nil {
			unlock() // start tore down what it started
			return fmt.Errorf("start node %d: %w", i+1, err)
		}
		nodes = append(nodes, d)
		running = append(running, devnetNode{name: fmt.Sprintf("node %d", i+1), grace: cfg.Shutdown.Grace, shutdown: d.shutdown, unlock: unlock})
	}
	if err := waitDevnetReady(ctx, nodes); err != nil {
		fmt.Fprintf(a.stderr, "cortexd devnet: %v (the nodes run anyway)\n", err)
	}
	a.printDevnet(base, nodes, o)
	<-ctx.Done()
	fmt.Fprintln(a.stderr, "\ncortexd devnet: stopping")
	return nil
}

// devnetNode is a started devnet node: how to stop it and release its
// repo.
type devnetNode struct {
	name     string
	grace    time.Duration // its shutdown.grace
	shutdown func(context.Context) error
	unlock   func()
}

// stopDevnet stops the nodes in reverse order of start. Each gets its own
// grace period, and its repo lock is released right after its own
// shutdown, never while it still runs.
func stopDevnet(nodes []devnetNode) error {
	var errs []error
	for i := len(nodes) - 1; i >= 0; i-- {
		n := nodes[i]
		ctx, cancel := context.WithTimeout(context.Background(), n.grace)
		if err := n.shutdown(ctx); err != nil {
			errs = append(errs, fmt.Errorf("stop %s: %w", n.name, err))
		}
		cancel()
		n.unlock()
	}
	return errors.Join(errs...)
}

// waitDevnetReady waits until every node sees a provider for every skill
// of the devnet.
func waitDevnetReady(ctx context.Context, nodes []*daemon) error {
	var all []string
	for _, d := range nodes {
		all = append(all, d.cfg.Skills.Enabled...)
	}
	ctx, cancel := context.WithTimeout(ctx, devnetReadyTimeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		missing := ""
		for i, d := range nodes {
			for _, s := range all {
				if !d.registry.Has(reputation.SkillID(s)) && len(d.node.Providers(reputation.SkillID(s))) == 0 {
					missing = fmt.Sprintf("node %d does not see %s yet", i+1, s)
				}
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("grid not fully connected after %s: %s", devnetReadyTimeout, missing)
		case <-tick.C:
		}
	}
}

func (a *app) printDevnet(base string, nodes []*daemon, o devnetOptions) {
	w := a.stdout
	fmt.Fprintf(w, "cortexd devnet: %d nodes on loopback. Ctrl-C stops them.\n\n", len(nodes))
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tPEER ID\tSKILLS\tAPI\tREPO")
	for i, d := range nodes {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\n", i+1, d.node.ID(), strings.Join(d.cfg.Skills.Enabled, ","), d.url, d.dir)
	}
	_ = tw.Flush()
	fmt.Fprintf(w, "\nDashboards (open in a browser; on loopback they need no token):\n\n")
	for i, d := range nodes {
		fmt.Fprintf(w, "  node %d  %s/ui/\n", i+1, d.url)
	}
	first := nodes[0]
	fmt.Fprintf(w, "\nTalk to node 1 from another terminal:\n\n")
	fmt.Fprintf(w, "  export CORTEXD_PATH=%s\n", first.dir)
	fmt.Fprintf(w, "  API=$(cat $CORTEXD_PATH/api)   # %s\n", first.url)
	fmt.Fprintf(w, "  cortexd peers\n")
	fmt.Fprintf(w, "  cortexd task submit hash.sha256 --input '{\"data\":\"aGVsbG8=\"}' --wait\n")
	if len(nodes) >= 3 {
		fmt.Fprintf(w, "  cortexd task submit debug.sleep --input '{\"ms\":3000}' --priority high --wait\n")
	}
	fmt.Fprintf(w, "  curl -s $API/v1/tasks -H 'Content-Type: application/json' -d '{\"skill\":\"hash.sha256\",\"input\":{\"data\":\"aGVsbG8=\"}}'\n")
	fmt.Fprintf(w, "  cortexd metrics; cortexd trust\n")
	if o.dir == "" && !o.keep {
		fmt.Fprintf(w, "\nThe repos in %s are removed when devnet stops (--keep keeps them).\n", base)
	}
}
