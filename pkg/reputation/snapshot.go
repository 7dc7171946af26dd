package reputation

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// SnapshotVersion is the Snapshot format this package writes and reads.
const SnapshotVersion = 1

// ErrBadSnapshot is wrapped by every error Restore returns.
var ErrBadSnapshot = errors.New("bad trust snapshot")

// Snapshot is a graph's evidence and opinions at one moment, for
// persistence. It encodes to and from JSON with encoding/json.
type Snapshot struct {
	Version  int             `json:"version"`
	Self     peer.ID         `json:"self"`
	TakenAt  time.Time       `json:"taken_at"`
	Peers    []PeerRecord    `json:"peers,omitempty"`
	Opinions []OpinionRecord `json:"opinions,omitempty"`
	// Global is the EigenTrust vector when the snapshot was taken. It is
	// informational: Restore recomputes it.
	Global []PeerValue `json:"global,omitempty"`
}

// PeerValue is one entry of a trust vector. Snapshots hold vectors as
// slices sorted by peer, not maps: encoding/json writes a peer.ID map key as
// raw bytes but reads it as base58, so maps would not survive a round trip.
type PeerValue struct {
	Peer  peer.ID `json:"peer"`
	Value float64 `json:"value"`
}

func vectorOf(m map[peer.ID]float64) []PeerValue {
	v := make([]PeerValue, 0, len(m))
	for p, x := range m {
		v = append(v, PeerValue{p, x})
	}
	slices.SortFunc(v, func(a, b PeerValue) int { return cmp.Compare(a.Peer, b.Peer) })
	return v
}

func mapOf(v []PeerValue) map[peer.ID]float64 {
	m := make(map[peer.ID]float64, len(v))
	for _, e := range v {
		m[e.Peer] += e.Value
	}
	return m
}

// PeerRecord is the evidence about one peer, decayed to the snapshot's
// TakenAt.
type PeerRecord struct {
	Peer           peer.ID       `json:"peer"`
	Satisfaction   float64       `json:"satisfaction"`
	Unsatisfaction float64       `json:"unsatisfaction"`
	Successes      uint64        `json:"successes"`
	Failures       uint64        `json:"failures"`
	Timeouts       uint64        `json:"timeouts"`
	WrongResults   uint64        `json:"wrong_results"`
	LastOutcome    time.Time     `json:"last_outcome,omitzero"`
	Skills         []SkillRecord `json:"skills,omitempty"`
}

// SkillRecord is the evidence about one peer's skill, decayed to the
// snapshot's TakenAt.
type SkillRecord struct {
	Skill          SkillID `json:"skill"`
	Satisfaction   float64 `json:"satisfaction"`
	Unsatisfaction float64 `json:"unsatisfaction"`
}

// OpinionRecord is one peer's opinions as SetPeerOpinions last received
// them, and when.
type OpinionRecord struct {
	From       peer.ID     `json:"from"`
	ReceivedAt time.Time   `json:"received_at"`
	Local      []PeerValue `json:"local"`
}

// Snapshot returns the graph's evidence and opinions. It locks one peer at a
// time, so outcomes recorded meanwhile may or may not be included.
func (g *Graph) Snapshot() Snapshot {
	now := g.now()
	s := Snapshot{
		Version: SnapshotVersion,
		Self:    g.self,
		TakenAt: g.epoch.Add(now),
		Global:  vectorOf(g.result.Load().global),
	}
	g.peers.Range(func(k, v any) bool {
		st := v.(*peerState)
		st.mu.Lock()
		defer st.mu.Unlock()
		if st.dead {
			return true
		}
		ev := st.ev
		ev.decayTo(now, g.cfg.halfLife)
		r := PeerRecord{
			Peer:           k.(peer.ID),
			Satisfaction:   ev.sat,
			Unsatisfaction: ev.unsat,
			Successes:      st.counts.Successes,
			Failures:       st.counts.Failures,
			Timeouts:       st.counts.Timeouts,
			WrongResults:   st.counts.WrongResults,
			LastOutcome:    st.last,
		}
		st.skills.Range(func(k, v any) bool {
			sev := v.(*skillState).ev
			sev.decayTo(now, g.cfg.halfLife)
			r.Skills = append(r.Skills, SkillRecord{Skill: k.(SkillID), Satisfaction: sev.sat, Unsatisfaction: sev.unsat})
			return true
		})
		slices.SortFunc(r.Skills, func(a, b SkillRecord) int { return cmp.Compare(a.Skill, b.Skill) })
		s.Peers = append(s.Peers, r)
		return true
	})
	slices.SortFunc(s.Peers, func(a, b PeerRecord) int { return cmp.Compare(a.Peer, b.Peer) })

	g.opMu.RLock()
	for from, row := range g.opinions {
		local := make(map[peer.ID]float64, len(row.to))
		for i, to := range row.to {
			local[to] = row.c[i]
		}
		s.Opinions = append(s.Opinions, OpinionRecord{From: from, ReceivedAt: row.at, Local: vectorOf(local)})
	}
	g.opMu.RUnlock()
	slices.SortFunc(s.Opinions, func(a, b OpinionRecord) int { return cmp.Compare(a.From, b.From) })
	return s
}

