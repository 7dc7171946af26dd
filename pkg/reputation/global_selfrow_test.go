package reputation

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestPeersThisNodeTrustsGetAShareOfGlobalTrust(t *testing.T) {
	self, b := peer.ID("self"), peer.ID("b")
	g, err := NewGraph(self)
	if err != nil {
		t.Fatal(err)
	}
	g.Record(b, "echo", OutcomeSuccess)
	g.Recompute()
	if got := g.GlobalTrust()[b]; got <= 0 {
		t.Fatalf("global trust of b = %v, want > 0 (self's row trusts it)", got)
	}
	for _, pt := range g.Peers() {
		if pt.Peer == b && pt.Global <= 0 {
			t.Fatalf("Peers() reports global %v for b, want > 0", pt.Global)
		}
	}
}
