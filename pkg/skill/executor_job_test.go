package skill

import (
	"context"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// quickSkill ("quick") is context free, like echo: it returns at once and
// counts its runs, noting whether its context had a deadline.
type quickSkill struct{ runs, withDeadline atomic.Int32 }

func (*quickSkill) Descriptor() Descriptor { return Descriptor{ID: "quick", Version: "1.0.0"} }

func (s *quickSkill) Execute(ctx context.Context, in SkillInput) ([]byte, error) {
	s.runs.Add(1)
	if _, ok := ctx.Deadline(); ok {
		s.withDeadline.Add(1)
	}
	return in.Data, nil
}

func (*quickSkill) contextFree() {}

func TestExecutorPoolDoesNotStartACanceledContextFreeJob(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := &quickSkill{}
		e := newTestExecutor(t, newTestRegistry(t, s), WithWorkers(1))
		q := newTestQueue(t)
		r := &jobResults{q: q, m: map[TaskID]SkillResult{}}
		canceled := enqueueJob(t, q, r, newTask("quick", RawInput([]byte("x"))))
		canceled.Cancel()
		ran := enqueueJob(t, q, r, newTask("quick", RawInput([]byte("y"))))
		if err := e.Start(t.Context(), q); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if res, ok := r.get(canceled.Task.ID); !ok || res.Code != grid.CodeCanceled || canceled.Started() {
			t.Fatalf("canceled job: result %+v, %v, started %v; want CodeCanceled, not started", res, ok, canceled.Started())
		}
		if res, ok := r.get(ran.Task.ID); !ok || !res.Success || string(res.Output) != "y" || !ran.Started() {
			t.Fatalf("other job: result %+v, %v, started %v; want success, started", res, ok, ran.Started())
		}
		if s.runs.Load() != 1 {
			t.Fatalf("the skill ran %d times; want once (not for the canceled job)", s.runs.Load())
		}
		if s.withDeadline.Load() != 0 {
			t.Fatal("a context-free skill was given a context of its own with the task's deadline")
		}
		if st := q.Stats(); st.Completed != 1 || st.Failed != 1 || st.InFlight != 0 || r.unsettledDone() != 0 {
			t.Fatalf("queue stats %+v, %d unsettled at Done; want 1 completed, 1 failed, both settled first", st, r.unsettledDone())
		}
	})
}

func TestExecutorPoolTimesOutASkillAtItsTaskDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		b := newBlockingSkill()
		e := newTestExecutor(t, newTestRegistry(t, b), WithWorkers(1))
		q := newTestQueue(t)
		r := &jobResults{q: q, m: map[TaskID]SkillResult{}}
		job := enqueueJob(t, q, r, newTask("block", RawInput(nil)).WithTimeout(2*time.Second))
		if err := e.Start(t.Context(), q); err != nil {
			t.Fatal(err)
		}
		<-b.started
		time.Sleep(time.Hour)
		synctest.Wait()
		res, ok := r.get(job.Task.ID)
		if !ok || res.Code != grid.CodeTimeout {
			t.Fatalf("result %+v, %v; want CodeTimeout", res, ok)
		}
		if res.Duration != 2*time.Second {
			t.Fatalf("ran %v, want until the 2s deadline", res.Duration)
		}
	})
}
