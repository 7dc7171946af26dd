package grid

import (
	"context"
	"math"
	"time"
)

// queueExpired is a task removed for its deadline, to report once the lock
// is released.
type queueExpired struct {
	task        *QueuedTask
	wasInFlight bool
}

// expireLocked forgets it as timed out and records it for report. The caller
// takes it out of the ring or the in-flight count.
func (q *TaskQueue) expireLocked(it *queueItem, expired *[]queueExpired) {
	q.index.delete(it)
	q.timedOut++
	*expired = append(*expired, queueExpired{task: it.task, wasInFlight: it.state == stateInFlight})
}

// dropLocked takes it out of wherever it is held (not out of q.index). A
// ready item becomes a tombstone, freed when it leaves the ring; others are
// freed at once.
func (q *TaskQueue) dropLocked(it *queueItem) {
	switch it.state {
	case stateReady:
		it.state = stateRemoved
		it.task = nil
		q.live[it.level]--
		q.tombs[it.level]++
	case stateInFlight:
		q.inFlight--
		q.freeItemLocked(it)
	}
}

// compactLocked removes the tombstones from level l's ring, keeping order.
func (q *TaskQueue) compactLocked(l Level) {
	r := &q.ready[l]
	j := 0
	for i := 0; i < r.n; i++ {
		it := r.at(i)
		if it.state == stateRemoved {
			q.freeItemLocked(it)
			continue
		}
		r.buf[(r.head+j)&r.mask()] = it
		j++
	}
	for k := j; k < r.n; k++ {
		r.buf[(r.head+k)&r.mask()] = nil
	}
	r.n = j
	q.tombs[l] = 0
}

// expireDueLocked removes every task whose deadline is at or before now.
// It scans only when q.nextExpiry says some deadline may have passed.
func (q *TaskQueue) expireDueLocked(now int64, expired *[]queueExpired) {
	if now < q.nextExpiry {
		return
	}
	next := int64(math.MaxInt64)
	due := q.sweepBuf[:0]
	for _, it := range q.index.slots { // collect first: deleting shifts slots
		switch {
		case it == nil:
		case it.deadline > now:
			next = min(next, it.deadline)
		default:
			due = append(due, it)
		}
	}
	for i, it := range due {
		q.expireLocked(it, expired)
		q.dropLocked(it)
		due[i] = nil
	}
	q.sweepBuf = due[:0]
	q.nextExpiry = next
	for l := range q.tombs {
		if q.tombs[l] > 0 {
			q.compactLocked(Level(l))
		}
	}
}

// report passes expired tasks to the expiry handler. The lock must not be
// held.
func (q *TaskQueue) report(expired []queueExpired) {
	if q.cfg.onExpire == nil {
		return
	}
	for _, e := range expired {
		q.cfg.onExpire(e.task, e.wasInFlight)
	}
}

func (q *TaskQueue) sweepLoop(ctx context.Context) {
	defer q.wg.Done()
	defer func() {
		q.mu.Lock()
		q.coarseOn = false // nobody refreshes it any more
		q.mu.Unlock()
	}()
	tick := time.NewTicker(q.cfg.sweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-q.closedCh:
			return
		case <-tick.C:
			q.sweep()
		}
	}
}

// sweep removes and reports the tasks past their deadline.
func (q *TaskQueue) sweep() {
	var expired []queueExpired
	now := q.now()
	q.mu.Lock()
	q.observeLocked(now)
	q.expireDueLocked(now, &expired)
	q.mu.Unlock()
	q.report(expired)
}
