// Package reputation keeps what this node knows about how far it can trust
// its peers: local trust learned from task outcomes, skill ratings per
// (peer, skill), and EigenTrust-style global trust (Kamvar, Schlosser and
// Garcia-Molina, 2003). It is a leaf: it imports nothing from cortexd.
//
// # Evidence
//
// Graph.Record adds evidence about a peer: a success adds 1 to its
// satisfactory weight sat; a failure or a timeout adds 1 to its
// unsatisfactory weight unsat; a wrong result adds 4 to unsat, since honest
// peers fail and run late now and then but do not return wrong output.
// Evidence decays: it loses half its weight every half-life (default one
// hour), so without new evidence everything drifts back to neutral. Lifetime
// counts of each outcome are kept as well, for display; they do not decay.
//
// For a deterministic skill whose answers are spot-checked at some rate,
// AnswerEvidence is the rule (Graph.RecordAnswer applies it): an unchecked
// answer is no evidence, an answer a check agreed with weighs 1/rate
// successes (at most 100), one it found wrong is a wrong result.
//
// # Global trust
//
// Recompute (run every two seconds by Start's goroutine, and on demand) is
// EigenTrust. This node's row of the matrix C is its normalized local trust
// c_self,j = s_j / Σ_k s_k with s_j = max(sat_j - unsat_j, 0). Another peer
// i's row is the normalized vector it shared, given to SetPeerOpinions (fed
// by the grid's trust opinion topic, from each peer's LocalOpinions). A row
// with no positive entry is the pre-trusted distribution p, uniform over
// the pre-trusted peers, of which this node is always one.
// From t_0 = p the graph iterates
//
//	t_{k+1} = (1 - a) Cᵀ t_k + a p        (a = 0.1)
//
// until ||t_{k+1} - t_k||₁ < 0.001 or 20 iterations. GlobalTrust returns
// t, which sums to 1.
//
// # Trust score
//
// EigenTrust values are shares of the network's trust, relative to every
// other peer: they cannot say on their own whether a peer is good enough
// (more good peers would make each one look worse). The router needs an
// absolute score in [0, 1] that it can hold against a minimum trust (0.3),
// so the graph blends evidence into a neutral prior:
//
//	pos = sat_j + R·[j pre-trusted] + R·ĝ_j         (R = 2)
//	neg = unsat_j
//	x   = (pos - neg) / (pos + neg + K)              (K = 4), in (-1, 1)
//	trust = n + x·(1 - n)  if x ≥ 0
//	trust = n + x·n        if x < 0                  (n = neutral, 0.5)
//
// With no evidence x = 0 and trust is neutral; each success raises it, each
// failure, timeout and (most) wrong result lowers it, and as evidence decays
// it returns to neutral. K is the evidence needed to move trust halfway to 0
// or 1: one success gives 0.6, one failure 0.4, one wrong result 0.25, and
// three failures take a peer below 0.3.
//
// ĝ_j in [0, 1] is how strongly the rest of the network vouches for j, as
// EigenTrust weighs it: the endorsement ι_j = Σ_i f_i t_i c_ij over the
// other peers' rows (not this node's own row, whose evidence already counts
// in sat and unsat; f_i halves every half-life since i's opinions arrived),
// compared with this node's own weight: ĝ_j = min(1, ι_j / t_self). A peer
// that peers as trusted as this node vouch for fully counts as R successes;
// one vouched for only by peers nobody trusts gains nothing, which is what
// makes EigenTrust resist sybils. A pre-trusted peer starts at R successes
// (0.67 with the defaults) and falls like any other when it fails.
//
// Trust of this node itself is 1. Trust is published on every Record and
// every recomputation and read without a lock.
//
// # Skill ratings
//
// Each (peer, skill) pair has its own decayed sat and unsat, weighted as
// above, and the rating (sat - unsat) / (sat + unsat + 2) in (-1, 1): 0
// with no evidence, 0.33 after one success, -0.67 after one wrong result.
package reputation
