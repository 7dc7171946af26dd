package skill

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

const selfID = peer.ID("self-node")

func newTestExecutor(tb testing.TB, reg *Registry, opts ...ExecutorOption) *Executor {
	tb.Helper()
	e, err := NewExecutor(reg, selfID, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.Close() })
	return e
}

func newTask(id reputation.SkillID, in SkillInput) *SkillTask {
	t := NewSkillTask(id, in, "requester")
	t.ID = grid.NewTaskID()
	t.CreatedAt = time.Now()
	return t
}

func TestNewExecutorRejectsBadOptions(t *testing.T) {
	tests := []struct {
		name string
		reg  *Registry
		opts []ExecutorOption
	}{
		{"a nil registry is rejected", nil, nil},
		{"zero workers are rejected", NewRegistry(), []ExecutorOption{WithWorkers(0)}},
		{"negative workers are rejected", NewRegistry(), []ExecutorOption{WithWorkers(-1)}},
		{"a nil logger is rejected", NewRegistry(), []ExecutorOption{WithExecLogger(nil)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if e, err := NewExecutor(tt.reg, selfID, tt.opts...); err == nil {
				t.Fatalf("NewExecutor = %v, want an error", e)
			}
		})
	}
	e := newTestExecutor(t, NewRegistry(), WithWorkers(7))
	if e.Capacity() != 7 || e.Busy() != 0 {
		t.Fatalf("Capacity, Busy = %d, %d; want 7, 0", e.Capacity(), e.Busy())
	}
}

func TestExecutorRunReportsSuccessWithTiming(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTestRegistry(t, Builtins(BuiltinOptions{DebugSleep: true})...)
		e := newTestExecutor(t, reg)
		task := newTask("debug.sleep", mustJSON(t, `{"ms":250}`))
		res := e.Run(t.Context(), task)
		if !res.Success || res.Code != grid.CodeNone || res.Error != "" {
			t.Fatalf("result = %+v, want success", res)
		}
		if string(res.Output) != `{"slept_ms":250}` {
			t.Fatalf("output %s", res.Output)
		}
		if res.TaskID != task.ID || res.ExecutedBy != selfID {
			t.Fatalf("TaskID, ExecutedBy = %v, %v", res.TaskID, res.ExecutedBy)
		}
		if res.Duration != 250*time.Millisecond || !res.FinishedAt.Equal(task.CreatedAt.Add(250*time.Millisecond)) {
			t.Fatalf("Duration %v, FinishedAt %v; want 250ms after %v", res.Duration, res.FinishedAt, task.CreatedAt)
		}
	})
}

func TestExecutorRunFailsWithTheRightCode(t *testing.T) {
	reg := newTestRegistry(t, Builtins(BuiltinOptions{})...)
	for _, s := range []*funcSkill{
		{desc: Descriptor{ID: "fails", Version: "1.0.0"}, fn: func(context.Context, SkillInput) ([]byte, error) {
			return nil, errors.New("disk on fire")
		}},
		{desc: Descriptor{ID: "rejects", Version: "1.0.0"}, fn: func(context.Context, SkillInput) ([]byte, error) {
			return nil, errors.New("no: " + ErrInvalidInput.Error())
		}},
		{desc: Descriptor{ID: "invalid", Version: "1.0.0"}, fn: func(context.Context, SkillInput) ([]byte, error) {
			return nil, ErrInvalidInput
		}},
		{desc: Descriptor{ID: "panics", Version: "1.0.0"}, fn: func(context.Context, SkillInput) ([]byte, error) {
			var m map[string]int
			//lint:ignore SA5000 the skill must fail with a runtime panic
			m["boom"]++
			return nil, nil
		}},
		{desc: Descriptor{ID: "panics.nil", Version: "1.0.0"}, fn: func(context.Context, SkillInput) ([]byte, error) {
			panic(errors.New("custom panic"))
		}},
	} {
		if err := reg.Register(s); err != nil {
			t.Fatal(err)
		}
	}
	e := newTestExecutor(t, reg)
	canceled, cancel := context.WithCancel(t.Context())
	cancel()
	tests := []struct {
		name     string
		ctx      context.Context
		task     *SkillTask
		code     grid.ErrorCode
		contains string
	}{
		{"an unknown skill is CodeUnknownSkill", t.Context(), newTask("nope", RawInput(nil)), grid.CodeUnknownSkill, `"nope"`},
		{"an unknown version is CodeUnknownSkill", t.Context(), newTask("echo", RawInput(nil)).WithVersion("9.9.9"), grid.CodeUnknownSkill, "9.9.9"},
		{"input failing the schema is CodeInvalidInput", t.Context(), newTask("hash.sha256", mustJSON(t, `{"data":1}`)), grid.CodeInvalidInput, "/data"},
		{"input the skill refuses is CodeInvalidInput", t.Context(), newTask("invalid", RawInput(nil)), grid.CodeInvalidInput, "invalid"},
		{"an ordinary error is CodeExecutionFailed", t.Context(), newTask("fails", RawInput(nil)), grid.CodeExecutionFailed, "disk on fire"},
		{"an error only mentioning invalid input is CodeExecutionFailed", t.Context(), newTask("rejects", RawInput(nil)), grid.CodeExecutionFailed, "no:"},
		{"a panic is recovered as CodeInternal naming the skill", t.Context(), newTask("panics", RawInput(nil)), grid.CodeInternal, `skill "panics" panicked`},
		{"a panic with an error value is recovered", t.Context(), newTask("panics.nil", RawInput(nil)), grid.CodeInternal, "custom panic"},
		{"a canceled context is CodeCanceled", canceled, newTask("echo", RawInput(nil)), grid.CodeCanceled, "canceled"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := e.Run(tt.ctx, tt.task)
			if res.Success || res.Code != tt.code {
				t.Fatalf("result = %+v, want code %d", res, tt.code)
			}
			if !strings.Contains(res.Error, tt.contains) {
				t.Errorf("error %q does not contain %q", res.Error, tt.contains)
			}
			if res.TaskID != tt.task.ID || res.ExecutedBy != selfID || res.FinishedAt.IsZero() {
				t.Errorf("TaskID, ExecutedBy, FinishedAt not set: %+v", res)
			}
		})
	}
}

