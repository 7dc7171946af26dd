package skill

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Directory lists the remote peers that offer a skill, as the capability
// table knows them. The network layer implements it; grid.Node does. The
// router treats a Directory that returns this node among the providers as
// if it had not: the local node is always considered through the Registry.
type Directory interface {
	Providers(skill reputation.SkillID) []grid.Provider
}

// NotProviderDirectory is a Directory that can be told a listed peer does
// not speak the task protocol (a task stream to it failed to negotiate
// it), so that it stops listing it for a while: *grid.Node is one.
type NotProviderDirectory interface {
	NotProvider(p peer.ID)
}

var _ NotProviderDirectory = (*grid.Node)(nil)

// notProvider tells the Directory, if it can be told, that p does not
// speak the task protocol.
func (r *Router) notProvider(p peer.ID) {
	if d, ok := r.dir.(NotProviderDirectory); ok {
		d.NotProvider(p)
	}
}

// FetcherDirectory is a Directory that also lists the peers that run a
// wasm skill they lack by fetching its module (capability gossip's
// fetches_modules): *grid.Node is one. ModuleFetchers returns nil for a
// skill that is not a wasm skill. The router counts such peers as
// candidates for the skill, at any version, beside its providers.
type FetcherDirectory interface {
	ModuleFetchers(skill reputation.SkillID) []grid.Provider
}

var _ FetcherDirectory = (*grid.Node)(nil)

// ProviderAppender is a Directory that appends a skill's providers to a
// slice, as Providers would return them: *grid.Node is one. The router
// then picks a peer for a task with a slice of its own, reused.
type ProviderAppender interface {
	AppendProviders(dst []grid.Provider, skill reputation.SkillID) []grid.Provider
}

var _ ProviderAppender = (*grid.Node)(nil)

// maxPooledProviders is the largest provider slice put back in provPool.
const maxPooledProviders = 256

// provPool holds the router's provider slices (see ProviderAppender).
var provPool = sync.Pool{New: func() any {
	s := make([]grid.Provider, 0, 8)
	return &s
}}

// TrustSource says how far this node trusts a peer, overall in [0, 1] and
// for one skill in [-1, 1]. *reputation.Graph implements it.
type TrustSource interface {
	Trust(p peer.ID) float64
	SkillRating(p peer.ID, s reputation.SkillID) float64
}

// PerfSource reports how a node has performed recently. *grid.MetricsTracker
// implements it.
type PerfSource interface {
	Node(p peer.ID) (grid.NodeMetrics, bool)
}

// PeerGate says whether a peer may be given a task now; the coordinator's
// per-peer circuit breakers implement it.
type PeerGate interface {
	Allow(p peer.ID) bool
}

var (
	_ PeerGate    = (*breakerSet)(nil)
	_ TrustSource = (*reputation.Graph)(nil)
	_ PerfSource  = (*grid.MetricsTracker)(nil)
)

// Weights are the weights of the five terms of a candidate's score. They
// must be non-negative with a positive sum; they need not sum to 1, since
// the score is divided by their sum.
type Weights struct {
	Trust   float64 // the node's global trust in [0, 1]
	Skill   float64 // its rating for the skill, mapped from [-1, 1] to [0, 1]
	Success float64 // its recent success rate in [0, 1]
	Latency float64 // 1 / (1 + recent latency / latency reference)
	Load    float64 // 1 - min(utilization, 1)
}

// DefaultWeights returns the weights the router uses unless WithWeights says
// otherwise: trust 0.35, skill rating 0.15, recent success 0.2, latency 0.1,
// load 0.2.
func DefaultWeights() Weights {
	return Weights{Trust: 0.35, Skill: 0.15, Success: 0.2, Latency: 0.1, Load: 0.2}
}

func (w Weights) sum() float64 { return w.Trust + w.Skill + w.Success + w.Latency + w.Load }

func (w Weights) validate() error {
	for _, v := range [...]float64{w.Trust, w.Skill, w.Success, w.Latency, w.Load} {
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return fmt.Errorf("weights %+v: each must be a finite number >= 0", w)
		}
	}
	if w.sum() <= 0 {
		return fmt.Errorf("weights %+v: at least one must be > 0", w)
	}
	return nil
}

