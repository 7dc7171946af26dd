package main

import (
	"fmt"
	"path/filepath"

	"github.com/spf13/cobra"
)

func (a *app) initCommand() *cobra.Command {
	var o initOptions
	cmd := &cobra.Command{
		Use:   "init",
		Short: "Create a repo dir: identity, config and API token",
		Long: `init creates the repo dir (--repo, else $CORTEXD_PATH, else ~/.cortexd) with
an Ed25519 identity (identity.key, mode 0600), a commented config.yaml and an
API token (api-token, mode 0600), and prints the node's peer ID. It refuses a
repo that exists unless --force, which replaces all three (a new peer ID)
and moves the old identity's state (DIR/state.db: tasks, trust, metrics)
aside to DIR/state.db.bak-<time>.

--swarm-key makes the node the first of a private network: it generates a
pre-shared key into DIR/swarm.key (mode 0600) and sets network.swarm_key_file,
so that only nodes holding the same key can connect. Copy that file to every
other node of the network and init them with --swarm-key-from FILE (or copy it
into their repo and set network.swarm_key_file). Anyone holding the key can
join: share it as you would a password.`,
		Example: `  cortexd init
  cortexd init --swarm-key                       # first node of a private network
  cortexd init --swarm-key-from /tmp/swarm.key   # every other node`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			dir, err := a.repoDir()
			if err != nil {
				return err
			}
			o.out = a.stderr
			id, err := initRepo(dir, o)
			if err != nil {
				return err
			}
			keyFile := ""
			if o.swarmKey || o.swarmKeyFrom != "" {
				keyFile = filepath.Join(dir, swarmKeyFileName)
			}
			if a.asJSON {
				out := map[string]string{"id": id.String(), "repo": dir}
				if keyFile != "" {
					out["swarm_key"] = keyFile
				}
				return a.printJSON(out)
			}
			fmt.Fprintf(a.stderr, "initialized cortexd repo in %s\n", dir)
			switch {
			case o.swarmKey:
				fmt.Fprintf(a.stderr, "private network: new key in %s; copy it to every node of the network and run `cortexd init --swarm-key-from FILE` there (anyone holding it can join)\n", keyFile)
			case keyFile != "":
				fmt.Fprintf(a.stderr, "private network: key copied to %s\n", keyFile)
			}
			fmt.Fprintln(a.stdout, id)
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "replace an existing repo's identity, config and token")
	cmd.Flags().BoolVar(&o.swarmKey, "swarm-key", false, "generate a private network key into DIR/swarm.key and use it (network.swarm_key_file)")
	cmd.Flags().StringVar(&o.swarmKeyFrom, "swarm-key-from", "", "copy this private network key (a swarm.key file) into DIR/swarm.key and use it")
	cmd.Flags().StringVar(&o.seed, "identity-seed", "", "derive the identity from this string (demos and tests only: anyone who knows it has the key)")
	return cmd
}