// Restore replaces the graph's evidence and opinions with s, then
// recomputes global trust. Evidence keeps decaying from s.TakenAt, so a
// snapshot restored a day later counts for less. If s is invalid, Restore
// returns every problem, wrapping ErrBadSnapshot, and changes nothing. It is
// meant for startup: outcomes recorded while it runs may be lost.
func (g *Graph) Restore(s Snapshot) error {
	if err := g.checkSnapshot(&s); err != nil {
		return fmt.Errorf("restore trust snapshot: %w", err)
	}
	now := time.Now()
	at := earliest(s.TakenAt, now).Sub(g.epoch) // the writer's clock may have been ahead
	g.recomputeMu.Lock()
	defer g.recomputeMu.Unlock()

	g.peers.Range(func(k, v any) bool {
		st := v.(*peerState)
		st.mu.Lock()
		st.dead = true
		g.peers.CompareAndDelete(k, st)
		st.mu.Unlock()
		return true
	})
	for _, r := range s.Peers {
		st := newPeerState(g.cfg.neutral)
		st.ev = evidence{sat: r.Satisfaction, unsat: r.Unsatisfaction, at: at}
		st.counts = outcomeCounts{Successes: r.Successes, Failures: r.Failures, Timeouts: r.Timeouts, WrongResults: r.WrongResults}
		st.last = r.LastOutcome
		for _, sr := range r.Skills {
			sk := &skillState{ev: evidence{sat: sr.Satisfaction, unsat: sr.Unsatisfaction, at: at}}
			sk.rating.Store(math.Float64bits(sk.ev.rating()))
			st.skills.Store(sr.Skill, sk)
		}
		st.publish(g.cfg.neutral)
		g.peers.Store(r.Peer, st)
	}

	opinions := make(map[peer.ID]*opinionRow, len(s.Opinions))
	for _, o := range s.Opinions {
		if row := newOpinionRow(o.From, mapOf(o.Local), earliest(o.ReceivedAt, now)); len(row.to) > 0 {
			opinions[o.From] = row
		}
	}
	g.opMu.Lock()
	g.opinions = opinions
	g.opMu.Unlock()

	g.recompute()
	return nil
}

// checkSnapshot returns every problem with s, joined, each wrapping
// ErrBadSnapshot.
func (g *Graph) checkSnapshot(s *Snapshot) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, ErrBadSnapshot)...))
	}
	if s.Version != SnapshotVersion {
		bad("version %d, want %d", s.Version, SnapshotVersion)
	}
	if s.Self != g.self {
		bad("taken by node %s, not this node (%s)", s.Self, g.self)
	}
	seen := make(map[peer.ID]bool, len(s.Peers))
	for i, r := range s.Peers {
		switch {
		case r.Peer == "" || r.Peer == g.self:
			bad("peer record %d is about %q, which is empty or this node", i, r.Peer)
		case seen[r.Peer]:
			bad("peer %s appears twice", r.Peer)
		}
		seen[r.Peer] = true
		if !validWeight(r.Satisfaction) || !validWeight(r.Unsatisfaction) {
			bad("peer %s has evidence %v/%v; want finite and not negative", r.Peer, r.Satisfaction, r.Unsatisfaction)
		}
		for _, sr := range r.Skills {
			if sr.Skill == "" || !validWeight(sr.Satisfaction) || !validWeight(sr.Unsatisfaction) {
				bad("peer %s has skill %q with evidence %v/%v; want a name and finite, not negative evidence",
					r.Peer, sr.Skill, sr.Satisfaction, sr.Unsatisfaction)
			}
		}
	}
	for i, o := range s.Opinions {
		if o.From == "" {
			bad("opinion record %d has no sender", i)
		}
	}
	return errors.Join(errs...)
}

func validWeight(v float64) bool { return v >= 0 && !math.IsInf(v, 1) }

func earliest(a, b time.Time) time.Time {
	if a.Before(b) {
		return a
	}
	return b
}
