package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
)

// startTimeout bounds the daemon's start: the node's first bootstrap
// connections and the API's listener.
const startTimeout = time.Minute

// daemonFlags are the config keys the daemon command's flags set.
var daemonFlags = map[string]string{
	"api.listen":              "api-listen",
	"network.listen_addrs":    "listen",
	"network.bootstrap_peers": "bootstrap",
	"skills.enabled":          "skills",
	"log.level":               "log-level",
	"log.format":              "log-format",
}

func (a *app) daemonCommand() *cobra.Command {
	var (
		initIfMissing bool
		seed          string
	)
	cmd := &cobra.Command{
		Use:   "daemon",
		Short: "Run the node until SIGINT or SIGTERM",
		Long: `daemon runs the node of the repo dir: it joins the grid, offers its skills,
runs and delegates tasks, and serves the API. It writes the API's URL to
DIR/api for the other commands, and logs to stderr.

On SIGINT or SIGTERM it drains: the API refuses new tasks, running tasks get
shutdown.grace to finish, then everything closes and DIR/api is removed. A
second signal cuts the grace period short.

Settings come from DIR/config.yaml, then CORTEXD_* environment variables, then
these flags.`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			dir, err := a.repoDir()
			if err != nil {
				return err
			}
			if !initialized(dir) {
				if !initIfMissing {
					return fmt.Errorf("no cortexd repo in %s: %w; run `cortexd init` first, or `cortexd daemon --init`", dir, errNoRepo)
				}
				id, err := initRepo(dir, initOptions{seed: seed})
				if err != nil {
					return err
				}
				fmt.Fprintf(a.stderr, "initialized cortexd repo in %s, peer ID %s\n", dir, id)
			}
			unlock, err := lockRepo(dir)
			if err != nil {
				return err
			}
			defer unlock()
			cfg, err := config.Load(filepath.Join(dir, config.FileName), flagMap(cmd.Flags(), daemonFlags))
			if err != nil {
				return err
			}
			return runDaemon(cmd.Context(), cfg, dir, a)
		}),
	}
	fl := cmd.Flags()
	fl.BoolVar(&initIfMissing, "init", false, "create the repo first if it does not exist (for containers)")
	fl.StringVar(&seed, "init-identity-seed", "", "with --init: derive a new repo's identity from this string (demos only: anyone who knows it has the key)")
	fl.String("api-listen", "", "API address, host:port (api.listen)")
	fl.StringSlice("listen", nil, "libp2p listen multiaddrs (network.listen_addrs)")
	fl.StringSlice("bootstrap", nil, "bootstrap peers, multiaddrs ending in /p2p/<id> (network.bootstrap_peers)")
	fl.StringSlice("skills", nil, "built-in skills to offer (skills.enabled)")
	fl.String("log-level", "", "debug, info, warn or error (log.level)")
	fl.String("log-format", "", "text or json (log.format)")
	return cmd
}

// runDaemon runs one daemon until ctx is done, then shuts it down within
// the configured grace period.
func runDaemon(ctx context.Context, cfg *config.Config, dir string, a *app) error {
	log := newLogger(cfg.Log, a.stderr)
	for _, note := range config.UnknownEnv(os.Environ()) {
		log.Warn("ignoring environment variable: " + note)
	}
	d, err := newDaemon(cfg, dir, log)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, startTimeout)
	err = d.start(sctx)
	cancel()
	if err != nil {
		return err
	}
	log.Info("cortexd running", "peer", d.node.ID(), "api", d.url, "repo", dir, "skills", cfg.Skills.Enabled, "addrs", d.node.Addrs(), "private_network", d.private)

	var served error
	select {
	case <-ctx.Done():
	case served = <-d.served:
		log.Error("API server stopped", "err", served)
	}
	log.Info("shutting down: draining tasks", "grace", cfg.Shutdown.Grace)
	gctx, cancel := context.WithTimeout(context.Background(), cfg.Shutdown.Grace)
	defer cancel()
	force := make(chan os.Signal, 1)
	signal.Notify(force, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(force)
	go func() {
		select {
		case <-force:
			log.Warn("second signal: stopping now")
			cancel()
		case <-gctx.Done():
		}
	}()
	err = d.shutdown(gctx)
	if served != nil {
		err = errors.Join(fmt.Errorf("serve API: %w", served), err)
	}
	if err != nil {
		return err
	}
	log.Info("cortexd stopped")
	return nil
}
