package skill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/libp2p/go-libp2p/core/peer"
)

// codeRejected is the code of a task whose last attempt no node admitted
// (the wire has no code for it: the reason is in the error).
const codeRejected = grid.CodeInternal

// outcomeKind is how an attempt ended, as far as the task is concerned.
type outcomeKind uint8

const (
	kindSuccess  outcomeKind = iota + 1
	kindRetry                // failed; another attempt may follow after a backoff
	kindRejected             // the node did not admit it; move on at once
	kindFatal                // failed in a way no retry can fix
	kindTimeout              // the task's deadline passed
	kindCanceled             // canceled
)

// outcome is the end of one attempt.
//
// Blame. Only what a peer's own answer shows is trust evidence (trust):
// a failure it reported, work it did not finish by the deadline, or a
// result that is malformed or fails the skill's output checks. A peer
// that did not answer at all (unreachable, gone, no ack, lease lost) is
// unavailable: its circuit breaker counts it, and metrics count it apart
// from failures, but its trust is untouched, so that a node that
// restarted is routed to again once its breaker lets a probe through.
// What the user caused (invalid input, a cancel, a deadline that passed
// before the task left this node's queue) and limits that no node can
// meet (an input or output too large for a task message) count against
// no node at all.
type outcome struct {
	kind        outcomeKind
	peer        peer.ID
	res         SkillResult // the result, for kindSuccess
	code        grid.ErrorCode
	err         error              // why it failed
	trust       reputation.Outcome // trust evidence from the peer's answer; 0: none
	unavailable bool               // the peer did not answer: breaker and metrics only
	declined    bool               // the peer answered without running the work: counted as rejected
	elapsed     time.Duration      // recorded in metrics on success
	retryAfter  time.Duration      // a rejecting node's hint
	unstarted   bool               // never started: no metrics, no trust
	tooLarge    bool               // rejected as more than the node lets this one hold
	notProvider bool               // a candidate that does not speak the task protocol
	// lasting: a refusal that waiting does not end soon (trust too low,
	// no such skill there); it uses up an attempt, as a failure would.
	lasting bool
}

// refusals is what the rejected attempts of one task leave behind (see
// DelegationCoordinator.refused): how many there were, which do not count
// against the task's attempts, and the nodes that refused it as too large,
// which are not asked again.
type refusals struct {
	n        int32
	tooLarge []peer.ID
}

// refusalsLocked returns r's refusals, or nil if it has had none. The
// shard lock must be held.
func (c *DelegationCoordinator) refusalsLocked(r *record) *refusals {
	if r.retry == nil {
		return nil // a task with refusals has a retry state: see noteRefusalLocked
	}
	v, _ := c.refused.Load(r)
	rf, _ := v.(*refusals)
	return rf
}

// noteRefusalLocked counts o, a rejection of r's current attempt. The
// shard lock must be held.
func (c *DelegationCoordinator) noteRefusalLocked(r *record, o outcome) {
	rf := c.refusalsLocked(r)
	if rf == nil {
		r.retryState(&c.cfg)
		rf = &refusals{}
		c.refused.Store(r, rf)
	}
	if !o.lasting {
		rf.n++
	}
	if o.tooLarge && !slices.Contains(rf.tooLarge, o.peer) {
		rf.tooLarge = append(rf.tooLarge, o.peer)
	}
}

// failedAttempts is how many of r's attempts count against its
// maxAttempts: all but those rejected for a while (full, over budget,
// rate limited, shutting down): waiting may end those, so only the deadline
// bounds them. The shard lock must be held.
func (c *DelegationCoordinator) failedAttempts(r *record) int {
	n := int(r.attempts)
	if rf := c.refusalsLocked(r); rf != nil {
		n -= int(rf.n)
	}
	return n
}