func TestExecutorRunTimesOutAtTheTaskDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reg := newTestRegistry(t, Builtins(BuiltinOptions{DebugSleep: true})...)
		e := newTestExecutor(t, reg)
		task := newTask("debug.sleep", mustJSON(t, `{"ms":60000}`)).WithTimeout(2 * time.Second)
		time.Sleep(500 * time.Millisecond) // the task waited in a queue
		res := e.Run(t.Context(), task)
		if res.Code != grid.CodeTimeout {
			t.Fatalf("result = %+v, want CodeTimeout", res)
		}
		if res.Duration != 1500*time.Millisecond {
			t.Fatalf("ran %v, want the 1.5s left before the deadline", res.Duration)
		}
	})
}

func TestExecutorRunDoesNotStartATaskPastItsDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var calls atomic.Int32
		reg := newTestRegistry(t, &funcSkill{desc: Descriptor{ID: "count", Version: "1.0.0"}, fn: func(context.Context, SkillInput) ([]byte, error) {
			calls.Add(1)
			return nil, nil
		}}, builtin(t, BuiltinOptions{}, "echo"))
		e := newTestExecutor(t, reg)
		for _, id := range []reputation.SkillID{"count", "echo"} {
			task := newTask(id, RawInput(nil)).WithTimeout(time.Second)
			time.Sleep(time.Second)
			if res := e.Run(t.Context(), task); res.Code != grid.CodeTimeout {
				t.Fatalf("%s: result = %+v, want CodeTimeout", id, res)
			}
		}
		if calls.Load() != 0 {
			t.Fatal("the skill ran after its deadline")
		}
		// Without CreatedAt there is no deadline.
		task := newTask("count", RawInput(nil))
		task.CreatedAt = time.Time{}
		if res := e.Run(t.Context(), task); !res.Success || calls.Load() != 1 {
			t.Fatalf("a task without CreatedAt: %+v", res)
		}
	})
}

// blockingSkill runs until released, counting how many run at once.
type blockingSkill struct {
	running, peak, runs atomic.Int32
	started             chan struct{}
	release             chan struct{}
}

func newBlockingSkill() *blockingSkill {
	return &blockingSkill{started: make(chan struct{}, 100), release: make(chan struct{})}
}

func (b *blockingSkill) Descriptor() Descriptor { return Descriptor{ID: "block", Version: "1.0.0"} }

func (b *blockingSkill) Execute(ctx context.Context, in SkillInput) ([]byte, error) {
	n := b.running.Add(1)
	defer b.running.Add(-1)
	b.runs.Add(1)
	for {
		p := b.peak.Load()
		if n <= p || b.peak.CompareAndSwap(p, n) {
			break
		}
	}
	b.started <- struct{}{}
	select {
	case <-b.release:
		return in.Data, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// jobResults collects the results that jobs' Done report, and checks that
// the worker settled each job's queue entry before it called Done.
type jobResults struct {
	q  *grid.TaskQueue
	mu sync.Mutex
	m  map[TaskID]SkillResult
	// unsettled counts Done calls for an entry still in flight on q.
	unsettled int
}

func (r *jobResults) done(qt *grid.QueuedTask, res SkillResult) {
	// Complete must find nothing: the worker has settled the entry.
	settled := !r.q.Complete(qt.ID)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[res.TaskID] = res
	if !settled {
		r.unsettled++
	}
}

func (r *jobResults) unsettledDone() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.unsettled
}

func (r *jobResults) get(id TaskID) (SkillResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	res, ok := r.m[id]
	return res, ok
}

func (r *jobResults) len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m)
}

