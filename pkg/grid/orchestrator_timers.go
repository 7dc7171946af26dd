package grid

import (
	"context"
	"fmt"
	"time"
)

// The ack timeouts and result deadlines of a stream's pending calls share
// one timer, set for the call due first: a time.AfterFunc per call cost two
// allocations (the timer and the method value) on every task. The calls
// are in a heap ordered by due; all of it is guarded by the stream's mu.

// callHeap is a min-heap of calls by due. A call's hpos is 1 + its index,
// 0 while it is not in the heap.
type callHeap []*call

func (h *callHeap) push(c *call) {
	*h = append(*h, c)
	c.hpos = len(*h)
	h.up(len(*h) - 1)
}

// remove takes c out of h; it does nothing if c is not there.
func (h *callHeap) remove(c *call) {
	i := c.hpos - 1
	if i < 0 {
		return
	}
	n := len(*h) - 1
	if i != n {
		h.swap(i, n)
	}
	(*h)[n] = nil
	*h = (*h)[:n]
	c.hpos = 0
	if i != n && !h.down(i) {
		h.up(i)
	}
}

func (h callHeap) less(i, j int) bool { return h[i].due.Before(h[j].due) }

func (h callHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hpos, h[j].hpos = i+1, j+1
}

func (h callHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(j, i) {
			return
		}
		h.swap(i, j)
		j = i
	}
}

// down moves the element at i down to its place and reports whether it
// moved.
func (h callHeap) down(i0 int) bool {
	i, n := i0, len(h)
	for {
		j := 2*i + 1
		if j >= n || j < 0 {
			break
		}
		if r := j + 1; r < n && h.less(r, j) {
			j = r
		}
		if !h.less(j, i) {
			break
		}
		h.swap(i, j)
		i = j
	}
	return i > i0
}

// watchLocked puts c, just registered, on the stream's timer: it fires at
// c's ack timeout or its result deadline, whichever comes first.
func (out *outStream) watchLocked(c *call, now time.Time) {
	c.due = c.ackBy
	if c.resultBy.Before(c.due) {
		c.due = c.resultBy
	}
	out.timers.push(c)
	out.armLocked(now)
}

// unwatchLocked takes c, leaving the pending map, off the stream's timer.
func (out *outStream) unwatchLocked(c *call) { out.timers.remove(c) }

// armLocked sets the stream's timer for the call due first, unless it is
// set for that time or earlier already.
func (out *outStream) armLocked(now time.Time) {
	if len(out.timers) == 0 {
		return
	}
	due := out.timers[0].due
	if !out.armedAt.IsZero() && !due.Before(out.armedAt) {
		return
	}
	out.armedAt = due
	if out.timer == nil {
		out.timer = time.AfterFunc(due.Sub(now), out.onTimers)
	} else {
		out.timer.Reset(due.Sub(now))
	}
}

// onTimers gives up on every call past its ack timeout or its result
// deadline, and sets the timer for the next one. A call acked in time
// waits on for its result deadline.
func (out *outStream) onTimers() {
	out.mu.Lock()
	out.armedAt = time.Time{}
	now := time.Now()
	var fired []*call
	for len(out.timers) > 0 && !now.Before(out.timers[0].due) {
		c := out.timers[0]
		if now.Before(c.resultBy) && (c.acked.Load() || now.Before(c.ackBy)) {
			c.due = c.resultBy // acked: only the result deadline is left
			out.timers.down(0)
			continue
		}
		out.timers.remove(c)
		delete(out.pending, c.id)
		fired = append(fired, c)
	}
	if !out.dead {
		out.armLocked(now)
	}
	out.mu.Unlock()
	for _, c := range fired {
		var err error
		if !now.Before(c.resultBy) {
			// The task's deadline and a short grace, or the deadline of a
			// HookContext.
			err = fmt.Errorf("no result by the task deadline: %w", context.DeadlineExceeded)
		} else {
			err = ErrAckTimeout
		}
		out.sendCancel(c)
		c.finish(nil, err)
	}
}

// stopTimersLocked empties the heap and stops the timer, for fail, which
// finishes every pending call.
func (out *outStream) stopTimersLocked() {
	for i, c := range out.timers {
		c.hpos = 0
		out.timers[i] = nil
	}
	out.timers = out.timers[:0]
	out.armedAt = time.Time{}
	if out.timer != nil {
		out.timer.Stop()
	}
}
