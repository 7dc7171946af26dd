package grid

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sync"
	"time"
)

// ErrDuplicateTask is returned by Enqueue for an ID the queue already holds,
// queued or in flight.
var ErrDuplicateTask = errors.New("task ID already in the queue")

var zeroTaskID TaskID

var (
	errNilTask    = errors.New("task is nil")
	errZeroTaskID = errors.New("task has the zero ID: set QueuedTask.ID, e.g. with NewTaskID")
)

// QueueStats is a snapshot of a TaskQueue's state and of its counters.
type QueueStats struct {
	Depth    [NumLevels]int // ready tasks per level, index = Level
	InFlight int
	// Totals since NewTaskQueue. Failed counts tasks settled as failed;
	// Retried counts enqueued retry attempts (QueuedTask.Retries > 0: the
	// skill coordinator's retries that run on this node); Rejected counts
	// enqueues refused because the level was full. Removed tasks are in
	// none of Completed, Failed and TimedOut.
	Enqueued, Completed, Failed, Retried, TimedOut, Rejected uint64
}

// TaskQueue holds the tasks of one node: ready tasks in one FIFO per priority
// level, and tasks in flight (dequeued and not yet settled or removed). All
// methods are safe for concurrent use.
//
// Order. Dequeue looks only at the head of each level's FIFO, which is the
// task of that level that arrived first, and takes the one with the highest
// effective level. Critical tasks are served first by design. Below
// Critical, a task's effective level is its own level raised by one for
// every aging step of its age, which counts from its CreatedAt; ties go to
// the higher original level (and, within a level, FIFO order means the
// older task). By default the aging step adapts to load (see
// WithAdaptiveAging): it is the fixed step (WithAgingStep, default 10 s)
// while at most 64 tasks are ready in the levels above, and shrinks in
// proportion to a deeper backlog, so that a waiting task's wait stays
// bounded under a saturating stream of higher-level work. So in the
// ordinary case, where no task waits a whole step with a short queue,
// order is strict: highest level first, FIFO within a level. Under a
// steady stream of higher-level work a waiting task still gets out: with a
// short backlog a Low task overtakes fresh High tasks after three steps and
// fresh Normal tasks after two. Only Critical tasks can hold back the
// others for good. WithAgingStep(0) disables aging.
//
// With fixed aging (WithAdaptiveAging(0, 0)) the step never shrinks and the
// effective level is capped at Critical, so a deep High backlog whose head
// has itself waited a step ties with any aged Low task and wins the tie:
// Low tasks then wait until the stream stops.
//
// Limits. Each level holds at most its limit (default 1000) of ready
// tasks; Enqueue on a full level returns a
// *QueueFullError naming the level, and other levels still accept.
//
// Deadlines. A task enqueued without a Deadline gets CreatedAt plus the
// default timeout (300 s). Once Start has been called, a sweeper removes
// queued and in-flight tasks past their deadline every sweep
// interval (default 250 ms); Dequeue also drops expired heads as it meets
// them. Every task removed for its deadline is counted in TimedOut and
// passed to the expiry handler, outside the lock.
//
// Clock. While the sweeper runs, Dequeue does not read the clock: aging and
// dropping expired heads use the latest reading the queue made, refreshed
// at least every sweep interval, so they may act up to one interval late
// (never early). A clock read costs about as much as a whole channel send
// and receive, and this keeps it off the hot path. CreatedAt and the
// sweeper itself use exact readings.
//
// Retries. The queue does not retry: the skill coordinator's retry policy
// is the one retry engine; it waits out each backoff itself and enqueues
// each retry attempt that runs here as a new task with Retries set, which
// Retried counts.
type TaskQueue struct {
	cfg      queueConfig
	epoch    time.Time // clock origin: internal times are nanoseconds since it
	closedCh chan struct{}
	wg       sync.WaitGroup // the sweeper
	// waiterPool recycles queueWaiters. It is per queue, not global, so that
	// the channels of a queue made in a synctest bubble stay in that bubble.
	waiterPool sync.Pool

	mu         sync.Mutex
	index      queueIndex           // every task held, in any state, by ID
	ready      [NumLevels]queueRing // may hold removed tombstones
	live       [NumLevels]int       // ready tasks per level, tombstones excluded
	tombs      [NumLevels]int       // tombstones per level
	inFlight   int
	free       []*queueItem
	sweepBuf   []*queueItem   // reused by expireDueLocked
	waiters    []*queueWaiter // blocked Dequeue calls, first come first served
	nextExpiry int64          // no deadline held is earlier than this
	coarse     int64          // latest clock reading; see nowLocked
	coarseOn   bool           // the sweeper refreshes coarse
	started    bool
	closed     bool

	enqueued, completed, failed, retried, timedOut, rejected uint64
}

