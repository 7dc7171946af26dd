package skill

import (
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// abortLocked ends r from outside its attempt (Cancel, Close, a deadline):
// it stops the attempt, whatever it is, and finishes r. The shard lock
// must be held.
func (c *DelegationCoordinator) abortLocked(s *taskShard, r *record, state TaskState, code grid.ErrorCode, err error) {
	job, att := r.job, r.att
	var timer *time.Timer
	if r.retry != nil {
		timer = r.retry.timer
	}
	c.finishLocked(s, r, state, failure(code, r.peer), err)
	if timer != nil && timer.Stop() {
		c.wg.Done()
	}
	if att != nil {
		att.cancel()
	}
	if job != nil {
		c.q.Remove(r.task.ID)
		job.Cancel()
	}
}

// Cancel stops a task: a queued one leaves the queue, a running local one
// has its context canceled, a remote one has its Delegate context canceled
// (which tells the peer). The task finishes at once as canceled; a result
// that comes later is dropped. It returns an error wrapping
// ErrTaskNotFound or ErrTaskFinished.
func (c *DelegationCoordinator) Cancel(id TaskID) error {
	s := c.tasks.shard(id)
	s.mu.Lock()
	r := s.get(id)
	switch {
	case r == nil:
		s.mu.Unlock()
		return fmt.Errorf("cancel task %s: %w", id.Short(), ErrTaskNotFound)
	case r.state.Terminal():
		st := r.state
		s.mu.Unlock()
		return fmt.Errorf("cancel task %s: it %s: %w", id.Short(), st, ErrTaskFinished)
	}
	c.abortLocked(s, r, StateCanceled, grid.CodeCanceled, fmt.Errorf("task %s: %w", id.Short(), ErrCanceled))
	c.publishUnlock(s, r, r.updatedAt())
	return nil
}

// QueueExpired is the queue's expiry handler (grid.WithExpiryHandler): it
// fails the task of an expired queue entry with ErrTimeout, or answers the
// peer that sent it. The coordinator installs it on the queue it builds;
// a caller that builds the queue should install it too.
func (c *DelegationCoordinator) QueueExpired(qt *grid.QueuedTask, wasInFlight bool) {
	job, ok := qt.Payload.(*Job)
	if !ok || job == nil {
		return
	}
	if job.run != nil {
		job.Cancel()
		c.endRun(job.run, SkillResult{Code: grid.CodeTimeout, Error: "deadline passed on the executing node"})
		return
	}
	s := c.tasks.shard(qt.ID)
	s.mu.Lock()
	r := s.get(qt.ID)
	if r != nil && r.job == job {
		c.timeoutLocked(s, r, time.Now())
		return
	}
	s.mu.Unlock()
	c.in.expire(c, qt.ID, job)
}

// timeoutLocked fails r with ErrTimeout and records a timeout against the
// node of its running attempt, if any: a peer it was delegated to, or this
// node if the skill was running here. A task whose deadline passed while
// it waited in this node's queue counts against no node. It unlocks s.
func (c *DelegationCoordinator) timeoutLocked(s *taskShard, r *record, now time.Time) {
	if r.state.Terminal() {
		s.mu.Unlock()
		return
	}
	switch {
	case r.state == StateDelegated:
		c.account(r.task, outcome{kind: kindTimeout, peer: r.peer, trust: reputation.OutcomeTimeout})
	case r.state == StateQueued && r.job != nil && r.job.Started():
		c.account(r.task, outcome{kind: kindTimeout, peer: r.peer})
	}
	c.abortLocked(s, r, StateTimedOut, grid.CodeTimeout, timeoutError(r, nil))
	c.publishUnlock(s, r, now)
}

// sweepTasks drops the results whose retention is over and times out the
// tasks whose deadline passed without the queue, the executor or Delegate
// noticing it.
func (c *DelegationCoordinator) sweepTasks(now time.Time) {
	cutoff := now.Add(-c.cfg.retention)
	var overdue []*record
	for i := range c.tasks.shards {
		s := &c.tasks.shards[i]
		s.mu.Lock()
		c.tasks.expire(s, cutoff)
		if s.active > 0 { // else, the common case, there is nothing to look at
			s.each(func(r *record) {
				if !r.state.Terminal() && !now.Before(r.task.Deadline()) {
					overdue = append(overdue, r)
				}
			})
		}
		s.mu.Unlock()
	}
	for _, r := range overdue {
		s := c.tasks.shard(r.task.ID)
		s.mu.Lock()
		c.timeoutLocked(s, r, now)
	}
}
