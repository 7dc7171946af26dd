package reputation

import (
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"math"
	"reflect"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
)

func TestSnapshotRestoreRoundTrip(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pre := test.RandPeerIDFatal(t)
		g, self := newTestGraph(t, WithPreTrusted(pre))
		ids := peers(t, 3)
		a, b, c := ids[0], ids[1], ids[2]
		for range 5 {
			g.Record(a, "hash.sha256", OutcomeSuccess)
		}
		g.Record(a, "echo", OutcomeTimeout)
		g.Record(b, "image.resize", OutcomeWrongResult)
		time.Sleep(30 * time.Minute) // evidence of different ages
		g.Record(b, "", OutcomeSuccess)
		g.SetPeerOpinions(pre, map[peer.ID]float64{c: 2, a: 1})
		g.Recompute()

		data, err := json.Marshal(g.Snapshot())
		if err != nil {
			t.Fatalf("marshal snapshot: %v", err)
		}
		var s Snapshot
		if err := json.Unmarshal(data, &s); err != nil {
			t.Fatalf("unmarshal snapshot: %v", err)
		}
		h, err := NewGraph(self, WithPreTrusted(pre), WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil))))
		if err != nil {
			t.Fatalf("NewGraph: %v", err)
		}
		if err := h.Restore(s); err != nil {
			t.Fatalf("Restore: %v", err)
		}

		for _, p := range []peer.ID{pre, a, b, c} {
			if got, want := h.Trust(p), g.Trust(p); !near(got, want, 1e-12) {
				t.Errorf("restored Trust(%s) = %v, want %v", p.ShortString(), got, want)
			}
		}
		for _, sk := range []SkillID{"hash.sha256", "echo", "image.resize"} {
			for _, p := range []peer.ID{a, b} {
				if got, want := h.SkillRating(p, sk), g.SkillRating(p, sk); !near(got, want, 1e-12) {
					t.Errorf("restored SkillRating(%s, %s) = %v, want %v", p.ShortString(), sk, got, want)
				}
			}
		}
		if got, want := h.GlobalTrust(), g.GlobalTrust(); !reflect.DeepEqual(got, want) {
			t.Errorf("restored GlobalTrust() = %v, want %v", got, want)
		}
		gp, hp := g.Peers(), h.Peers()
		for i := range gp { // JSON drops the monotonic reading and the location
			gp[i].LastOutcome, hp[i].LastOutcome = gp[i].LastOutcome.Round(0).UTC(), hp[i].LastOutcome.Round(0).UTC()
		}
		if !reflect.DeepEqual(gp, hp) {
			t.Errorf("restored Peers() =\n%+v\nwant\n%+v", hp, gp)
		}

		// Restored evidence keeps decaying from when the snapshot was taken.
		time.Sleep(time.Hour)
		g.Recompute()
		h.Recompute()
		if got, want := h.Trust(b), g.Trust(b); !near(got, want, 1e-12) {
			t.Errorf("an hour later, restored Trust(b) = %v, want %v", got, want)
		}
	})
}

func TestRestoreRejectsBadSnapshots(t *testing.T) {
	g, self := newTestGraph(t)
	other := test.RandPeerIDFatal(t)
	p := test.RandPeerIDFatal(t)
	g.Record(p, "echo", OutcomeSuccess)
	tests := []struct {
		name string
		edit func(*Snapshot)
	}{
		{name: "a snapshot of another node is rejected", edit: func(s *Snapshot) { s.Self = other }},
		{name: "an unknown version is rejected", edit: func(s *Snapshot) { s.Version = 2 }},
		{name: "negative evidence is rejected", edit: func(s *Snapshot) { s.Peers[0].Unsatisfaction = -1 }},
		{name: "NaN evidence is rejected", edit: func(s *Snapshot) { s.Peers[0].Skills[0].Satisfaction = math.NaN() }},
		{name: "evidence about this node is rejected", edit: func(s *Snapshot) { s.Peers[0].Peer = self }},
		{name: "a peer listed twice is rejected", edit: func(s *Snapshot) { s.Peers = append(s.Peers, s.Peers[0]) }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := g.Snapshot()
			tt.edit(&s)
			before := g.Trust(p)
			if err := g.Restore(s); !errors.Is(err, ErrBadSnapshot) {
				t.Errorf("Restore() = %v, want ErrBadSnapshot", err)
			}
			if got := g.Trust(p); got != before {
				t.Errorf("a failed Restore changed Trust from %v to %v", before, got)
			}
		})
	}
}