func newTestQueue(tb testing.TB) *grid.TaskQueue {
	tb.Helper()
	q, err := grid.NewTaskQueue()
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = q.Close() })
	return q
}

func enqueueJob(tb testing.TB, q *grid.TaskQueue, r *jobResults, task *SkillTask) *Job {
	tb.Helper()
	job := &Job{Task: task, Done: r.done}
	if err := q.Enqueue(&grid.QueuedTask{ID: task.ID, Priority: task.Priority, Payload: job}); err != nil {
		tb.Fatal(err)
	}
	return job
}

func TestExecutorPoolNeverRunsMoreThanItsWorkers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers, jobs = 3, 10
		b := newBlockingSkill()
		e := newTestExecutor(t, newTestRegistry(t, b), WithWorkers(workers))
		q := newTestQueue(t)
		r := &jobResults{q: q, m: map[TaskID]SkillResult{}}
		for range jobs {
			enqueueJob(t, q, r, newTask("block", RawInput([]byte("x"))))
		}
		if err := e.Start(t.Context(), q); err != nil {
			t.Fatal(err)
		}
		for done := 0; done < jobs; {
			synctest.Wait() // every worker is blocked: in the skill or in Dequeue
			running := int(b.running.Load())
			if want := min(workers, jobs-done); running != want || e.Busy() != want {
				t.Fatalf("after %d done: %d running, Busy %d; want %d", done, running, e.Busy(), want)
			}
			<-b.started
			b.release <- struct{}{}
			done++
		}
		synctest.Wait()
		if b.peak.Load() != workers || r.len() != jobs || e.Busy() != 0 {
			t.Fatalf("peak %d, results %d, busy %d; want %d, %d, 0", b.peak.Load(), r.len(), e.Busy(), workers, jobs)
		}
		if n := r.unsettledDone(); n != 0 {
			t.Fatalf("%d jobs reached Done still in flight on the queue; want each settled first", n)
		}
		if s := q.Stats(); s.Completed != jobs || s.InFlight != 0 {
			t.Fatalf("queue stats %+v; want %d completed, none in flight", s, jobs)
		}
	})
}

func TestExecutorPoolDoesNotRunACanceledJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlockingSkill()
		e := newTestExecutor(t, newTestRegistry(t, b), WithWorkers(1))
		q := newTestQueue(t)
		r := &jobResults{q: q, m: map[TaskID]SkillResult{}}
		first := enqueueJob(t, q, r, newTask("block", RawInput(nil)))
		second := enqueueJob(t, q, r, newTask("block", RawInput(nil)))
		second.Cancel()
		if err := e.Start(t.Context(), q); err != nil {
			t.Fatal(err)
		}
		<-b.started
		first.Cancel() // a running job's context is canceled
		synctest.Wait()
		for _, j := range []*Job{first, second} {
			res, ok := r.get(j.Task.ID)
			if !ok || res.Code != grid.CodeCanceled {
				t.Fatalf("result of %s = %+v, %v; want CodeCanceled", j.Task.ID.Short(), res, ok)
			}
		}
		if b.runs.Load() != 1 {
			t.Fatalf("the skill ran %d times, want once (the canceled job must not run)", b.runs.Load())
		}
		if s := q.Stats(); s.InFlight != 0 || s.Failed != 2 || r.unsettledDone() != 0 {
			t.Fatalf("queue stats %+v, %d unsettled at Done: want both jobs failed and settled before Done", s, r.unsettledDone())
		}
	})
}

func TestExecutorCloseStopsWorkersAndCancelsRunningJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlockingSkill()
		e := newTestExecutor(t, newTestRegistry(t, b), WithWorkers(4))
		q := newTestQueue(t)
		r := &jobResults{q: q, m: map[TaskID]SkillResult{}}
		running := enqueueJob(t, q, r, newTask("block", RawInput(nil)))
		if err := e.Start(t.Context(), q); err != nil {
			t.Fatal(err)
		}
		<-b.started
		if err := e.Close(); err != nil {
			t.Fatal(err)
		}
		// Close returned, so every worker has exited; the running job was
		// reported canceled, and nothing is taken from the queue any more.
		if res, ok := r.get(running.Task.ID); !ok || res.Code != grid.CodeCanceled {
			t.Fatalf("running job result = %+v, %v; want CodeCanceled", res, ok)
		}
		later := enqueueJob(t, q, r, newTask("block", RawInput(nil)))
		synctest.Wait()
		if _, ok := r.get(later.Task.ID); ok || q.Stats().InFlight != 0 || e.Busy() != 0 {
			t.Fatal("a closed executor took a job")
		}
		if err := e.Close(); err != nil {
			t.Fatalf("second Close = %v", err)
		}
		if err := e.Start(t.Context(), q); !errors.Is(err, grid.ErrClosed) {
			t.Fatalf("Start after Close = %v, want ErrClosed", err)
		}
	})
}

