package grid

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/connmgr"
	"github.com/libp2p/go-libp2p/core/control"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// ErrSelfDenied is returned by Node.DenyPeer for the node's own ID.
var ErrSelfDenied = errors.New("a node cannot deny itself")

// WithAllowPeers adds peers to the allow list; the option may be given more
// than once. With an allow list the node connects only to the peers on it,
// in both directions, and ignores capability announcements from anyone
// else; every bootstrap peer must then be on it. With no allow list (the
// default) every peer not denied may connect. The deny list wins over it.
func WithAllowPeers(ids ...peer.ID) NodeOption {
	return func(c *nodeConfig) { c.allowPeers = append(c.allowPeers, ids...) }
}

// WithDenyPeers adds peers to the deny list; the option may be given more
// than once. The node neither dials a denied peer nor accepts its
// connections, and ignores capability announcements it authored, whoever
// relays them. A bootstrap peer cannot be denied.
func WithDenyPeers(ids ...peer.ID) NodeOption {
	return func(c *nodeConfig) { c.denyPeers = append(c.denyPeers, ids...) }
}

// validateAccessLists reports with bad every problem with the allow and
// deny lists.
func (c *nodeConfig) validateAccessLists(self peer.ID, bad func(string, ...any)) {
	allow := make(map[peer.ID]bool, len(c.allowPeers))
	for i, p := range c.allowPeers {
		if err := p.Validate(); err != nil {
			bad("allow list entry %d is not a valid peer ID: %w", i, err)
			continue
		}
		allow[p] = true
	}
	deny := make(map[peer.ID]bool, len(c.denyPeers))
	for i, p := range c.denyPeers {
		switch err := p.Validate(); {
		case err != nil:
			bad("deny list entry %d is not a valid peer ID: %w", i, err)
		case p == self && self != "":
			bad("the node's own ID %s is on the deny list: remove it", p)
		case allow[p]:
			bad("peer %s is on both the allow and the deny list: remove it from one", p)
		default:
			deny[p] = true
		}
	}
	for _, b := range c.bootstrap {
		if b.ID == self || b.ID.Validate() != nil {
			continue
		}
		if deny[b.ID] {
			bad("bootstrap peer %s is on the deny list: remove it from one of them", b.ID)
		} else if len(allow) > 0 && !allow[b.ID] {
			bad("bootstrap peer %s is not on the allow list: with an allow list every bootstrap peer must be on it", b.ID)
		}
	}
}

// peerLists is one immutable version of the allow and deny lists.
type peerLists struct {
	allow map[peer.ID]struct{} // empty: everyone not denied
	deny  map[peer.ID]struct{}
}

// peerGater is the node's connection gater: it refuses dials to and
// connections from denied peers, and from peers missing from a non-empty
// allow list. It checks the peer before dialing, once the remote peer is
// authenticated (InterceptSecured) and once more when the connection is
// upgraded, so a peer denied meanwhile does not slip through.
//
// It is safe for concurrent use. Checks take no lock: they read an
// immutable snapshot that writers replace under mu.
type peerGater struct {
	mu       sync.Mutex // serializes writers
	lists    atomic.Pointer[peerLists]
	refusedD atomic.Uint64 // outbound dials refused
	refusedI atomic.Uint64 // inbound connections refused
	onRefuse func(dir network.Direction, p peer.ID)
}

var _ connmgr.ConnectionGater = (*peerGater)(nil)

func newPeerGater(allow, deny []peer.ID, onRefuse func(network.Direction, peer.ID)) *peerGater {
	l := &peerLists{allow: make(map[peer.ID]struct{}, len(allow)), deny: make(map[peer.ID]struct{}, len(deny))}
	for _, p := range allow {
		l.allow[p] = struct{}{}
	}
	for _, p := range deny {
		l.deny[p] = struct{}{}
	}
	g := &peerGater{onRefuse: onRefuse}
	g.lists.Store(l)
	return g
}

// allowed reports whether p may connect.
func (g *peerGater) allowed(p peer.ID) bool {
	l := g.lists.Load()
	if _, denied := l.deny[p]; denied {
		return false
	}
	if len(l.allow) == 0 {
		return true
	}
	_, ok := l.allow[p]
	return ok
}

// deny puts p on the deny list. It reports whether the list changed.
func (g *peerGater) deny(p peer.ID) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.lists.Load()
	if _, ok := old.deny[p]; ok {
		return false
	}
	l := &peerLists{allow: old.allow, deny: maps.Clone(old.deny)}
	l.deny[p] = struct{}{}
	g.lists.Store(l)
	return true
}

