package client

import (
	"context"
	"net/http"
	"net/url"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// DenyPeer puts a peer on the node's deny list: the node closes its
// connections to the peer and refuses new ones either way. The deny lasts
// until AllowPeer or until the daemon stops; it is not written to the
// config (network.deny_peers keeps a peer out for good).
func (c *Client) DenyPeer(ctx context.Context, peerID string) (*apiv1.PeerAccess, error) {
	var out apiv1.PeerAccess
	return &out, c.do(ctx, http.MethodPost, "/v1/peers/"+url.PathEscape(peerID)+"/deny", nil, &out)
}

// AllowPeer takes a peer off the node's deny list and, if the node has an
// allow list, adds it there, until the daemon stops. The node does not dial
// the peer at once: it reconnects when discovery finds it or it dials in.
func (c *Client) AllowPeer(ctx context.Context, peerID string) (*apiv1.PeerAccess, error) {
	var out apiv1.PeerAccess
	return &out, c.do(ctx, http.MethodPost, "/v1/peers/"+url.PathEscape(peerID)+"/allow", nil, &out)
}
