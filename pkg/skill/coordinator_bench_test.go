package skill

import (
	"context"
	"runtime"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

var coBenchOpts []CoordinatorOption

// coBenchSubmitters is the number of goroutines submitting at once.
const coBenchSubmitters = 64

var coBenchInput = SkillInput{Kind: grid.InputJSON, Data: []byte(`{"message":"hello, grid"}`)}

// coRunSubmitters runs op from coBenchSubmitters goroutines until b.N calls
// are done and reports the rate as tasks/s.
func coRunSubmitters(b *testing.B, op func(ctx context.Context) error) {
	b.ReportAllocs()
	b.SetParallelism(max(1, coBenchSubmitters/runtime.GOMAXPROCS(0)))
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		for pb.Next() {
			if err := op(ctx); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "tasks/s")
}

// BenchmarkLocalEcho measures submit-to-result of the echo skill on this
// node with 64 concurrent submitters: through the DelegationCoordinator
// (SubmitTask then Wait), and, as the baseline in the same run, through a
// bare pool of as many goroutines as the executor has workers, fed by a
// buffered channel, each call waiting on a channel of its own for its
// result.
//
//	go test -run '^$' -bench LocalEcho -benchtime 2s ./pkg/skill/
func BenchmarkLocalEcho(b *testing.B) {
	b.Run("coordinator", func(b *testing.B) {
		e := newCoEnv(b, coEnvConfig{workers: coBenchWorkers(), opts: coBenchOpts})
		coRunSubmitters(b, func(ctx context.Context) error {
			id, err := e.c.SubmitTask(ctx, NewSkillTask("echo", coBenchInput, ""))
			if err != nil {
				return err
			}
			res, err := e.c.Wait(ctx, id)
			if err == nil && len(res.Output) != len(coBenchInput.Data) {
				b.Errorf("output %q, want the input", res.Output)
			}
			return err
		})
	})
	b.Run("queue and executor alone", func(b *testing.B) {
		// What the coordinator is built on, without it: each call enqueues
		// a Job whose Done (called once the worker has completed the entry)
		// wakes the caller.
		e := newCoEnv(b, coEnvConfig{workers: coBenchWorkers()})
		q := e.c.q
		coRunSubmitters(b, func(context.Context) error {
			t := NewSkillTask("echo", coBenchInput, e.self)
			t.ID, t.CreatedAt = grid.NewTaskID(), time.Now()
			ch := make(chan SkillResult, 1)
			job := &Job{Task: t, Done: func(_ *grid.QueuedTask, res SkillResult) { ch <- res }}
			if err := q.Enqueue(&grid.QueuedTask{ID: t.ID, Priority: t.Priority, Payload: job, CreatedAt: t.CreatedAt, Deadline: t.Deadline()}); err != nil {
				return err
			}
			<-ch
			return nil
		})
	})
	b.Run("channel pool baseline", func(b *testing.B) {
		type call struct {
			in   SkillInput
			done chan []byte
		}
		calls := make(chan call, 1024)
		defer close(calls)
		var echo Skill = echoSkill{}
		for range coBenchWorkers() {
			go func() {
				for c := range calls {
					out, _ := echo.Execute(context.Background(), c.in)
					c.done <- out
				}
			}()
		}
		coRunSubmitters(b, func(context.Context) error {
			c := call{in: coBenchInput, done: make(chan []byte, 1)}
			calls <- c
			if out := <-c.done; len(out) != len(coBenchInput.Data) {
				b.Errorf("output %q, want the input", out)
			}
			return nil
		})
	})
}

// BenchmarkOneTaskCycle measures the CPU cost of one local task from
// submission to result on one goroutine, with no contention: the worker's
// part (TryDequeue, run, settle, Done) runs inline. "coordinator" goes through
// SubmitTask and Wait; "queue and executor alone" does the same queue and
// executor work without the coordinator. The difference is what the
// coordinator adds per task.
func BenchmarkOneTaskCycle(b *testing.B) {
	e := newCoEnv(b, coEnvConfig{opts: coBenchOpts})
	_ = e.c.exec.Close() // the loop below plays the worker
	ctx := context.Background()
	work := func() {
		qt, ok := e.c.q.TryDequeue()
		if !ok {
			b.Fatal("nothing queued")
		}
		job := qt.Payload.(*Job)
		res := e.c.exec.runJob(ctx, job)
		if next, _ := e.c.q.SettleTryDequeue(qt.ID, res.Success); next != nil {
			b.Fatal("a second task was queued")
		}
		job.Done(qt, res)
	}
	b.Run("coordinator", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			id, err := e.c.SubmitTask(ctx, NewSkillTask("echo", coBenchInput, ""))
			if err != nil {
				b.Fatal(err)
			}
			work()
			if _, err := e.c.Wait(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("queue and executor alone", func(b *testing.B) {
		b.ReportAllocs()
		q := e.c.q
		done := func(*grid.QueuedTask, SkillResult) {}
		for b.Loop() {
			t := NewSkillTask("echo", coBenchInput, e.self)
			t.ID, t.CreatedAt = grid.NewTaskID(), time.Now()
			if err := q.Enqueue(&grid.QueuedTask{ID: t.ID, Priority: t.Priority, Payload: &Job{Task: t, Done: done}, CreatedAt: t.CreatedAt, Deadline: t.Deadline()}); err != nil {
				b.Fatal(err)
			}
			work()
		}
	})
}

// BenchmarkSubmitPath measures the parts of a local submission one at a
// time, single-threaded, to show where the time goes.
func BenchmarkSubmitPath(b *testing.B) {
	e := newCoEnv(b, coEnvConfig{})
	task := NewSkillTask("echo", coBenchInput, e.self)
	b.Run("NewTaskID", func(b *testing.B) {
		for b.Loop() {
			_ = grid.NewTaskID()
		}
	})
	b.Run("Validate", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = e.reg.Validate(task.Skill, task.Version, task.Input)
		}
	})
	b.Run("pick", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = e.c.pick(task, true, nil)
		}
	})
	b.Run("metrics", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			e.metrics.RecordSubmitted(e.self)
			e.metrics.RecordCompleted(e.self, time.Microsecond)
		}
	})
	b.Run("trust", func(b *testing.B) {
		p := rtPeers(b, 1)[0]
		b.ReportAllocs()
		for b.Loop() {
			e.trust.Record(p, "echo", reputation.OutcomeSuccess)
		}
	})
}

var coBenchWorkersN = 0

func coBenchWorkers() int {
	if coBenchWorkersN > 0 {
		return coBenchWorkersN
	}
	return 4 * runtime.GOMAXPROCS(0)
}