// Candidate is a node that may run a task, with its score.
type Candidate struct {
	Peer peer.ID
	// Local is true for this node.
	Local bool
	// Connected is true for this node and for peers with a live connection.
	Connected bool
	// Score is the weighted score in [0, 1]; see Router.
	Score float64
	// Trust is the node's trust in [0, 1]; 1 for this node.
	Trust float64
	// Version is the version of the skill the node offers.
	Version string
	// Parts are the parts of Score before their weights.
	Parts ScoreParts
	// Verified is true for this node and for peers that identify showed
	// speak the task protocol; a candidate (false) is proven by the task
	// stream, and scores unverifiedPenalty less.
	Verified bool

	util   float64  // the utilization the score used, before its cap at 1
	ranked *Ranking // what the coordinator's pick ranked, for the chosen one
}

// ScoreParts are the parts of a Candidate's Score, each in [0, 1]: Score
// is their sum weighted by the Weights, over the weights' sum.
type ScoreParts struct {
	Trust   float64 // the node's trust
	Skill   float64 // its skill rating, mapped from [-1, 1]
	Success float64 // its recent success rate (0.5 with no history)
	Latency float64 // 1 / (1 + latency / reference) (0.5 with no history)
	Load    float64 // 1 - utilization
}

// Ranking is what the router ranked when the coordinator chose the node of
// an attempt: the best candidates (at most WithRankingSize), best first,
// scored as the choice used them, and how many it considered. A Ranking
// is never modified once an Event carries it.
type Ranking struct {
	Attempt    int // the attempt it chose for, 1 for the first
	Candidates []Candidate
	Considered int // candidates scored, Candidates and the ones left out

	buf [DefaultRankingSize]Candidate // Candidates' array, up to that size: one allocation
}

// newRanking returns a Ranking for the best keep candidates of n.
func newRanking(keep, n int) *Ranking {
	rk := &Ranking{}
	if c := min(keep, n); c <= len(rk.buf) {
		rk.Candidates = rk.buf[:0:c]
	} else {
		rk.Candidates = make([]Candidate, 0, c)
	}
	return rk
}

// add inserts c into r's best keep candidates.
func (r *Ranking) add(c Candidate, keep int) {
	r.Considered++
	i, _ := slices.BinarySearchFunc(r.Candidates, c, compareCandidates)
	if i >= keep {
		return
	}
	if len(r.Candidates) < keep {
		r.Candidates = append(r.Candidates, Candidate{})
	}
	copy(r.Candidates[i+1:], r.Candidates[i:len(r.Candidates)-1])
	r.Candidates[i] = c
}

// RouterOption configures a Router.
type RouterOption func(*routerConfig)

type routerConfig struct {
	weights    Weights
	latencyRef time.Duration
	gate       PeerGate
	observed   func(peer.ID) ObservedLoad
	searcher   Searcher
	searchWait time.Duration
}

// DefaultLatencyReference is the latency at which the latency term is 0.5.
const DefaultLatencyReference = 50 * time.Millisecond

// WithWeights sets the weights of the score. Default: DefaultWeights().
func WithWeights(w Weights) RouterOption { return func(c *routerConfig) { c.weights = w } }

// WithLatencyReference sets the latency at which the latency term is 0.5.
// It must be more than 0. Default: DefaultLatencyReference (50 ms).
func WithLatencyReference(d time.Duration) RouterOption {
	return func(c *routerConfig) { c.latencyRef = d }
}

// WithPeerGate makes the router leave out the remote peers that g does not
// allow (this node is never asked). The coordinator sets its circuit
// breakers here when it builds the router. Default: every peer allowed.
func WithPeerGate(g PeerGate) RouterOption { return func(c *routerConfig) { c.gate = g } }

