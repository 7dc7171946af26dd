package main

import (
	"context"
	"fmt"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

func (a *app) peersDenyCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "deny PEER",
		Short: "Cut a peer off now, until the daemon restarts",
		Long: `deny puts PEER (a peer ID, as 'cortexd peers' lists it) on the running
daemon's deny list: the node closes its connections to PEER at once, refuses
new ones in both directions, and ignores PEER's capability announcements,
whoever relays them. It is the way to stop a peer that floods or misbehaves.

The deny is kept in memory only: it ends when the daemon restarts, or with
'cortexd peers allow PEER'. To keep PEER out for good, also add it to
network.deny_peers in DIR/config.yaml.`,
		Example: `  cortexd peers deny 12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo`,
		Args:    exactArgs(argPeer),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.changeAccess(cmd, args[0], (*client.Client).DenyPeer)
		}),
	}
}

func (a *app) peersAllowCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "allow PEER",
		Short: "Let a denied peer connect again, until the daemon restarts",
		Long: `allow takes PEER off the running daemon's deny list and, if the node has an
allow list (network.allow_peers), adds PEER to it. The node does not dial PEER
at once: it reconnects when discovery finds PEER or PEER dials in.

Like deny, it lasts until the daemon restarts: a peer listed in
network.deny_peers is denied again then; remove it there to allow it for good.`,
		Args: exactArgs(argPeer),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.changeAccess(cmd, args[0], (*client.Client).AllowPeer)
		}),
	}
}

// changeAccess checks the peer ID, asks the daemon to change its access
// and prints the outcome.
func (a *app) changeAccess(cmd *cobra.Command, id string,
	change func(*client.Client, context.Context, string) (*apiv1.PeerAccess, error)) error {
	p, err := peer.Decode(id)
	if err != nil {
		return usageErrorf("%q is not a peer ID (such as 12D3KooW..., as 'cortexd peers' lists them): %v", id, err)
	}
	return a.call(cmd, func(ctx context.Context, c *client.Client) error {
		acc, err := change(c, ctx, p.String())
		if err != nil {
			return err
		}
		if a.asJSON {
			return a.printJSON(acc)
		}
		switch acc.Access {
		case apiv1.AccessDenied:
			fmt.Fprintf(a.stdout, "%s denied: disconnected, and refused until 'cortexd peers allow' or a restart (network.deny_peers keeps it out for good)\n", acc.Peer)
		case apiv1.AccessAllowed:
			fmt.Fprintf(a.stdout, "%s allowed: it may connect again (until a restart, if the config denies it)\n", acc.Peer)
		default:
			fmt.Fprintf(a.stdout, "%s: %s\n", acc.Peer, acc.Access)
		}
		return nil
	})
}
