package reputation

import (
	"testing"
	"testing/synctest"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
)

func TestEigenTrustConvergesOnAHandCheckedGraph(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		// Three nodes: S (this node, the only pre-trusted one, so p = (1, 0, 0)),
		// A and B, with damping a = 0.1.
		//   S's row from evidence: A 3 successes, B 1 success -> c_SA = 3/4, c_SB = 1/4.
		//   A's opinions: S 1, B 1                            -> c_AS = 1/2, c_AB = 1/2.
		//   B shared nothing, so its row is p                 -> c_BS = 1.
		// The fixed point of t = 0.9 Cᵀ t + 0.1 p:
		//   t_A = 0.9 · 3/4 t_S                   = 0.675 t_S
		//   t_B = 0.9 (1/4 t_S + 1/2 t_A)         = 0.225 t_S + 0.30375 t_S = 0.52875 t_S
		//   t_S = 0.1 + 0.9 (1/2 t_A + t_B)       = 0.1 + 0.9 (0.3375 + 0.52875) t_S
		//       = 0.1 + 0.779625 t_S              -> t_S = 0.1 / 0.220375 = 800/1763
		// so t = (800, 540, 423) / 1763 = (0.45377, 0.30630, 0.23993), which sums to 1.
		// From t_0 = p the L1 step falls below 0.001 at iteration 14.
		g, self := newTestGraph(t)
		a, b := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
		for range 3 {
			g.Record(a, "echo", OutcomeSuccess)
		}
		g.Record(b, "echo", OutcomeSuccess)
		g.SetPeerOpinions(a, map[peer.ID]float64{self: 1, b: 1})

		iterations, converged := g.Recompute()
		if !converged || iterations > 20 {
			t.Errorf("Recompute() = %d iterations, converged %v; want convergence within 20", iterations, converged)
		}
		if iterations != 14 {
			t.Errorf("Recompute() ran %d iterations, want 14", iterations)
		}
		got := g.GlobalTrust()
		want := map[peer.ID]float64{self: 800.0 / 1763, a: 540.0 / 1763, b: 423.0 / 1763}
		if len(got) != len(want) {
			t.Errorf("GlobalTrust() has %d peers, want %d: %v", len(got), len(want), got)
		}
		var sum float64
		for p, w := range want {
			if !near(got[p], w, 1e-3) {
				t.Errorf("t[%s] = %.5f, want %.5f within 1e-3", p.ShortString(), got[p], w)
			}
			sum += got[p]
		}
		if !near(sum, 1, 1e-9) {
			t.Errorf("GlobalTrust sums to %v, want 1", sum)
		}

		// B gets A's endorsement: ι_B = t_A · 1/2, ĝ_B = ι_B / t_S = 0.3375,
		// so pos = 1 + 2·0.3375 and trust = 0.5 + 0.5 (pos) / (pos + 4).
		pos := 1 + 2*(0.5*got[a]/got[self])
		if tb := g.Trust(b); !near(tb, 0.5+0.5*pos/(pos+4), 1e-9) {
			t.Errorf("Trust(B) = %v, want %v", tb, 0.5+0.5*pos/(pos+4))
		}
	})
}

func TestEigenTrustStopsAtTheIterationCap(t *testing.T) {
	g, _ := newTestGraph(t, WithMaxIterations(3), WithEpsilon(1e-12))
	a := test.RandPeerIDFatal(t)
	g.Record(a, "", OutcomeSuccess)
	iterations, converged := g.Recompute()
	if iterations != 3 || converged {
		t.Errorf("Recompute() = %d, %v; want 3 iterations, not converged", iterations, converged)
	}
	var sum float64
	for _, v := range g.GlobalTrust() {
		sum += v
	}
	if !near(sum, 1, 1e-12) {
		t.Errorf("unconverged vector sums to %v, want 1", sum)
	}
}

func TestEigenTrustMatrixFallsBackToThePreTrustedDistribution(t *testing.T) {
	// Only failures: S's row has no positive entry, so it is p, and with no
	// other rows all trust stays with the pre-trusted peers.
	pre := test.RandPeerIDFatal(t)
	g, self := newTestGraph(t, WithPreTrusted(pre))
	a := test.RandPeerIDFatal(t)
	g.Record(a, "", OutcomeFailure)
	if _, converged := g.Recompute(); !converged {
		t.Fatal("Recompute did not converge")
	}
	got := g.GlobalTrust()
	if !near(got[self], 0.5, 1e-9) || !near(got[pre], 0.5, 1e-9) || got[a] != 0 {
		t.Errorf("GlobalTrust() = %v, want self and pre at 0.5, the failing peer at 0", got)
	}
}
