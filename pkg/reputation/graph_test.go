package reputation

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"math"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
)

// newTestGraph returns a graph for a random node, logging nowhere.
func newTestGraph(tb testing.TB, opts ...Option) (*Graph, peer.ID) {
	tb.Helper()
	self := test.RandPeerIDFatal(tb)
	g, err := NewGraph(self, append([]Option{WithLogger(slog.New(slog.NewTextHandler(io.Discard, nil)))}, opts...)...)
	if err != nil {
		tb.Fatalf("NewGraph: %v", err)
	}
	tb.Cleanup(func() { _ = g.Close() })
	return g, self
}

func peers(tb testing.TB, n int) []peer.ID {
	tb.Helper()
	ids := make([]peer.ID, n)
	for i := range ids {
		ids[i] = test.RandPeerIDFatal(tb)
	}
	return ids
}

func near(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func TestNewGraphRejectsBadOptions(t *testing.T) {
	self := test.RandPeerIDFatal(t)
	tests := []struct {
		name  string
		self  peer.ID
		opts  []Option
		wants []string // each must appear in the error
	}{
		{name: "an empty self ID is rejected", self: "", wants: []string{"peer ID is empty"}},
		{name: "neutral trust above one is rejected", self: self, opts: []Option{WithNeutralTrust(1.5)}, wants: []string{"neutral trust 1.5"}},
		{name: "zero damping is rejected", self: self, opts: []Option{WithDamping(0)}, wants: []string{"damping 0"}},
		{name: "every problem is reported at once", self: self,
			opts: []Option{WithEpsilon(-1), WithMaxIterations(0), WithRecomputeInterval(0), WithDecayHalfLife(-time.Second),
				WithLogger(nil), WithPreTrusted("")},
			wants: []string{"epsilon -1", "maximum iterations 0", "recompute interval 0s", "half-life -1s", "logger is nil", "pre-trusted peer 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, err := NewGraph(tt.self, tt.opts...)
			if !errors.Is(err, ErrInvalidOption) || g != nil {
				t.Fatalf("NewGraph() = %v, %v; want nil and an error wrapping ErrInvalidOption", g, err)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestUnknownPeersAreNeutral(t *testing.T) {
	for _, neutral := range []float64{0.5, 0.7} {
		g, self := newTestGraph(t, WithNeutralTrust(neutral))
		stranger := test.RandPeerIDFatal(t)
		if got := g.Trust(stranger); got != neutral {
			t.Errorf("neutral %v: Trust(stranger) = %v, want %v", neutral, got, neutral)
		}
		if got := g.SkillRating(stranger, "echo"); got != 0 {
			t.Errorf("SkillRating(stranger) = %v, want 0", got)
		}
		if got := g.Trust(self); got != 1 {
			t.Errorf("Trust(self) = %v, want 1", got)
		}
		g.Record(self, "echo", OutcomeFailure) // ignored
		if got := g.Trust(self); got != 1 || len(g.Peers()) != 0 {
			t.Errorf("after recording about self: Trust(self) = %v, %d peers; want 1 and none", got, len(g.Peers()))
		}
	}
}

func TestTrustMovesWithOutcomes(t *testing.T) {
	// trust = 0.5 ± 0.5·w/(w+4) for w units of evidence (see doc.go).
	tests := []struct {
		name    string
		outcome Outcome
		want    float64
	}{
		{name: "a success raises trust above neutral", outcome: OutcomeSuccess, want: 0.6},
		{name: "a failure lowers trust below neutral", outcome: OutcomeFailure, want: 0.4},
		{name: "a timeout lowers trust as much as a failure", outcome: OutcomeTimeout, want: 0.4},
		{name: "a wrong result lowers trust most", outcome: OutcomeWrongResult, want: 0.25},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g, _ := newTestGraph(t)
				p := test.RandPeerIDFatal(t)
				g.Record(p, "echo", tt.outcome)
				if got := g.Trust(p); !near(got, tt.want, 1e-12) {
					t.Errorf("Trust after one %v = %v, want %v", tt.outcome, got, tt.want)
				}
				g.Recompute()
				if got := g.Trust(p); !near(got, tt.want, 1e-12) {
					t.Errorf("Trust after one %v and a recomputation = %v, want %v", tt.outcome, got, tt.want)
				}
			})
		})
	}

	t.Run("each further success raises trust and each failure lowers it", func(t *testing.T) {
		g, _ := newTestGraph(t)
		p := test.RandPeerIDFatal(t)
		last := g.Trust(p)
		for range 10 {
			g.Record(p, "", OutcomeSuccess)
			if got := g.Trust(p); got <= last || got > 1 {
				t.Fatalf("Trust went from %v to %v after a success", last, got)
			}
			last = g.Trust(p)
		}
		for range 30 {
			g.Record(p, "", OutcomeFailure)
			if got := g.Trust(p); got >= last || got < 0 {
				t.Fatalf("Trust went from %v to %v after a failure", last, got)
			}
			last = g.Trust(p)
		}
		if last >= 0.3 {
			t.Errorf("Trust after 10 successes and 30 failures = %v, want below the 0.3 minimum", last)
		}
	})
}

func TestSkillRatings(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newTestGraph(t)
		p := test.RandPeerIDFatal(t)
		for range 3 {
			g.Record(p, "hash.sha256", OutcomeSuccess)
		}
		g.Record(p, "hash.sha256", OutcomeTimeout)
		g.Record(p, "image.resize", OutcomeWrongResult)
		g.Record(p, "", OutcomeSuccess) // counts for trust only

		// (s - f) / (s + f + 2)
		for _, c := range []struct {
			skill SkillID
			want  float64
		}{{"hash.sha256", (3.0 - 1) / (3 + 1 + 2)}, {"image.resize", -4.0 / 6}, {"echo", 0}} {
			if got := g.SkillRating(p, c.skill); !near(got, c.want, 1e-12) {
				t.Errorf("SkillRating(%s) = %v, want %v", c.skill, got, c.want)
			}
		}
		for range 1000 {
			g.Record(p, "echo", OutcomeWrongResult)
		}
		if got := g.SkillRating(p, "echo"); got <= -1 || got > -0.99 {
			t.Errorf("SkillRating after 1000 wrong results = %v, want just above -1", got)
		}
		ps := g.Peers()
		if len(ps) != 1 || ps[0].Successes != 4 || ps[0].Timeouts != 1 || ps[0].WrongResults != 1001 || len(ps[0].Skills) != 3 {
			t.Errorf("Peers() = %+v, want one peer with 4 successes, 1 timeout, 1001 wrong results, 3 skills", ps)
		}
	})
}

