package grid

import (
	"testing"
	"testing/synctest"
	"time"
)

func TestQueueSettleTryDequeueSettlesThenTakesTheNextInOrder(t *testing.T) {
	q := newQueueT(t)
	low, high, normal := qtask(1, prioLow), qtask(2, prioHigh), qtask(3, prioNormal)
	mustEnqueue(t, q, low, high, normal)
	if got := mustTryDequeue(t, q); got != high {
		t.Fatalf("first task %s, want the high one", got.ID.Short())
	}
	steps := []struct {
		settle   *QueuedTask
		done     bool
		wantNext *QueuedTask
	}{
		{high, true, normal},
		{normal, false, low},
		{low, true, nil},
	}
	for i, s := range steps {
		next, settled := q.SettleTryDequeue(s.settle.ID, s.done)
		if !settled || next != s.wantNext {
			t.Fatalf("step %d: SettleTryDequeue = %v, %v; want %v, true", i, next, settled, s.wantNext)
		}
	}
	if next, settled := q.SettleTryDequeue(low.ID, true); next != nil || settled {
		t.Fatalf("settling a task no longer held = %v, %v; want nil, false", next, settled)
	}
	if s := q.Stats(); s.Completed != 2 || s.Failed != 1 || s.InFlight != 0 || q.Len() != 0 {
		t.Fatalf("stats %+v, Len %d; want 2 completed, 1 failed, nothing held", s, q.Len())
	}
}

func TestQueueSettleTryDequeueOnAQueuedTaskChangesNothing(t *testing.T) {
	q := newQueueT(t)
	a, b := qtask(1, prioNormal), qtask(2, prioNormal)
	mustEnqueue(t, q, a, b)
	// b is queued, not in flight: it is not settled, and a is taken.
	if next, settled := q.SettleTryDequeue(b.ID, true); settled || next != a {
		t.Fatalf("SettleTryDequeue of a queued task = %v, %v; want a, false", next, settled)
	}
	if s := q.Stats(); s.Completed != 0 || s.InFlight != 1 || s.Depth[LevelNormal] != 1 {
		t.Fatalf("stats %+v; want b still queued and a in flight", s)
	}
}

func TestQueueSettleTryDequeueAfterCloseSettlesButTakesNothing(t *testing.T) {
	q := newQueueT(t)
	a, b := qtask(1, prioNormal), qtask(2, prioNormal)
	mustEnqueue(t, q, a, b)
	mustTryDequeue(t, q)
	_ = q.Close()
	if next, settled := q.SettleTryDequeue(a.ID, true); !settled || next != nil {
		t.Fatalf("SettleTryDequeue after Close = %v, %v; want nil, true", next, settled)
	}
	if s := q.Stats(); s.Completed != 1 || s.Depth[LevelNormal] != 1 {
		t.Fatalf("stats %+v; want a completed and b still held", s)
	}
}

// listWaiter lists a waiter as a Dequeue that has just blocked would, and
// returns a channel with what it is handed.
func listWaiter(t *testing.T, q *TaskQueue) <-chan *QueuedTask {
	t.Helper()
	q.mu.Lock()
	w := q.waiterPool.Get().(*queueWaiter)
	w.listed = true
	q.waiters = append(q.waiters, w)
	q.mu.Unlock()
	got := make(chan *QueuedTask, 1)
	go func() { got <- <-w.ch }()
	return got
}

func TestQueueEnqueueHandsATaskStraightToABlockedDequeue(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newQueueT(t)
		got := listWaiter(t, q)
		task := qtask(1, prioLow)
		mustEnqueue(t, q, task)
		synctest.Wait()
		select {
		case g := <-got:
			if g != task {
				t.Fatalf("the blocked Dequeue got %s, want %s", g.ID.Short(), task.ID.Short())
			}
		default:
			t.Fatal("the blocked Dequeue got nothing")
		}
		if s := q.Stats(); s.InFlight != 1 || s.Depth != [NumLevels]int{} || s.Enqueued != 1 || len(q.waiters) != 0 {
			t.Fatalf("stats %+v, %d waiters; want the task in flight and no waiter", s, len(q.waiters))
		}
		if !q.Complete(task.ID) {
			t.Fatal("Complete of the handed-over task failed")
		}
	})
}

func TestQueueHandOverReportsATaskPastItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		log := &expiryLog{}
		q := newQueueT(t, WithExpiryHandler(log.handler))
		got := listWaiter(t, q)
		stale := qtask(1, prioNormal)
		stale.CreatedAt = time.Now().Add(-time.Hour)
		stale.Deadline = time.Now().Add(-time.Minute)
		mustEnqueue(t, q, stale)
		fresh := qtask(2, prioLow)
		mustEnqueue(t, q, fresh)
		synctest.Wait()
		if g := <-got; g != fresh {
			t.Fatalf("the blocked Dequeue got %s, want the task within its deadline", g.ID.Short())
		}
		if queued, inFlight := log.counts(); queued != 1 || inFlight != 0 {
			t.Fatalf("expiry handler told of %d queued and %d in-flight tasks; want 1 queued", queued, inFlight)
		}
		if s := q.Stats(); s.TimedOut != 1 || s.InFlight != 1 {
			t.Fatalf("stats %+v; want 1 timed out, 1 in flight", s)
		}
	})
}
