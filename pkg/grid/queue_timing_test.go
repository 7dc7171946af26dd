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

// expiryLog records what the expiry handler was told.
type expiryLog struct {
	mu       sync.Mutex
	queued   []TaskID
	inFlight []TaskID
}

func (l *expiryLog) handler(t *QueuedTask, wasInFlight bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if wasInFlight {
		l.inFlight = append(l.inFlight, t.ID)
	} else {
		l.queued = append(l.queued, t.ID)
	}
}

func (l *expiryLog) counts() (queued, inFlight int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.queued), len(l.inFlight)
}

func TestQueueEnqueueFillsCreatedAtAndDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueueT(t, WithDefaultTimeout(time.Minute))
		a := qtask(1, prioNormal)
		created := time.Now().Add(-10 * time.Second)
		b := &QueuedTask{ID: qtask(2, 0).ID, CreatedAt: created}
		mustEnqueue(t, q, a, b)
		if !a.CreatedAt.Equal(time.Now()) || !a.Deadline.Equal(time.Now().Add(time.Minute)) {
			t.Fatalf("CreatedAt, Deadline = %v, %v, want now and now+1m", a.CreatedAt, a.Deadline)
		}
		if !b.Deadline.Equal(created.Add(time.Minute)) {
			t.Fatalf("Deadline = %v, want CreatedAt+1m", b.Deadline)
		}
	})
}

func TestQueueExpiresQueuedTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log expiryLog
		q := newQueueT(t, WithDefaultTimeout(time.Second), WithExpiryHandler(log.handler), WithSweepInterval(100*time.Millisecond))
		if err := q.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		short, long := qtask(1, prioLow), qtask(2, prioLow)
		long.Deadline = time.Now().Add(time.Hour)
		mustEnqueue(t, q, short, long)
		time.Sleep(900 * time.Millisecond)
		synctest.Wait()
		if nq, _ := log.counts(); nq != 0 {
			t.Fatalf("%d tasks expired before their deadline", nq)
		}
		time.Sleep(200 * time.Millisecond)
		synctest.Wait()
		if nq, nf := log.counts(); nq != 1 || nf != 0 || log.queued[0] != short.ID {
			t.Fatalf("expired %v queued and %d in flight, want only the short task, queued", log.queued, nf)
		}
		s := q.Stats()
		if s.TimedOut != 1 || s.Depth[LevelLow] != 1 || q.Len() != 1 {
			t.Fatalf("TimedOut %d, low depth %d, Len %d, want 1, 1, 1", s.TimedOut, s.Depth[LevelLow], q.Len())
		}
		if got := mustTryDequeue(t, q); got != long {
			t.Fatal("the task left is not the one with the later deadline")
		}
	})
}

func TestQueueExpiresInFlightTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log expiryLog
		q := newQueueT(t, WithDefaultTimeout(time.Second), WithExpiryHandler(log.handler))
		if err := q.Start(t.Context()); err != nil {
			t.Fatal(err)
		}
		task := qtask(1, prioHigh)
		mustEnqueue(t, q, task)
		mustTryDequeue(t, q)
		time.Sleep(1100 * time.Millisecond)
		synctest.Wait()
		if nq, nf := log.counts(); nq != 0 || nf != 1 || log.inFlight[0] != task.ID {
			t.Fatalf("expired %d queued and %v in flight, want the task, in flight", nq, log.inFlight)
		}
		if s := q.Stats(); s.TimedOut != 1 || s.InFlight != 0 {
			t.Fatalf("TimedOut, InFlight = %d, %d, want 1, 0", s.TimedOut, s.InFlight)
		}
		if q.Complete(task.ID) {
			t.Fatal("Complete of an expired task returned true")
		}
	})
}

