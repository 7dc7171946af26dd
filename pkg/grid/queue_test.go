package grid

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Priorities that fall in each level.
const (
	prioLow      uint8 = 10
	prioNormal   uint8 = 100
	prioHigh     uint8 = 150
	prioCritical uint8 = 200
)

// qtask returns a task with an ID derived from n.
func qtask(n int, prio uint8) *QueuedTask {
	var id TaskID
	id[0], id[1], id[2], id[31] = byte(n>>16), byte(n>>8), byte(n), 1
	return &QueuedTask{ID: id, Priority: prio}
}

// settleFailed lets go of the in-flight task id, counted failed, as
// SettleTryDequeue(id, false) does without taking the next task. It
// reports whether id was in flight.
func settleFailed(q *TaskQueue, id TaskID) bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.settleLocked(&id, false)
}

// retry fails the in-flight task and enqueues it again as the skill
// coordinator enqueues a retry that runs on its node, once its backoff is
// over: one more retry, ready at once.
func retry(tb testing.TB, q *TaskQueue, task *QueuedTask) {
	tb.Helper()
	if !settleFailed(q, task.ID) {
		tb.Fatalf("fail %s: not in flight", task.ID.Short())
	}
	task.Retries++
	mustEnqueue(tb, q, task)
}

// newQueueT returns a queue closed at the end of the test.
func newQueueT(tb testing.TB, opts ...QueueOption) *TaskQueue {
	tb.Helper()
	q, err := NewTaskQueue(opts...)
	if err != nil {
		tb.Fatalf("NewTaskQueue: %v", err)
	}
	tb.Cleanup(func() { _ = q.Close() })
	return q
}

func mustEnqueue(tb testing.TB, q *TaskQueue, ts ...*QueuedTask) {
	tb.Helper()
	for _, t := range ts {
		if err := q.Enqueue(t); err != nil {
			tb.Fatalf("Enqueue(%s): %v", t.ID.Short(), err)
		}
	}
}

func mustTryDequeue(tb testing.TB, q *TaskQueue) *QueuedTask {
	tb.Helper()
	t, ok := q.TryDequeue()
	if !ok {
		tb.Fatal("TryDequeue found no task")
	}
	return t
}

func TestQueueOrder(t *testing.T) {
	cases := []struct {
		name  string
		prios []uint8
		want  []int // indexes into prios, in dequeue order
	}{
		{"strict priority order serves the highest level first", []uint8{prioLow, prioNormal, prioHigh, prioCritical}, []int{3, 2, 1, 0}},
		{"FIFO holds within a level", []uint8{prioNormal, prioNormal + 20, prioNormal + 5, prioNormal}, []int{0, 1, 2, 3}},
		{"priorities within one level do not reorder it", []uint8{128, 191, 150}, []int{0, 1, 2}},
		{"levels interleaved come out level by level in arrival order", []uint8{prioLow, prioHigh, prioLow, prioCritical, prioHigh, prioNormal}, []int{3, 1, 4, 5, 0, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueueT(t)
			tasks := make([]*QueuedTask, len(tc.prios))
			for i, p := range tc.prios {
				tasks[i] = qtask(i+1, p)
				mustEnqueue(t, q, tasks[i])
			}
			for n, i := range tc.want {
				got, err := q.Dequeue(context.Background())
				if err != nil {
					t.Fatalf("Dequeue %d: %v", n, err)
				}
				if got != tasks[i] {
					t.Fatalf("Dequeue %d = task with priority %d (id %s), want task %d", n, got.Priority, got.ID.Short(), i)
				}
			}
			if _, ok := q.TryDequeue(); ok {
				t.Fatal("TryDequeue found a task in an emptied queue")
			}
		})
	}
}

func TestQueueBackpressurePerLevel(t *testing.T) {
	q := newQueueT(t, WithMaxPerLevel(3), WithLevelLimit(LevelHigh, 2))
	mustEnqueue(t, q, qtask(1, prioHigh), qtask(2, prioHigh))
	err := q.Enqueue(qtask(3, prioHigh))
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("Enqueue on a full level = %v, want ErrQueueFull", err)
	}
	var full *QueueFullError
	if !errors.As(err, &full) || full.Level != LevelHigh || full.Max != 2 {
		t.Fatalf("Enqueue on a full level = %#v, want a *QueueFullError for level high, max 2", err)
	}
	mustEnqueue(t, q, qtask(4, prioLow), qtask(5, prioLow), qtask(6, prioLow), qtask(7, prioCritical))
	if err := q.Enqueue(qtask(8, prioLow)); !errors.As(err, &full) || full.Level != LevelLow || full.Max != 3 {
		t.Fatalf("fourth low Enqueue = %v, want the low level full at 3", err)
	}
	// Taking one out makes room again.
	if got := mustTryDequeue(t, q); got.Priority != prioCritical {
		t.Fatalf("dequeued priority %d, want critical", got.Priority)
	}
	mustTryDequeue(t, q) // a high task
	mustEnqueue(t, q, qtask(9, prioHigh))
	if s := q.Stats(); s.Rejected != 2 || s.Enqueued != 7 {
		t.Fatalf("Rejected, Enqueued = %d, %d, want 2, 7", s.Rejected, s.Enqueued)
	}
}

