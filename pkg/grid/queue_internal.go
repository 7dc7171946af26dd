package grid

import (
	"math"
	"math/bits"
)

// queueState says where a queueItem is.
type queueState uint8

const (
	stateReady    queueState = iota + 1 // in ready[level]
	stateInFlight                       // dequeued, only in items
	stateRemoved                        // a tombstone left in ready[level]
)

// queueItem is the queue's record of one task. Times are nanoseconds since
// the queue's epoch. Items are recycled through TaskQueue.free.
type queueItem struct {
	id       TaskID // task.ID, kept here so the index need not follow task
	hash     uint64 // set by queueIndex.putAt
	task     *QueuedTask
	level    Level
	state    queueState
	readyAt  int64 // when it joined its level's FIFO
	deadline int64
}

// queueMaxFree bounds the free list, so a burst does not pin memory.
const queueMaxFree = 4096

func (q *TaskQueue) newItemLocked(t *QueuedTask, l Level) *queueItem {
	var it *queueItem
	if n := len(q.free); n > 0 {
		it = q.free[n-1]
		q.free[n-1] = nil
		q.free = q.free[:n-1]
	} else {
		it = new(queueItem)
	}
	it.id, it.task, it.level = t.ID, t, l
	return it
}

func (q *TaskQueue) freeItemLocked(it *queueItem) {
	*it = queueItem{}
	if len(q.free) < queueMaxFree {
		q.free = append(q.free, it)
	}
}

// queueRing is a growable ring buffer of items; its capacity is a power of
// two and it never shrinks, so a queue in steady state does not allocate.
type queueRing struct {
	buf  []*queueItem
	head int
	n    int
}

func (r *queueRing) mask() int { return len(r.buf) - 1 }

func (r *queueRing) at(i int) *queueItem { return r.buf[(r.head+i)&r.mask()] }

func (r *queueRing) push(it *queueItem) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.buf[(r.head+r.n)&r.mask()] = it
	r.n++
}

func (r *queueRing) pushFront(it *queueItem) {
	if r.n == len(r.buf) {
		r.grow()
	}
	r.head = (r.head - 1) & r.mask()
	r.buf[r.head] = it
	r.n++
}

func (r *queueRing) pop() *queueItem {
	it := r.buf[r.head]
	r.buf[r.head] = nil
	r.head = (r.head + 1) & r.mask()
	r.n--
	return it
}

func (r *queueRing) grow() {
	buf := make([]*queueItem, max(16, 2*len(r.buf)))
	for i := 0; i < r.n; i++ {
		buf[i] = r.at(i)
	}
	r.buf, r.head = buf, 0
}

// queueWaiter is a blocked Dequeue. Whoever takes it off TaskQueue.waiters
// (under the lock) sends it exactly one task, or nothing if the Dequeue took
// itself off. ch has room for one, so the send never blocks.
type queueWaiter struct {
	ch     chan *QueuedTask
	listed bool
}

func newQueueWaiter() any { return &queueWaiter{ch: make(chan *QueuedTask, 1)} }

func (q *TaskQueue) unlistWaiterLocked(w *queueWaiter) {
	for i, x := range q.waiters {
		if x == w {
			copy(q.waiters[i:], q.waiters[i+1:])
			q.waiters[len(q.waiters)-1] = nil
			q.waiters = q.waiters[:len(q.waiters)-1]
			break
		}
	}
	w.listed = false
}

// dispatchLocked hands ready tasks to blocked Dequeue calls, oldest first,
// while there are both.
func (q *TaskQueue) dispatchLocked(now int64, expired *[]queueExpired) {
	for len(q.waiters) > 0 {
		it := q.pickLocked(now, expired)
		if it == nil {
			return
		}
		w := q.waiters[0]
		q.unlistWaiterLocked(w)
		w.ch <- it.task
	}
}

// handOffLocked gives it, a task being enqueued (ready since readyAt)
// while Dequeue calls are blocked, straight to the first of them without
// going through its level's FIFO, and reports whether it did. While a
// Dequeue is blocked no task is ready (dispatchLocked hands every ready
// task to a waiter), so it is next in the queue's order, unless it is past
// its deadline: then it declines, and the caller queues it and dispatches
// as usual.
func (q *TaskQueue) handOffLocked(it *queueItem, readyAt int64) bool {
	now := q.nowLocked()
	if it.deadline <= now || q.live != [NumLevels]int{} {
		return false
	}
	it.state = stateInFlight
	it.readyAt = readyAt // as pushReadyLocked would, should it come back
	q.inFlight++
	w := q.waiters[0]
	q.unlistWaiterLocked(w)
	w.ch <- it.task
	return true
}