func TestQueueDequeueDropsExpiredHeadsAndReportsThem(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log expiryLog
		q := newQueueT(t, WithExpiryHandler(log.handler)) // no Start: no sweeper
		old, fresh := qtask(1, prioCritical), qtask(2, prioLow)
		old.Deadline = time.Now().Add(time.Second)
		mustEnqueue(t, q, old, fresh)
		time.Sleep(2 * time.Second)
		if got := mustTryDequeue(t, q); got != fresh {
			t.Fatalf("TryDequeue = priority %d, want the unexpired low task", got.Priority)
		}
		if nq, _ := log.counts(); nq != 1 || log.queued[0] != old.ID {
			t.Fatalf("expired %v, want the critical task reported", log.queued)
		}
		if s := q.Stats(); s.TimedOut != 1 {
			t.Fatalf("TimedOut = %d, want 1", s.TimedOut)
		}
	})
}

func TestQueueSettlingAFailureCountsFailedAndDoesNotRetry(t *testing.T) {
	q := newQueueT(t)
	task := qtask(1, prioNormal)
	mustEnqueue(t, q, task)
	mustTryDequeue(t, q)
	if next, ok := q.SettleTryDequeue(task.ID, false); !ok || next != nil {
		t.Fatalf("SettleTryDequeue of an in-flight task = %v, %v; want nil, true", next, ok)
	}
	if s := q.Stats(); s.Failed != 1 || s.Retried != 0 || s.InFlight != 0 || q.Len() != 0 || task.Retries != 0 {
		t.Fatalf("Failed %d, Retried %d, InFlight %d, Len %d, Retries %d; want 1, 0, 0, 0, 0: the queue does not retry", s.Failed, s.Retried, s.InFlight, q.Len(), task.Retries)
	}
	if _, ok := q.SettleTryDequeue(task.ID, false); ok || q.Complete(task.ID) {
		t.Fatal("settling a task no longer held returned true")
	}
}

func TestQueueAging(t *testing.T) {
	cases := []struct {
		name      string
		step      time.Duration
		sweeper   bool          // Start the queue: Dequeue uses the sweeper's clock
		wantOutBy time.Duration // 0: the low task must not get out
	}{
		{"aging lets a low task out under a steady stream of high tasks", time.Second, false, 3100 * time.Millisecond},
		{"aging lets a low task out within a sweep interval when the sweeper keeps the clock", time.Second, true, 3100 * time.Millisecond},
		{"without aging a steady stream of high tasks holds a low task back", 0, true, 0},
	}
	// With one High task ahead, the adaptive rule ages as fixed aging does.
	modes := []struct {
		name string
		k    int
	}{{"adaptive", queueDefaultAdaptiveK}, {"fixed", 0}}
	for _, mode := range modes {
		for _, tc := range cases {
			t.Run(mode.name+": "+tc.name, func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					q := newQueueT(t, WithAgingStep(tc.step), WithSweepInterval(100*time.Millisecond), WithAdaptiveAging(mode.k, 0))
					if tc.sweeper {
						if err := q.Start(t.Context()); err != nil {
							t.Fatal(err)
						}
					}
					low := qtask(0, prioLow)
					mustEnqueue(t, q, low)
					start := time.Now()
					var outAt time.Duration
					for i := 1; i <= 100 && outAt == 0; i++ { // 10 s of High traffic
						mustEnqueue(t, q, qtask(i, prioHigh))
						time.Sleep(100 * time.Millisecond)
						if got := mustTryDequeue(t, q); got == low {
							outAt = time.Since(start)
						}
					}
					switch {
					case tc.wantOutBy == 0 && outAt != 0:
						t.Fatalf("the low task got out after %v with aging off", outAt)
					case tc.wantOutBy != 0 && outAt == 0:
						t.Fatalf("the low task never got out in 10 s, want by %v", tc.wantOutBy)
					case tc.wantOutBy != 0 && outAt > tc.wantOutBy:
						t.Fatalf("the low task got out after %v, want by %v", outAt, tc.wantOutBy)
					case tc.wantOutBy != 0 && outAt < 3*tc.step:
						t.Fatalf("the low task got out after %v, before three aging steps", outAt)
					}
				})
			})
		}
	}
}