func TestPreTrustedPeers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pre, other := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
		g, self := newTestGraph(t, WithPreTrusted(pre, pre))
		// No evidence: every row is p = (self ½, pre ½), so t = p.
		gt := g.GlobalTrust()
		if len(gt) != 2 || !near(gt[self], 0.5, 1e-9) || !near(gt[pre], 0.5, 1e-9) {
			t.Errorf("GlobalTrust() = %v, want self and the pre-trusted peer at 0.5 each", gt)
		}
		// pos = R = 2: 0.5 + 0.5·2/(2+4).
		if got := g.Trust(pre); !near(got, 0.5+0.5*2.0/6, 1e-12) {
			t.Errorf("Trust(pre-trusted) = %v, want 2/3", got)
		}
		if got := g.Trust(other); got != 0.5 {
			t.Errorf("Trust(other) = %v, want neutral", got)
		}
		// A pre-trusted peer that fails falls like any other.
		for range 3 {
			g.Record(pre, "", OutcomeFailure)
		}
		if got := g.Trust(pre); !near(got, 0.5-0.5*1.0/9, 1e-12) {
			t.Errorf("Trust(pre-trusted) after 3 failures = %v, want 0.5 - 0.5·1/9", got)
		}
		ps := g.Peers()
		if len(ps) != 1 || !ps[0].PreTrusted || ps[0].Failures != 3 || !near(ps[0].Global, 0.5, 1e-9) {
			t.Errorf("Peers() = %+v, want the pre-trusted peer with 3 failures and global 0.5", ps)
		}
	})
}

