package main

import (
	"fmt"

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
repo that exists unless --force, which replaces all three (a new peer ID).`,
		Args: cobra.NoArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			dir, err := a.repoDir()
			if err != nil {
				return err
			}
			id, err := initRepo(dir, o)
			if err != nil {
				return err
			}
			if a.asJSON {
				return a.printJSON(map[string]string{"id": id.String(), "repo": dir})
			}
			fmt.Fprintf(a.stderr, "initialized cortexd repo in %s\n", dir)
			fmt.Fprintln(a.stdout, id)
			return nil
		}),
	}
	cmd.Flags().BoolVarP(&o.force, "force", "f", false, "replace an existing repo's identity, config and token")
	cmd.Flags().StringVar(&o.seed, "identity-seed", "", "derive the identity from this string (demos and tests only: anyone who knows it has the key)")
	return cmd
}
