package skill

import (
	"cmp"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Defaults of the per-peer circuit breaker.
const (
	// DefaultBreakerFailures is how many consecutive failed, timed-out or
	// unanswered attempts on a peer open its breaker.
	DefaultBreakerFailures = 5
	// DefaultBreakerOpenFor is how long an open breaker keeps its peer out
	// before it lets one probe attempt through.
	DefaultBreakerOpenFor = 10 * time.Second
)

// CircuitState is the state of a peer's circuit breaker.
type CircuitState uint8

// Circuit breaker states.
const (
	// CircuitClosed: the peer gets tasks as usual.
	CircuitClosed CircuitState = iota
	// CircuitOpen: the peer failed too often and gets no task until the
	// open period ends.
	CircuitOpen
	// CircuitHalfOpen: the open period is over; one probe attempt at a
	// time may go to the peer. Its success closes the breaker, its failure
	// opens it again.
	CircuitHalfOpen
)

var circuitNames = [...]string{"closed", "open", "half_open"}

// String returns "closed", "open" or "half_open".
func (s CircuitState) String() string {
	if int(s) < len(circuitNames) {
		return circuitNames[s]
	}
	return fmt.Sprintf("circuit(%d)", uint8(s))
}

// MarshalText implements encoding.TextMarshaler.
func (s CircuitState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// BreakerState is a copy of one peer's circuit breaker.
type BreakerState struct {
	Peer  peer.ID      `json:"peer"`
	State CircuitState `json:"state"`
	// Failures is the number of consecutive failed, timed-out or
	// unanswered attempts.
	Failures int `json:"failures"`
	// OpenedAt is when the breaker last opened; zero if it never did.
	OpenedAt time.Time `json:"opened_at,omitzero"`
}

// breakerConfig is the breaker part of coordinatorConfig.
type breakerConfig struct {
	failures int           // consecutive failures that open a breaker; 0: no breakers
	openFor  time.Duration // how long a breaker stays open
}

func defaultBreakerConfig() breakerConfig {
	return breakerConfig{failures: DefaultBreakerFailures, openFor: DefaultBreakerOpenFor}
}

func (c breakerConfig) validate() error {
	if c.failures < 0 || (c.failures > 0 && c.openFor <= 0) {
		return fmt.Errorf("circuit breaker: %d failures, open for %v: want failures >= 0 (0 disables it) and open period > 0", c.failures, c.openFor)
	}
	return nil
}

// WithCircuitBreaker sets the per-peer circuit breaker: failures
// consecutive attempts on a peer that failed, timed out, came back wrong
// or went unanswered (the peer unreachable or gone) open its breaker, the
// router leaves the peer out for openFor, then one probe attempt at a time
// may go to it; success closes the breaker, failure opens it for another
// openFor. Rejections (queue full, rate limited, ...), refused input,
// limits, cancellations and a skill the peer no longer has do not count.
// The breaker is what keeps tasks from a peer that is down, instead of its
// trust, so a short openFor brings a restarted peer back sooner. failures
// 0 disables the breakers. Defaults: DefaultBreakerFailures (5) and
// DefaultBreakerOpenFor (10 s).
func WithCircuitBreaker(failures int, openFor time.Duration) CoordinatorOption {
	return func(c *coordinatorConfig) { c.breaker = breakerConfig{failures: failures, openFor: openFor} }
}

// Breakers returns the state of every peer's breaker that has seen a
// failure since its last success, ordered by peer ID. It is meant for the
// API; peers without a failure have a closed breaker and are not listed.
func (c *DelegationCoordinator) Breakers() []BreakerState { return c.breakers.states(time.Now()) }

// breakerResult is what an attempt's outcome tells a breaker.
type breakerResult uint8

const (
	breakerNeutral breakerResult = iota // not the peer's fault: only frees a probe
	breakerSuccess
	breakerFailure
)

// breakerResultOf maps an outcome to what it tells the peer's breaker:
// a peer that did not answer (unavailable) and the faults that the trust
// graph records (failures, late work, wrong results) count against it,
// success clears it, anything else (rejections, refused input,
// cancellation, limits) does neither.
func breakerResultOf(o outcome) breakerResult {
	switch {
	case o.kind == kindSuccess:
		return breakerSuccess
	case o.unstarted, o.kind == kindCanceled, o.kind == kindRejected, o.kind == kindFatal:
		return breakerNeutral
	case o.unavailable, o.trust != 0:
		return breakerFailure
	}
	return breakerNeutral
}

// feedBreaker records a started attempt's outcome in its peer's breaker.
// This node has no breaker.
func (c *DelegationCoordinator) feedBreaker(o outcome) {
	if o.peer != c.self {
		c.breakers.record(o.peer, breakerResultOf(o), time.Now())
	}
}

// breakerSet holds one circuit breaker per peer that has failed. A nil
// *breakerSet has no breakers: every peer is allowed. It is safe for
// concurrent use.
//
// Written by hand rather than with sony/gobreaker: a gobreaker breaker
// wraps the call it guards (Execute, or Allow with its done callback),
// and counts a request when it is allowed, whereas here the router must
// ask whether a peer is usable for every candidate it ranks without
// taking the half-open probe, the probe is taken only by the chosen
// candidate, and outcomes arrive later through the coordinator's
// accounting. The state machine is small enough that a wrapper around
// gobreaker would be larger than it.
type breakerSet struct {
	cfg breakerConfig
	m   sync.Map // peer.ID -> *breaker; peers that never failed have none
}

// breaker is one peer's circuit breaker; mu guards its fields.
type breaker struct {
	mu       sync.Mutex
	state    CircuitState // CircuitOpen turns half-open lazily, when its period is over
	failures int
	openedAt time.Time
	probeAt  time.Time // when the half-open probe was handed out; zero: free
}

// newBreakerSet returns the breakers for cfg, or nil if they are disabled.
func newBreakerSet(cfg breakerConfig) *breakerSet {
	if cfg.failures <= 0 {
		return nil
	}
	return &breakerSet{cfg: cfg}
}

func (bs *breakerSet) get(p peer.ID) *breaker {
	if bs == nil {
		return nil
	}
	v, ok := bs.m.Load(p)
	if !ok {
		return nil
	}
	return v.(*breaker)
}

// Allow reports whether the router may choose p now: its breaker is
// closed, or half-open with its probe free. It takes nothing; see reserve.
// It implements PeerGate.
func (bs *breakerSet) Allow(p peer.ID) bool {
	b := bs.get(p)
	if b == nil {
		return true
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.usableLocked(bs.cfg, now)
}

// usableLocked reports whether an attempt may go to the peer at now.
func (b *breaker) usableLocked(cfg breakerConfig, now time.Time) bool {
	switch b.stateLocked(cfg, now) {
	case CircuitClosed:
		return true
	case CircuitHalfOpen:
		// A probe that never reported (its task was canceled during a
		// backoff, or it runs long) is given up after one open period.
		return b.probeAt.IsZero() || now.Sub(b.probeAt) >= cfg.openFor
	}
	return false
}

// stateLocked returns the state at now, turning open into half-open once
// the open period is over.
func (b *breaker) stateLocked(cfg breakerConfig, now time.Time) CircuitState {
	if b.state == CircuitOpen && now.Sub(b.openedAt) >= cfg.openFor {
		b.state, b.probeAt = CircuitHalfOpen, time.Time{}
	}
	return b.state
}

// reserve is called for the candidate chosen for an attempt: it reports
// whether the attempt may go to p, and if p's breaker is half-open it
// takes the probe, so that no other attempt goes to p until this one
// reports (or an open period passes).
func (bs *breakerSet) reserve(p peer.ID) bool {
	b := bs.get(p)
	if b == nil {
		return true
	}
	now := time.Now()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.usableLocked(bs.cfg, now) {
		return false
	}
	if b.state == CircuitHalfOpen {
		b.probeAt = now
	}
	return true
}

// record applies an attempt's result to p's breaker.
func (bs *breakerSet) record(p peer.ID, res breakerResult, now time.Time) {
	if bs == nil {
		return
	}
	b := bs.get(p)
	if b == nil {
		if res != breakerFailure {
			return // a peer without failures needs no breaker
		}
		v, _ := bs.m.LoadOrStore(p, &breaker{})
		b = v.(*breaker)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch res {
	case breakerSuccess:
		b.state, b.failures, b.probeAt = CircuitClosed, 0, time.Time{}
	case breakerFailure:
		b.failures++
		switch b.stateLocked(bs.cfg, now) {
		case CircuitHalfOpen:
			b.state, b.openedAt, b.probeAt = CircuitOpen, now, time.Time{}
		case CircuitClosed:
			if b.failures >= bs.cfg.failures {
				b.state, b.openedAt = CircuitOpen, now
			}
		}
	default:
		b.probeAt = time.Time{} // the probe told nothing: let another try
	}
}

// states implements DelegationCoordinator.Breakers.
func (bs *breakerSet) states(now time.Time) []BreakerState {
	out := []BreakerState{}
	if bs == nil {
		return out
	}
	bs.m.Range(func(k, v any) bool {
		b := v.(*breaker)
		b.mu.Lock()
		st := BreakerState{Peer: k.(peer.ID), State: b.stateLocked(bs.cfg, now), Failures: b.failures, OpenedAt: b.openedAt}
		b.mu.Unlock()
		if st.State != CircuitClosed || st.Failures > 0 {
			out = append(out, st)
		}
		return true
	})
	slices.SortFunc(out, func(a, b BreakerState) int { return strings.Compare(string(a.Peer), string(b.Peer)) })
	return out
}

// pickRemote is pick with a Delegator: the router's best candidate, whose
// half-open probe (if its breaker is half-open) it takes. A candidate whose
// probe another task took meanwhile is left out and the next best chosen;
// if none is left for that reason, the error's reason is AllCircuitOpen.
func (c *DelegationCoordinator) pickRemote(t *SkillTask, local bool, exclude []peer.ID) (Candidate, error) {
	var gate PeerGate = c.router.gate
	if c.breakers != nil {
		gate = c.breakers
	}
	lost := false
	keep := 0
	if c.cfg.ranking > 0 && c.hasSubscribers() {
		keep = c.cfg.ranking // only an Event carries a Ranking
	}
	for {
		cand, err := c.router.bestWith(t, local, exclude, gate, keep)
		if err != nil {
			var nc *NoCapableNodeError
			if errors.As(err, &nc) {
				if lost && nc.Reason == AllUnreachable {
					nc.Reason = AllCircuitOpen
				}
				c.explainBlocked(t, nc, time.Now())
			}
			return cand, err
		}
		if cand.Local || c.breakers.reserve(cand.Peer) {
			return cand, nil
		}
		lost = true
		exclude = append(slices.Clip(exclude), cand.Peer)
	}
}

// explainBlocked fills nc.Blocked, for a task refused because every
// provider is below its minimum trust or behind an open breaker, with the
// providers that would otherwise have been usable, those that come back
// first first.
func (c *DelegationCoordinator) explainBlocked(t *SkillTask, nc *NoCapableNodeError, now time.Time) {
	if nc.Reason != AllCircuitOpen && nc.Reason != AllBelowTrust {
		return
	}
	var out []BlockedProvider
	for _, p := range c.router.providers(t.Skill) {
		if p.Peer == c.self || (t.Version != "" && p.Version != t.Version) {
			continue
		}
		bp := BlockedProvider{Peer: p.Peer, Trust: c.trust.Trust(p.Peer)}
		if b := c.breakers.get(p.Peer); b != nil {
			b.mu.Lock()
			bp.Circuit, bp.Failures = b.stateLocked(c.cfg.breaker, now), b.failures
			if bp.Circuit == CircuitOpen {
				bp.ProbeAt = b.openedAt.Add(c.cfg.breaker.openFor)
			}
			b.mu.Unlock()
		}
		switch nc.Reason {
		case AllCircuitOpen:
			if bp.Circuit == CircuitClosed || bp.Trust < t.MinTrust {
				continue
			}
		case AllBelowTrust:
			if bp.Trust >= t.MinTrust {
				continue
			}
		}
		out = append(out, bp)
	}
	slices.SortFunc(out, func(a, b BlockedProvider) int {
		if c := a.ProbeAt.Compare(b.ProbeAt); c != 0 {
			return c
		}
		if c := cmp.Compare(b.Trust, a.Trust); c != 0 {
			return c
		}
		return strings.Compare(string(a.Peer), string(b.Peer))
	})
	nc.Blocked = out[:min(len(out), maxBlockedListed)]
}