func TestExecutorWorkersStopWhenTheQueueCloses(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestExecutor(t, NewRegistry(), WithWorkers(2))
		q := newTestQueue(t)
		if err := e.Start(t.Context(), q); err != nil {
			t.Fatal(err)
		}
		if err := e.Start(t.Context(), q); err == nil {
			t.Fatal("a second Start succeeded")
		}
		_ = q.Close()
		synctest.Wait()
		_ = e.Close() // returns at once: the workers have already exited
	})
}

// fakeQueue hands out fixed tasks and records the tasks settled as
// completed and as failed.
type fakeQueue struct {
	tasks    chan *grid.QueuedTask
	mu       sync.Mutex
	failed   []grid.TaskID
	complete []grid.TaskID
}

func (f *fakeQueue) Dequeue(ctx context.Context) (*grid.QueuedTask, error) {
	select {
	case t := <-f.tasks:
		return t, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *fakeQueue) TryDequeue() (*grid.QueuedTask, bool) {
	select {
	case t := <-f.tasks:
		return t, true
	default:
		return nil, false
	}
}

func (f *fakeQueue) SettleTryDequeue(id grid.TaskID, done bool) (*grid.QueuedTask, bool) {
	f.mu.Lock()
	if done {
		f.complete = append(f.complete, id)
	} else {
		f.failed = append(f.failed, id)
	}
	f.mu.Unlock()
	t, _ := f.TryDequeue()
	return t, true
}

func TestExecutorPoolFailsPayloadsThatAreNotJobs(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newTestExecutor(t, newTestRegistry(t, Builtins(BuiltinOptions{})...), WithWorkers(1),
			WithExecLogger(slog.New(slog.DiscardHandler)))
		f := &fakeQueue{tasks: make(chan *grid.QueuedTask, 4)}
		bad, nilJob := grid.NewTaskID(), grid.NewTaskID()
		good, unknown := newTask("echo", RawInput([]byte("hi"))), newTask("nope", RawInput(nil))
		f.tasks <- &grid.QueuedTask{ID: bad, Payload: "not a job"}
		f.tasks <- &grid.QueuedTask{ID: nilJob, Payload: (*Job)(nil)}
		f.tasks <- &grid.QueuedTask{ID: good.ID, Payload: &Job{Task: good}}       // no Done: Complete
		f.tasks <- &grid.QueuedTask{ID: unknown.ID, Payload: &Job{Task: unknown}} // no Done: Fail
		if err := e.start(t.Context(), f); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		f.mu.Lock()
		defer f.mu.Unlock()
		if len(f.failed) != 3 || f.failed[0] != bad || f.failed[1] != nilJob || f.failed[2] != unknown.ID {
			t.Fatalf("failed = %v", f.failed)
		}
		if len(f.complete) != 1 || f.complete[0] != good.ID {
			t.Fatalf("completed = %v", f.complete)
		}
	})
}

// BenchmarkExecutorRunEcho measures Run on the echo skill against two
// baselines measured in the same run: calling the skill directly, and the
// clock reads (time.Now, time.Since) that Run needs to time the skill.
func BenchmarkExecutorRunEcho(b *testing.B) {
	reg := newTestRegistry(b, Builtins(BuiltinOptions{})...)
	e := newTestExecutor(b, reg)
	in := RawInput(make([]byte, 128))
	task := newTask("echo", in).WithTimeout(time.Hour)
	echo := builtin(b, BuiltinOptions{}, "echo")
	ctx := context.Background()
	b.Run("baseline-direct", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if out, _ := echo.Execute(ctx, in); len(out) != 128 {
				b.Fatal("bad output")
			}
		}
	})
	b.Run("baseline-clock", func(b *testing.B) { // the two clock reads Run needs
		var d time.Duration
		for b.Loop() {
			d += time.Since(time.Now())
		}
		_ = d
	})
	b.Run("executor", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if res := e.Run(ctx, task); !res.Success {
				b.Fatal(res.Error)
			}
		}
	})
	b.Run("executor-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if res := e.Run(ctx, task); !res.Success {
					b.Fatal(res.Error)
				}
			}
		})
	})
}