func TestQueueEnqueueRefusesBadTasks(t *testing.T) {
	q := newQueueT(t)
	mustEnqueue(t, q, qtask(1, prioNormal))
	cases := []struct {
		name string
		task *QueuedTask
		want error
	}{
		{"a nil task is refused", nil, errNilTask},
		{"a zero ID is refused", &QueuedTask{Priority: prioHigh}, errZeroTaskID},
		{"an ID already held is refused", qtask(1, prioHigh), ErrDuplicateTask},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := q.Enqueue(tc.task); !errors.Is(err, tc.want) {
				t.Fatalf("Enqueue = %v, want %v", err, tc.want)
			}
		})
	}
	if s := q.Stats(); s.Enqueued != 1 || s.Rejected != 0 {
		t.Fatalf("Enqueued, Rejected = %d, %d, want 1, 0", s.Enqueued, s.Rejected)
	}
}

func TestNewTaskQueueJoinsEveryProblem(t *testing.T) {
	_, err := NewTaskQueue(WithMaxPerLevel(0), WithDefaultTimeout(-time.Second), WithLevelLimit(Level(9), 5))
	var joined interface{ Unwrap() []error }
	if !errors.As(err, &joined) {
		t.Fatalf("NewTaskQueue = %v, want joined errors", err)
	}
	// 4 level limits, the timeout and the unknown level.
	if n := len(joined.Unwrap()); n != 6 {
		t.Fatalf("NewTaskQueue reported %d problems, want 6: %v", n, err)
	}
	if _, err := NewTaskQueue(WithAgingStep(0), WithSweepInterval(time.Second)); err != nil {
		t.Fatalf("NewTaskQueue with valid options: %v", err)
	}
}

func TestQueueRemove(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueueT(t)
		ready, retried, inFlight, next := qtask(1, prioHigh), qtask(2, prioLow), qtask(3, prioCritical), qtask(4, prioHigh)
		mustEnqueue(t, q, retried)
		mustTryDequeue(t, q)
		retry(t, q, retried)
		mustEnqueue(t, q, inFlight)
		mustTryDequeue(t, q)
		mustEnqueue(t, q, ready, next)

		for _, task := range []*QueuedTask{ready, retried, inFlight} {
			got, ok := q.Remove(task.ID)
			if !ok || got != task {
				t.Fatalf("Remove(%s) = %v, %v, want the task", task.ID.Short(), got, ok)
			}
			if _, ok := q.Remove(task.ID); ok {
				t.Fatalf("second Remove(%s) found the task", task.ID.Short())
			}
		}
		s := q.Stats()
		if s.Depth != [NumLevels]int{0, 0, 1, 0} || s.InFlight != 0 || s.Failed != 1 || s.TimedOut != 0 || q.Len() != 1 {
			t.Fatalf("after Remove: %+v, Len %d; want only the next high task left, only the retried attempt failed", s, q.Len())
		}
		if q.Complete(inFlight.ID) {
			t.Fatal("Complete of a removed task returned true")
		}
		if got := mustTryDequeue(t, q); got != next {
			t.Fatal("Dequeue did not skip the removed task")
		}
		mustEnqueue(t, q, ready) // a removed ID may come back
		time.Sleep(2 * time.Minute)
		if got := mustTryDequeue(t, q); got != ready {
			t.Fatal("the removed retry came back")
		}
	})
}

func TestQueueRemoveManyKeepsOrderAndCompacts(t *testing.T) {
	q := newQueueT(t)
	tasks := make([]*QueuedTask, 200)
	for i := range tasks {
		tasks[i] = qtask(i+1, prioNormal)
		mustEnqueue(t, q, tasks[i])
	}
	for i := range tasks {
		if i%4 == 3 {
			continue
		}
		if _, ok := q.Remove(tasks[i].ID); !ok {
			t.Fatalf("Remove %d failed", i)
		}
	}
	// Tombstones are compacted once they outnumber the live tasks.
	if r, live := &q.ready[LevelNormal], q.live[LevelNormal]; live != 50 || r.n > 2*live+33 {
		t.Fatalf("ring holds %d entries for %d tasks: tombstones not compacted", r.n, live)
	}
	for i := 3; i < len(tasks); i += 4 {
		if got := mustTryDequeue(t, q); got != tasks[i] {
			t.Fatalf("dequeued %s, want task %d", got.ID.Short(), i)
		}
	}
	if _, ok := q.TryDequeue(); ok {
		t.Fatal("a removed task was dequeued")
	}
}