// NewTaskQueue returns an empty queue configured by opts. It reports every
// invalid option at once and starts nothing; call Start for deadline sweeps.
func NewTaskQueue(opts ...QueueOption) (*TaskQueue, error) {
	cfg := defaultQueueConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new task queue: %w", err)
	}
	cfg.setAgingFloor()
	return &TaskQueue{
		cfg:        cfg,
		epoch:      time.Now(),
		closedCh:   make(chan struct{}),
		waiterPool: sync.Pool{New: newQueueWaiter},
		index:      newQueueIndex(),
		nextExpiry: math.MaxInt64,
	}, nil
}

// Start starts the goroutine that removes tasks past their deadline every
// sweep interval. It stops when ctx is done or at Close. Start may be called
// once; it returns ErrClosed after Close.
func (q *TaskQueue) Start(ctx context.Context) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch {
	case q.closed:
		return fmt.Errorf("start task queue: %w", ErrClosed)
	case q.started:
		return errors.New("start task queue: already started")
	}
	q.started = true
	q.coarseOn = true
	q.observeLocked(q.now())
	q.wg.Add(1)
	go q.sweepLoop(ctx)
	return nil
}

// Close stops the queue: Enqueue, Dequeue and TryDequeue fail from then on,
// and blocked Dequeue calls return ErrClosed. It waits for the sweeper,
// but not for expiry handlers running in other goroutines' Dequeue calls.
// Tasks still held are neither dropped nor reported; Complete,
// SettleTryDequeue, Remove and Stats keep working. Close is idempotent and
// always returns nil.
func (q *TaskQueue) Close() error {
	q.mu.Lock()
	if !q.closed {
		q.closed = true
		close(q.closedCh)
	}
	q.mu.Unlock()
	q.wg.Wait()
	return nil
}

// Enqueue adds t at the tail of its level. It sets t.CreatedAt to now if
// zero (a clock read that callers who have stamped the task already can
// save) and t.Deadline to CreatedAt plus the default timeout if zero. It
// returns a *QueueFullError (errors.Is ErrQueueFull) if t's level is full,
// ErrClosed after Close, ErrDuplicateTask if t.ID is held already, and an
// error for a nil task or a zero ID. From a nil return until Complete,
// SettleTryDequeue, Remove or expiry, the queue owns t.
func (q *TaskQueue) Enqueue(t *QueuedTask) error {
	if t == nil {
		return fmt.Errorf("enqueue task: %w", errNilTask)
	}
	if sameID(&t.ID, &zeroTaskID) {
		return fmt.Errorf("enqueue task: %w", errZeroTaskID)
	}
	stamped := t.CreatedAt.IsZero()
	if stamped {
		t.CreatedAt = time.Now()
	}
	if t.Deadline.IsZero() {
		t.Deadline = t.CreatedAt.Add(q.cfg.defaultTimeout)
	}
	created := int64(t.CreatedAt.Sub(q.epoch))
	l := t.Level()

	q.mu.Lock()
	if stamped {
		q.observeLocked(created)
	}
	h, slot, err := q.admitLocked(t, l)
	if err != nil {
		q.mu.Unlock()
		return err
	}
	it := q.newItemLocked(t, l)
	it.deadline = int64(t.Deadline.Sub(q.epoch))
	q.index.putAt(slot, h, it)
	q.enqueued++
	if t.Retries > 0 {
		q.retried++
	}
	if it.deadline < q.nextExpiry {
		q.nextExpiry = it.deadline
	}
	if len(q.waiters) == 0 {
		q.pushReadyLocked(it, created)
		q.mu.Unlock()
		return nil
	}
	if q.handOffLocked(it, created) {
		q.mu.Unlock()
		return nil
	}
	q.pushReadyLocked(it, created)
	var expired []queueExpired
	q.dispatchLocked(q.nowLocked(), &expired)
	q.mu.Unlock()
	q.report(expired)
	return nil
}

