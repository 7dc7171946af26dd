package reputation

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
)

func TestLocalOpinionsShareTrustNeverDistrust(t *testing.T) {
	g, _ := newTestGraph(t)
	ps := peers(t, 3)
	good, better, bad := ps[0], ps[1], ps[2]
	g.Record(good, "", OutcomeSuccess)
	for range 3 {
		g.Record(better, "", OutcomeSuccess)
	}
	g.Record(bad, "", OutcomeSuccess)
	g.Record(bad, "", OutcomeWrongResult)
	got := g.LocalOpinions(0)
	if len(got) != 2 || !near(got[better], 0.75, 1e-3) || !near(got[good], 0.25, 1e-3) {
		t.Fatalf("LocalOpinions = %v, want better 0.75, good 0.25 and no entry for the peer with a wrong result", got)
	}
	if top := g.LocalOpinions(1); len(top) != 1 || !near(top[better], 1, 1e-9) {
		t.Fatalf("LocalOpinions(1) = %v, want only the most trusted peer, at 1", top)
	}
}

func TestLocalOpinionsOfANodeWithoutEvidenceAreEmpty(t *testing.T) {
	g, _ := newTestGraph(t)
	if got := g.LocalOpinions(64); got != nil {
		t.Fatalf("LocalOpinions = %v, want nil", got)
	}
}

func TestOpinionsOfListsWhoVouchesForAPeerAndHowMuchThatWeighs(t *testing.T) {
	g, _ := newTestGraph(t)
	ps := peers(t, 3)
	friend, stranger, subject := ps[0], ps[1], ps[2]
	for range 4 {
		g.Record(friend, "", OutcomeSuccess) // this node trusts friend
	}
	g.SetPeerOpinions(friend, map[peer.ID]float64{subject: 1})
	g.SetPeerOpinions(stranger, map[peer.ID]float64{subject: 1})
	g.Recompute()
	ops := g.OpinionsOf(subject)
	if len(ops) != 2 {
		t.Fatalf("OpinionsOf = %+v, want two opinions", ops)
	}
	if ops[0].From != friend || ops[0].FromGlobal <= ops[1].FromGlobal {
		t.Fatalf("OpinionsOf = %+v, want the friend's opinion first, weighing more than the stranger's", ops)
	}
	if ops[0].Share != 1 || ops[0].Freshness <= 0.99 {
		t.Errorf("friend's opinion %+v: want share 1 and freshness about 1", ops[0])
	}
	if pt, ok := g.PeerTrustOf(subject); !ok || pt.Trust <= 0.5 || pt.Global <= 0 {
		t.Errorf("PeerTrustOf(subject) = %+v, %v: want a state above neutral, vouched for by the friend", pt, ok)
	}
	if g.OpinionPeers() != 2 {
		t.Errorf("OpinionPeers = %d, want 2", g.OpinionPeers())
	}
}
