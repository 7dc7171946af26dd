package grid

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// saturation is a simulated load: a worker takes one task per service time
// while producers offer highPerTick High tasks per service time, more than
// it can take, so the High level fills and stays full; one Low task arrives
// every lowEvery service times from lowFrom on. After ticks service times
// the High stream stops and the worker drains the queue.
type saturation struct {
	service     time.Duration
	highPerTick int
	lowEvery    int
	lowFrom     int
	ticks       int
}

// simClock makes q's clock simulated: Dequeue reads q.coarse, which only
// setSimClock moves. q must not be started (no sweeper refreshes it).
func setSimClock(q *TaskQueue, now time.Duration) {
	q.mu.Lock()
	q.coarseOn = true
	q.coarse = int64(now)
	q.mu.Unlock()
}

// simTask returns a task created at now on q's simulated clock, due in a
// day, so that no deadline ends a wait.
func simTask(q *TaskQueue, n int, prio uint8, now time.Duration) *QueuedTask {
	t := qtask(n, prio)
	t.CreatedAt = q.epoch.Add(now)
	t.Deadline = t.CreatedAt.Add(24 * time.Hour)
	return t
}

// run plays s on q, which must be new and not started, and returns the
// wait of every Low task, in the order they got out, and how many of them
// got out while the High stream lasted. Being simulated, it is exact and
// the same on every run.
func (s saturation) run(tb testing.TB, q *TaskQueue) (lowWaits []time.Duration, outDuringStream int) {
	tb.Helper()
	created := make(map[TaskID]time.Duration)
	n, lowIn := 0, 0
	for tick := 0; ; tick++ {
		now := time.Duration(tick) * s.service
		setSimClock(q, now)
		streaming := tick < s.ticks
		if streaming {
			for range s.highPerTick {
				n++
				if err := q.Enqueue(simTask(q, n, prioHigh, now)); err != nil && !errors.Is(err, ErrQueueFull) {
					tb.Fatal(err)
				}
			}
			if tick >= s.lowFrom && tick%s.lowEvery == 0 {
				n++
				t := simTask(q, n, prioLow, now)
				mustEnqueue(tb, q, t)
				created[t.ID] = now
				lowIn++
			}
		}
		t, ok := q.TryDequeue()
		if !ok {
			if len(lowWaits) != lowIn {
				tb.Fatalf("queue empty with %d of %d Low tasks never out", lowIn-len(lowWaits), lowIn)
			}
			return lowWaits, outDuringStream
		}
		if t.Level() == LevelLow {
			lowWaits = append(lowWaits, now-created[t.ID])
			if streaming {
				outDuringStream++
			}
		}
		q.Complete(t.ID)
	}
}

// p99 returns the 99th percentile of waits (nearest rank).
func p99(waits []time.Duration) time.Duration {
	w := slices.Clone(waits)
	slices.Sort(w)
	return w[(len(w)*99+99)/100-1]
}

// defaultSaturation: 50 tasks/s served, 100/s of High offered against the
// default limit of 1000, which is full after 20 s (from then on the High
// backlog's head has waited 20 s, two default steps), then one Low task a
// second, until the stream stops at 120 s.
var defaultSaturation = saturation{service: 20 * time.Millisecond, highPerTick: 2, lowEvery: 50, lowFrom: 1000, ticks: 6000}

func TestQueueAdaptiveAgingBoundsLowWaitUnderSaturation(t *testing.T) {
	cases := []struct {
		name    string
		opts    []QueueOption
		wantMax time.Duration // 0: Low must starve while the stream lasts
	}{
		// B = 1000 High ahead, k = 64: step 640 ms; the High head has waited
		// 20 s (level 2+2), so a Low task gets out at 5 steps, 3.2 s.
		{"adaptive aging, the default, lets every Low task out within 3.2 s", nil, 3200 * time.Millisecond},
		{"fixed aging starves Low tasks while the High backlog's head is a step old", []QueueOption{WithAdaptiveAging(0, 0)}, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueueT(t, tc.opts...)
			waits, during := defaultSaturation.run(t, q)
			low := len(waits)
			// Those out after the stream stopped see the backlog drain, which
			// lengthens the step again.
			longest := slices.Max(append(waits[:during:during], 0))
			switch {
			case low != 100:
				t.Fatalf("%d Low tasks out, want the 100 enqueued", low)
			case tc.wantMax != 0 && longest > tc.wantMax:
				t.Fatalf("a Low task waited %v under the stream, want at most %v", longest, tc.wantMax)
			case tc.wantMax != 0 && during < low-4:
				t.Fatalf("%d of %d Low tasks got out while the stream lasted, want all but the last few", during, low)
			case tc.wantMax == 0 && during != 0:
				t.Fatalf("%d of %d Low tasks got out while the stream lasted, want Low starved with fixed aging", during, low)
			}
		})
	}
}

func TestQueueAdaptiveAgingKeepsStrictOrderWithAShortQueue(t *testing.T) {
	// 64 tasks ahead (= k): the step stays 10 s. A Low and a Normal task
	// that waited 9.9 s stay behind every High task, fresh or not.
	q := newQueueT(t, WithAdaptiveAging(64, time.Millisecond))
	setSimClock(q, 0)
	low, normal := simTask(q, 1, prioLow, 0), simTask(q, 2, prioNormal, 0)
	mustEnqueue(t, q, low, normal)
	for i := range 32 {
		mustEnqueue(t, q, simTask(q, 10+i, prioHigh, 0))
	}
	for i := range 32 {
		mustEnqueue(t, q, simTask(q, 100+i, prioHigh, 9900*time.Millisecond))
	}
	setSimClock(q, 9900*time.Millisecond)
	for i := range 64 {
		if got := mustTryDequeue(t, q); got.Level() != LevelHigh {
			t.Fatalf("dequeue %d took a %s task before the High ones", i, got.Level())
		}
	}
	if mustTryDequeue(t, q) != normal || mustTryDequeue(t, q) != low {
		t.Fatal("Normal and Low did not come out in level order")
	}
}