// admitLocked returns t's hash and index slot, or why t may not be enqueued.
func (q *TaskQueue) admitLocked(t *QueuedTask, l Level) (uint64, int, error) {
	if q.closed {
		return 0, 0, fmt.Errorf("enqueue task %s: %w", t.ID.Short(), ErrClosed)
	}
	if q.live[l] >= q.cfg.limits[l] {
		q.rejected++
		return 0, 0, &QueueFullError{Level: l, Max: q.cfg.limits[l]}
	}
	h, slot, dup := q.index.slotFor(&t.ID)
	if dup {
		return 0, 0, fmt.Errorf("enqueue task %s: %w", t.ID.Short(), ErrDuplicateTask)
	}
	return h, slot, nil
}

// Dequeue takes the next task (see TaskQueue for the order) and moves it to
// in flight, blocking until one is ready, ctx is done or the queue is closed.
// It returns ctx.Err() or ErrClosed then; a task handed to a Dequeue whose
// ctx ends at that moment goes back to the head of its level, and one handed
// over just before Close is returned.
func (q *TaskQueue) Dequeue(ctx context.Context) (*QueuedTask, error) {
	var expired []queueExpired
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, ErrClosed
	}
	if it := q.takeLocked(&expired); it != nil {
		t := it.task
		q.mu.Unlock()
		q.report(expired)
		return t, nil
	}
	if err := ctx.Err(); err != nil {
		q.mu.Unlock()
		q.report(expired)
		return nil, err
	}
	w := q.waiterPool.Get().(*queueWaiter)
	w.listed = true
	q.waiters = append(q.waiters, w)
	q.mu.Unlock()
	q.report(expired)

	select {
	case t := <-w.ch:
		q.waiterPool.Put(w)
		return t, nil
	case <-ctx.Done():
		return q.abandon(w, ctx.Err())
	case <-q.closedCh:
		return q.abandon(w, ErrClosed)
	}
}

// abandon takes w off the waiter list for a Dequeue that gives up with err.
// If a task was handed to w in the meantime, it is returned after Close, and
// put back at the head of its level otherwise.
func (q *TaskQueue) abandon(w *queueWaiter, err error) (*QueuedTask, error) {
	var expired []queueExpired
	q.mu.Lock()
	if w.listed {
		q.unlistWaiterLocked(w)
		q.mu.Unlock()
		q.waiterPool.Put(w)
		return nil, err
	}
	t := <-w.ch // handed over under the lock, before we took it
	q.waiterPool.Put(w)
	if q.closed {
		q.mu.Unlock()
		return t, nil
	}
	if it := q.index.get(&t.ID); it != nil && it.state == stateInFlight && it.task == t {
		q.inFlight--
		it.state = stateReady
		q.ready[it.level].pushFront(it)
		q.live[it.level]++
		q.dispatchLocked(q.nowLocked(), &expired)
	}
	q.mu.Unlock()
	q.report(expired)
	return nil, err
}

// TryDequeue is Dequeue without blocking: it returns false if no task is
// ready or the queue is closed.
func (q *TaskQueue) TryDequeue() (*QueuedTask, bool) {
	var expired []queueExpired
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return nil, false
	}
	var t *QueuedTask
	if it := q.takeLocked(&expired); it != nil {
		t = it.task
	}
	q.mu.Unlock()
	q.report(expired)
	return t, t != nil
}