// allow takes p off the deny list and, if there is an allow list, puts it
// on that.
func (g *peerGater) allow(p peer.ID) {
	g.mu.Lock()
	defer g.mu.Unlock()
	old := g.lists.Load()
	l := &peerLists{allow: old.allow, deny: old.deny}
	if _, ok := old.deny[p]; ok {
		l.deny = maps.Clone(old.deny)
		delete(l.deny, p)
	}
	if _, ok := old.allow[p]; !ok && len(old.allow) > 0 {
		l.allow = maps.Clone(old.allow)
		l.allow[p] = struct{}{}
	}
	g.lists.Store(l)
}

// snapshot returns both lists, sorted.
func (g *peerGater) snapshot() (allow, deny []peer.ID) {
	l := g.lists.Load()
	return slices.Sorted(maps.Keys(l.allow)), slices.Sorted(maps.Keys(l.deny))
}

func (g *peerGater) check(dir network.Direction, p peer.ID) bool {
	if g.allowed(p) {
		return true
	}
	if dir == network.DirOutbound {
		g.refusedD.Add(1)
	} else {
		g.refusedI.Add(1)
	}
	if g.onRefuse != nil {
		g.onRefuse(dir, p)
	}
	return false
}

// InterceptPeerDial refuses to dial a peer that may not connect.
func (g *peerGater) InterceptPeerDial(p peer.ID) bool {
	return g.check(network.DirOutbound, p)
}

// InterceptAddrDial refuses to dial a peer that may not connect, whatever
// the address. InterceptPeerDial has normally refused it already.
func (g *peerGater) InterceptAddrDial(p peer.ID, _ multiaddr.Multiaddr) bool {
	return g.allowed(p)
}

// InterceptAccept lets every inbound connection start its handshake: the
// remote peer is not known before it.
func (g *peerGater) InterceptAccept(network.ConnMultiaddrs) bool { return true }

// InterceptSecured refuses a connection, either way, to or from a peer that
// may not connect, once the handshake has proved who it is.
func (g *peerGater) InterceptSecured(dir network.Direction, p peer.ID, _ network.ConnMultiaddrs) bool {
	return g.check(dir, p)
}

// InterceptUpgraded checks the peer once more, for a peer denied while its
// connection was being upgraded.
func (g *peerGater) InterceptUpgraded(c network.Conn) (bool, control.DisconnectReason) {
	return g.check(c.Stat().Direction, c.RemotePeer()), 0
}

// DenyPeer puts p on the deny list: the node closes its connections to p,
// refuses new ones either way, drops p's capabilities from its table and
// ignores p's announcements until AllowPeer(p). It is for an operator
// cutting off a peer that floods or misbehaves, and works before Start too.
// The deny list wins over the allow list. It is safe for concurrent use.
func (n *Node) DenyPeer(p peer.ID) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("deny peer: %w", err)
	}
	if p == n.id {
		return fmt.Errorf("deny peer %s: %w", p, ErrSelfDenied)
	}
	if n.gater.deny(p) {
		n.log.Info("peer denied", "peer", p)
	}
	n.table.remove(p, time.Now())
	if rt := n.rt.Load(); rt != nil {
		// A connection upgraded just before the deny is caught here or by
		// connEventLoop when it is added.
		if err := rt.host.Network().ClosePeer(p); err != nil {
			n.log.Debug("close connections to denied peer", "peer", p, "err", err)
		}
	}
	return nil
}

// AllowPeer takes p off the deny list and, if the node has an allow list,
// adds p to it. It does not create an allow list: on a node without one,
// it only undoes DenyPeer. The node does not dial p by itself; p reappears
// when discovery finds it or it connects. It is safe for concurrent use.
func (n *Node) AllowPeer(p peer.ID) error {
	if err := p.Validate(); err != nil {
		return fmt.Errorf("allow peer: %w", err)
	}
	n.gater.allow(p)
	n.log.Info("peer allowed", "peer", p)
	return nil
}

// PeerAllowed reports whether p may connect to this node: it is not denied
// and, if the node has an allow list, it is on it.
func (n *Node) PeerAllowed(p peer.ID) bool { return n.gater.allowed(p) }

// AccessLists returns the current allow list (empty: every peer not denied
// may connect) and deny list, each sorted.
func (n *Node) AccessLists() (allow, deny []peer.ID) { return n.gater.snapshot() }
