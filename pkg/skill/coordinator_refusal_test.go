package skill

import (
	"context"
	"errors"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// coAdmitAtMost is a worker that runs up to n tasks at once, each for
// run, and refuses more as over its budget, with a retry-after of 1 s, as
// an executor does a stranger's burst.
func coAdmitAtMost(p peer.ID, n int, run time.Duration) func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) {
	var (
		mu      sync.Mutex
		running int
	)
	return func(ctx context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
		mu.Lock()
		if running >= n {
			mu.Unlock()
			return nil, &grid.RejectError{Reason: grid.RejectOverBudget, Message: "2 of your tasks are running here already (max 2)", RetryAfter: time.Second}
		}
		running++
		mu.Unlock()
		defer func() { mu.Lock(); running--; mu.Unlock() }()
		select {
		case <-time.After(run):
			return coSucceedAs(p)(ctx, t)
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// A refusal is not a failure: a burst of slow tasks to a worker that
// admits two at a time all succeed, whatever MaxRetries says, each one
// asking again after the retry-after rather than at once.
func TestCoordinatorRefusedAttemptsDoNotUseUpRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := rtPeers(t, 1)[0]
		e := newFailEnv(t, &fDirectory{m: coRemoteDir(a)}, 5)
		e.del.behave[a] = coAdmitAtMost(a, 2, 3*time.Second)
		var ids []TaskID
		for range 6 {
			ids = append(ids, e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithMaxRetries(1).WithTimeout(time.Minute)))
		}
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, id := range ids {
			if res, err := e.c.Wait(ctx, id); err != nil {
				t.Fatalf("task %s: Wait = %+v, %v; want it to succeed once the worker has room", id.Short(), res, err)
			}
		}
		took := time.Since(start)
		calls := len(e.del.Calls())
		t.Logf("6 tasks done in %v with %d attempts", took, calls)
		// 3 rounds of 2 tasks take 9 s; a refused task asks at most once
		// a second meanwhile.
		if took < 9*time.Second || calls > 6+4*10 {
			t.Fatalf("6 tasks took %v and %d attempts; want at least 9 s and at most %d attempts (no busy loop)", took, calls, 6+4*10)
		}
		if pts := e.trust.Peers(); len(pts) > 1 {
			t.Errorf("trust records = %+v; want at most the successes", pts)
		}
		if m := e.c.Metrics().PerNode[a]; m.Failed != 0 || m.Completed != 6 || m.Rejected == 0 {
			t.Errorf("metrics of the worker = %+v; want 6 completed, the refusals counted as rejected, no failure", m.Metrics)
		}
		if st := e.c.Breakers(); len(st) != 0 {
			t.Errorf("Breakers = %+v; want none after refusals", st)
		}
	})
}

// Two workers that are both full do not bounce a task between them at
// network speed: once both have refused it, it waits before asking again.
func TestCoordinatorRefusalsFromEveryNodeArePaced(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		e := newFailEnv(t, &fDirectory{m: coRemoteDir(ids...)}, 5)
		full := coFailWith(&grid.RejectError{Reason: grid.RejectQueueFull, Message: "queue full"})
		for _, p := range ids {
			e.del.behave[p] = full
		}
		task := NewSkillTask("remote.only", RawInput(nil), "").WithMaxRetries(1).WithTimeout(5 * time.Second)
		if _, err := e.wait(t, e.submit(t, task)); !errors.Is(err, ErrTimeout) {
			t.Fatalf("Wait = %v; want ErrTimeout once the deadline passes", err)
		}
		// The backoff from 100 ms doubles (±50%): some 6 rounds of 2 in
		// 5 s.
		if calls := len(e.del.Calls()); calls < 3 || calls > 20 {
			t.Fatalf("%d attempts in 5 s between two full workers; want 3 to 20", calls)
		}
	})
}

// A node that refuses the input as more than it lets this node hold is a
// rejection, not the input's fault: the task moves to a node that takes
// it, and the refusing node is not asked again. When every node refuses
// it so, the task fails with ErrTooLarge, after one attempt on each.
func TestCoordinatorInputTooLargeForOneNodeMovesToAnother(t *testing.T) {
	tooLarge := &grid.RejectError{Reason: grid.RejectTooLarge, Message: "input of 5000000 bytes is more than this node lets you hold at once (4194304 bytes)"}
	t.Run("another node takes it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ids := rtPeers(t, 2)
			e := newFailEnv(t, &fDirectory{m: coRemoteDir(ids...)}, 5)
			// Whichever node is asked first refuses it as too large; the
			// other is full once, then takes it.
			var (
				mu       sync.Mutex
				refuser  peer.ID
				refusals int
			)
			for _, p := range ids {
				e.del.behave[p] = func(ctx context.Context, rt *grid.RemoteTask) (*grid.RemoteResult, error) {
					mu.Lock()
					defer mu.Unlock()
					switch {
					case refuser == "" || refuser == p:
						refuser = p
						return nil, tooLarge
					case refusals == 0:
						refusals++
						return nil, &grid.RejectError{Reason: grid.RejectOverBudget, RetryAfter: time.Second}
					}
					return coSucceedAs(p)(ctx, rt)
				}
			}
			res, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput([]byte("big")), "").WithMaxRetries(0)))
			if err != nil {
				t.Fatalf("Wait = %+v, %v; want the task to run on the node that takes it", res, err)
			}
			asked := 0
			for _, c := range e.del.Calls() {
				if c.peer == refuser {
					asked++
				}
			}
			if res.ExecutedBy == refuser || asked != 1 || res.Attempts != 3 {
				t.Fatalf("ran on %s after %d attempts, the refusing node asked %d times; want the other node, 3 attempts, 1 ask", res.ExecutedBy, res.Attempts, asked)
			}
			if m := e.c.Metrics().PerNode[refuser]; m.Failed != 0 || m.Rejected != 1 {
				t.Errorf("metrics of the refusing node = %+v; want 1 rejected, no failure", m.Metrics)
			}
			for _, pt := range e.trust.Peers() {
				if pt.Peer == refuser {
					t.Errorf("trust record of the refusing node: %+v; want none", pt)
				}
			}
		})
	})
	t.Run("no node takes it", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ids := rtPeers(t, 2)
			e := newFailEnv(t, &fDirectory{m: coRemoteDir(ids...)}, 5)
			for _, p := range ids {
				e.del.behave[p] = coFailWith(tooLarge)
			}
			res, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput([]byte("big")), "").WithMaxRetries(5)))
			if !errors.Is(err, ErrInvalidInput) || !errors.Is(err, ErrTooLarge) || res.Code != grid.CodeInvalidInput {
				t.Fatalf("Wait = %+v, %v; want ErrInvalidInput and ErrTooLarge with code invalid input", res, err)
			}
			if calls := len(e.del.Calls()); calls != 2 || res.Attempts != 2 {
				t.Fatalf("%d asks, %d attempts; want one on each node", calls, res.Attempts)
			}
			if pts := e.trust.Peers(); len(pts) != 0 {
				t.Errorf("trust records = %+v; want none", pts)
			}
		})
	})
}