// Neutral values of score terms for a node without history.
const (
	neutralTrust   = 0.5 // trust of a peer when the router has no TrustSource
	neutralSuccess = 1.0 // success term of a node with no outcome yet, as grid.NodeMetrics has it
	neutralLatency = 0.5 // latency term of a node with no recent latency
	// unverifiedPenalty is taken off the score of a candidate peer not
	// yet verified (see grid.Node.Providers), so that a verified peer of
	// about the same score is tried first.
	unverifiedPenalty = 0.05
)

// Router chooses the nodes that may run a task and orders them best first.
//
// Filter. A node is a candidate if it offers the task's skill (the exact
// version if the task names one), is not excluded, and its trust is at least
// the task's MinTrust. A peer that fetches the modules of wasm skills it
// lacks (a Directory that is a FetcherDirectory lists them) offers every
// wasm skill at every version. This node offers what its Registry holds and has
// trust 1; remote peers come from the Directory with the trust that the
// TrustSource gives them.
//
// Score. Each candidate gets
//
//	score = (wT*trust + wS*(rating+1)/2 + wR*success + wL*1/(1+latency/ref) + wU*(1-min(util,1))) / (wT+wS+wR+wL+wU)
//
// where trust is the node's trust in [0, 1]; rating its skill rating in
// [-1, 1] for this skill; success its recent success rate and latency its
// recent latency from the PerfSource, or for a peer the larger of that and
// ObservedLoad.Latency (for a node with no history yet, success is 1, as
// the metrics tracker reports an untried node, and the latency term is
// 0.5); ref the latency reference (WithLatencyReference, 50 ms by
// default); util its utilization (busy / worker slots): this node's from
// the load function; a peer's announced load is a hint checked against what
// this node sees: busy is the larger of what its last capability
// announcement says (queued + in flight) and what this node observes (the
// attempts this node's coordinator has sent it and not yet seen end, or
// ObservedLoad.InFlight if larger), so neither a peer announcing idle nor a
// burst between announcements sends every task to one peer; and an
// announced capacity of 0 or over MaxCredibleCapacity (1024) is unknown:
// UnknownCapacity (4) slots are assumed and util is at least 0.5. The w
// are the Weights (DefaultWeights unless WithWeights). A peer the
// Directory lists as a candidate, not yet verified to speak the task
// protocol, scores unverifiedPenalty (0.05) less. The score is in [0, 1].
//
// Order. Candidates with a live connection (this node counts as one) come
// first, then peers without one (they may be reachable through a dial, but
// a connected peer answers sooner and is known to be up); within each group
// higher scores come first, ties broken by this node first, then by the
// lower utilization (which the score caps at 1: past full load it still
// spreads tasks), then by peer ID.
//
// Errors. With no candidate, Route returns a *NoCapableNodeError whose
// Reason is NoProvider if no node offers the skill (at that version),
// AllUnreachable if some node that meets MinTrust offers it but each such
// node is excluded (the coordinator excludes the nodes a task already
// failed on), AllCircuitOpen if none is excluded but the PeerGate (the
// circuit breakers) refuses each, and AllBelowTrust otherwise.
//
// A Router is safe for concurrent use. With no remote provider for the
// skill, Route allocates only its one-element result, and the path the
// coordinator takes per task (best candidate only) neither scores nor
// allocates: a lone candidate needs no ranking.
type Router struct {
	self      peer.ID
	reg       *Registry
	dir       Directory
	trust     TrustSource
	perf      PerfSource
	localLoad func() grid.Load
	gate      PeerGate                   // nil: every peer allowed
	observed  func(peer.ID) ObservedLoad // nil: only outstanding counts
	search    Searcher                   // nil: the Directory only
	waitFor   time.Duration              // how long Route waits for search

	w          Weights
	wsum       float64
	latencyRef float64 // seconds

	// outstanding counts, per peer, the remote attempts the coordinator
	// using this router has started and not yet seen end: peer.ID ->
	// *atomic.Int32. Entries are kept (one per peer ever delegated to).
	outstanding sync.Map
}

