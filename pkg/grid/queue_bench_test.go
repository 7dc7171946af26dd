package grid

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// The goal: enqueue+dequeue at depth 1k costs at most 2x a buffered
// Go channel's send+receive: compare BenchmarkQueueEnqueueDequeue with
// BenchmarkChanSendRecv (and the Parallel pair) from the same run.
//
// Each queue iteration enqueues a task, dequeues the next one and completes
// it. The queue is started (its sweeper runs, as in the daemon) and holds
// tasks of all four levels, so Dequeue compares four heads. Tasks carry the
// CreatedAt their submitter stamped; the Stamped variant leaves it zero so
// that Enqueue reads the clock itself.
const queueBenchDepth = 1000

// prefilledQueue returns a started queue holding queueBenchDepth tasks
// spread over the four levels.
func prefilledQueue(b *testing.B) *TaskQueue {
	b.Helper()
	q := newQueueT(b)
	if err := q.Start(b.Context()); err != nil {
		b.Fatal(err)
	}
	for i := range queueBenchDepth {
		mustEnqueue(b, q, benchTask(i+1))
	}
	return q
}

func prefilledChan() chan *QueuedTask {
	ch := make(chan *QueuedTask, 2*queueBenchDepth)
	for i := range queueBenchDepth {
		ch <- benchTask(i + 1)
	}
	return ch
}

// benchTask returns a task of level n%4, stamped now, due in an hour.
func benchTask(n int) *QueuedTask {
	t := qtask(n, uint8(n*64))
	t.CreatedAt = time.Now()
	t.Deadline = t.CreatedAt.Add(time.Hour)
	return t
}

// queueCycle enqueues spare, dequeues the next task, completes it and
// returns it as the next spare: no task is ever held twice.
func queueCycle(b *testing.B, q *TaskQueue, ctx context.Context, spare *QueuedTask, stamp bool) *QueuedTask {
	if stamp {
		spare.CreatedAt, spare.Deadline = time.Time{}, time.Time{}
	}
	if err := q.Enqueue(spare); err != nil {
		b.Fatal(err)
	}
	t, err := q.Dequeue(ctx)
	if err != nil {
		b.Fatal(err)
	}
	q.Complete(t.ID)
	return t
}

func benchQueueSerial(b *testing.B, stamp bool) {
	q := prefilledQueue(b)
	ctx := context.Background()
	spare := benchTask(queueBenchDepth + 1)
	b.ReportAllocs()
	for b.Loop() {
		spare = queueCycle(b, q, ctx, spare, stamp)
	}
}

func benchQueueParallel(b *testing.B, stamp bool) {
	q := prefilledQueue(b)
	ctx := context.Background()
	var next atomic.Int64
	next.Store(queueBenchDepth)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		spare := benchTask(int(next.Add(1)))
		for pb.Next() {
			spare = queueCycle(b, q, ctx, spare, stamp)
		}
	})
}

func BenchmarkQueueEnqueueDequeue(b *testing.B)         { benchQueueSerial(b, false) }
func BenchmarkQueueEnqueueDequeueStamped(b *testing.B)  { benchQueueSerial(b, true) }
func BenchmarkQueueEnqueueDequeueParallel(b *testing.B) { benchQueueParallel(b, false) }

// BenchmarkQueueEnqueueSettleTryDequeue is the cycle of an executor worker
// under load: each iteration enqueues a task, then completes the previous
// one and takes the next with one SettleTryDequeue (one lock round trip
// where Complete then Dequeue take two).
func BenchmarkQueueEnqueueSettleTryDequeue(b *testing.B) {
	q := prefilledQueue(b)
	spare := benchTask(queueBenchDepth + 1)
	cur, ok := q.TryDequeue()
	if !ok {
		b.Fatal("nothing queued")
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := q.Enqueue(spare); err != nil {
			b.Fatal(err)
		}
		next, settled := q.SettleTryDequeue(cur.ID, true)
		if !settled || next == nil {
			b.Fatal("SettleTryDequeue did not settle and take")
		}
		spare, cur = cur, next
	}
}

func BenchmarkChanSendRecv(b *testing.B) {
	ch := prefilledChan()
	spare := benchTask(queueBenchDepth + 1)
	b.ReportAllocs()
	for b.Loop() {
		ch <- spare
		spare = <-ch
	}
}

func BenchmarkChanSendRecvParallel(b *testing.B) {
	ch := prefilledChan()
	var next atomic.Int64
	next.Store(queueBenchDepth)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		spare := benchTask(int(next.Add(1)))
		for pb.Next() {
			ch <- spare
			spare = <-ch
		}
	})
}

// BenchmarkQueueEnqueueDequeueAged is the serial cycle with no Critical
// tasks and every task a minute old, past the aging step, so that each
// Dequeue computes the effective level of three heads: the cost of the
// aging rule itself, fixed against adaptive, in the same run.
func BenchmarkQueueEnqueueDequeueAged(b *testing.B) {
	for _, bc := range []struct {
		name string
		opt  QueueOption
	}{
		{"fixed", WithAdaptiveAging(0, 0)},
		{"adaptive", WithAdaptiveAging(queueDefaultAdaptiveK, 0)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			q := newQueueT(b, bc.opt)
			if err := q.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			aged := func(n int) *QueuedTask {
				t := qtask(n, uint8(n%3*64)) // Low, Normal, High
				t.CreatedAt = time.Now().Add(-time.Minute)
				t.Deadline = t.CreatedAt.Add(time.Hour)
				return t
			}
			for i := range queueBenchDepth {
				mustEnqueue(b, q, aged(i+1))
			}
			ctx := context.Background()
			spare := aged(queueBenchDepth + 1)
			b.ReportAllocs()
			for b.Loop() {
				spare = queueCycle(b, q, ctx, spare, false)
			}
		})
	}
}
