package skill

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// Waiting for a provider (graceful degradation). A task for a skill that
// only peers offer, when none of the peers that offer it may take it now
// (each one's circuit breaker is open, or the Directory no longer lists
// one after an attempt failed), neither fails nor is sent anywhere: it
// stays in StateRetrying and looks for a usable provider again after each
// backoff of its retry policy, until one appears (it then runs there) or
// its deadline passes (it then fails with ErrTimeout, and the error also
// wraps the *NoCapableNodeError that says why no provider was usable).
// A waiting task uses no attempt. A task for a skill this node has never
// waits: this node is always usable.

// waitable reports whether err, from pick, means "no usable provider for
// now" rather than "no provider at all" or "none trusted".
func waitable(err error) bool {
	var nc *NoCapableNodeError
	if !errors.As(err, &nc) {
		return false
	}
	switch nc.Reason {
	case AllCircuitOpen, AllUnreachable:
		return true
	case NoProvider:
		// At submission NoProvider means an unknown skill (SubmitTask
		// checks that first); after an attempt it means that the
		// providers left the Directory, and may come back.
		return true
	}
	return false
}

// noProvider reports whether err says no node offers the skill.
func noProvider(err error) bool {
	var nc *NoCapableNodeError
	return errors.As(err, &nc) && nc.Reason == NoProvider
}

// submitWaiting records t, for which no provider is usable now (cause
// says why), as waiting for one. checkDup is as for submitTo. With a store,
// the task is on disk before it is accepted, as one that waits to be sent
// to a peer.
func (c *DelegationCoordinator) submitWaiting(ctx context.Context, t *SkillTask, cause error, now time.Time, checkDup bool) (TaskID, error) {
	if c.cfg.store != nil {
		if err := c.acceptStored(ctx, t, false); err != nil {
			return TaskID{}, fmt.Errorf("submit task %s: %w", t.ID.Short(), err)
		}
	}
	id, err := c.addWaiting(t, cause, now, checkDup)
	if err != nil && c.cfg.store != nil {
		c.failStored(t, err)
	}
	return id, err
}

// addWaiting is submitWaiting once the task is stored.
func (c *DelegationCoordinator) addWaiting(t *SkillTask, cause error, now time.Time, checkDup bool) (TaskID, error) {
	s := c.tasks.shard(t.ID)
	r := &record{task: t, updated: now.UnixNano(), state: StateRetrying}
	s.mu.Lock()
	switch {
	case c.closing.Load():
		s.mu.Unlock()
		return TaskID{}, fmt.Errorf("submit task %s: %w", t.ID.Short(), ErrClosed)
	case checkDup && s.get(t.ID) != nil:
		s.mu.Unlock()
		return TaskID{}, fmt.Errorf("submit task %s: task ID is in use: %w", t.ID.Short(), grid.ErrDuplicateTask)
	case !c.tasks.add(s, r):
		s.mu.Unlock()
		return TaskID{}, fmt.Errorf("submit task %s: %d tasks are unfinished, the most this node tracks: %w", t.ID.Short(), c.cfg.maxTasks, ErrQueueFull)
	}
	c.announceLocked(r, now)
	c.waitForProviderLocked(s, r, 0, cause, now)
	return t.ID, nil
}

// waitForProviderLocked makes r, in StateRetrying after attempt n, look
// for a usable provider again after its next backoff (at the deadline at
// the latest). The shard lock must be held; it unlocks s.
func (c *DelegationCoordinator) waitForProviderLocked(s *taskShard, r *record, n int, cause error, now time.Time) {
	rs := r.retryState(&c.cfg)
	rs.waitErr = cause
	delay := min(rs.bo.NextBackOff(), r.task.Deadline().Sub(now))
	c.wg.Add(1)
	rs.timer = time.AfterFunc(max(delay, 0), func() { c.fireWait(r, n) })
	s.mu.Unlock()
}

// fireWait looks again for a usable provider for r, waiting after attempt
// n. It owns a place on c.wg.
func (c *DelegationCoordinator) fireWait(r *record, n int) {
	defer c.wg.Done()
	t := r.task
	s := c.tasks.shard(t.ID)
	now := time.Now()
	if !c.wakeLocked(s, r, n, now) {
		return
	}
	s.mu.Unlock()

	local, _ := c.router.localOffer(t)
	cand, err := c.pick(t, local, nil)
	now = time.Now()
	s.mu.Lock()
	if r.state != StateRetrying || int(r.attempts) != n || r.retry.timer != nil {
		s.mu.Unlock()
		return
	}
	switch {
	case err != nil && n == 0 && !local && noProvider(err) && !c.router.warming():
		// Accepted while this node's table filled (see submitNew); it has
		// filled, and no node offers the skill.
		c.finishLocked(s, r, StateFailed, failure(grid.CodeUnknownSkill, r.peer),
			fmt.Errorf("task %s: %w: %w", t.ID.Short(), ErrUnknownSkill, err))
		c.publishUnlock(s, r, now)
	case err != nil && waitable(err) && !c.closing.Load():
		c.waitForProviderLocked(s, r, n, err, now)
	case err != nil:
		c.finishLocked(s, r, StateFailed, failure(codeRejected, r.peer),
			fmt.Errorf("task %s: %w after %d attempts: %w", t.ID.Short(), ErrDelegationFailed, r.attempts, err))
		c.publishUnlock(s, r, now)
	case c.closing.Load():
		c.finishLocked(s, r, StateCanceled, failure(grid.CodeCanceled, r.peer), c.canceledError(r))
		c.publishUnlock(s, r, now)
	default:
		r.retry.waitErr = nil
		c.startRetryLocked(s, r, cand, now)
	}
}

// waitTimeoutError is the error of a task whose deadline passed while it
// waited for a usable provider (see above), or nil if it was not waiting.
func waitTimeoutError(r *record, cause error) error {
	if cause != nil || r.retry == nil || r.retry.waitErr == nil {
		return nil
	}
	return fmt.Errorf("task %s: %w: its %v timeout passed waiting for a usable provider: %w", r.task.ID.Short(), ErrTimeout, r.task.Timeout, r.retry.waitErr)
}
