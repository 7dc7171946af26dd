package reputation

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrClosed is returned by Start after Close.
var ErrClosed = errors.New("trust graph closed")

// maxOpinionEntries caps the entries kept from one peer's opinions, so that
// a peer cannot make this node hold an unbounded vector.
const maxOpinionEntries = 1024

// Graph is this node's trust graph: local evidence about peers, the
// opinions other peers shared, and the EigenTrust global trust computed from
// both. It is safe for concurrent use. Record, Trust and SkillRating take no
// lock shared between peers; Trust and SkillRating take none at all.
type Graph struct {
	self     peer.ID
	epoch    time.Time // origin of now(); evidence times are offsets from it
	cfg      config
	preSet   map[peer.ID]struct{} // self and the configured pre-trusted peers
	preOrder []peer.ID            // the same, self first, without duplicates

	peers sync.Map // peer.ID -> *peerState

	opMu     sync.RWMutex
	opinions map[peer.ID]*opinionRow

	recomputeMu sync.Mutex // serializes Recompute and Restore
	result      atomic.Pointer[trustResult]

	mu      sync.Mutex // guards the lifecycle below
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// opinionRow is one peer's normalized local trust vector, as received.
type opinionRow struct {
	to []peer.ID
	c  []float64
	at time.Time
}

// trustResult is the outcome of one EigenTrust computation. It is never
// modified once published.
type trustResult struct {
	global map[peer.ID]float64
}

// NewGraph returns a graph for the node self. It checks every option and
// returns all problems at once, each wrapping ErrInvalidOption. It computes
// the initial trust of the pre-trusted peers and starts nothing.
func NewGraph(self peer.ID, opts ...Option) (*Graph, error) {
	cfg := defaults()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(self); err != nil {
		return nil, fmt.Errorf("new trust graph: %w", err)
	}
	g := &Graph{
		self:     self,
		epoch:    time.Now(),
		cfg:      cfg,
		preSet:   map[peer.ID]struct{}{self: {}},
		preOrder: []peer.ID{self},
		opinions: make(map[peer.ID]*opinionRow),
	}
	for _, p := range cfg.preTrusted {
		if _, dup := g.preSet[p]; !dup {
			g.preSet[p] = struct{}{}
			g.preOrder = append(g.preOrder, p)
		}
	}
	g.Recompute()
	return g, nil
}

// Start recomputes global trust every recompute interval (WithRecomputeInterval)
// until Close is called. ctx bounds only the start: canceling it later does
// not stop the recomputation (the daemon starts components under a short
// start timeout). It returns ErrClosed after Close.
func (g *Graph) Start(ctx context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	switch {
	case g.closed:
		return fmt.Errorf("start trust graph: %w", ErrClosed)
	case g.started:
		return errors.New("start trust graph: already started")
	}
	g.started = true
	ctx, g.cancel = context.WithCancel(context.WithoutCancel(ctx))
	g.wg.Add(1)
	go g.loop(ctx)
	return nil
}

func (g *Graph) loop(ctx context.Context) {
	defer g.wg.Done()
	tick := time.NewTicker(g.cfg.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			g.Recompute()
		}
	}
}

// Close stops the recomputation started by Start and waits for it. The
// graph keeps answering queries and recording outcomes afterwards; it just
// no longer recomputes on its own. Close is idempotent and returns nil.
func (g *Graph) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	cancel := g.cancel
	g.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	g.wg.Wait()
	return nil
}

// Record adds the outcome of a task that p ran for skill (which may be
// empty). Records about this node itself, or with an empty peer ID or an
// unknown outcome, are ignored. The peer's trust and the skill's rating
// change at once; the peer's reputation from others changes at the next
// recomputation.
func (g *Graph) Record(p peer.ID, skill SkillID, o Outcome) { g.record(p, skill, o, 1) }

// record adds o with its evidence scaled by w (see AnswerEvidence); the
// lifetime counts count it once.
func (g *Graph) record(p peer.ID, skill SkillID, o Outcome, w float64) {
	sat, unsat, ok := o.weights()
	sat, unsat = sat*w, unsat*w
	if !ok || p == "" || p == g.self || !(w > 0) {
		g.cfg.logger.Debug("ignoring trust record", "peer", p, "skill", skill, "outcome", o)
		return
	}
	st := g.lockState(p)
	now := g.now()
	st.ev.add(now, g.cfg.halfLife, sat, unsat)
	st.counts.add(o)
	st.last = g.epoch.Add(now)
	st.publish(g.cfg.neutral)
	if skill != "" {
		sk := st.skill(skill)
		sk.ev.add(now, g.cfg.halfLife, sat, unsat)
		sk.rating.Store(math.Float64bits(sk.ev.rating()))
	}
	st.mu.Unlock()
}

// lockState returns p's live state, created if need be, with its mu held.
// now reads the monotonic clock as an offset from g.epoch: half the cost
// of time.Now, which also reads the wall clock.
func (g *Graph) now() time.Duration { return time.Since(g.epoch) }

func (g *Graph) lockState(p peer.ID) *peerState {
	for {
		v, ok := g.peers.Load(p)
		if !ok {
			v, _ = g.peers.LoadOrStore(p, newPeerState(g.cfg.neutral))
		}
		st := v.(*peerState)
		st.mu.Lock()
		if !st.dead {
			return st
		}
		st.mu.Unlock()
	}
}

