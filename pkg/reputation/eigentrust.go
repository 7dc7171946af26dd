package reputation

import (
	"math"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// cell is one nonzero entry c_ij of a row of C: j and its weight.
type cell struct {
	j int
	c float64
}

// trustMatrix is C in sparse rows over an index of peers. An empty row
// stands for the pre-trusted distribution p.
type trustMatrix struct {
	ids  []peer.ID
	idx  map[peer.ID]int
	rows [][]cell
	// fresh[i] is the decay weight of row i's opinions (self's row: 1).
	fresh []float64
	p     []float64
}

func (m *trustMatrix) index(id peer.ID) int {
	if i, ok := m.idx[id]; ok {
		return i
	}
	i := len(m.ids)
	m.idx[id] = i
	m.ids = append(m.ids, id)
	m.rows = append(m.rows, nil)
	m.fresh = append(m.fresh, 0)
	return i
}

// Recompute runs EigenTrust now, from this node's decayed evidence and the
// opinions other peers shared, publishes the new global vector and every
// peer's trust, and reports how many iterations it ran and whether it
// converged (if not, it stopped at the maximum and published the last
// vector). Calls are serialized. It also forgets peers about which nothing
// is left: no evidence worth 0.001, no skill rating and no reputation.
func (g *Graph) Recompute() (iterations int, converged bool) {
	g.recomputeMu.Lock()
	defer g.recomputeMu.Unlock()
	return g.recompute()
}

// recompute is Recompute with g.recomputeMu held.
func (g *Graph) recompute() (iterations int, converged bool) {
	start := time.Now()
	now := start.Sub(g.epoch)
	m, states := g.buildMatrix(now)
	t, iterations, converged := eigenTrust(m, g.cfg.damping, g.cfg.epsilon, g.cfg.maxIter)
	global := make(map[peer.ID]float64, len(m.ids))
	for i, id := range m.ids {
		global[id] = t[i]
	}
	g.result.Store(&trustResult{global: global})
	g.publish(now, m, t, states)
	g.cfg.logger.Debug("recomputed global trust", "peers", len(m.ids), "iterations", iterations,
		"converged", converged, "took", time.Since(start))
	return iterations, converged
}

// buildMatrix collects the rows of C: this node's from its decayed local
// trust s_j = max(sat_j - unsat_j, 0), the others' from their opinions. It
// returns the states it read, by index, for publish.
func (g *Graph) buildMatrix(now time.Duration) (*trustMatrix, map[int]*peerState) {
	m := &trustMatrix{idx: make(map[peer.ID]int)}
	for _, p := range g.preOrder {
		m.index(p)
	}
	states := make(map[int]*peerState)
	var own []cell
	var sum float64
	g.peers.Range(func(k, v any) bool {
		st := v.(*peerState)
		st.mu.Lock()
		if !st.dead {
			st.ev.decayTo(now, g.cfg.halfLife)
			j := m.index(k.(peer.ID))
			states[j] = st
			if s := st.ev.sat - st.ev.unsat; s > 0 {
				own = append(own, cell{j, s})
				sum += s
			}
		}
		st.mu.Unlock()
		return true
	})
	for i := range own {
		own[i].c /= sum
	}
	self := m.idx[g.self]
	m.rows[self], m.fresh[self] = own, 1

	g.opMu.RLock()
	for from, row := range g.opinions {
		i := m.index(from)
		cells := make([]cell, len(row.to))
		for k, to := range row.to {
			cells[k] = cell{m.index(to), row.c[k]}
		}
		m.rows[i] = cells
		m.fresh[i] = decayFactor(g.epoch.Add(now).Sub(row.at), g.cfg.halfLife)
	}
	g.opMu.RUnlock()

	m.p = make([]float64, len(m.ids))
	for _, p := range g.preOrder {
		m.p[m.idx[p]] = 1 / float64(len(g.preOrder))
	}
	return m, states
}

func decayFactor(dt, halfLife time.Duration) float64 {
	if dt <= 0 {
		return 1
	}
	return math.Exp2(-float64(dt) / float64(halfLife))
}

// eigenTrust iterates t_{k+1} = (1-a) C^T t_k + a p from t_0 = p until
// ||t_{k+1} - t_k||_1 < eps or maxIter iterations. A row with no entries is
// taken to be p (Kamvar et al., section 4.5), so t keeps summing to 1.
func eigenTrust(m *trustMatrix, a, eps float64, maxIter int) (t []float64, iterations int, converged bool) {
	n := len(m.ids)
	t = append([]float64(nil), m.p...)
	next := make([]float64, n)
	for k := 1; k <= maxIter; k++ {
		clear(next)
		var dangling float64
		for i, row := range m.rows {
			ti := t[i]
			switch {
			case ti == 0:
			case len(row) == 0:
				dangling += ti
			default:
				for _, e := range row {
					next[e.j] += ti * e.c
				}
			}
		}
		var diff float64
		for j := range next {
			v := (1-a)*(next[j]+dangling*m.p[j]) + a*m.p[j]
			diff += math.Abs(v - t[j])
			next[j] = v
		}
		t, next = next, t
		if diff < eps {
			return t, k, true
		}
	}
	return t, maxIter, false
}

// publish turns the global vector into each peer's reputation evidence and
// trust (see doc.go), refreshes decayed trust and skill ratings, and forgets
// peers with nothing left.
//
// A peer j's endorsement is ι_j = Σ fresh_i t_i c_ij over the rows of other
// peers i (not this node's, whose evidence counts directly, and not j's
// own); ĝ_j = min(1, ι_j / t_self) compares it with this node's own weight
// in the network. The peer's reputation evidence is R·ĝ_j, plus R if it is
// pre-trusted.
func (g *Graph) publish(now time.Duration, m *trustMatrix, t []float64, states map[int]*peerState) {
	self := m.idx[g.self]
	endorse := make([]float64, len(m.ids))
	for i, row := range m.rows {
		if i == self || len(row) == 0 {
			continue
		}
		w := m.fresh[i] * t[i]
		for _, e := range row {
			endorse[e.j] += w * e.c
		}
	}
	tSelf := t[self]
	for j, id := range m.ids {
		if j == self {
			continue
		}
		rep := 0.0
		if _, pre := g.preSet[id]; pre {
			rep += reputationWeight
		}
		if tSelf > 0 {
			rep += reputationWeight * min(1, endorse[j]/tSelf)
		}
		st := states[j]
		if st == nil {
			if rep < negligible {
				continue // nothing known: Trust answers neutral without a state
			}
			st = g.lockState(id)
		} else {
			st.mu.Lock()
			if st.dead {
				st.mu.Unlock()
				continue
			}
		}
		st.reputation = rep
		if st.refresh(now, &g.cfg) {
			st.dead = true
			g.peers.CompareAndDelete(id, st)
		}
		st.mu.Unlock()
	}
}
