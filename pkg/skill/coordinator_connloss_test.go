package skill

import (
	"errors"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/store"
)

func connLossTask() *grid.RemoteTask {
	return &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.count", Input: []byte("q"), InputKind: grid.InputRaw, Priority: 96, Deadline: time.Now().Add(time.Minute), Attempt: 1}
}

func recvReply(tb testing.TB, rep *coReplies, what string) *grid.RemoteResult {
	tb.Helper()
	select {
	case res := <-rep.ch:
		return res
	case <-time.After(10 * time.Second):
		tb.Fatalf("no reply: %s", what)
		return nil
	}
}

// A peer's task stopped while running, because its stream was lost
// (AbandonTask) or by a cancel (CancelTask, which is what a handler that
// does not forward AbandonTask gets), must not be replayed as canceled
// when the peer asks again for the same ID after a restart: it runs again.
func TestStoreStoppedPeerTaskRunsAgainWhenAskedAgain(t *testing.T) {
	for _, tc := range []struct {
		name string
		stop func(c *DelegationCoordinator, e *stEnv, rt *grid.RemoteTask)
		msg  string
	}{
		{"abandoned", func(c *DelegationCoordinator, e *stEnv, rt *grid.RemoteTask) { c.AbandonTask(e.peers[0], rt) }, connLostMessage},
		{"canceled", func(c *DelegationCoordinator, e *stEnv, rt *grid.RemoteTask) { c.CancelTask(e.peers[0], rt.ID) }, "canceled by the requester"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newStEnv(t)
			from := e.peers[0]
			c1 := e.start(t, 1, nil, nil)
			rt := connLossTask()
			rep := newCoReplies()
			if err := c1.HandleTask(from, rt, grid.ReplyFunc(rep.reply)); err != nil {
				t.Fatal(err)
			}
			stPoll(t, "a worker begins the task", func() bool { return e.runs.Load() > 0 })
			stPoll(t, "the admission on disk", func() bool {
				_, err := e.st.Remote(from, rt.ID)
				return err == nil
			})
			tc.stop(c1, e, rt)
			if res := recvReply(t, rep, "the stop"); res.Success || res.ErrorCode != grid.CodeCanceled || res.ErrorMessage != tc.msg {
				t.Fatalf("reply to the stopped task %+v, want a CodeCanceled %q failure", res, tc.msg)
			}
			stPoll(t, "the stop written behind", func() bool {
				rr, err := e.st.Remote(from, rt.ID)
				return errors.Is(err, store.ErrNotFound) || (err == nil && rr.State.Terminal())
			})
			_ = c1.Close()
			close(e.gate)
			c2 := e.start(t, 1, nil, nil)
			again := *rt // the same ID, re-sent on a new connection
			rep2 := newCoReplies()
			if err := c2.HandleTask(from, &again, grid.ReplyFunc(rep2.reply)); err != nil {
				t.Fatal(err)
			}
			if res := recvReply(t, rep2, "the re-sent task"); !res.Success || string(res.Output) != "ran: q" {
				t.Fatalf("reply to the re-sent task %+v, want the task's real result", res)
			}
			if n := e.runs.Load(); n != 2 {
				t.Fatalf("the skill ran %d times, want 2 (stopped, then run again)", n)
			}
			stPoll(t, "the new result on disk", func() bool {
				rr, err := e.st.Remote(from, rt.ID)
				return err == nil && rr.State == store.StateSucceeded
			})
		})
	}
}

// AbandonTask for a request the peer has re-sent meanwhile (on a new
// stream, which took the task over) must leave the newer request alone.
func TestAbandonTaskLeavesANewerRequestAlone(t *testing.T) {
	e := newStEnv(t)
	from := e.peers[0]
	c := e.start(t, 1, nil, nil)
	old := connLossTask()
	rep1 := newCoReplies()
	if err := c.HandleTask(from, old, grid.ReplyFunc(rep1.reply)); err != nil {
		t.Fatal(err)
	}
	stPoll(t, "a worker begins the task", func() bool { return e.runs.Load() > 0 })
	newer := *old
	newer.Attempt++ // a retry: the same attempt again would be a duplicate
	rep2 := newCoReplies()
	if err := c.HandleTask(from, &newer, grid.ReplyFunc(rep2.reply)); err != nil {
		t.Fatal(err)
	}
	if res := recvReply(t, rep1, "the superseded request"); res.ErrorCode != grid.CodeCanceled {
		t.Fatalf("superseded reply %+v, want CodeCanceled", res)
	}
	c.AbandonTask(from, old) // the old stream's late clean-up
	c.AbandonTask(e.peers[1], &newer)
	close(e.gate)
	if res := recvReply(t, rep2, "the newer request"); !res.Success || string(res.Output) != "ran: q" {
		t.Fatalf("reply to the newer request %+v, want its result", res)
	}
	if n := e.runs.Load(); n != 1 {
		t.Fatalf("the skill ran %d times, want 1", n)
	}
}

// A repeated request answered from the store gets its reply before
// HandleTask returns, and the result is then recorded as delivered.
func TestStoreAnswerFromStoreIsSynchronousAndMarksDelivered(t *testing.T) {
	e := newStEnv(t)
	close(e.gate)
	from := e.peers[0]
	c := e.start(t, 1, nil, nil)
	rt := connLossTask()
	rep := newCoReplies()
	if err := c.HandleTask(from, rt, grid.ReplyFunc(rep.reply)); err != nil {
		t.Fatal(err)
	}
	recvReply(t, rep, "the first request")
	stPoll(t, "the result on disk", func() bool {
		rr, err := e.st.Remote(from, rt.ID)
		return err == nil && rr.State.Terminal()
	})
	if p, err := e.st.PendingDeliveries(from); err != nil || len(p) != 1 {
		t.Fatalf("pending deliveries %d, %v; want the one result", len(p), err)
	}
	rep2 := newCoReplies()
	if err := c.HandleTask(from, rt, grid.ReplyFunc(rep2.reply)); err != nil {
		t.Fatal(err)
	}
	if n := rep2.count(); n != 1 {
		t.Fatalf("%d replies when HandleTask returned, want 1", n)
	}
	if res := <-rep2.ch; !res.Success || string(res.Output) != "ran: q" {
		t.Fatalf("stored reply %+v", res)
	}
	stPoll(t, "the result marked delivered", func() bool {
		p, err := e.st.PendingDeliveries(from)
		return err == nil && len(p) == 0
	})
}
