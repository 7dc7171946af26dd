package skill

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

func TestLocalTaskRecordsProgress(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{})
		ch := make(chan Event, 64)
		defer e.c.Subscribe(func(ev Event) { ch <- ev })()
		id := e.submit(t, coSleepTask(t, "", 450))
		time.Sleep(250 * time.Millisecond)
		synctest.Wait()
		mid := e.state(t, id)
		if mid.Progress == nil || mid.Progress.Fraction <= 0 || mid.Progress.Fraction >= 1 || !strings.HasPrefix(mid.Progress.Message, "slept ") {
			t.Fatalf("status mid-sleep: progress %+v, want a fraction in (0, 1) and \"slept N of 450 ms\"", mid.Progress)
		}
		if _, err := e.wait(t, id); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		var got []float64
		for len(ch) > 0 {
			if ev := <-ch; ev.Progress != nil {
				if ev.TaskID != id || ev.State != StateRunning {
					t.Fatalf("progress event %+v, want task %s running", ev, id.Short())
				}
				got = append(got, ev.Progress.Fraction)
			}
		}
		if len(got) < 3 || len(got) > 4 {
			t.Fatalf("progress events %v, want 3 or 4 (one per 100 ms of 450)", got)
		}
		for i := 1; i < len(got); i++ {
			if got[i] <= got[i-1] {
				t.Fatalf("progress events %v do not rise", got)
			}
		}
	})
}

func TestRemoteProgressIsKeptOnlyForTheCurrentAttempt(t *testing.T) {
	ids := rtPeers(t, 1)
	e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...)})
	e.del.behave[ids[0]] = coBlockUntilDone
	id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))
	for e.state(t, id).State != StateDelegated {
		time.Sleep(time.Millisecond)
	}
	e.c.TaskProgress(id, 2, 0.7, "another attempt")
	e.c.TaskProgress(grid.NewTaskID(), 1, 0.7, "another task")
	if p := e.state(t, id).Progress; p != nil {
		t.Fatalf("progress %+v from reports of another attempt or task, want none", p)
	}
	e.c.TaskProgress(id, 1, 0.5, "half")
	p := e.state(t, id).Progress
	if p == nil || p.Fraction != 0.5 || p.Message != "half" || p.UpdatedAt.IsZero() {
		t.Fatalf("progress %+v, want 0.5 \"half\"", p)
	}
	if err := e.c.Cancel(id); err != nil {
		t.Fatal(err)
	}
	_, _ = e.wait(t, id)
	e.c.TaskProgress(id, 1, 0.9, "after the end")
	if p := e.state(t, id).Progress; p == nil || p.Fraction != 0.5 {
		t.Fatalf("progress %+v after the task ended, want the last one before it (0.5)", p)
	}
}

func TestReportProgressOutsideATaskDoesNothing(t *testing.T) {
	ReportProgress(context.Background(), 0.5, "nobody listens")
}

func TestCutMessage(t *testing.T) {
	long := strings.Repeat("ü", 150) // 300 bytes
	if got := cutMessage(long); len(got) != 200 || got != strings.Repeat("ü", 100) {
		t.Fatalf("cutMessage of 300 bytes = %d bytes", len(got))
	}
	if got := cutMessage("a\xffb"); got != "a\uFFFDb" {
		t.Fatalf("cutMessage of invalid UTF-8 = %q", got)
	}
}

func TestARetryStartsWithoutTheLastAttemptsProgress(t *testing.T) {
	ids := rtPeers(t, 2)
	e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...), opts: []CoordinatorOption{WithRetryBackoff(time.Millisecond, time.Millisecond)}})
	release := make(chan struct{})
	second := make(chan struct{}, 1)
	behave := func(ctx context.Context, rt *grid.RemoteTask) (*grid.RemoteResult, error) {
		if rt.Attempt == 1 {
			e.c.TaskProgress(rt.ID, 1, 0.6, "first attempt")
			if p := e.state(t, rt.ID).Progress; p == nil || p.Fraction != 0.6 {
				t.Errorf("attempt 1's progress %+v, want 0.6", p)
			}
			return &grid.RemoteResult{ID: rt.ID, ErrorCode: grid.CodeExecutionFailed, ErrorMessage: "it failed"}, nil
		}
		second <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &grid.RemoteResult{ID: rt.ID, Success: true, Executor: ids[1]}, nil
	}
	e.del.behave[ids[0]], e.del.behave[ids[1]] = behave, behave
	id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))
	select {
	case <-second:
	case <-time.After(10 * time.Second):
		t.Fatal("no second attempt")
	}
	if st := e.state(t, id); st.Attempts != 2 || st.Progress != nil {
		t.Errorf("attempt %d has progress %+v, want attempt 2 without any yet", st.Attempts, st.Progress)
	}
	close(release)
	if _, err := e.wait(t, id); err != nil {
		t.Fatal(err)
	}
}

