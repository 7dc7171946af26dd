package main

import (
	"errors"
	"fmt"
	"io/fs"

	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
)

func (a *app) tokenCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "token",
		Short: "Print the repo's API token, for clients outside this machine or container",
		Long: `token prints the bearer token of the repo's API (the file api.token_file,
DIR/api-token unless the config says otherwise), which a client sends as
Authorization: Bearer <token>. The cortexd commands read it themselves; curl
and other clients need it when the API listens beyond loopback, as it does in
the container image. The image has no shell or cat, so read it with

  TOKEN=$(docker compose exec -T node1 cortexd token)

It needs no running daemon. Treat the token as a password.`,
		Example: `  curl -H "Authorization: Bearer $(cortexd token)" "$(cat ~/.cortexd/api)/v1/peers"`,
		Args:    noArgs,
		RunE: a.runE(func(*cobra.Command, []string) error {
			dir, err := a.repoDir()
			if err != nil {
				return err
			}
			if err := checkRepo(dir); err != nil {
				return errors.New(err.Error()) // not "unreachable": no daemon is needed
			}
			tokenFile := config.Default().API.TokenFile
			if c := a.repoConfig(dir); c != nil {
				tokenFile = c.API.TokenFile
			}
			tok, err := readToken(dir, tokenFile)
			switch {
			case errors.Is(err, fs.ErrNotExist):
				return fmt.Errorf("no API token at %s (api.token_file): write one there (e.g. `openssl rand -hex 32 > %s`) and restart the daemon", repoFile(dir, tokenFile), repoFile(dir, tokenFile))
			case err != nil:
				return fmt.Errorf("read the API token (api.token_file): %w", err)
			case tok == "":
				return fmt.Errorf("the API token file %s (api.token_file) is empty: write a token there (e.g. `openssl rand -hex 32`) and restart the daemon", repoFile(dir, tokenFile))
			}
			if a.asJSON {
				return a.printJSON(map[string]string{"token": tok, "file": repoFile(dir, tokenFile)})
			}
			fmt.Fprintln(a.stdout, tok)
			return nil
		}),
	}
}
