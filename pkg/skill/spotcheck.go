package skill

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DefaultSpotCheckInFlight bounds the spot checks running at once unless
// SpotCheckConfig.MaxInFlight says otherwise.
const DefaultSpotCheckInFlight = 16

// SpotCheckConfig configures spot checks (see WithSpotChecks).
type SpotCheckConfig struct {
	// Rate is the fraction of remote successes of deterministic skills
	// that are checked, in [0, 1]. 0 turns spot checks off.
	Rate float64
	// Deterministic lists skills this node does not run whose outputs are
	// known to be deterministic: the operator says so, since a peer's
	// word is not taken for it. A skill in the Registry is deterministic
	// if its Descriptor says so.
	Deterministic []reputation.SkillID
	// MaxInFlight bounds the checks running at once; a success that finds
	// them all busy is not checked (and counted as skipped). 0:
	// DefaultSpotCheckInFlight.
	MaxInFlight int
}

func (s *SpotCheckConfig) validate() error {
	var errs []error
	if math.IsNaN(s.Rate) || s.Rate < 0 || s.Rate > 1 {
		errs = append(errs, fmt.Errorf("spot check rate is %v; it must be in [0, 1]", s.Rate))
	}
	if s.MaxInFlight < 0 {
		errs = append(errs, fmt.Errorf("spot checks in flight is %d; it must be 0 (default %d) or more", s.MaxInFlight, DefaultSpotCheckInFlight))
	}
	for _, id := range s.Deterministic {
		if err := id.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("deterministic skill for spot checks: %w", err))
		}
	}
	return errors.Join(errs...)
}

// WithSpotChecks makes the coordinator check a fraction of the successes
// that peers return for deterministic skills: the task runs once more, on
// this node if it has the skill, else on a second peer (and, if the two
// disagree, a third), and the sha256 of the outputs is compared. The node
// whose output disagrees with this node's run, or with the majority, gets
// a wrong result in trust (four failures' weight). The first answer has
// already gone to the caller: a check costs the caller no latency, and it
// does not change the task's result. Default: off.
//
// With a rate above 0, a peer's answer for a deterministic skill is no
// evidence in trust until a check says it was right: then it weighs 1/rate
// successes (at most 100), and a checker that agreed gets one; see
// reputation.AnswerEvidence. Failures and timeouts count as always, and
// every answer counts in metrics.
func WithSpotChecks(cfg SpotCheckConfig) CoordinatorOption {
	return func(c *coordinatorConfig) { c.spot = cfg }
}

// SpotCheckResult is how a spot check ended.
type SpotCheckResult string

// Spot check results.
const (
	SpotCheckMatch        SpotCheckResult = "match"        // the outputs agree
	SpotCheckWrongResult  SpotCheckResult = "wrong_result" // a node's output disagrees with this node's or the majority
	SpotCheckInconclusive SpotCheckResult = "inconclusive" // no referee answered, or no majority
)

// SpotCheck is the end of one spot check, as OnSpotCheck delivers it.
type SpotCheck struct {
	TaskID   TaskID             `json:"task_id"`
	Skill    reputation.SkillID `json:"skill"`
	First    peer.ID            `json:"first"`    // the peer whose answer the caller got
	Checkers []peer.ID          `json:"checkers"` // the nodes that ran it again (this node when it has the skill)
	Result   SpotCheckResult    `json:"result"`
	Wrong    peer.ID            `json:"wrong,omitempty"` // for SpotCheckWrongResult
	Reason   string             `json:"reason,omitempty"`
	At       time.Time          `json:"at"`
}

// SpotCheckStats counts spot checks since the coordinator started.
// WrongResults counts the nodes found wrong (first answers or referees).
type SpotCheckStats struct {
	Started, Matched, WrongResults, Inconclusive, Skipped uint64
}

// spotChecker is the coordinator's spot-check state.
type spotChecker struct {
	cfg   SpotCheckConfig
	extra map[reputation.SkillID]struct{}
	sem   chan struct{}

	started, matched, wrong, inconclusive, skipped atomic.Uint64

	mu   sync.Mutex
	subs map[uint64]func(SpotCheck)
	next uint64
}

func newSpotChecker(cfg SpotCheckConfig) *spotChecker {
	n := cfg.MaxInFlight
	if n == 0 {
		n = DefaultSpotCheckInFlight
	}
	s := &spotChecker{cfg: cfg, extra: make(map[reputation.SkillID]struct{}), sem: make(chan struct{}, n), subs: make(map[uint64]func(SpotCheck))}
	for _, id := range cfg.Deterministic {
		s.extra[id] = struct{}{}
	}
	return s
}