func TestOpinionsOfTrustedPeersCountAndOfStrangersDoNot(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pre := test.RandPeerIDFatal(t)
		g, self := newTestGraph(t, WithPreTrusted(pre))
		ids := peers(t, 3)
		vouched, sybil, stranger := ids[0], ids[1], ids[2]
		g.SetPeerOpinions(pre, map[peer.ID]float64{vouched: 5})
		g.SetPeerOpinions(stranger, map[peer.ID]float64{sybil: 1})
		g.Recompute()
		// t_self = t_pre = 0.05/0.145 (see below) and pre gives vouched all of
		// its trust: ĝ = 1, so vouched counts R = 2 successes, like pre.
		//   t_self = t_pre = 0.05 + 0.45 (t_self + t_vouched), t_vouched = 0.9 t_pre.
		gt := g.GlobalTrust()
		if !near(gt[self], 0.05/0.145, 1e-3) || !near(gt[vouched], 0.9*0.05/0.145, 1e-3) || gt[sybil] != 0 {
			t.Errorf("GlobalTrust() = %v, want self %.4f, vouched %.4f, sybil 0", gt, 0.05/0.145, 0.9*0.05/0.145)
		}
		if got := g.Trust(vouched); !near(got, 0.5+0.5*2.0/6, 1e-3) {
			t.Errorf("Trust(vouched for by a pre-trusted peer) = %v, want 2/3", got)
		}
		if got := g.Trust(sybil); got != 0.5 {
			t.Errorf("Trust(vouched for by a stranger) = %v, want neutral", got)
		}
		// Opinions lose weight with the half-life.
		time.Sleep(time.Hour)
		g.Recompute()
		if got := g.Trust(vouched); !near(got, 0.5+0.5*1.0/5, 1e-3) {
			t.Errorf("Trust(vouched) an hour later = %v, want 0.6 (endorsement halved)", got)
		}
		// An empty vector removes the row.
		g.SetPeerOpinions(pre, nil)
		g.Recompute()
		if got := g.Trust(vouched); got != 0.5 {
			t.Errorf("Trust(vouched) after the voucher withdrew = %v, want neutral", got)
		}
	})
}

func TestSetPeerOpinionsCleansTheVector(t *testing.T) {
	g, self := newTestGraph(t)
	ids := peers(t, 3)
	from, a, b := ids[0], ids[1], ids[2]
	g.SetPeerOpinions(from, map[peer.ID]float64{
		a: 3, b: 1, from: 10, "": 1, self: math.NaN(),
	})
	g.SetPeerOpinions(self, map[peer.ID]float64{a: 1}) // ignored: our row comes from Record
	ops := g.Snapshot().Opinions
	if len(ops) != 1 || ops[0].From != from {
		t.Fatalf("Opinions = %+v, want one row, from %s", ops, from)
	}
	if got := mapOf(ops[0].Local); len(got) != 2 || got[a] != 0.75 || got[b] != 0.25 {
		t.Errorf("row = %v, want a 0.75 and b 0.25 only", got)
	}
	big := make(map[peer.ID]float64, maxOpinionEntries+10)
	for i := range maxOpinionEntries + 10 {
		big[peer.ID(rune('a'+i%26))+peer.ID(strings.Repeat("x", i))] = float64(i + 1)
	}
	g.SetPeerOpinions(from, big)
	if got := len(g.Snapshot().Opinions[0].Local); got != maxOpinionEntries {
		t.Errorf("a row of %d entries kept %d, want %d", len(big), got, maxOpinionEntries)
	}
}

func TestTrustDecaysTowardNeutral(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g, _ := newTestGraph(t, WithDecayHalfLife(time.Hour))
		ids := peers(t, 2)
		bad, good := ids[0], ids[1]
		for range 4 {
			g.Record(bad, "echo", OutcomeFailure)
			g.Record(good, "echo", OutcomeSuccess)
		}
		if got := g.Trust(bad); !near(got, 0.25, 1e-12) {
			t.Fatalf("Trust(bad) = %v, want 0.5 - 0.5·4/8", got)
		}
		time.Sleep(time.Hour)
		g.Recompute()
		// Evidence halved: 2 failures.
		if got := g.Trust(bad); !near(got, 0.5-0.5*2.0/6, 1e-9) {
			t.Errorf("Trust(bad) one half-life later = %v, want %v", got, 0.5-0.5*2.0/6)
		}
		if got := g.Trust(good); !near(got, 0.5+0.5*2.0/6, 1e-9) {
			t.Errorf("Trust(good) one half-life later = %v, want %v", got, 0.5+0.5*2.0/6)
		}
		if got := g.SkillRating(bad, "echo"); !near(got, -2.0/4, 1e-9) {
			t.Errorf("SkillRating(bad) one half-life later = %v, want -0.5", got)
		}
		time.Sleep(12 * time.Hour)
		g.Recompute()
		// 4·2^-13 < 0.001: the peers are forgotten and back to neutral.
		if got, want := g.Trust(bad), 0.5; got != want {
			t.Errorf("Trust(bad) after 13 half-lives = %v, want %v", got, want)
		}
		if got := g.SkillRating(good, "echo"); got != 0 {
			t.Errorf("SkillRating(good) after 13 half-lives = %v, want 0", got)
		}
		if ps := g.Peers(); len(ps) != 0 {
			t.Errorf("Peers() after 13 half-lives = %+v, want none", ps)
		}
	})
}

func TestRecomputeRunsOnSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pre := test.RandPeerIDFatal(t)
		g, _ := newTestGraph(t, WithPreTrusted(pre), WithRecomputeInterval(2*time.Second))
		vouched := test.RandPeerIDFatal(t)
		if err := g.Start(t.Context()); err != nil {
			t.Fatalf("Start: %v", err)
		}
		if err := g.Start(t.Context()); err == nil {
			t.Error("a second Start succeeded")
		}
		g.SetPeerOpinions(pre, map[peer.ID]float64{vouched: 1})

		time.Sleep(2*time.Second - time.Nanosecond)
		synctest.Wait()
		if got := g.Trust(vouched); got != 0.5 {
			t.Fatalf("Trust(vouched) before the first scheduled recomputation = %v, want neutral", got)
		}
		time.Sleep(time.Nanosecond)
		synctest.Wait()
		if got := g.Trust(vouched); got <= 0.5 {
			t.Fatalf("Trust(vouched) after the scheduled recomputation = %v, want above neutral", got)
		}

		g.SetPeerOpinions(pre, nil)
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if got := g.Trust(vouched); got != 0.5 {
			t.Errorf("Trust(vouched) one interval after the voucher withdrew = %v, want neutral", got)
		}

		if err := g.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		g.SetPeerOpinions(pre, map[peer.ID]float64{vouched: 1})
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := g.Trust(vouched); got != 0.5 {
			t.Errorf("Trust(vouched) changed after Close: %v", got)
		}
		if err := g.Start(t.Context()); !errors.Is(err, ErrClosed) {
			t.Errorf("Start after Close = %v, want ErrClosed", err)
		}
		if err := g.Close(); err != nil {
			t.Errorf("second Close = %v, want nil", err)
		}
	})
}

func TestRecomputeOutlivesTheStartContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		pre := test.RandPeerIDFatal(t)
		g, _ := newTestGraph(t, WithPreTrusted(pre), WithRecomputeInterval(time.Second))
		vouched := test.RandPeerIDFatal(t)
		ctx, cancel := context.WithCancel(t.Context())
		if err := g.Start(ctx); err != nil {
			t.Fatalf("Start: %v", err)
		}
		cancel()
		g.SetPeerOpinions(pre, map[peer.ID]float64{vouched: 1})
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if got := g.Trust(vouched); got <= 0.5 {
			t.Errorf("Trust(vouched) = %v after the start context was canceled, want it recomputed above neutral", got)
		}
		if err := g.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
	})
}

func TestConcurrentUse(t *testing.T) {
	pre := test.RandPeerIDFatal(t)
	g, _ := newTestGraph(t, WithPreTrusted(pre), WithRecomputeInterval(time.Millisecond))
	if err := g.Start(t.Context()); err != nil {
		t.Fatalf("Start: %v", err)
	}
	ids := peers(t, 8)
	const workers, perWorker = 8, 400
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				p := ids[(w+i)%len(ids)]
				g.Record(p, "echo", Outcome(i%4+1))
				if v := g.Trust(p); v < 0 || v > 1 {
					t.Errorf("Trust = %v, outside [0, 1]", v)
				}
				if r := g.SkillRating(p, "echo"); r < -1 || r > 1 {
					t.Errorf("SkillRating = %v, outside [-1, 1]", r)
				}
				switch i % 100 {
				case 0:
					g.SetPeerOpinions(ids[w], map[peer.ID]float64{p: 1, pre: 1})
				case 25:
					g.Recompute()
				case 50:
					_ = g.Peers()
				case 75:
					_ = g.Snapshot()
				}
			}
		})
	}
	wg.Wait()
	var n uint64
	for _, pt := range g.Peers() {
		n += pt.Successes + pt.Failures + pt.Timeouts + pt.WrongResults
	}
	if n != workers*perWorker {
		t.Errorf("lifetime outcomes = %d, want %d", n, workers*perWorker)
	}
	var sum float64
	for _, v := range g.GlobalTrust() {
		sum += v
	}
	if !near(sum, 1, 1e-9) {
		t.Errorf("GlobalTrust sums to %v, want 1", sum)
	}
}

func TestRecordIgnoresUnknownOutcomes(t *testing.T) {
	g, _ := newTestGraph(t)
	p := test.RandPeerIDFatal(t)
	g.Record(p, "echo", Outcome(0))
	g.Record(p, "echo", Outcome(99))
	g.Record("", "echo", OutcomeSuccess)
	if got := g.Trust(p); got != 0.5 || len(g.Peers()) != 0 {
		t.Errorf("after unknown outcomes: Trust = %v, %d peers; want neutral and none", got, len(g.Peers()))
	}
	if s := Outcome(99).String(); s != "outcome(99)" {
		t.Errorf("Outcome(99).String() = %q", s)
	}
}
