package reputation

import (
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is how a task delegated to a peer ended.
type Outcome int

// Outcomes. A timeout and a wrong result both count as unsatisfactory; a
// wrong result weighs wrongResultWeight times as much as a failure, because
// an honest peer fails or runs late now and then but does not return wrong
// output.
const (
	OutcomeSuccess Outcome = iota + 1
	OutcomeFailure
	OutcomeTimeout
	OutcomeWrongResult
)

var outcomeNames = [...]string{"", "success", "failure", "timeout", "wrong result"}

// String returns "success", "failure", "timeout" or "wrong result".
func (o Outcome) String() string {
	if o > 0 && int(o) < len(outcomeNames) {
		return outcomeNames[o]
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Weights and priors of the trust and skill-rating formulas (see doc.go).
const (
	wrongResultWeight = 4.0 // unsatisfactory evidence added by one wrong result
	trustPrior        = 4.0 // K: evidence needed to move trust halfway to 0 or 1
	reputationWeight  = 2.0 // R: evidence that being pre-trusted, or fully vouched for, is worth
	skillPrior        = 2.0 // k in (s - f) / (s + f + k)
	negligible        = 1e-3
)

// weights returns the satisfactory and unsatisfactory evidence o adds, and
// false for an unknown outcome.
func (o Outcome) weights() (sat, unsat float64, ok bool) {
	switch o {
	case OutcomeSuccess:
		return 1, 0, true
	case OutcomeFailure, OutcomeTimeout:
		return 0, 1, true
	case OutcomeWrongResult:
		return 0, wrongResultWeight, true
	}
	return 0, 0, false
}

// evidence is decayed satisfactory and unsatisfactory weight as of at, a
// reading of the graph's monotonic clock (see Graph.now).
type evidence struct {
	sat, unsat float64
	at         time.Duration
}

// decayTo ages the evidence to now: each half-life halves it.
func (e *evidence) decayTo(now, halfLife time.Duration) {
	dt := now - e.at
	switch {
	case e.sat == 0 && e.unsat == 0:
		e.at = now
	case dt > 0:
		f := math.Exp2(-float64(dt) / float64(halfLife))
		e.sat *= f
		e.unsat *= f
		e.at = now
	}
}

// add decays the evidence and adds to it. To keep Exp2 off the hot path it
// does not decay when less than halfLife/4096 has passed: the new evidence
// is then taken to be as old as the rest, which undervalues it by at most
// 0.02%, and the skipped time is still decayed later, as at stays put.
func (e *evidence) add(now, halfLife time.Duration, sat, unsat float64) {
	if now-e.at >= halfLife>>12 || e.sat == 0 && e.unsat == 0 {
		e.decayTo(now, halfLife)
	}
	e.sat += sat
	e.unsat += unsat
}

func (e *evidence) negligible() bool { return e.sat+e.unsat < negligible }

// rating returns (s - f) / (s + f + k), in (-1, 1); 0 with no evidence.
func (e *evidence) rating() float64 {
	return (e.sat - e.unsat) / (e.sat + e.unsat + skillPrior)
}

// trustScore maps a peer's direct evidence and its reputation evidence (see
// doc.go) to [0, 1], with neutral for no evidence at all.
func trustScore(neutral float64, e *evidence, reputation float64) float64 {
	pos, neg := e.sat+reputation, e.unsat
	x := (pos - neg) / (pos + neg + trustPrior)
	if x >= 0 {
		return neutral + x*(1-neutral)
	}
	return neutral + x*neutral
}

// peerState is what this node knows about one peer. trust and each skill's
// rating are published atomically for lock-free reads; everything else is
// guarded by mu. A state removed from the graph's map is marked dead under
// mu, and a writer that finds it dead looks the peer up again.
type peerState struct {
	trust  atomic.Uint64 // float64 bits
	skills sync.Map      // SkillID -> *skillState; stored and deleted under mu

	mu         sync.Mutex
	ev         evidence
	reputation float64 // R·[pre-trusted] + R·ĝ, as of the last recomputation
	counts     outcomeCounts
	last       time.Time // last outcome recorded
	dead       bool
}

// outcomeCounts are lifetime counts, which do not decay.
type outcomeCounts struct {
	Successes, Failures, Timeouts, WrongResults uint64
}

func (c *outcomeCounts) add(o Outcome) {
	switch o {
	case OutcomeSuccess:
		c.Successes++
	case OutcomeFailure:
		c.Failures++
	case OutcomeTimeout:
		c.Timeouts++
	case OutcomeWrongResult:
		c.WrongResults++
	}
}

type skillState struct {
	rating atomic.Uint64 // float64 bits
	ev     evidence      // guarded by the peer's mu
}

func newPeerState(neutral float64) *peerState {
	st := &peerState{}
	st.trust.Store(math.Float64bits(neutral))
	return st
}

func (st *peerState) loadTrust() float64 { return math.Float64frombits(st.trust.Load()) }

// publish stores the peer's trust from its evidence. st.mu must be held.
func (st *peerState) publish(neutral float64) {
	st.trust.Store(math.Float64bits(trustScore(neutral, &st.ev, st.reputation)))
}

// skill returns the state for id, creating it. st.mu must be held.
func (st *peerState) skill(id SkillID) *skillState {
	if v, ok := st.skills.Load(id); ok {
		return v.(*skillState)
	}
	sk := &skillState{}
	st.skills.Store(id, sk)
	return sk
}

// refresh ages the peer's evidence and every skill's to now, republishes
// trust and ratings, and drops skills whose evidence has decayed away. It
// reports whether nothing worth keeping is left. st.mu must be held.
func (st *peerState) refresh(now time.Duration, cfg *config) (empty bool) {
	st.ev.decayTo(now, cfg.halfLife)
	st.publish(cfg.neutral)
	empty = st.ev.negligible() && st.reputation < negligible
	st.skills.Range(func(k, v any) bool {
		sk := v.(*skillState)
		sk.ev.decayTo(now, cfg.halfLife)
		if sk.ev.negligible() {
			st.skills.Delete(k)
			return true
		}
		sk.rating.Store(math.Float64bits(sk.ev.rating()))
		empty = false
		return true
	})
	return empty
}
