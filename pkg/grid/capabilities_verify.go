package grid

import (
	"context"
	"errors"
	"slices"
	"time"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"
	"golang.org/x/time/rate"
)

// Lazy verification. A capability announcement is signed by its author
// (gossipsub StrictSign), so it makes the author a candidate provider of
// the skills it lists: Providers lists it, with Verified false. A task
// reaches a peer only over a task stream, and opening one negotiates
// wire.ProtocolTask with multistream-select: a peer that does not speak
// it fails the negotiation before any task byte is sent, and
// Orchestrator.Delegate returns ErrNotProvider. So a plain libp2p node that
// only speaks gossipsub never receives a task, and no node has to dial
// every announcer up front to check it.
//
// The table learns who speaks the protocol without dialling anyone:
// identify, over a connection that exists anyway (the peer's own list of
// protocols, which a gossip relay cannot forge), verifies a peer or, if it
// does not list the protocol, refuses it; a task stream that fails to
// negotiate refuses it (Node.NotProvider). A refused peer is left out of
// Providers for notProviderFor, or until identify shows it speaks the
// protocol.
//
// identify can be stale: a connection identified while the peer's
// orchestrator was starting lists no task protocol, and identify's push
// skips a connection still being identified. So a refusal by identify is
// rechecked over that same connection (never a dial): checkLoop opens a
// task stream, whose negotiation answers for the peer, and closes it. At
// most checkRate a second, checkParallel at once, each peer once per
// checkEvery.
const (
	checkRate     = 8
	checkBurst    = 16
	checkParallel = 4
	checkEvery    = 30 * time.Second
	checkQueue    = 64
	checkTimeout  = 5 * time.Second
)

// ErrNotProvider is wrapped by Delegate's error when the peer does not
// speak the task protocol: the task was not sent. It is the router's
// choice of a candidate that failed, not a fault of the task or a sign
// that the peer is down.
var ErrNotProvider = errors.New("peer does not speak the task protocol")

// speaksTask reports whether identify showed that p speaks the task
// protocol.
func speaksTask(h host.Host, p peer.ID) bool {
	ps, err := h.Peerstore().SupportsProtocols(p, wire.ProtocolTask)
	return err == nil && len(ps) > 0
}

// refutesTask reports whether identify, over a live connection, showed
// that p does not speak the task protocol: p is connected, the peerstore
// holds the protocols it listed, and the task protocol is not among them.
func refutesTask(h host.Host, p peer.ID) bool {
	if !hostConnected(h, p) || speaksTask(h, p) {
		return false
	}
	ps, err := h.Peerstore().GetProtocols(p)
	return err == nil && len(ps) > 0
}

// speaks is the table's check for verified: speaksTask on the running
// host.
func (n *Node) speaks(p peer.ID) bool {
	rt := n.rt.Load()
	return rt != nil && speaksTask(rt.host, p)
}

// refutes is the table's check for refused: refutesTask on the running
// host.
func (n *Node) refutes(p peer.ID) bool {
	rt := n.rt.Load()
	return rt != nil && refutesTask(rt.host, p)
}

// NotProvider records that p does not speak the task protocol: a task
// stream to it failed to negotiate it (Delegate returned ErrNotProvider).
// p is left out of Providers for 5 minutes, or until identify shows it
// speaks the protocol. Only this node's own negotiation with p says so,
// so no third peer can have p refused.
func (n *Node) NotProvider(p peer.ID) {
	n.table.setVerified(p, false, "a task stream to it failed to negotiate "+string(wire.ProtocolTask))
}

// logNotProvider is the table's notProvider: one line each time an
// announcer with skills becomes refused.
func (n *Node) logNotProvider(p peer.ID, why string) {
	n.log.Info("announcer is no provider for 5m: it does not speak the task protocol", "peer", p, "how", why)
}

// peerTrust is the table's trust function: WithPeerTrust's, or neutral.
func (n *Node) peerTrust(p peer.ID) float64 {
	if n.cfg.peerTrust == nil {
		return neutralKeepTrust
	}
	return n.cfg.peerTrust(p)
}

// identifyEvents are the event types connEventLoop handles besides
// connectedness.
var identifyEvents = []any{new(event.EvtPeerIdentificationCompleted), new(event.EvtPeerProtocolsUpdated)}

// onIdentify updates the table from an identify event. It reports whether
// e was one.
func (n *Node) onIdentify(e any) bool {
	switch ev := e.(type) {
	case event.EvtPeerIdentificationCompleted:
		ok := slices.Contains(ev.Protocols, wire.ProtocolTask)
		if n.table.setVerified(ev.Peer, ok, "") && !ok {
			n.requestCheck(ev.Peer)
		}
	case event.EvtPeerProtocolsUpdated:
		switch {
		case slices.Contains(ev.Added, wire.ProtocolTask):
			n.table.setVerified(ev.Peer, true, "")
		case slices.Contains(ev.Removed, wire.ProtocolTask):
			if n.table.setVerified(ev.Peer, false, "") {
				n.requestCheck(ev.Peer)
			}
		}
	default:
		return false
	}
	return true
}

// requestCheck asks checkLoop to recheck p over its connection. It drops
// the request if the queue is full: the next reverify round asks again.
func (n *Node) requestCheck(p peer.ID) {
	select {
	case n.checks <- p:
	default:
	}
}

// checkLoop rechecks the peers requestCheck names, within the limits
// above: over a live connection only, it opens a task stream and closes
// it. A negotiation that succeeds verifies the peer; one that fails
// refuses it. Any other error (the connection went, a timeout) changes
// nothing.
func (n *Node) checkLoop(ctx context.Context, rt *nodeRuntime) {
	lim := rate.NewLimiter(checkRate, checkBurst)
	last := make(map[peer.ID]time.Time)
	sem := make(chan struct{}, checkParallel)
	defer func() {
		for range checkParallel {
			sem <- struct{}{} // wait for the checks in flight
		}
	}()
	for {
		var p peer.ID
		select {
		case <-ctx.Done():
			return
		case p = <-n.checks:
		}
		now := time.Now()
		if at, ok := last[p]; ok && now.Sub(at) < checkEvery {
			continue
		}
		if p == n.id || !hostConnected(rt.host, p) || speaksTask(rt.host, p) || !n.gater.allowed(p) || !lim.Allow() {
			continue
		}
		for q, at := range last {
			if now.Sub(at) >= checkEvery {
				delete(last, q) // bounded by checkRate x checkEvery
			}
		}
		last[p] = now
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return
		}
		go func() {
			defer func() { <-sem }()
			n.checkTask(ctx, rt.host, p)
		}()
	}
}

// checkTask opens a task stream to p over an existing connection and
// records what the negotiation says.
func (n *Node) checkTask(ctx context.Context, h host.Host, p peer.ID) {
	cctx, cancel := context.WithTimeout(network.WithNoDial(ctx, "check the task protocol"), checkTimeout)
	defer cancel()
	s, err := h.NewStream(cctx, p, wire.ProtocolTask)
	switch {
	case err == nil:
		_ = s.Reset() // nothing to send: the negotiation was the check
		n.table.setVerified(p, true, "")
	case errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}) && !speaksTask(h, p):
		// (If identify's push listed the protocol meanwhile, the peer
		// started speaking it after the negotiation: keep the push's word.)
		n.NotProvider(p)
	}
}