// SpotCheckStats returns the spot-check counters.
func (c *DelegationCoordinator) SpotCheckStats() SpotCheckStats {
	s := c.spot
	return SpotCheckStats{Started: s.started.Load(), Matched: s.matched.Load(), WrongResults: s.wrong.Load(),
		Inconclusive: s.inconclusive.Load(), Skipped: s.skipped.Load()}
}

// OnSpotCheck calls fn with the end of every spot check from now on, from
// the check's goroutine: fn must be quick. The returned function ends the
// subscription.
func (c *DelegationCoordinator) OnSpotCheck(fn func(SpotCheck)) (unsubscribe func()) {
	s := c.spot
	s.mu.Lock()
	id := s.next
	s.next++
	s.subs[id] = fn
	s.mu.Unlock()
	return sync.OnceFunc(func() {
		s.mu.Lock()
		delete(s.subs, id)
		s.mu.Unlock()
	})
}

// deterministic reports whether t's skill gives the same output for the
// same input, as far as this node knows without a peer's word.
func (c *DelegationCoordinator) deterministic(t *SkillTask) bool {
	if e := c.reg.find(t.Skill, t.Version); e != nil {
		return e.desc.Deterministic
	}
	_, ok := c.spot.extra[t.Skill]
	return ok
}

// checkRate is the fraction of peers' answers for t's skill that are
// spot-checked: the rate for a deterministic skill, else 0.
func (c *DelegationCoordinator) checkRate(t *SkillTask) float64 {
	if r := c.spot.cfg.Rate; r > 0 && c.deterministic(t) {
		return r
	}
	return 0
}

// maybeSpotCheck starts a spot check of o, a peer's success for t that
// settled t, if t's skill is deterministic and the draw says so. It never
// waits: the check runs on a goroutine of the coordinator's.
func (c *DelegationCoordinator) maybeSpotCheck(t *SkillTask, o outcome) {
	s := c.spot
	if s.cfg.Rate <= 0 || o.peer == c.self || o.res.Cached || !c.deterministic(t) || rand.Float64() >= s.cfg.Rate {
		return
	}
	select {
	case s.sem <- struct{}{}:
	default:
		s.skipped.Add(1)
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		<-s.sem
		return
	}
	c.wg.Add(1) // under c.mu, which Close takes before it waits
	c.mu.Unlock()
	s.started.Add(1)
	// The goroutine captures copies, not o: a captured o would be moved to
	// the heap on every call, spot check or not.
	first, want := o.peer, sha256.Sum256(o.res.Output)
	go func() {
		defer c.wg.Done()
		defer func() { <-s.sem }()
		timeout := t.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		ctx, cancel := context.WithTimeout(c.ctx, timeout)
		defer cancel()
		c.endSpotCheck(t, c.runSpotCheck(ctx, t, first, want))
	}()
}

// runSpotCheck runs t again and judges first's output, of hash want.
func (c *DelegationCoordinator) runSpotCheck(ctx context.Context, t *SkillTask, first peer.ID, want [32]byte) SpotCheck {
	sc := SpotCheck{TaskID: t.ID, Skill: t.Skill, First: first, Result: SpotCheckInconclusive}
	if c.reg.find(t.Skill, t.Version) != nil {
		sc.Checkers = []peer.ID{c.self}
		res := c.exec.Run(ctx, c.recheckTask(t))
		switch {
		case !res.Success:
			sc.Reason = "this node's run failed: " + res.Error
		case sha256.Sum256(res.Output) == want:
			sc.Result = SpotCheckMatch
		default:
			sc.Result, sc.Wrong, sc.Reason = SpotCheckWrongResult, first, "its output differs from this node's"
		}
		return sc
	}
	second, got2, err := c.checkOn(ctx, t, []peer.ID{first})
	if err != nil {
		sc.Reason = err.Error()
		return sc
	}
	sc.Checkers = []peer.ID{second}
	if got2 == want {
		sc.Result = SpotCheckMatch
		return sc
	}
	third, got3, err := c.checkOn(ctx, t, []peer.ID{first, second})
	if err != nil {
		sc.Reason = fmt.Sprintf("%s and %s disagree, and no third node settled it: %v", first, second, err)
		return sc
	}
	sc.Checkers = append(sc.Checkers, third)
	switch got3 {
	case want:
		sc.Result, sc.Wrong, sc.Reason = SpotCheckWrongResult, second, fmt.Sprintf("its output differs from %s's and %s's", first, third)
	case got2:
		sc.Result, sc.Wrong, sc.Reason = SpotCheckWrongResult, first, fmt.Sprintf("its output differs from %s's and %s's", second, third)
	default:
		sc.Reason = fmt.Sprintf("%s, %s and %s returned three different outputs", first, second, third)
	}
	return sc
}