// takeLocked is pickLocked at the queue's clock, for Dequeue and
// TryDequeue. Should Dequeue calls be blocked while tasks are left ready,
// it hands those the rest.
func (q *TaskQueue) takeLocked(expired *[]queueExpired) *queueItem {
	now := q.nowLocked()
	it := q.pickLocked(now, expired)
	if it != nil && len(q.waiters) > 0 {
		q.dispatchLocked(now, expired)
	}
	return it
}

// pickLocked moves the next task (see TaskQueue) to in flight and returns
// it, or returns nil if none is ready. It drops tombstones and expired
// tasks it finds at the heads.
func (q *TaskQueue) pickLocked(now int64, expired *[]queueExpired) *queueItem {
	// top is the effective level no other head can beat: Critical for fixed
	// aging, which caps there, and no cap but for Critical tasks themselves
	// with adaptive aging (see WithAdaptiveAging).
	top := int64(LevelCritical)
	if q.cfg.adaptiveK > 0 {
		top = math.MaxInt64
	}
	best, bestEff := -1, int64(-1)
	above := 0 // ready tasks in the levels above l
	for l := NumLevels - 1; l >= 0 && bestEff < top; l-- {
		it := q.headLocked(Level(l), now, expired)
		if it == nil {
			continue
		}
		eff := int64(l)
		switch age := now - it.readyAt; {
		case l == int(LevelCritical):
			eff = top
		case age >= q.cfg.agingFloor && q.cfg.agingStep > 0: // no step is shorter
			eff = q.agedLevel(Level(l), age, above, top)
		}
		above += q.live[l]
		if eff > bestEff { // a tie keeps the higher original level, seen first
			best, bestEff = l, eff
		}
	}
	if best < 0 {
		return nil
	}
	it := q.ready[best].pop()
	q.live[best]--
	it.state = stateInFlight
	q.inFlight++
	return it
}

// agedLevel returns the effective level, at most top, of a head of level l
// below Critical that has waited age, at least the shortest step, with
// above tasks ready in the levels above it.
func (q *TaskQueue) agedLevel(l Level, age int64, above int, top int64) int64 {
	c := &q.cfg
	if c.adaptiveK == 0 || above <= c.adaptiveK {
		return min(int64(l)+age/int64(c.agingStep), top)
	}
	// The step is max(floor, step*k/above): floor if above*floor >=
	// step*k, and else age/step is age*above/(step*k), done in 128 bits.
	b := uint64(above)
	if hi, lo := bits.Mul64(b, uint64(c.agingFloor)); hi > 0 || lo >= c.stepK {
		return min(int64(l)+age/c.agingFloor, top)
	}
	hi, lo := bits.Mul64(uint64(age), b)
	if hi >= c.stepK { // a quotient past 2^64: no real wait is that long
		return top
	}
	steps, _ := bits.Div64(hi, lo, c.stepK)
	return min(int64(l)+int64(min(steps, math.MaxInt64-uint64(NumLevels))), top)
}

// headLocked returns the head of level l's FIFO, first dropping tombstones
// and expiring tasks past their deadline; nil if the level has none ready.
func (q *TaskQueue) headLocked(l Level, now int64, expired *[]queueExpired) *queueItem {
	r := &q.ready[l]
	for r.n > 0 {
		it := r.at(0)
		switch {
		case it.state == stateRemoved:
			r.pop()
			q.tombs[l]--
			q.freeItemLocked(it)
		case it.deadline <= now:
			r.pop()
			q.live[l]--
			q.expireLocked(it, expired)
			q.freeItemLocked(it)
		default:
			return it
		}
	}
	return nil
}

func (q *TaskQueue) pushReadyLocked(it *queueItem, now int64) {
	it.state = stateReady
	it.readyAt = now
	q.ready[it.level].push(it)
	q.live[it.level]++
}