// classifyLocal turns an executor result that is not a success into an
// outcome.
func classifyLocal(self peer.ID, res SkillResult) outcome {
	o := outcome{peer: self, code: res.Code, err: errors.New(res.Error)}
	switch res.Code {
	case grid.CodeInvalidInput:
		o.kind, o.err = kindFatal, fmt.Errorf("%w: %s", ErrInvalidInput, res.Error)
		if res.tooLarge {
			o.err = fmt.Errorf("%w: %w: %s", ErrInvalidInput, ErrTooLarge, res.Error)
		}
	case grid.CodeTimeout:
		// A deadline that passed while the task waited in the queue is
		// the user's; one that passed while the skill ran is this node's.
		o.kind, o.unstarted = kindTimeout, res.notRun
	case grid.CodeCanceled:
		o.kind = kindCanceled
	case grid.CodeUnknownSkill:
		o.kind, o.unstarted = kindRetry, true // unregistered meanwhile: another node may have it
	default:
		o.kind, o.trust = kindRetry, reputation.OutcomeFailure
	}
	return o
}

// classifyRemote turns what Delegate returned into an outcome.
func classifyRemote(ctx context.Context, r *record, p peer.ID, res *grid.RemoteResult, err error, elapsed time.Duration) outcome {
	o := outcome{peer: p, elapsed: elapsed}
	switch {
	case err == nil && res == nil:
		o.kind, o.unavailable, o.code = kindRetry, true, grid.CodeInternal
		o.err = fmt.Errorf("peer %s returned no result", p)
	case err == nil && res.Success:
		o.kind = kindSuccess
		o.res = SkillResult{Success: true, Output: res.Output, Duration: res.ExecTime, ExecutedBy: p, FinishedAt: time.Now(), Cached: res.Cached}
	case err == nil:
		o.code = res.ErrorCode
		o.err = fmt.Errorf("peer %s: %s", p, res.ErrorMessage)
		switch res.ErrorCode {
		case grid.CodeInvalidInput:
			o.kind, o.err = kindFatal, fmt.Errorf("%w: peer %s: %s", ErrInvalidInput, p, res.ErrorMessage)
		case grid.CodeTimeout:
			o.kind, o.trust = kindRetry, reputation.OutcomeTimeout
			if !time.Now().Before(r.task.Deadline()) {
				o.kind = kindTimeout
			}
		case grid.CodeCanceled, grid.CodeUnknownSkill:
			// The peer stopped the work or lost the skill: not a fault in
			// the work, and no sign that the peer is down.
			o.kind, o.declined = kindRetry, true
		default:
			o.kind, o.trust = kindRetry, reputation.OutcomeFailure
		}
	case asReject(err) != nil:
		o = classifyReject(p, asReject(err), err, o)
	case errors.Is(err, grid.ErrInvalidResult):
		// A malformed answer: another node may answer right, and this
		// one answered wrong. (A result for a stale attempt never gets
		// here: the orchestrator drops it and counts it.)
		o.kind, o.trust, o.code = kindRetry, reputation.OutcomeWrongResult, grid.CodeInternal
		o.err = fmt.Errorf("peer %s: %w", p, err)
	case errors.Is(err, grid.ErrNotProvider):
		// A candidate that does not speak the task protocol: the task was
		// never sent. The choice was this node's, so it costs no attempt
		// and no trust; the directory leaves the peer out for a while.
		o.kind, o.unstarted, o.notProvider, o.code = kindRejected, true, true, codeRejected
		o.err = fmt.Errorf("peer %s: %w", p, err)
	case errors.Is(err, wire.ErrMessageTooLarge):
		// Our own request does not fit in a frame: no node can take it.
		o.kind, o.code = kindFatal, grid.CodeInvalidInput
		o.err = fmt.Errorf("%w: %w: %w", ErrInvalidInput, ErrTooLarge, err)
	case ctx.Err() != nil:
		o.kind, o.code, o.err = kindCanceled, grid.CodeCanceled, err
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			o.kind, o.code, o.trust = kindTimeout, grid.CodeTimeout, reputation.OutcomeTimeout
			if errors.Is(err, grid.ErrPeerGone) || errors.Is(err, grid.ErrAckTimeout) || errors.Is(err, grid.ErrLeaseExpired) {
				o.trust, o.unavailable = 0, true // gone or never reached: not late work
			}
		}
	default:
		// Unreachable, gone, no ack, lease lost, or anything else that is
		// not an answer from the peer: the breaker's business, not trust's.
		o.kind, o.unavailable, o.code = kindRetry, true, grid.CodeInternal
		o.err = fmt.Errorf("delegate to %s: %w", p, err)
	}
	return o
}