// attemptStarted counts a remote attempt started on p.
func (r *Router) attemptStarted(p peer.ID) {
	v, ok := r.outstanding.Load(p)
	if !ok {
		v, _ = r.outstanding.LoadOrStore(p, new(atomic.Int32))
	}
	v.(*atomic.Int32).Add(1)
}

// attemptEnded counts the end of an attempt counted by attemptStarted.
func (r *Router) attemptEnded(p peer.ID) {
	if v, ok := r.outstanding.Load(p); ok {
		v.(*atomic.Int32).Add(-1)
	}
}

// NewRouter returns a router for this node (self) and its registry. dir,
// trust, perf and localLoad may be nil: without a Directory only this node
// is considered; without a TrustSource every peer has trust 0.5 and rating
// 0; without a PerfSource every node has no history; without localLoad this
// node counts as idle.
func NewRouter(self peer.ID, reg *Registry, dir Directory, trust TrustSource, perf PerfSource, localLoad func() grid.Load, opts ...RouterOption) (*Router, error) {
	cfg := routerConfig{weights: DefaultWeights(), latencyRef: DefaultLatencyReference, searchWait: DefaultSearchWait}
	for _, o := range opts {
		o(&cfg)
	}
	var errs []error
	if self == "" {
		errs = append(errs, errors.New("self peer ID is empty"))
	}
	if reg == nil {
		errs = append(errs, errors.New("registry is nil"))
	}
	if err := cfg.weights.validate(); err != nil {
		errs = append(errs, err)
	}
	if cfg.latencyRef <= 0 {
		errs = append(errs, fmt.Errorf("latency reference is %v; it must be more than 0", cfg.latencyRef))
	}
	if cfg.searchWait <= 0 {
		errs = append(errs, fmt.Errorf("search wait is %v; it must be more than 0", cfg.searchWait))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new router: %w", err)
	}
	return &Router{
		self: self, reg: reg, dir: dir, trust: trust, perf: perf, localLoad: localLoad,
		w: cfg.weights, wsum: cfg.weights.sum(), latencyRef: cfg.latencyRef.Seconds(), gate: cfg.gate,
		observed: cfg.observed, search: cfg.searcher, waitFor: cfg.searchWait,
	}, nil
}

// Route returns the candidates for t, best first, leaving out the peers in
// exclude. It returns a *NoCapableNodeError when there is none. See Router
// for the filter, the score and the order.
func (r *Router) Route(t *SkillTask, exclude ...peer.ID) ([]Candidate, error) {
	local, localVersion := r.localOffer(t)
	return r.route(t, local, localVersion, exclude)
}

// localOffer reports whether this node offers t's skill, and at which
// version. It does not allocate when it does.
func (r *Router) localOffer(t *SkillTask) (bool, string) {
	e := r.reg.find(t.Skill, t.Version)
	if e == nil {
		return false, ""
	}
	return true, e.desc.Version
}

func (r *Router) providers(s reputation.SkillID) []grid.Provider {
	if r.dir == nil {
		return nil
	}
	return r.dir.Providers(s)
}

// withFetchers appends to provs the peers that would fetch t's skill (see
// FetcherDirectory), at the version t asks for, unless listed already.
func (r *Router) withFetchers(t *SkillTask, provs []grid.Provider) []grid.Provider {
	fd, ok := r.dir.(FetcherDirectory)
	if !ok {
		return provs
	}
	for _, p := range fd.ModuleFetchers(t.Skill) {
		if slices.ContainsFunc(provs, func(q grid.Provider) bool { return q.Peer == p.Peer }) {
			continue
		}
		p.Version = t.Version
		provs = append(provs, p)
	}
	return provs
}

