package skill

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// DelegateAsync makes coDelegator an asyncDelegator, as the orchestrator
// is, so that the coordinator tests run remote attempts the way the
// daemon does: the callback comes from another goroutine, never the
// caller's.
func (f *coDelegator) DelegateAsync(ctx context.Context, p peer.ID, t *grid.RemoteTask, done func(*grid.RemoteResult, error)) {
	go func() { done(f.Delegate(ctx, p, t)) }()
}

var _ asyncDelegator = (*coDelegator)(nil)

// coBlockingDelegator hides coDelegator's DelegateAsync: a Delegator that
// only blocks, run on a goroutine per attempt.
type coBlockingDelegator struct{ d *coDelegator }

func (b coBlockingDelegator) Delegate(ctx context.Context, p peer.ID, t *grid.RemoteTask) (*grid.RemoteResult, error) {
	return b.d.Delegate(ctx, p, t)
}

// coSyncDoneDelegator calls done before DelegateAsync returns, as the
// orchestrator does when a task cannot be sent.
type coSyncDoneDelegator struct{ d *coDelegator }

func (s coSyncDoneDelegator) Delegate(ctx context.Context, p peer.ID, t *grid.RemoteTask) (*grid.RemoteResult, error) {
	return s.d.Delegate(ctx, p, t)
}

func (s coSyncDoneDelegator) DelegateAsync(ctx context.Context, p peer.ID, t *grid.RemoteTask, done func(*grid.RemoteResult, error)) {
	done(s.d.Delegate(ctx, p, t))
}

func TestCoordinatorFallsBackWithEveryKindOfDelegator(t *testing.T) {
	cases := []struct {
		name string
		wrap func(*coDelegator) grid.Delegator
	}{
		{"a delegator that only blocks", func(d *coDelegator) grid.Delegator { return coBlockingDelegator{d} }},
		{"an async delegator that answers on the caller's goroutine", func(d *coDelegator) grid.Delegator { return coSyncDoneDelegator{d} }},
		{"an async delegator that answers from another goroutine", func(d *coDelegator) grid.Delegator { return d }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ids := rtPeers(t, 3)
				self, a, b := ids[0], ids[1], ids[2]
				del := &coDelegator{behave: map[peer.ID]func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error){
					a: coFailWith(&grid.RejectError{Reason: grid.RejectQueueFull}),
					b: coSucceedAs(b),
				}}
				coord, trust := newCoordinatorWith(t, self, c.wrap(del), coRemoteDir(a, b))
				trust.Record(a, "remote.only", reputation.OutcomeSuccess) // a ranks first
				id, err := coord.SubmitTask(context.Background(), NewSkillTask("remote.only", RawInput([]byte("x")), ""))
				if err != nil {
					t.Fatalf("SubmitTask: %v", err)
				}
				res, err := coord.Wait(context.Background(), id)
				if err != nil || !res.Success || res.ExecutedBy != b || res.Attempts != 2 {
					t.Fatalf("Wait = %+v, %v; want success on b after 2 attempts", res, err)
				}
				if n := len(del.Calls()); n != 2 {
					t.Fatalf("%d attempts, want 2", n)
				}
			})
		})
	}
}

func TestCoordinatorCancelEndsAnAsyncAttemptOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		del := &coDelegator{behave: map[peer.ID]func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error){
			ids[1]: coBlockUntilDone,
		}}
		coord, _ := newCoordinatorWith(t, ids[0], del, coRemoteDir(ids[1]))
		id, err := coord.SubmitTask(context.Background(), NewSkillTask("remote.only", RawInput(nil), ""))
		if err != nil {
			t.Fatalf("SubmitTask: %v", err)
		}
		synctest.Wait()
		if err := coord.Cancel(id); err != nil {
			t.Fatalf("Cancel: %v", err)
		}
		if _, err := coord.Wait(context.Background(), id); !errors.Is(err, ErrCanceled) {
			t.Fatalf("Wait = %v, want ErrCanceled", err)
		}
		synctest.Wait() // the attempt's callback has run and released its place
		if err := coord.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		if n := len(del.Calls()); n != 1 {
			t.Fatalf("%d attempts, want 1", n)
		}
	})
}

// newCoordinatorWith starts a coordinator on self whose remote attempts go
// through remote, with dir as its capability directory, and returns it
// with its trust graph.
func newCoordinatorWith(tb testing.TB, self peer.ID, remote grid.Delegator, dir rtDirectory) (*DelegationCoordinator, *reputation.Graph) {
	tb.Helper()
	reg := rtRegistry(tb)
	trust, err := reputation.NewGraph(self, reputation.WithLogger(coQuiet))
	if err != nil {
		tb.Fatal(err)
	}
	exec, err := NewExecutor(reg, self, WithWorkers(1), WithExecLogger(coQuiet))
	if err != nil {
		tb.Fatal(err)
	}
	d := Deps{Self: self, Registry: reg, Executor: exec, Metrics: grid.NewMetricsTracker(), Trust: trust, Remote: remote, Directory: dir}
	c, err := NewCoordinator(d, WithLogger(coQuiet))
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c, trust
}

// Close ends a remote attempt that is waiting on its context, for each kind
// of delegator: attempts are not children of a context Close cancels, so
// Close must cancel each itself, and leave no goroutine or timer behind.
func TestCoordinatorCloseEndsRemoteAttempts(t *testing.T) {
	cases := []struct {
		name string
		wrap func(*coDelegator) grid.Delegator
	}{
		{"a delegator that only blocks", func(d *coDelegator) grid.Delegator { return coBlockingDelegator{d} }},
		{"an async delegator", func(d *coDelegator) grid.Delegator { return d }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ids := rtPeers(t, 2)
				del := &coDelegator{behave: map[peer.ID]func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error){
					ids[1]: coBlockUntilDone,
				}}
				coord, _ := newCoordinatorWith(t, ids[0], c.wrap(del), coRemoteDir(ids[1]))
				id, err := coord.SubmitTask(context.Background(), NewSkillTask("remote.only", RawInput(nil), ""))
				if err != nil {
					t.Fatalf("SubmitTask: %v", err)
				}
				synctest.Wait()
				if err := coord.Close(); err != nil {
					t.Fatalf("Close: %v", err)
				}
				res, ok := coord.GetResult(id)
				if !ok || res.Success || res.Code != grid.CodeCanceled {
					t.Fatalf("GetResult = %+v, %v; want canceled by Close", res, ok)
				}
				// synctest.Test fails if a goroutine of the attempt is left.
			})
		})
	}
}

// A remote attempt waiting on its context's Done ends at the task's
// deadline as a timeout: Done's channel is made lazily, with its timer.
func TestCoordinatorRemoteAttemptEndsAtTheDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		del := &coDelegator{behave: map[peer.ID]func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error){
			ids[1]: coBlockUntilDone,
		}}
		coord, _ := newCoordinatorWith(t, ids[0], coBlockingDelegator{del}, coRemoteDir(ids[1]))
		id, err := coord.SubmitTask(context.Background(), NewSkillTask("remote.only", RawInput(nil), "").WithTimeout(time.Second))
		if err != nil {
			t.Fatalf("SubmitTask: %v", err)
		}
		start := time.Now()
		_, err = coord.Wait(context.Background(), id)
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Wait = %v, want ErrTimeout", err)
		}
		if d := time.Since(start); d != time.Second {
			t.Fatalf("timed out after %s, want at the deadline, 1s", d)
		}
	})
}