// asReject returns the *grid.RejectError in err's chain, nil if there is
// none. It is apart from classifyRemote so that the pointer errors.As
// fills escapes to the heap only on a failed attempt, not on every one.
func asReject(err error) *grid.RejectError {
	var rej *grid.RejectError
	if errors.As(err, &rej) {
		return rej
	}
	return nil
}

// classifyReject is classifyRemote for a peer that did not admit the
// attempt. A refusal that no other node would lift ends the task, and
// none counts against the peer.
func classifyReject(p peer.ID, rej *grid.RejectError, err error, o outcome) outcome {
	o.code = codeRejected
	o.err = fmt.Errorf("peer %s: %w", p, err)
	o.kind, o.retryAfter = kindRejected, rej.RetryAfter
	switch rej.Reason {
	case grid.RejectInvalidInput:
		o.kind, o.code = kindFatal, grid.CodeInvalidInput
		o.err = fmt.Errorf("%w: peer %s: %w", ErrInvalidInput, p, err)
	case grid.RejectTooLarge:
		// Over what this peer lets us hold there (a stranger's budget is
		// small): another node may take it. The task's own size was
		// checked at submission against wire.MaxTaskInput.
		o.tooLarge = true
	case grid.RejectMalformed:
		o.kind, o.code = kindFatal, grid.CodeInternal
		o.err = fmt.Errorf("%w: peer %s refused the request as malformed (a bug on this node or the peer, not a fault a retry fixes): %w", ErrDelegationFailed, p, err)
	case grid.RejectDeadlinePassed:
		o.kind, o.code = kindTimeout, grid.CodeTimeout
	case grid.RejectTrustTooLow, grid.RejectUnknownSkill:
		o.lasting = true
	}
	return o
}

// onLocalDone is the Done of local jobs: an executor worker calls it with
// the result of the job it ran, once it has settled the job's queue entry.
func (c *DelegationCoordinator) onLocalDone(qt *grid.QueuedTask, res SkillResult) {
	job, _ := qt.Payload.(*Job)
	if job == nil || job.rec == nil {
		return
	}
	r := job.rec // no lookup: the record is found from the job
	s := c.tasks.shard(r.task.ID)
	s.mu.Lock()
	if r.job != job || r.state.Terminal() {
		s.mu.Unlock() // a result for an attempt that is over: drop it
		return
	}
	n := int(r.attempts)
	if !res.Success {
		s.mu.Unlock()
		c.settle(r, n, classifyLocal(c.self, res))
		return
	}
	// The common case, in one critical section. Metrics are recorded
	// before waiters wake, so that they see them; no trust record: the
	// graph keeps none about this node.
	c.metrics.RecordCompleted(c.self, res.Duration)
	c.finishLocked(s, r, StateSucceeded, res, nil)
	c.publishUnlock(s, r, r.updatedAt())
}