// progSkill is a deterministic skill that reports what it is sent on
// report until gate closes.
type progSkill struct {
	started chan struct{}
	report  chan float64
	gate    chan struct{}
}

func (s *progSkill) Descriptor() Descriptor {
	return Descriptor{ID: "test.prog", Version: "1.0.0", Deterministic: true}
}

func (s *progSkill) Execute(ctx context.Context, in SkillInput) ([]byte, error) {
	s.started <- struct{}{}
	for {
		select {
		case f := <-s.report:
			ReportProgress(ctx, f, "step")
		case <-s.gate:
			return in.Data, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// TestIdenticalTasksShareTheRunningOnesProgress: a task waiting for an
// identical one's run (see flight) shows that run's progress.
func TestIdenticalTasksShareTheRunningOnesProgress(t *testing.T) {
	s := &progSkill{started: make(chan struct{}, 1), report: make(chan float64), gate: make(chan struct{})}
	e := newCoEnv(t, coEnvConfig{workers: 2})
	if err := e.reg.Register(s); err != nil {
		t.Fatal(err)
	}
	rc, err := NewResultCache(CacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e.c.UseResultCache(rc)
	t.Cleanup(func() { e.c.UseResultCache(nil) })
	task := func() *SkillTask { return NewSkillTask("test.prog", RawInput([]byte("x")), e.self) }
	lead := e.submit(t, task())
	<-s.started
	follower := e.submit(t, task())
	s.report <- 0.3
	s.report <- 0.4 // the first is handled once the second is taken
	for _, id := range []TaskID{lead, follower} {
		var p *Progress
		for end := time.Now().Add(5 * time.Second); time.Now().Before(end); time.Sleep(time.Millisecond) {
			if p = e.state(t, id).Progress; p != nil && p.Fraction >= 0.3 {
				break
			}
		}
		if p == nil || p.Fraction < 0.3 || p.Message != "step" {
			t.Errorf("task %s progress %+v, want the shared run's report", id.Short(), p)
		}
	}
	close(s.gate)
	for _, id := range []TaskID{lead, follower} {
		if _, err := e.wait(t, id); err != nil {
			t.Fatal(err)
		}
	}
}

func TestBuiltinsReportProgress(t *testing.T) {
	var got []string
	ctx := WithProgress(context.Background(), func(f float64, msg string) {
		got = append(got, fmt.Sprintf("%.2f %s", f, msg))
	})
	resize := builtin(t, BuiltinOptions{}, "image.resize")
	if _, err := resize.Execute(ctx, resizeInput(t, encodePNG(t, testImage(40, 20)), `,"width":10,"height":5`)); err != nil {
		t.Fatal(err)
	}
	if want := "0.10 decoding|0.40 scaling|0.80 encoding"; strings.Join(got, "|") != want {
		t.Errorf("image.resize reported %q, want %q", got, want)
	}
	synctest.Test(t, func(t *testing.T) {
		var got []string
		ctx := WithProgress(t.Context(), func(f float64, msg string) { got = append(got, fmt.Sprintf("%.1f %s", f, msg)) })
		sleep := builtin(t, BuiltinOptions{DebugSleep: true}, "debug.sleep")
		if _, err := sleep.Execute(ctx, mustJSON(t, `{"ms":500}`)); err != nil {
			t.Fatal(err)
		}
		want := "0.2 slept 100 of 500 ms|0.4 slept 200 of 500 ms|0.6 slept 300 of 500 ms|0.8 slept 400 of 500 ms"
		if strings.Join(got, "|") != want {
			t.Errorf("debug.sleep reported %q, want %q", got, want)
		}
	})
}
