package skill

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// adCountSkill ("test.tally") counts its runs and answers "run N", or
// fails when its input is "fail".
type adCountSkill struct{ runs *atomic.Int32 }

func (adCountSkill) Descriptor() Descriptor { return Descriptor{ID: "test.tally", Version: "1.0.0"} }

func (s adCountSkill) Execute(_ context.Context, in SkillInput) ([]byte, error) {
	n := s.runs.Add(1)
	if string(in.Data) == "fail" {
		return nil, errors.New("asked to fail")
	}
	return fmt.Appendf(nil, "run %d", n), nil
}

func adCountEnv(tb testing.TB, opts ...CoordinatorOption) (*coEnv, *atomic.Int32) {
	tb.Helper()
	e := newCoEnv(tb, coEnvConfig{opts: opts})
	runs := new(atomic.Int32)
	if err := e.reg.Register(adCountSkill{runs}); err != nil {
		tb.Fatal(err)
	}
	return e, runs
}

func adCountTask(in string, attempt int) *grid.RemoteTask {
	return &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.tally", Input: []byte(in), InputKind: grid.InputRaw,
		Deadline: time.Now().Add(time.Minute), Attempt: attempt}
}

// adAsk sends rt from from and returns its one reply.
func adAsk(tb testing.TB, c *DelegationCoordinator, from peer.ID, rt *grid.RemoteTask) *grid.RemoteResult {
	tb.Helper()
	rs := newCoReplies()
	if err := c.HandleTask(from, rt, grid.ReplyFunc(rs.reply)); err != nil {
		tb.Fatalf("HandleTask(attempt %d) = %v, want admitted", rt.Attempt, err)
	}
	select {
	case res := <-rs.ch:
		return res
	case <-time.After(10 * time.Second):
		tb.Fatalf("no reply to attempt %d", rt.Attempt)
		return nil
	}
}

func TestHandleTaskRejectsTheSameAttemptWhileItRuns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{workers: 1})
		from := e.peers[0]
		task := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.block", InputKind: grid.InputRaw, Deadline: time.Now().Add(time.Minute), Attempt: 2}
		first := newCoReplies()
		if err := e.c.HandleTask(from, task, grid.ReplyFunc(first.reply)); err != nil {
			t.Fatal(err)
		}
		<-e.started
		for _, attempt := range []int{2, 1} {
			again := *task
			again.Attempt = attempt
			var rej *grid.RejectError
			if err := e.c.HandleTask(from, &again, grid.ReplyFunc(func(*grid.RemoteResult) { t.Error("a rejected request got a reply") })); !errors.As(err, &rej) || rej.Reason != grid.RejectDuplicate {
				t.Fatalf("attempt %d while attempt 2 runs = %v, want RejectDuplicate", attempt, err)
			}
		}
		synctest.Wait()
		if first.count() != 0 {
			t.Fatalf("the running request got %+v; a rejected duplicate must leave it alone", first.got)
		}
		e.c.CancelTask(from, task.ID)
		synctest.Wait()
		if first.count() != 1 || len(e.started) != 0 {
			t.Errorf("replies %d, extra runs %d; want one reply and no second run", first.count(), len(e.started))
		}
	})
}

func TestHandleTaskAnswersARepeatAfterItsResultWithoutRunningAgain(t *testing.T) {
	e, runs := adCountEnv(t)
	from := e.peers[0]
	rt := adCountTask("x", 1)
	first := adAsk(t, e.c, from, rt)
	if !first.Success || string(first.Output) != "run 1" {
		t.Fatalf("first result %+v, want run 1", first)
	}
	for _, attempt := range []int{1, 2} { // a re-send, and a retry of a success
		again := *rt
		again.Attempt = attempt
		res := adAsk(t, e.c, from, &again)
		if !res.Success || string(res.Output) != "run 1" || res.ID != rt.ID {
			t.Errorf("repeat with attempt %d answered %+v, want the recorded result run 1", attempt, res)
		}
	}
	if n := runs.Load(); n != 1 {
		t.Fatalf("the skill ran %d times, want once", n)
	}
	// The record is per requester: another peer's request with the same ID
	// is its own task.
	if res := adAsk(t, e.c, e.peers[1], rt); string(res.Output) != "run 2" {
		t.Errorf("another peer's request answered %+v, want its own run", res)
	}
}

func TestHandleTaskRunsANewerAttemptAfterAFailure(t *testing.T) {
	e, runs := adCountEnv(t)
	from := e.peers[0]
	rt := adCountTask("fail", 1)
	if res := adAsk(t, e.c, from, rt); res.Success {
		t.Fatalf("first result %+v, want a failure", res)
	}
	same := adAsk(t, e.c, from, rt)
	if same.Success || runs.Load() != 1 {
		t.Fatalf("a re-send of the failed attempt got %+v after %d runs; want the recorded failure and one run", same, runs.Load())
	}
	retry := *rt
	retry.Attempt = 2
	adAsk(t, e.c, from, &retry)
	if n := runs.Load(); n != 2 {
		t.Fatalf("the skill ran %d times, want a second run for the retry", n)
	}
}