// settle ends attempt n of r with o: it finishes the task or schedules the
// next attempt, and records o in metrics and trust. An outcome for an
// attempt that is no longer current is dropped.
func (c *DelegationCoordinator) settle(r *record, n int, o outcome) {
	s := c.tasks.shard(r.task.ID)
	now := time.Now()
	s.mu.Lock()
	if r.state.Terminal() || int(r.attempts) != n {
		s.mu.Unlock()
		return
	}
	// Recorded before waiters wake, so that they see it.
	c.account(r.task, o)
	if o.kind != kindSuccess && c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("attempt failed", "task", r.task.ID.Short(), "attempt", n, "node", o.peer, "err", o.err)
	}
	retry := false
	var exclude []peer.ID
	switch o.kind {
	case kindSuccess:
		c.finishLocked(s, r, StateSucceeded, o.res, nil)
	case kindFatal:
		c.finishLocked(s, r, StateFailed, failure(o.code, o.peer), fmt.Errorf("task %s: %w", r.task.ID.Short(), o.err))
	case kindTimeout:
		c.finishLocked(s, r, StateTimedOut, failure(grid.CodeTimeout, o.peer), timeoutError(r, o.err))
	case kindCanceled:
		c.finishLocked(s, r, StateCanceled, failure(grid.CodeCanceled, o.peer), c.canceledError(r))
	default:
		if o.kind == kindRejected {
			c.noteRefusalLocked(r, o)
		}
		switch {
		case c.closing.Load():
			c.finishLocked(s, r, StateCanceled, failure(grid.CodeCanceled, o.peer), c.canceledError(r))
		case o.kind == kindRetry && !r.task.Retry.retries(o.code):
			c.finishLocked(s, r, StateFailed, failure(o.code, o.peer),
				fmt.Errorf("task %s: %w: its retry policy does not retry code %v: %w", r.task.ID.Short(), ErrDelegationFailed, o.code, o.err))
		case (o.kind == kindRetry || o.lasting) && c.failedAttempts(r) >= r.task.maxAttempts():
			// A passing refusal is not a failure: only the deadline bounds
			// those. A lasting one (trust too low, no such skill) uses up
			// attempts as a failure does.
			c.finishLocked(s, r, StateFailed, failure(o.code, o.peer),
				fmt.Errorf("task %s: %w after %d attempts: %w", r.task.ID.Short(), ErrDelegationFailed, r.attempts, o.err))
		case !now.Before(r.task.Deadline()):
			c.finishLocked(s, r, StateTimedOut, failure(grid.CodeTimeout, o.peer), timeoutError(r, o.err))
		default:
			r.state, r.job, r.att, r.updated = StateRetrying, nil, nil, now.UnixNano()
			r.retryState(&c.cfg).last = o.err
			exclude, retry = r.tried(), true
			if c.cfg.store != nil {
				c.storeRetryLocked(r)
			}
		}
	}
	c.publishUnlock(s, r, now)
	if retry {
		c.retry(r, n, o, exclude)
	}
	if o.kind == kindSuccess {
		c.maybeSpotCheck(r.task, o) // beside the answer, never before it
	}
}

// account records the outcome of a started attempt of t in metrics and
// trust (see outcome for what counts against a node). A success counts in
// trust by reputation.AnswerEvidence: for a deterministic skill under spot
// checks it is no evidence until a check says it was right (endSpotCheck).
func (c *DelegationCoordinator) account(t *SkillTask, o outcome) {
	if o.notProvider {
		c.router.notProvider(o.peer)
	}
	c.feedBreaker(o)
	if o.unstarted {
		return
	}
	skill := t.Skill
	switch {
	case o.kind == kindSuccess:
		c.metrics.RecordCompleted(o.peer, o.elapsed)
		if o.peer != c.self {
			c.trust.RecordAnswer(o.peer, skill, c.checkRate(t), reputation.Unchecked)
		}
	case o.trust != 0:
		if o.trust == reputation.OutcomeTimeout {
			c.metrics.RecordTimedOut(o.peer)
		} else {
			c.metrics.RecordFailed(o.peer)
		}
		c.recordTrust(o.peer, skill, o.trust)
	case o.unavailable:
		c.metrics.RecordUnavailable(o.peer)
	case o.kind == kindRejected, o.declined:
		c.metrics.RecordRejected(o.peer)
	case o.kind == kindTimeout && o.peer == c.self:
		c.metrics.RecordTimedOut(o.peer) // the skill ran past the deadline here
	}
	// Anything else (a cancel, refused input, a limit, a deadline that
	// passed before the peer could take the task) is no node's fault.
}

// recordTrust tells the trust graph about a peer's outcome. Outcomes of
// this node are not recorded: the graph ignores them anyway (and would log
// each at Debug).
func (c *DelegationCoordinator) recordTrust(p peer.ID, skill reputation.SkillID, o reputation.Outcome) {
	if o != 0 && p != c.self {
		c.trust.Record(p, skill, o)
	}
}