func TestQueueAgingKeepsStrictOrderWithinAStep(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueueT(t, WithAgingStep(10*time.Second))
		low, high := qtask(1, prioLow), qtask(2, prioHigh)
		mustEnqueue(t, q, low)
		time.Sleep(9 * time.Second)
		mustEnqueue(t, q, high)
		if got := mustTryDequeue(t, q); got != high {
			t.Fatal("a low task that waited less than one step overtook a high task")
		}
	})
}

func TestQueueDequeueBlocks(t *testing.T) {
	cases := []struct {
		name    string
		release func(q *TaskQueue, cancel context.CancelFunc)
		wantErr error
	}{
		{"Dequeue blocks until Enqueue", func(q *TaskQueue, _ context.CancelFunc) { _ = q.Enqueue(qtask(1, prioLow)) }, nil},
		{"Dequeue blocks until its ctx is canceled", func(_ *TaskQueue, cancel context.CancelFunc) { cancel() }, context.Canceled},
		{"Dequeue blocks until Close", func(q *TaskQueue, _ context.CancelFunc) { _ = q.Close() }, ErrClosed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				q := newQueueT(t)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				var (
					got  *QueuedTask
					err  error
					done atomic.Bool
				)
				go func() {
					got, err = q.Dequeue(ctx)
					done.Store(true)
				}()
				time.Sleep(time.Hour)
				synctest.Wait()
				if done.Load() {
					t.Fatal("Dequeue returned from an empty queue")
				}
				tc.release(q, cancel)
				synctest.Wait()
				if !done.Load() {
					t.Fatal("Dequeue still blocked")
				}
				if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (got != nil) {
					t.Fatalf("Dequeue = %v, %v, want error %v", got, err, tc.wantErr)
				}
				if len(q.waiters) != 0 {
					t.Fatalf("%d waiters left listed", len(q.waiters))
				}
			})
		})
	}
}

func TestQueueHandsTasksToWaitersInArrivalOrder(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueueT(t)
		results := make([]chan *QueuedTask, 3)
		for i := range results {
			results[i] = make(chan *QueuedTask, 1)
			go func() {
				got, _ := q.Dequeue(t.Context())
				results[i] <- got
			}()
			synctest.Wait() // waiter i is listed before waiter i+1
		}
		tasks := []*QueuedTask{qtask(1, prioLow), qtask(2, prioCritical), qtask(3, prioNormal)}
		mustEnqueue(t, q, tasks...)
		for i, ch := range results {
			if got := <-ch; got != tasks[i] {
				t.Fatalf("waiter %d got task %s, want %s", i, got.ID.Short(), tasks[i].ID.Short())
			}
		}
		if s := q.Stats(); s.InFlight != 3 {
			t.Fatalf("InFlight = %d, want 3", s.InFlight)
		}
	})
}

func TestQueueTaskHandedToAnAbandoningDequeueGoesBackFirst(t *testing.T) {
	q := newQueueT(t)
	w := q.waiterPool.Get().(*queueWaiter)
	w.listed = true
	q.waiters = append(q.waiters, w) // as a blocked Dequeue would
	first, second := qtask(1, prioNormal), qtask(2, prioNormal)
	mustEnqueue(t, q, first) // handed to w
	mustEnqueue(t, q, second)
	if got, err := q.abandon(w, context.Canceled); got != nil || !errors.Is(err, context.Canceled) {
		t.Fatalf("abandon = %v, %v, want nil, context.Canceled", got, err)
	}
	if s := q.Stats(); s.InFlight != 0 || s.Depth[LevelNormal] != 2 {
		t.Fatalf("InFlight, normal depth = %d, %d, want 0, 2", s.InFlight, s.Depth[LevelNormal])
	}
	if got := mustTryDequeue(t, q); got != first {
		t.Fatal("the task given back is not first in its level")
	}
}