func TestHandleTaskRejectsAPastDeadline(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{})
	rt := adTask("echo", `"x"`)
	rt.Deadline = time.Now().Add(-time.Second)
	var rej *grid.RejectError
	err := e.c.HandleTask(e.peers[0], rt, grid.ReplyFunc(func(*grid.RemoteResult) { t.Error("a rejected request got a reply") }))
	if !errors.As(err, &rej) || rej.Reason != grid.RejectDeadlinePassed {
		t.Fatalf("HandleTask with a past deadline = %v, want RejectDeadlinePassed", err)
	}
}

func TestRecentResultsAreBoundedInEntriesAndBytes(t *testing.T) {
	from := rtPeers(t, 1)[0]
	now := time.Now()
	r := newRecentResults(recentConfig{entries: 3, bytes: 100, ttl: time.Minute})
	ids := make([]TaskID, 5)
	for i := range ids {
		ids[i] = grid.NewTaskID()
		r.add(from, ids[i], 1, &grid.RemoteResult{ID: ids[i], Success: true, Output: make([]byte, 10)}, now)
	}
	if n, b := r.len(); n != 3 || b != 30 {
		t.Fatalf("len = %d entries, %d bytes; want the 3 newest, 30 bytes", n, b)
	}
	if _, ok := r.get(from, ids[0], now); ok {
		t.Error("the oldest result is still recorded past the entry bound")
	}
	big := grid.NewTaskID()
	r.add(from, big, 1, &grid.RemoteResult{ID: big, Success: true, Output: make([]byte, 95)}, now)
	if n, b := r.len(); b > 100 || n != 1 {
		t.Fatalf("len = %d entries, %d bytes; want only the 95-byte result within 100 bytes", n, b)
	}
	huge := grid.NewTaskID()
	r.add(from, huge, 1, &grid.RemoteResult{ID: huge, Success: true, Output: make([]byte, 500)}, now)
	sr, ok := r.get(from, huge, now)
	if !ok || sr.kept || sr.res.Output != nil {
		t.Fatalf("a result over the byte bound: %+v, %v; want it recorded without its output", sr, ok)
	}
	if _, ok := r.get(from, huge, now.Add(time.Minute)); ok {
		t.Error("a result is still recorded after its time")
	}
	r.add(from, ids[4], 1, &grid.RemoteResult{ID: ids[4], ErrorCode: grid.CodeCanceled}, now)
	if _, ok := r.get(from, ids[4], now); ok {
		t.Error("a canceled result is recorded; asking again must run the task")
	}
	r.sweep(now.Add(time.Hour))
	if n, b := r.len(); n != 0 || b != 0 {
		t.Errorf("after the sweep len = %d, %d; want empty", n, b)
	}
}

func TestHandleTaskRejectsARepeatWhoseResultWasTooLargeToKeep(t *testing.T) {
	e, runs := adCountEnv(t, WithRecentResults(16, 2, time.Minute))
	from := e.peers[0]
	rt := adCountTask("x", 1)
	adAsk(t, e.c, from, rt)
	var rej *grid.RejectError
	if err := e.c.HandleTask(from, rt, grid.ReplyFunc(func(*grid.RemoteResult) {})); !errors.As(err, &rej) || rej.Reason != grid.RejectDuplicate {
		t.Fatalf("a repeat of a result not kept = %v, want RejectDuplicate", err)
	}
	retry := *rt
	retry.Attempt = 2
	if res := adAsk(t, e.c, from, &retry); string(res.Output) != "run 2" || runs.Load() != 2 {
		t.Fatalf("a newer attempt answered %+v after %d runs; want it run again", res, runs.Load())
	}
}

func TestHandleTaskWithAStoreRunsANewerAttemptAfterAFailureOnly(t *testing.T) {
	e := newStEnv(t)
	runs := new(atomic.Int32)
	if err := e.reg.Register(adCountSkill{runs}); err != nil {
		t.Fatal(err)
	}
	c := e.start(t, 1, nil, nil)
	from := e.peers[0]
	finished := func(rt *grid.RemoteTask) func() bool {
		return func() bool {
			rr, err := e.st.Remote(from, rt.ID)
			return err == nil && rr.State.Terminal()
		}
	}
	failed, ok := adCountTask("fail", 1), adCountTask("x", 1)
	adAsk(t, c, from, failed)
	adAsk(t, c, from, ok)
	stPoll(t, "both results on disk", func() bool { return finished(failed)() && finished(ok)() })
	if res := adAsk(t, c, from, failed); res.Success || runs.Load() != 2 {
		t.Fatalf("a re-send of a failed attempt got %+v after %d runs; want the stored failure, 2 runs", res, runs.Load())
	}
	retryOK := *ok
	retryOK.Attempt = 2
	if res := adAsk(t, c, from, &retryOK); string(res.Output) != "run 2" || runs.Load() != 2 {
		t.Fatalf("a newer attempt of a success got %+v after %d runs; want the stored run 2, no new run", res, runs.Load())
	}
	retry := *failed
	retry.Attempt = 2
	adAsk(t, c, from, &retry)
	if n := runs.Load(); n != 3 {
		t.Fatalf("the skill ran %d times, want a third run for the retry of the failure", n)
	}
}
