package reputation

import "github.com/libp2p/go-libp2p/core/peer"

// HasEvidence reports whether the graph holds anything about p: an
// outcome recorded here, or reputation from the pre-trusted set or from
// other peers' opinions, not yet decayed away. A peer without evidence has
// the neutral trust. It takes no lock.
func (g *Graph) HasEvidence(p peer.ID) bool {
	if p == g.self {
		return true
	}
	_, ok := g.peers.Load(p)
	return ok
}

// IsPreTrusted reports whether p is this node or one of the peers given to
// WithPreTrusted.
func (g *Graph) IsPreTrusted(p peer.ID) bool {
	_, ok := g.preSet[p]
	return ok
}
