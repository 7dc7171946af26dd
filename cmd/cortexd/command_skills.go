package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/command"
)

// registerCommands registers every skills.commands entry. A bad entry
// stops the daemon: the operator wrote it, and a node that silently lacks
// a skill it was told to offer is worse than one that does not start.
// Each logs what Landlock enforces for it on this kernel.
func (d *daemon) registerCommands() error {
	if len(d.cfg.Skills.Commands) > 0 && os.Getpid() == 1 {
		d.log.Warn("cortexd is PID 1: processes that command skills orphan are reaped by no one and stay zombies; run it under an init (docker run --init, or tini)")
	}
	opts := command.Options{Shim: d.cfg.Skills.CommandShim}
	for i, cs := range d.cfg.Skills.Commands {
		s, err := command.New(cs.CommandSpec(d.dir), opts)
		if err != nil {
			return fmt.Errorf("%w: skills.commands[%d]: %w", config.ErrInvalid, i, err)
		}
		if err := d.registry.Register(s); err != nil {
			return fmt.Errorf("%w: skills.commands[%d]: %w", config.ErrInvalid, i, err)
		}
		c := s.Confinement()
		d.log.Info("command skill ready", "skill", cs.Name, "version", cs.Version, "argv", s.Spec().Argv, "confinement", c.String())
		hasFS := len(cs.FS.ReadOnly)+len(cs.FS.ReadWrite) > 0
		if hasFS && !c.Filesystem || cs.DenyNetwork && !c.Network {
			d.log.Warn("this kernel cannot enforce every rule of a command skill; it runs without them",
				"skill", cs.Name, "fs_rules_enforced", c.Filesystem || !hasFS, "deny_network_enforced", c.Network || !cs.DenyNetwork,
				"landlock_abi", c.LandlockABI)
		}
	}
	return nil
}

// shimCommand is the hidden command that starts a command skill's program
// (see command.ShimMain). main runs the shim before cobra; this entry
// keeps the name reserved and says what it is.
func (a *app) shimCommand() *cobra.Command {
	return &cobra.Command{
		Use:                command.ShimArg,
		Short:              "internal: the daemon runs it to start a command skill",
		Hidden:             true,
		DisableFlagParsing: true,
		RunE: func(cmd *cobra.Command, args []string) error {
			return &exitError{code: command.ShimMain(args), err: fmt.Errorf("%s is internal: the daemon runs it to start a command skill", command.ShimArg)}
		},
	}
}
