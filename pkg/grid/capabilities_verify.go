package grid

import (
	"context"
	"slices"
	"time"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// The identify gate. A capability announcement is a claim; a peer becomes
// a provider only once identify, over a connection, shows it speaks the
// task protocol (wire.ProtocolTask). identify fills the peerstore's
// protocols from what the peer itself lists on a live connection, so a
// gossip relay cannot make that claim for someone else, and a libp2p node
// that only speaks gossipsub stays out.
//
// The table learns it three ways: when an entry is created (the peerstore
// already knows the peer), from identify's events (a connection was
// identified, or the peer's protocols changed: an orchestrator started
// after the connection opened), and at each expiry round for entries still
// unverified. An announcer this node is not connected to is probed: dialled
// (a dial waits for identify), at most probeRate a second, probeParallel at
// once, and each peer at most once per probeEvery.
const (
	probeRate     = 4
	probeBurst    = 8
	probeParallel = 4
	probeEvery    = time.Minute
	probeQueue    = 64
)

// speaksTask reports whether identify showed that p speaks the task
// protocol.
func speaksTask(h host.Host, p peer.ID) bool {
	ps, err := h.Peerstore().SupportsProtocols(p, wire.ProtocolTask)
	return err == nil && len(ps) > 0
}

// speaks is the table's gate: speaksTask on the running host.
func (n *Node) speaks(p peer.ID) bool {
	rt := n.rt.Load()
	return rt != nil && speaksTask(rt.host, p)
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
		n.table.setVerified(ev.Peer, slices.Contains(ev.Protocols, wire.ProtocolTask))
	case event.EvtPeerProtocolsUpdated:
		switch {
		case slices.Contains(ev.Added, wire.ProtocolTask):
			n.table.setVerified(ev.Peer, true)
		case slices.Contains(ev.Removed, wire.ProtocolTask):
			n.table.setVerified(ev.Peer, false)
		}
	default:
		return false
	}
	return true
}

// requestProbe asks probeLoop to dial p, so that identify can verify it.
// It drops the request if the queue is full: the next expiry round asks
// again.
func (n *Node) requestProbe(p peer.ID) {
	select {
	case n.probes <- p:
	default:
	}
}

// reverifyRound re-checks unverified entries and probes those not
// connected.
func (n *Node) reverifyRound(rt *nodeRuntime) {
	for _, p := range n.table.reverify() {
		if !hostConnected(rt.host, p) {
			n.requestProbe(p)
		}
	}
}

// probeLoop dials the unverified announcers requestProbe names, within the
// probe limits above. A dial that succeeds has run identify, whose event
// verifies the peer (or not).
func (n *Node) probeLoop(ctx context.Context, rt *nodeRuntime) {
	lim := rate.NewLimiter(probeRate, probeBurst)
	last := make(map[peer.ID]time.Time)
	sem := make(chan struct{}, probeParallel)
	defer func() {
		for range probeParallel {
			sem <- struct{}{} // wait for the dials in flight
		}
	}()
	for {
		var p peer.ID
		select {
		case <-ctx.Done():
			return
		case p = <-n.probes:
		}
		now := time.Now()
		if at, ok := last[p]; ok && now.Sub(at) < probeEvery {
			continue
		}
		if p == n.id || hostConnected(rt.host, p) || !n.gater.allowed(p) || !lim.Allow() {
			continue
		}
		for q, at := range last {
			if now.Sub(at) >= probeEvery {
				delete(last, q) // bounded by probeRate x probeEvery
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
			n.dial(ctx, rt.host, peer.AddrInfo{ID: p})
		}()
	}
}