func TestQueueAdaptiveAgingShrinksTheStepWithTheBacklog(t *testing.T) {
	// 65 High tasks ahead (> k = 64): a Low task's step is 10 s*64/65,
	// 9.85 s, so after 29.6 s it is at level 3 and overtakes fresh High.
	cases := []struct {
		name string
		high int
		wait time.Duration
		want Level
	}{
		{"a backlog of k keeps the fixed step", 64, 29600 * time.Millisecond, LevelHigh},
		{"a backlog of k+1 shortens the step", 65, 29600 * time.Millisecond, LevelLow},
		{"a backlog of 640 shortens it tenfold", 640, 3001 * time.Millisecond, LevelLow},
		{"and not beyond that", 640, 2999 * time.Millisecond, LevelHigh},
		{"the floor binds under a deeper backlog", 1000, 2999 * time.Millisecond, LevelHigh},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			q := newQueueT(t, WithAdaptiveAging(64, time.Second))
			setSimClock(q, 0)
			mustEnqueue(t, q, simTask(q, 1, prioLow, 0))
			for i := range tc.high {
				mustEnqueue(t, q, simTask(q, 10+i, prioHigh, tc.wait))
			}
			setSimClock(q, tc.wait)
			if got := mustTryDequeue(t, q); got.Level() != tc.want {
				t.Fatalf("took a %s task, want %s", got.Level(), tc.want)
			}
		})
	}
}

func TestQueueAdaptiveAgingNeverOvertakesCritical(t *testing.T) {
	q := newQueueT(t)
	setSimClock(q, 0)
	low := simTask(q, 1, prioLow, 0)
	mustEnqueue(t, q, low)
	for i := range 500 {
		mustEnqueue(t, q, simTask(q, 10+i, prioHigh, 0))
	}
	crit := simTask(q, 2, prioCritical, time.Hour)
	mustEnqueue(t, q, crit)
	setSimClock(q, time.Hour)
	if mustTryDequeue(t, q) != crit {
		t.Fatal("an aged task overtook a Critical one")
	}
	if mustTryDequeue(t, q) != low {
		t.Fatal("the Low task that waited an hour behind 500 High tasks is not next")
	}
}

func TestQueueAdaptiveAgingOptionsAreChecked(t *testing.T) {
	cases := []struct {
		name string
		opts []QueueOption
		ok   bool
	}{
		{"off", []QueueOption{WithAdaptiveAging(0, 0)}, true},
		{"default floor", []QueueOption{WithAdaptiveAging(8, 0)}, true},
		{"floor equal to the step", []QueueOption{WithAgingStep(time.Second), WithAdaptiveAging(8, time.Second)}, true},
		{"aging off ignores the floor", []QueueOption{WithAgingStep(0), WithAdaptiveAging(8, time.Hour)}, true},
		{"negative k", []QueueOption{WithAdaptiveAging(-1, 0)}, false},
		{"huge k", []QueueOption{WithAdaptiveAging(queueMaxAdaptiveK+1, 0)}, false},
		{"negative floor", []QueueOption{WithAdaptiveAging(8, -time.Second)}, false},
		{"floor above the step", []QueueOption{WithAgingStep(time.Second), WithAdaptiveAging(8, 2*time.Second)}, false},
		{"step times k past 2^64 ns", []QueueOption{WithAgingStep(10000 * time.Hour), WithAdaptiveAging(queueMaxAdaptiveK, 0)}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewTaskQueue(tc.opts...); (err == nil) != tc.ok {
				t.Fatalf("NewTaskQueue = %v, want ok %v", err, tc.ok)
			}
		})
	}
}

// BenchmarkQueueAgingLowWaitUnderSaturation plays defaultSaturation with
// fixed aging and with the adaptive rule and reports Low's p99 wait in
// simulated seconds. "uncapped" is the adaptive rule with k beyond any
// backlog, so its step never shrinks: it shows what the shrinking step adds
// to lifting fixed aging's cap. ns/op is the cost of one simulated run.
func BenchmarkQueueAgingLowWaitUnderSaturation(b *testing.B) {
	var fixed float64
	for _, bc := range []struct {
		name string
		opt  QueueOption
	}{
		{"fixed", WithAdaptiveAging(0, 0)},
		{"uncapped", WithAdaptiveAging(queueMaxAdaptiveK, 0)},
		{"adaptive", WithAdaptiveAging(queueDefaultAdaptiveK, 0)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var waits []time.Duration
			var during int
			for b.Loop() {
				q := newQueueT(b, bc.opt)
				waits, during = defaultSaturation.run(b, q)
				_ = q.Close()
			}
			got := p99(waits).Seconds()
			b.ReportMetric(got, "low-p99-s")
			b.ReportMetric(float64(during)/float64(len(waits)), "low-out-in-stream")
			if bc.name == "fixed" {
				fixed = got
			} else if fixed > 0 {
				b.ReportMetric(fixed/got, "fixed/this-p99")
			}
		})
	}
}