// SetPeerOpinions replaces the opinions of peer from: its normalized local
// trust vector, row from of the EigenTrust matrix C. Entries that are not
// positive and finite, and from's opinion of itself, are dropped; at most
// the 1024 largest are kept; the rest is normalized to sum to 1. An empty
// result removes from's row. This node's own row comes from Record, so
// opinions from this node are ignored. They take effect at the next
// recomputation and lose weight with the decay half-life until replaced.
func (g *Graph) SetPeerOpinions(from peer.ID, local map[peer.ID]float64) {
	if from == "" || from == g.self {
		return
	}
	row := newOpinionRow(from, local, time.Now())
	g.opMu.Lock()
	defer g.opMu.Unlock()
	if len(row.to) == 0 {
		delete(g.opinions, from)
		return
	}
	g.opinions[from] = row
}

// Trust returns p's trust in [0, 1]: 1 for this node, the neutral trust for
// a peer about which nothing is known. It takes no lock. Evidence recorded
// since the last recomputation counts; its decay since then does not yet.
func (g *Graph) Trust(p peer.ID) float64 {
	if p == g.self {
		return 1
	}
	if v, ok := g.peers.Load(p); ok {
		return v.(*peerState).loadTrust()
	}
	return g.cfg.neutral
}

// SkillRating returns how well p has done at skill, in [-1, 1]: 0 with no
// evidence. It takes no lock.
func (g *Graph) SkillRating(p peer.ID, skill SkillID) float64 {
	v, ok := g.peers.Load(p)
	if !ok {
		return 0
	}
	sk, ok := v.(*peerState).skills.Load(skill)
	if !ok {
		return 0
	}
	return math.Float64frombits(sk.(*skillState).rating.Load())
}

// GlobalTrust returns a copy of the EigenTrust vector from the last
// recomputation. Its values sum to 1.
func (g *Graph) GlobalTrust() map[peer.ID]float64 {
	return maps.Clone(g.result.Load().global)
}

// PeerTrust is what the graph knows about one peer, for display.
type PeerTrust struct {
	Peer       peer.ID `json:"peer"`
	Trust      float64 `json:"trust"`  // in [0, 1], as Trust returns it
	Global     float64 `json:"global"` // the peer's share of the EigenTrust vector
	PreTrusted bool    `json:"pre_trusted"`
	// Lifetime counts of each outcome; they do not decay.
	Successes    uint64 `json:"successes"`
	Failures     uint64 `json:"failures"`
	Timeouts     uint64 `json:"timeouts"`
	WrongResults uint64 `json:"wrong_results"`
	// Satisfaction and Unsatisfaction are the decayed evidence as of now.
	Satisfaction   float64             `json:"satisfaction"`
	Unsatisfaction float64             `json:"unsatisfaction"`
	LastOutcome    time.Time           `json:"last_outcome,omitzero"`
	Skills         map[SkillID]float64 `json:"skills,omitempty"` // ratings in [-1, 1]
}

// Peers returns every peer the graph holds state about, other than this
// node, most trusted first.
func (g *Graph) Peers() []PeerTrust {
	now := g.now()
	global := g.result.Load().global
	var out []PeerTrust
	g.peers.Range(func(k, v any) bool {
		out = append(out, g.describe(k.(peer.ID), v.(*peerState), now, global))
		return true
	})
	slices.SortFunc(out, func(a, b PeerTrust) int {
		if c := cmp.Compare(b.Trust, a.Trust); c != 0 {
			return c
		}
		return cmp.Compare(a.Peer, b.Peer)
	})
	return out
}

// describe returns what st says about id, for display, with its evidence
// decayed to now.
func (g *Graph) describe(id peer.ID, st *peerState, now time.Duration, global map[peer.ID]float64) PeerTrust {
	_, pre := g.preSet[id]
	pt := PeerTrust{Peer: id, Global: global[id], PreTrusted: pre}
	st.mu.Lock()
	defer st.mu.Unlock()
	ev := st.ev
	ev.decayTo(now, g.cfg.halfLife)
	pt.Trust = st.loadTrust()
	pt.Successes, pt.Failures = st.counts.Successes, st.counts.Failures
	pt.Timeouts, pt.WrongResults = st.counts.Timeouts, st.counts.WrongResults
	pt.Satisfaction, pt.Unsatisfaction = ev.sat, ev.unsat
	pt.LastOutcome = st.last
	st.skills.Range(func(k, v any) bool {
		if pt.Skills == nil {
			pt.Skills = make(map[SkillID]float64)
		}
		pt.Skills[k.(SkillID)] = math.Float64frombits(v.(*skillState).rating.Load())
		return true
	})
	return pt
}

// newOpinionRow cleans and normalizes from's opinions as SetPeerOpinions
// describes.
func newOpinionRow(from peer.ID, local map[peer.ID]float64, at time.Time) *opinionRow {
	row := &opinionRow{at: at}
	for to, c := range local {
		if to == from || to == "" || !(c > 0) || math.IsInf(c, 0) {
			continue
		}
		row.to = append(row.to, to)
		row.c = append(row.c, c)
	}
	if len(row.to) > maxOpinionEntries {
		idx := make([]int, len(row.to))
		for i := range idx {
			idx[i] = i
		}
		slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(row.c[b], row.c[a]) })
		to, c := make([]peer.ID, maxOpinionEntries), make([]float64, maxOpinionEntries)
		for i, j := range idx[:maxOpinionEntries] {
			to[i], c[i] = row.to[j], row.c[j]
		}
		row.to, row.c = to, c
	}
	// Scale by the largest entry first, so that the sum cannot overflow.
	var top, sum float64
	for _, c := range row.c {
		top = max(top, c)
	}
	for i := range row.c {
		row.c[i] /= top
		sum += row.c[i]
	}
	for i := range row.c {
		row.c[i] /= sum
	}
	return row
}