// recheckTask is t as run again for a check: a new ID (a node that saw t
// must not take it as a repeat) and no cache.
func (c *DelegationCoordinator) recheckTask(t *SkillTask) *SkillTask {
	return &SkillTask{ID: grid.NewTaskID(), Skill: t.Skill, Version: t.Version, Input: t.Input, Priority: t.Priority,
		Timeout: t.Timeout, MinTrust: t.MinTrust, Requester: c.self, CreatedAt: time.Now(), NoCache: true}
}

// checkOn runs t again on the best peer not in exclude and returns the
// peer and the sha256 of its output. The attempt counts in metrics and
// trust as any delegation does.
func (c *DelegationCoordinator) checkOn(ctx context.Context, t *SkillTask, exclude []peer.ID) (peer.ID, [32]byte, error) {
	if c.remote == nil {
		return "", [32]byte{}, errors.New("no peer to check with: this node delegates to none")
	}
	ct := c.recheckTask(t)
	cand, err := c.pick(ct, false, exclude)
	if err != nil {
		return "", [32]byte{}, fmt.Errorf("no other node to check with: %w", err)
	}
	p := cand.Peer
	c.metrics.RecordSubmitted(p)
	c.router.attemptStarted(p)
	start := time.Now()
	rt := c.remoteTaskOf(ct, 1, p)
	res, err := c.remote.Delegate(ctx, p, &rt)
	c.router.attemptEnded(p)
	o := classifyRemote(ctx, &record{task: ct}, p, res, err, time.Since(start))
	c.account(ct, o)
	if o.kind != kindSuccess {
		return p, [32]byte{}, fmt.Errorf("check on %s: %w", p, o.err)
	}
	return p, sha256.Sum256(o.res.Output), nil
}

// endSpotCheck records the end of a spot check: trust, counters, the
// result cache and OnSpotCheck's subscribers.
func (c *DelegationCoordinator) endSpotCheck(t *SkillTask, sc SpotCheck) {
	s := c.spot
	sc.At = time.Now()
	switch sc.Result {
	case SpotCheckMatch:
		s.matched.Add(1)
	case SpotCheckWrongResult:
		s.wrong.Add(1)
		if sc.Wrong != c.self {
			c.trust.RecordAnswer(sc.Wrong, t.Skill, c.checkRate(t), reputation.CheckWrong)
		}
		if sc.Wrong == sc.First {
			c.dropCachedFrom(t, sc.First)
		}
		c.log.Info("spot check found a wrong result", "task", t.ID.Short(), "skill", t.Skill, "peer", sc.Wrong, "checkers", sc.Checkers, "reason", sc.Reason)
	default:
		s.inconclusive.Add(1)
		c.log.Debug("spot check inconclusive", "task", t.ID.Short(), "skill", t.Skill, "peer", sc.First, "reason", sc.Reason)
	}
	c.recordAgreed(t, sc)
	s.mu.Lock()
	fns := make([]func(SpotCheck), 0, len(s.subs))
	for _, fn := range s.subs {
		fns = append(fns, fn)
	}
	s.mu.Unlock()
	for _, fn := range fns {
		fn(sc)
	}
}

// recordAgreed records in trust the answers a check found right: the
// first answer, one of a fraction checkRate of answers, counts as a match
// at that rate; a checker's, compared every time, as a match at rate 1.
func (c *DelegationCoordinator) recordAgreed(t *SkillTask, sc SpotCheck) {
	if sc.Result == SpotCheckInconclusive {
		return
	}
	if sc.Wrong != sc.First && sc.First != c.self {
		c.trust.RecordAnswer(sc.First, t.Skill, c.checkRate(t), reputation.CheckMatched)
	}
	for _, p := range sc.Checkers {
		if p != sc.Wrong && p != c.self {
			c.trust.RecordAnswer(p, t.Skill, 1, reputation.CheckMatched)
		}
	}
}

// dropCachedFrom removes from the result cache the result of t that p
// computed, once it is known to be wrong.
func (c *DelegationCoordinator) dropCachedFrom(t *SkillTask, p peer.ID) {
	rc := c.resultCache()
	e := c.reg.find(t.Skill, t.Version)
	if rc == nil || e == nil {
		return
	}
	key := keyOf(e.skill, &e.desc, t.Input)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if el := rc.m[key]; el != nil && el.Value.(*cacheEntry).res.ExecutedBy == p {
		rc.removeLocked(el)
	}
}