// retry chooses the node of the attempt after n and starts it, at once or
// after a backoff. r is in StateRetrying.
func (c *DelegationCoordinator) retry(r *record, n int, o outcome, tried []peer.ID) {
	t := r.task
	s := c.tasks.shard(t.ID)
	var tooLarge []peer.ID // nodes not to ask again
	s.mu.Lock()
	if rf := c.refusalsLocked(r); rf != nil {
		tooLarge = slices.Clone(rf.tooLarge)
	}
	s.mu.Unlock()
	local, _ := c.router.localOffer(t)
	fresh := true // cand has not been tried for this task
	cand, err := c.pick(t, local, append(tried, tooLarge...))
	if err != nil {
		fresh = false
		cand, err = c.pick(t, local, append(tooLarge, o.peer))
	}
	if err != nil {
		cand, err = c.pick(t, local, tooLarge)
	}
	now := time.Now()
	s.mu.Lock()
	if r.state != StateRetrying || int(r.attempts) != n {
		s.mu.Unlock()
		return
	}
	if err != nil && len(tooLarge) > 0 && !c.closing.Load() {
		// No node left that has not refused it as too large for it.
		c.finishLocked(s, r, StateFailed, failure(grid.CodeInvalidInput, o.peer),
			fmt.Errorf("task %s: %w: %w: no node accepts an input of %d bytes from this node (%d refused it as more than they let it hold): %w",
				t.ID.Short(), ErrInvalidInput, ErrTooLarge, len(t.Input.Data), len(tooLarge), o.err))
		c.publishUnlock(s, r, now)
		return
	}
	if err != nil && !c.closing.Load() && waitable(err) && now.Before(t.Deadline()) {
		c.waitForProviderLocked(s, r, n, err, now) // no usable provider now: wait for one
		return
	}
	if err != nil || c.closing.Load() {
		if err != nil {
			c.finishLocked(s, r, StateFailed, failure(o.code, o.peer),
				fmt.Errorf("task %s: %w after %d attempts: %w (last: %w)", t.ID.Short(), ErrDelegationFailed, r.attempts, err, o.err))
		} else {
			c.finishLocked(s, r, StateCanceled, failure(grid.CodeCanceled, o.peer), c.canceledError(r))
		}
		c.publishUnlock(s, r, now)
		return
	}
	// A rejected attempt moves on at once to a node not tried yet; once
	// all have been, the backoff (and the retry-after) paces the rounds.
	var delay time.Duration
	if o.kind != kindRejected || !fresh {
		delay = max(r.retryState(&c.cfg).bo.NextBackOff(), o.retryAfter)
	}
	if delay <= 0 {
		c.startRetryLocked(s, r, cand, now)
		return
	}
	// Wake at the deadline at the latest, to time the task out then.
	delay = min(delay, r.task.Deadline().Sub(now))
	c.wg.Add(1)
	r.retry.timer = time.AfterFunc(delay, func() { c.fireRetry(r, n, cand) })
	s.mu.Unlock()
}

// fireRetry starts the attempt after n once its backoff is over. It owns
// a place on c.wg.
func (c *DelegationCoordinator) fireRetry(r *record, n int, cand Candidate) {
	defer c.wg.Done()
	s := c.tasks.shard(r.task.ID)
	now := time.Now()
	if !c.wakeLocked(s, r, n, now) {
		return
	}
	c.startRetryLocked(s, r, cand, now)
}

// wakeLocked takes s's lock for a timer of r that fired after attempt n.
// It returns true with the lock held and the timer cleared if r still
// waits on that timer; otherwise it returns false with the lock released,
// after ending r if the coordinator is closing or r is past its deadline.
func (c *DelegationCoordinator) wakeLocked(s *taskShard, r *record, n int, now time.Time) bool {
	s.mu.Lock()
	if r.state != StateRetrying || int(r.attempts) != n {
		s.mu.Unlock()
		return false
	}
	r.retry.timer = nil
	switch {
	case c.closing.Load():
		c.finishLocked(s, r, StateCanceled, failure(grid.CodeCanceled, r.peer), c.canceledError(r))
		c.publishUnlock(s, r, now)
		return false
	case !now.Before(r.task.Deadline()):
		c.finishLocked(s, r, StateTimedOut, failure(grid.CodeTimeout, r.peer), timeoutError(r, r.retry.last))
		c.publishUnlock(s, r, now)
		return false
	}
	return true
}