// route is Route once the local offer is known.
func (r *Router) route(t *SkillTask, local bool, localVersion string, exclude []peer.ID) ([]Candidate, error) {
	provs := r.withFetchers(t, r.providersOrSearch(r.providers(t.Skill), t.Skill, local))
	var f filterCount
	var out []Candidate
	if len(provs) == 0 {
		// Fast path: only this node can be a candidate, so there is
		// nothing to rank, but the score is still reported.
		if c, ok := r.localCandidate(t, local, localVersion, exclude, &f); ok {
			return []Candidate{r.scored(t, c, 0)}, nil
		}
		return nil, f.err(t)
	}
	out = make([]Candidate, 0, len(provs)+1)
	if c, ok := r.localCandidate(t, local, localVersion, exclude, &f); ok {
		out = append(out, r.scored(t, c, 0))
	}
	for i := range provs {
		if c, ok := r.remoteCandidate(t, &provs[i], exclude, r.gate, &f); ok {
			out = append(out, r.scored(t, c, r.remoteUtil(&provs[i])))
		}
	}
	if len(out) == 0 {
		return nil, f.err(t)
	}
	slices.SortFunc(out, compareCandidates)
	return out, nil
}

// best returns the best candidate for t without building the whole list.
// It is Route for the coordinator's hot path: with no remote provider it
// neither scores nor allocates. local says whether this node offers the
// skill (the caller has looked it up already).
func (r *Router) best(t *SkillTask, local bool, exclude []peer.ID) (Candidate, error) {
	return r.bestWith(t, local, exclude, r.gate, 0)
}

// bestWith is best with gate in place of the router's PeerGate (nil: every
// peer allowed): the coordinator passes its circuit breakers, also to a
// Router it did not build.
//
// With keep above 0 the candidate returned carries a Ranking of the best
// keep candidates (see Candidate.ranked), unless no peer offers the skill:
// this node alone has nothing to be ranked against, and that path stays
// free of scoring and allocation.
func (r *Router) bestWith(t *SkillTask, local bool, exclude []peer.ID, gate PeerGate, keep int) (Candidate, error) {
	pa, ok := r.dir.(ProviderAppender)
	if !ok {
		return r.bestOf(t, r.withFetchers(t, r.providersOrSearch(r.providers(t.Skill), t.Skill, local)), local, exclude, gate, keep)
	}
	// No candidate keeps a pointer into provs: it goes back to the pool.
	bp := provPool.Get().(*[]grid.Provider)
	provs := r.withFetchers(t, r.providersOrSearch(pa.AppendProviders((*bp)[:0], t.Skill), t.Skill, local))
	c, err := r.bestOf(t, provs, local, exclude, gate, keep)
	if cap(provs) <= maxPooledProviders {
		clear(provs)
		*bp = provs[:0]
	}
	provPool.Put(bp)
	return c, err
}

// bestOf is bestWith among provs.
func (r *Router) bestOf(t *SkillTask, provs []grid.Provider, local bool, exclude []peer.ID, gate PeerGate, keep int) (Candidate, error) {
	var f filterCount
	if len(provs) == 0 {
		if c, ok := r.localCandidate(t, local, "", exclude, &f); ok {
			return c, nil
		}
		return Candidate{}, f.err(t)
	}
	var top Candidate
	var rk *Ranking
	if keep > 0 {
		rk = newRanking(keep, len(provs)+1)
	}
	found := false
	consider := func(c Candidate, util float64) {
		c = r.scored(t, c, util)
		if rk != nil {
			rk.add(c, keep)
		}
		if !found || compareCandidates(c, top) < 0 {
			top, found = c, true
		}
	}
	if c, ok := r.localCandidate(t, local, "", exclude, &f); ok {
		consider(c, 0)
	}
	for i := range provs {
		if c, ok := r.remoteCandidate(t, &provs[i], exclude, gate, &f); ok {
			consider(c, r.remoteUtil(&provs[i]))
		}
	}
	if !found {
		return Candidate{}, f.err(t)
	}
	top.ranked = rk
	return top, nil
}

// filterCount counts why nodes were left out, to explain an empty result.
type filterCount struct {
	offered  int // nodes that offer the skill at the wanted version
	excluded int // of those, nodes that meet MinTrust but are excluded
	gated    int // of those, nodes that meet MinTrust but the PeerGate refuses
}