func TestQueueStats(t *testing.T) {
	q := newQueueT(t, WithMaxPerLevel(2))
	a, b, c, d := qtask(1, prioLow), qtask(2, prioNormal), qtask(3, prioNormal), qtask(4, prioCritical)
	mustEnqueue(t, q, a, b, c, d)
	_ = q.Enqueue(qtask(5, prioNormal)) // rejected
	mustTryDequeue(t, q)                // d
	mustTryDequeue(t, q)                // b
	mustTryDequeue(t, q)                // c
	q.Complete(d.ID)
	settleFailed(q, b.ID)
	retry(t, q, c)
	want := QueueStats{
		Depth:    [NumLevels]int{1, 1, 0, 0},
		InFlight: 0,
		Enqueued: 5, Completed: 1, Failed: 2, Retried: 1, TimedOut: 0, Rejected: 1,
	}
	if got := q.Stats(); got != want {
		t.Fatalf("Stats = %+v\nwant    %+v", got, want)
	}
	if q.Len() != 2 {
		t.Fatalf("Len = %d, want 2", q.Len())
	}
}

func TestQueueLifecycle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q, err := NewTaskQueue()
		if err != nil {
			t.Fatal(err)
		}
		if err := q.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		if err := q.Start(t.Context()); err == nil {
			t.Fatal("second Start succeeded")
		}
		mustEnqueue(t, q, qtask(1, prioNormal))
		if err := q.Close(); err != nil {
			t.Fatal(err)
		}
		if err := q.Close(); err != nil {
			t.Fatalf("second Close: %v", err)
		}
		if err := q.Enqueue(qtask(2, prioNormal)); !errors.Is(err, ErrClosed) {
			t.Fatalf("Enqueue after Close = %v, want ErrClosed", err)
		}
		if _, err := q.Dequeue(t.Context()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Dequeue after Close = %v, want ErrClosed", err)
		}
		if err := q.Start(t.Context()); !errors.Is(err, ErrClosed) {
			t.Fatalf("Start after Close = %v, want ErrClosed", err)
		}
		// synctest.Test fails if the sweeper or a timer goroutine outlives Close.
	})
}

func TestQueueConcurrentProducersAndConsumersLoseNothing(t *testing.T) {
	const producers, consumers, perProducer = 4, 4, 2000
	q := newQueueT(t, WithMaxPerLevel(100))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	var seen sync.Map
	var done atomic.Int64
	var wg sync.WaitGroup
	for c := range consumers {
		wg.Go(func() {
			for {
				task, err := q.Dequeue(ctx)
				if err != nil {
					return
				}
				if _, dup := seen.LoadOrStore(task.ID, true); dup {
					t.Errorf("task %s dequeued twice", task.ID.Short())
				}
				if (task.ID[2]+byte(c))%7 == 0 && task.Retries < 1 { // some fail once, and are retried
					seen.Delete(task.ID)
					settleFailed(q, task.ID)
					task.Retries++
					for {
						err := q.Enqueue(task)
						if err == nil {
							break
						}
						if !errors.Is(err, ErrQueueFull) {
							t.Errorf("Enqueue of a retry: %v", err)
							return
						}
						time.Sleep(50 * time.Microsecond)
					}
					continue
				}
				q.Complete(task.ID)
				done.Add(1)
			}
		})
	}
	var pwg sync.WaitGroup
	for p := range producers {
		pwg.Go(func() {
			for i := range perProducer {
				task := qtask(p*perProducer+i+1, uint8(i*37))
				for {
					err := q.Enqueue(task)
					if err == nil {
						break
					}
					if !errors.Is(err, ErrQueueFull) {
						t.Errorf("Enqueue: %v", err)
						return
					}
					time.Sleep(50 * time.Microsecond)
				}
			}
		})
	}
	pwg.Wait()
	deadline := time.Now().Add(20 * time.Second)
	for done.Load() < producers*perProducer && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	wg.Wait()
	s := q.Stats()
	if done.Load() != producers*perProducer || s.Completed != producers*perProducer || s.InFlight != 0 || q.Len() != 0 {
		t.Fatalf("completed %d (Stats %d), in flight %d, left %d; want all %d completed", done.Load(), s.Completed, s.InFlight, q.Len(), producers*perProducer)
	}
}