// startRetryLocked begins the attempt after a retry wait on cand and
// unlocks s. A local queue that refuses it counts as a rejection of that
// attempt.
func (c *DelegationCoordinator) startRetryLocked(s *taskShard, r *record, cand Candidate, now time.Time) {
	a := c.beginLocked(r, cand, now)
	if a.qt == nil {
		c.publishUnlock(s, r, now)
		c.launch(r, a)
		return
	}
	err := c.enqueue(a)
	c.publishUnlock(s, r, now)
	if err != nil {
		c.settle(r, a.n, outcome{kind: kindRejected, peer: cand.Peer, code: codeRejected, err: err, unstarted: true})
	}
}

// publishUnlock announces r's state as of now (see announceLocked) and
// unlocks s.
func (c *DelegationCoordinator) publishUnlock(s *taskShard, r *record, now time.Time) {
	c.announceLocked(r, now)
	s.mu.Unlock()
}

// announceLocked publishes r's state as of now and, once r is terminal,
// wakes its waiters. Events go out under the shard lock, which orders them
// as the state changes; waiters wake after the terminal event, so that
// whatever a waiter does next comes after it. The lock must be held.
func (c *DelegationCoordinator) announceLocked(r *record, now time.Time) {
	if r.unsaved {
		return // saved publishes the terminal event and wakes the waiters
	}
	if c.hasSubscribers() {
		c.publish(eventOf(r, now))
	}
	if r.finished() {
		r.ranking = nil // its events have gone out
		r.wakeWaiters()
	}
}

// failure is the result of a task that did not succeed; finishLocked sets
// its Error from the task's error.
func failure(code grid.ErrorCode, p peer.ID) SkillResult {
	return SkillResult{Code: code, ExecutedBy: p}
}

func timeoutError(r *record, cause error) error {
	if err := waitTimeoutError(r, cause); err != nil {
		return err
	}
	if cause == nil {
		return fmt.Errorf("task %s: %w: its %v timeout passed", r.task.ID.Short(), ErrTimeout, r.task.Timeout)
	}
	return fmt.Errorf("task %s: %w: its %v timeout passed (attempt %d on %s: %v)", r.task.ID.Short(), ErrTimeout, r.task.Timeout, r.attempts, r.peer, cause)
}

func (c *DelegationCoordinator) canceledError(r *record) error {
	if c.closing.Load() {
		return fmt.Errorf("task %s: %w: %w", r.task.ID.Short(), ErrCanceled, ErrClosed)
	}
	return fmt.Errorf("task %s: %w", r.task.ID.Short(), ErrCanceled)
}

// finishLocked ends r in a terminal state with res and err. Its waiters
// wake when the caller announces it (publishUnlock). The shard lock must
// be held and r must not be terminal.
func (c *DelegationCoordinator) finishLocked(s *taskShard, r *record, state TaskState, res SkillResult, err error) {
	res.TaskID = r.task.ID
	res.Attempts = int(r.attempts)
	if res.ExecutedBy == "" {
		res.ExecutedBy = r.peer
	}
	if res.FinishedAt.IsZero() {
		res.FinishedAt = time.Now()
	}
	if !res.Success && err != nil {
		res.Error = err.Error()
	}
	r.state, r.result, r.err, r.updated = state, res, err, res.FinishedAt.UnixNano()
	r.job, r.att = nil, nil
	if r.retry != nil {
		r.retry.timer = nil
		c.refused.Delete(r)
	}
	s.finished(r)
	if c.cfg.store != nil {
		c.storeFinishLocked(r)
	}
}