func (f *filterCount) err(t *SkillTask) error {
	e := &NoCapableNodeError{Skill: string(t.Skill), MinTrust: t.MinTrust, Checked: f.offered}
	switch {
	case f.offered == 0:
		e.Reason = NoProvider
	case f.excluded > 0:
		e.Reason = AllUnreachable
	case f.gated > 0:
		e.Reason = AllCircuitOpen
	default:
		e.Reason = AllBelowTrust
	}
	return e
}

func (r *Router) localCandidate(t *SkillTask, local bool, version string, exclude []peer.ID, f *filterCount) (Candidate, bool) {
	if !local {
		return Candidate{}, false
	}
	f.offered++
	// This node's trust is 1, which meets any MinTrust in [0, 1].
	if t.MinTrust > 1 {
		return Candidate{}, false
	}
	if slices.Contains(exclude, r.self) {
		f.excluded++
		return Candidate{}, false
	}
	return Candidate{Peer: r.self, Local: true, Connected: true, Verified: true, Trust: 1, Version: version}, true
}

func (r *Router) remoteCandidate(t *SkillTask, p *grid.Provider, exclude []peer.ID, gate PeerGate, f *filterCount) (Candidate, bool) {
	if p.Peer == r.self || p.Peer == "" || (t.Version != "" && p.Version != t.Version) {
		return Candidate{}, false
	}
	f.offered++
	tr := neutralTrust
	if r.trust != nil {
		tr = r.trust.Trust(p.Peer)
	}
	if tr < t.MinTrust {
		return Candidate{}, false
	}
	if slices.Contains(exclude, p.Peer) {
		f.excluded++
		return Candidate{}, false
	}
	if gate != nil && !gate.Allow(p.Peer) {
		f.gated++
		return Candidate{}, false
	}
	return Candidate{Peer: p.Peer, Connected: p.Connected, Verified: p.Verified, Trust: tr, Version: p.Version}, true
}

// scored returns c with its score set. util is a remote candidate's
// utilization; this node's comes from the load function.
func (r *Router) scored(t *SkillTask, c Candidate, util float64) Candidate {
	if c.Local {
		if r.localLoad != nil {
			util = r.localLoad().Utilization()
		}
	}
	rating := 0.0
	if r.trust != nil {
		rating = r.trust.SkillRating(c.Peer, t.Skill)
	}
	success, latency := neutralSuccess, neutralLatency
	var lat time.Duration
	if r.perf != nil {
		if nm, ok := r.perf.Node(c.Peer); ok {
			if nm.Completed+nm.Failed+nm.TimedOut > 0 {
				success = clamp01(nm.RecentSuccess)
			}
			lat = nm.RecentLatency
		}
	}
	if !c.Local {
		lat = max(lat, r.observedLatency(c.Peer))
	}
	if lat > 0 {
		latency = 1 / (1 + lat.Seconds()/r.latencyRef)
	}
	c.util = util
	c.Parts = ScoreParts{Trust: clamp01(c.Trust), Skill: (clamp(rating, -1, 1) + 1) / 2, Success: success,
		Latency: latency, Load: 1 - min(max(util, 0), 1)}
	w, p := r.w, &c.Parts
	s := w.Trust*p.Trust + w.Skill*p.Skill + w.Success*p.Success + w.Latency*p.Latency + w.Load*p.Load
	c.Score = s / r.wsum
	if !c.Verified {
		c.Score = max(c.Score-unverifiedPenalty, 0)
	}
	return c
}

// compareCandidates orders candidates best first: connected before not,
// then higher score, then this node, then lower utilization, then peer ID.
func compareCandidates(a, b Candidate) int {
	if a.Connected != b.Connected {
		if a.Connected {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(b.Score, a.Score); c != 0 {
		return c
	}
	if a.Local != b.Local {
		if a.Local {
			return -1
		}
		return 1
	}
	if c := cmp.Compare(a.util, b.util); c != 0 {
		return c // equal scores past full load: the less loaded
	}
	return strings.Compare(string(a.Peer), string(b.Peer))
}

func clamp(v, lo, hi float64) float64 {
	if math.IsNaN(v) {
		return lo
	}
	return min(max(v, lo), hi)
}

func clamp01(v float64) float64 { return clamp(v, 0, 1) }