// Complete marks the in-flight task id done and lets go of it. It returns
// false if id is not in flight (unknown, still queued, removed or expired).
func (q *TaskQueue) Complete(id TaskID) bool {
	q.mu.Lock()
	ok := q.settleLocked(&id, true)
	q.mu.Unlock()
	return ok
}

// SettleTryDequeue ends the in-flight task id as Complete(id) does if done
// is set, and counted failed if not, then takes the next ready
// task as TryDequeue does, all under one acquisition of the queue's lock: a
// worker that goes on to its next task saves a lock round trip per task.
// settled reports whether id was in flight; next is nil if no task is
// ready or the queue is closed.
func (q *TaskQueue) SettleTryDequeue(id TaskID, done bool) (next *QueuedTask, settled bool) {
	var expired []queueExpired
	q.mu.Lock()
	settled = q.settleLocked(&id, done)
	if !q.closed {
		if it := q.takeLocked(&expired); it != nil {
			next = it.task
		}
	}
	q.mu.Unlock()
	q.report(expired)
	return next, settled
}

// settleLocked lets go of the in-flight task id, counted completed if done
// is set and failed if not. It returns false if id is not in flight.
func (q *TaskQueue) settleLocked(id *TaskID, done bool) bool {
	slot := q.inFlightSlotLocked(id)
	if slot < 0 {
		return false
	}
	q.settleAtLocked(slot, done)
	return true
}

// inFlightSlotLocked returns the index slot of the in-flight task id, or -1
// if id is not in flight.
func (q *TaskQueue) inFlightSlotLocked(id *TaskID) int {
	slot := q.index.find(id)
	if slot < 0 || q.index.slots[slot].state != stateInFlight {
		return -1
	}
	return slot
}

// settleAtLocked lets go of the in-flight task in index slot, counted
// completed if done is set and failed if not.
func (q *TaskQueue) settleAtLocked(slot int, done bool) {
	it := q.index.slots[slot]
	q.index.deleteAt(slot)
	q.inFlight--
	if done {
		q.completed++
	} else {
		q.failed++
	}
	q.freeItemLocked(it)
}

// Remove takes task id out of the queue wherever it is (ready or in
// flight), for cancellation, and returns it. It is counted neither failed nor
// timed out. It returns false if the queue does not hold id.
func (q *TaskQueue) Remove(id TaskID) (*QueuedTask, bool) {
	q.mu.Lock()
	defer q.mu.Unlock()
	slot := q.index.find(&id)
	if slot < 0 {
		return nil, false
	}
	it := q.index.slots[slot]
	t, l := it.task, it.level
	q.index.deleteAt(slot)
	q.dropLocked(it) // may free it
	if q.tombs[l] > 32 && q.tombs[l] > q.live[l] {
		q.compactLocked(l)
	}
	return t, true
}

// Stats returns the current depths and the totals since NewTaskQueue.
func (q *TaskQueue) Stats() QueueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	return QueueStats{
		Depth:     q.live,
		InFlight:  q.inFlight,
		Enqueued:  q.enqueued,
		Completed: q.completed,
		Failed:    q.failed,
		Retried:   q.retried,
		TimedOut:  q.timedOut,
		Rejected:  q.rejected,
	}
}

// Len returns the number of tasks waiting: ready, not in flight.
func (q *TaskQueue) Len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, d := range q.live {
		n += d
	}
	return n
}

// now reads the monotonic clock: the time since q.epoch.
func (q *TaskQueue) now() int64 { return int64(time.Since(q.epoch)) }

// nowLocked returns the time for decisions that may lag real time a little:
// aging and dropping expired heads (a lagging clock never expires early).
// While the sweeper runs it is the latest clock
// reading the queue made, refreshed every sweep interval, which keeps clock
// reads (about as costly as a whole channel send and receive) off the hot
// path; otherwise it reads the clock.
func (q *TaskQueue) nowLocked() int64 {
	if q.coarseOn {
		return q.coarse
	}
	return q.now()
}

// observeLocked records a clock reading for nowLocked.
func (q *TaskQueue) observeLocked(now int64) {
	if now > q.coarse {
		q.coarse = now
	}
}
