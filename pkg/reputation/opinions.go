package reputation

import (
	"cmp"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// LocalOpinions returns this node's normalized local trust vector, its own
// row of the EigenTrust matrix, for sharing with other peers: c_j = s_j /
// Σ_k s_k over the peers with s_j = max(sat_j - unsat_j, 0) > 0, as of now,
// keeping at most max entries (the largest; max <= 0 keeps all), which then
// sum to 1. Peers this node has only failures, timeouts or wrong results
// from are not in it: EigenTrust shares trust, never distrust. It returns
// nil when this node trusts no peer yet.
func (g *Graph) LocalOpinions(max int) map[peer.ID]float64 {
	now := g.now()
	type share struct {
		p peer.ID
		s float64
	}
	var all []share
	g.peers.Range(func(k, v any) bool {
		st := v.(*peerState)
		st.mu.Lock()
		ev := st.ev
		dead := st.dead
		st.mu.Unlock()
		if dead {
			return true
		}
		ev.decayTo(now, g.cfg.halfLife)
		if s := ev.sat - ev.unsat; s > 0 {
			all = append(all, share{k.(peer.ID), s})
		}
		return true
	})
	if len(all) == 0 {
		return nil
	}
	slices.SortFunc(all, func(a, b share) int { return cmp.Or(cmp.Compare(b.s, a.s), cmp.Compare(a.p, b.p)) })
	if max > 0 && len(all) > max {
		all = all[:max]
	}
	var sum float64
	for _, e := range all {
		sum += e.s
	}
	out := make(map[peer.ID]float64, len(all))
	for _, e := range all {
		out[e.p] = e.s / sum
	}
	return out
}

// Opinion is one other peer's opinion of a peer, as the graph holds it.
type Opinion struct {
	From peer.ID `json:"from"`
	// Share is the part of From's local trust that goes to the peer, in
	// [0, 1] (From's shared vector, normalized).
	Share float64 `json:"share"`
	// FromGlobal is From's own share of the EigenTrust vector as of the
	// last recomputation: how much the opinion weighs.
	FromGlobal float64 `json:"from_global"`
	// Freshness is the decay factor of the opinion, in (0, 1]: it halves
	// every decay half-life since it arrived.
	Freshness float64   `json:"freshness"`
	Received  time.Time `json:"received"`
}

// OpinionsOf returns the opinions other peers shared about p, the weightiest
// (FromGlobal × Freshness × Share) first.
func (g *Graph) OpinionsOf(p peer.ID) []Opinion {
	global := g.result.Load().global
	now := time.Now()
	var out []Opinion
	g.opMu.RLock()
	for from, row := range g.opinions {
		i := slices.Index(row.to, p)
		if i < 0 {
			continue
		}
		out = append(out, Opinion{
			From: from, Share: row.c[i], FromGlobal: global[from],
			Freshness: decayFactor(now.Sub(row.at), g.cfg.halfLife), Received: row.at,
		})
	}
	g.opMu.RUnlock()
	weight := func(o Opinion) float64 { return o.FromGlobal * o.Freshness * o.Share }
	slices.SortFunc(out, func(a, b Opinion) int { return cmp.Or(cmp.Compare(weight(b), weight(a)), cmp.Compare(a.From, b.From)) })
	return out
}

// OpinionPeers returns how many peers' opinions the graph holds.
func (g *Graph) OpinionPeers() int {
	g.opMu.RLock()
	defer g.opMu.RUnlock()
	return len(g.opinions)
}

// PeerTrustOf returns what the graph knows about p, as Peers reports each
// peer, and false if it holds no state about p (its trust is then
// neutral, or 1 for this node).
func (g *Graph) PeerTrustOf(p peer.ID) (PeerTrust, bool) {
	global := g.result.Load().global
	if v, ok := g.peers.Load(p); ok {
		return g.describe(p, v.(*peerState), g.now(), global), true
	}
	_, pre := g.preSet[p]
	return PeerTrust{Peer: p, Trust: g.Trust(p), Global: global[p], PreTrusted: pre}, false
}
