package skill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// coBlockSkill ("test.block") runs until its context ends, and says on
// started when it begins.
type coBlockSkill struct{ started chan struct{} }

func (coBlockSkill) Descriptor() Descriptor { return Descriptor{ID: "test.block", Version: "1.0.0"} }

func (s coBlockSkill) Execute(ctx context.Context, _ SkillInput) ([]byte, error) {
	s.started <- struct{}{}
	<-ctx.Done()
	return nil, ctx.Err()
}

// coFailSkill ("test.fail") always fails.
type coFailSkill struct{}

func (coFailSkill) Descriptor() Descriptor { return Descriptor{ID: "test.fail", Version: "1.0.0"} }

func (coFailSkill) Execute(context.Context, SkillInput) ([]byte, error) {
	return nil, errors.New("boom")
}

// coDelegator runs each remote attempt with the behaviour set for its
// peer, and records the calls.
type coDelegator struct {
	mu     sync.Mutex
	calls  []coCall
	behave map[peer.ID]func(ctx context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error)
}

type coCall struct {
	peer    peer.ID
	attempt int
	at      time.Time
}

func (f *coDelegator) Delegate(ctx context.Context, p peer.ID, t *grid.RemoteTask) (*grid.RemoteResult, error) {
	f.mu.Lock()
	f.calls = append(f.calls, coCall{peer: p, attempt: t.Attempt, at: time.Now()})
	fn := f.behave[p]
	f.mu.Unlock()
	if fn == nil {
		return nil, errors.New("no route to peer")
	}
	return fn(ctx, t)
}

func (f *coDelegator) Calls() []coCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func coSucceedAs(p peer.ID) func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) {
	return func(_ context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
		return &grid.RemoteResult{ID: t.ID, Success: true, Output: append([]byte("ran on remote: "), t.Input...), ExecTime: time.Millisecond, Executor: p}, nil
	}
}

func coFailWith(err error) func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) {
	return func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) { return nil, err }
}

// coFailedResult answers with a failed result of code: the peer ran the
// task and reports that it failed.
func coFailedResult(code grid.ErrorCode) func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) {
	return func(_ context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
		return &grid.RemoteResult{ID: t.ID, ErrorCode: code, ErrorMessage: "it failed"}, nil
	}
}

func coBlockUntilDone(ctx context.Context, _ *grid.RemoteTask) (*grid.RemoteResult, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// coEnv is a coordinator with its dependencies.
type coEnv struct {
	self    peer.ID
	peers   []peer.ID // remote peers a and b
	reg     *Registry
	trust   *reputation.Graph
	metrics *grid.MetricsTracker
	del     *coDelegator
	started chan struct{} // test.block starts
	c       *DelegationCoordinator
}

type coEnvConfig struct {
	workers   int
	queueOpts []grid.QueueOption
	opts      []CoordinatorOption
	dir       rtDirectory // nil: no Delegator either
	directory Directory   // if set, in place of dir
}

var coQuiet = slog.New(slog.DiscardHandler)

// newCoEnv builds and starts a coordinator; it is closed at cleanup. In a
// synctest bubble, call it inside the bubble.
func newCoEnv(tb testing.TB, cfg coEnvConfig) *coEnv {
	tb.Helper()
	ids := rtPeers(tb, 3)
	e := &coEnv{self: ids[0], peers: ids[1:], reg: rtRegistry(tb), metrics: grid.NewMetricsTracker(), started: make(chan struct{}, 16)}
	for _, s := range []Skill{coBlockSkill{e.started}, coFailSkill{}} {
		if err := e.reg.Register(s); err != nil {
			tb.Fatal(err)
		}
	}
	var err error
	if e.trust, err = reputation.NewGraph(e.self, reputation.WithLogger(coQuiet)); err != nil {
		tb.Fatal(err)
	}
	workers := cfg.workers
	if workers == 0 {
		workers = 2
	}
	exec, err := NewExecutor(e.reg, e.self, WithWorkers(workers), WithExecLogger(coQuiet))
	if err != nil {
		tb.Fatal(err)
	}
	d := Deps{Self: e.self, Registry: e.reg, Executor: exec, Metrics: e.metrics, Trust: e.trust}
	if cfg.dir != nil || cfg.directory != nil {
		e.del = &coDelegator{behave: map[peer.ID]func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error){}}
		d.Remote, d.Directory = e.del, cfg.dir
		if cfg.directory != nil {
			d.Directory = cfg.directory
		}
	}
	opts := append([]CoordinatorOption{WithLogger(coQuiet)}, cfg.opts...)
	if len(cfg.queueOpts) > 0 {
		opts = append(opts, WithQueueOptions(cfg.queueOpts...))
	}
	if e.c, err = NewCoordinator(d, opts...); err != nil {
		tb.Fatal(err)
	}
	if err := e.c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = e.c.Close() })
	return e
}

func (e *coEnv) submit(tb testing.TB, t *SkillTask) TaskID {
	tb.Helper()
	id, err := e.c.SubmitTask(context.Background(), t)
	if err != nil {
		tb.Fatalf("SubmitTask: %v", err)
	}
	return id
}

func (e *coEnv) wait(tb testing.TB, id TaskID) (*SkillResult, error) {
	tb.Helper()
	return e.waitUpTo(tb, id, 10*time.Second)
}

// waitUpTo is wait with a longer bound, for a task that may be sitting out
// a retry backoff (drawn at random, so its length varies from run to run).
func (e *coEnv) waitUpTo(tb testing.TB, id TaskID, d time.Duration) (*SkillResult, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	res, err := e.c.Wait(ctx, id)
	if errors.Is(err, context.DeadlineExceeded) {
		tb.Fatalf("task %s did not finish", id.Short())
	}
	return res, err
}

func (e *coEnv) state(tb testing.TB, id TaskID) TaskStatus {
	tb.Helper()
	st, err := e.c.Status(id)
	if err != nil {
		tb.Fatalf("Status: %v", err)
	}
	return st
}

func coSleepTask(tb testing.TB, self peer.ID, ms int) *SkillTask {
	tb.Helper()
	in, err := JSONInput(map[string]int{"ms": ms})
	if err != nil {
		tb.Fatal(err)
	}
	return NewSkillTask("debug.sleep", in, self)
}

// coRemoteDir offers "remote.only" on the peers, all connected and idle.
func coRemoteDir(ps ...peer.ID) rtDirectory {
	var provs []grid.Provider
	for _, p := range ps {
		provs = append(provs, grid.Provider{Peer: p, Version: "1.0.0", Connected: true, Load: grid.Load{Capacity: 4}})
	}
	return rtDirectory{"remote.only": provs}
}

func TestCoordinatorRunsATaskLocallyEndToEnd(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{})
	input := []byte(`{"hello":"world"}`)
	id := e.submit(t, NewSkillTask("echo", SkillInput{Kind: grid.InputJSON, Data: input}, ""))
	res, err := e.wait(t, id)
	if err != nil {
		t.Fatalf("Wait: %v", err)
	}
	if !res.Success || !bytes.Equal(res.Output, input) || res.ExecutedBy != e.self || res.Attempts != 1 || res.TaskID != id {
		t.Fatalf("result = %+v; want success with the input as output, run by this node in 1 attempt", res)
	}
	if got, ok := e.c.GetResult(id); !ok || got != res {
		t.Errorf("GetResult = %v, %v; want the result Wait returned", got, ok)
	}
	st := e.state(t, id)
	if st.State != StateSucceeded || st.Attempts != 1 || !slices.Equal(st.Tried, []peer.ID{e.self}) || st.FinishedAt.IsZero() {
		t.Errorf("status = %+v; want succeeded after 1 attempt on this node", st)
	}
	m := e.c.Metrics()
	if m.Submitted != 1 || m.Completed != 1 || m.PerNode[e.self].Completed != 1 {
		t.Errorf("metrics = %+v; want 1 submitted and 1 completed, on this node", m)
	}
	if qs := e.c.QueueStats(); qs.Enqueued != 1 || qs.Completed != 1 || qs.InFlight != 0 {
		t.Errorf("queue stats = %+v; want 1 enqueued and completed", qs)
	}
}

func TestCoordinatorRefusesBadSubmissions(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{})
	tests := []struct {
		name string
		task *SkillTask
		want error
	}{
		{"an unknown skill is refused", NewSkillTask("no.such.skill", RawInput(nil), ""), ErrUnknownSkill},
		{"input that fails the schema is refused", NewSkillTask("hash.sha256", SkillInput{Kind: grid.InputJSON, Data: []byte(`{"data":5}`)}, ""), ErrInvalidInput},
		{"input that is not JSON is refused", NewSkillTask("hash.sha256", SkillInput{Kind: grid.InputJSON, Data: []byte(`{`)}, ""), ErrInvalidInput},
		{"a minimum trust above 1 is refused", NewSkillTask("echo", RawInput(nil), "").WithMinTrust(1.5), ErrInvalidInput},
		{"negative retries are refused", NewSkillTask("echo", RawInput(nil), "").WithMaxRetries(-1), ErrInvalidInput},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := e.c.SubmitTask(context.Background(), tc.task)
			if !errors.Is(err, tc.want) {
				t.Fatalf("SubmitTask error = %v, want %v", err, tc.want)
			}
		})
	}
	var nc *NoCapableNodeError
	_, err := e.c.SubmitTask(context.Background(), NewSkillTask("no.such.skill", RawInput(nil), ""))
	if !errors.As(err, &nc) || nc.Reason != NoProvider {
		t.Errorf("unknown skill error = %v; want a NoCapableNodeError saying no provider", err)
	}
	if n := len(e.c.List(ListFilter{})); n != 0 {
		t.Errorf("List has %d tasks after refused submissions, want 0", n)
	}
}

func TestCoordinatorReturnsQueueFullAtSubmit(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{workers: 1, queueOpts: []grid.QueueOption{grid.WithMaxPerLevel(1)}})
	// One task runs, one waits; the one after that cannot fit.
	e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
	<-e.started
	e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
	_, err := e.c.SubmitTask(context.Background(), NewSkillTask("test.block", RawInput(nil), ""))
	if !errors.Is(err, ErrQueueFull) {
		t.Fatalf("SubmitTask error = %v, want ErrQueueFull", err)
	}
	var qf *grid.QueueFullError
	if !errors.As(err, &qf) || qf.Level != grid.LevelNormal {
		t.Errorf("error %v does not say the normal level was full", err)
	}
}

func TestCoordinatorFallsBackToASecondCandidate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...)})
		a, b := ids[0], ids[1]
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess) // a ranks first
		trustA, trustB := e.trust.Trust(a), e.trust.Trust(b)
		e.del.behave[a] = coFailedResult(grid.CodeExecutionFailed)
		e.del.behave[b] = coSucceedAs(b)

		start := time.Now()
		id := e.submit(t, NewSkillTask("remote.only", RawInput([]byte("x")), ""))
		res, err := e.wait(t, id)
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		if !res.Success || res.ExecutedBy != b || res.Attempts != 2 || string(res.Output) != "ran on remote: x" {
			t.Fatalf("result = %+v; want success on b after 2 attempts", res)
		}
		calls := e.del.Calls()
		if len(calls) != 2 || calls[0].peer != a || calls[1].peer != b || calls[1].attempt != 2 {
			t.Fatalf("calls = %+v; want a then b as attempt 2", calls)
		}
		// The retry waits out the first backoff: 100 ms ±50%.
		if d := calls[1].at.Sub(start); d < 50*time.Millisecond || d > 150*time.Millisecond {
			t.Errorf("second attempt started after %v, want 50-150 ms", d)
		}
		if st := e.state(t, id); !slices.Equal(st.Tried, []peer.ID{a, b}) || st.Peer != b {
			t.Errorf("status = %+v; want tried [a b], peer b", st)
		}
		if got := e.trust.Trust(a); got >= trustA {
			t.Errorf("trust of the failing peer = %v, want below %v", got, trustA)
		}
		if got := e.trust.Trust(b); got <= trustB {
			t.Errorf("trust of the succeeding peer = %v, want above %v", got, trustB)
		}
		m := e.c.Metrics()
		if m.PerNode[a].Failed != 1 || m.PerNode[b].Completed != 1 || m.Submitted != 2 {
			t.Errorf("metrics = %+v; want a failed 1, b completed 1, 2 attempts", m)
		}
	})
}

func TestCoordinatorMovesOnFromARejectionWithoutBlame(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...)})
		a, b := ids[0], ids[1]
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess)
		trustA := e.trust.Trust(a)
		e.del.behave[a] = coFailWith(&grid.RejectError{Reason: grid.RejectQueueFull, RetryAfter: time.Second})
		e.del.behave[b] = coSucceedAs(b)
		start := time.Now()
		res, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput(nil), "")))
		if err != nil || res.ExecutedBy != b || res.Attempts != 2 {
			t.Fatalf("Wait = %+v, %v; want success on b after 2 attempts", res, err)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("moving on from a rejection took %v, want no backoff", d)
		}
		if got := e.trust.Trust(a); got != trustA {
			t.Errorf("trust of the rejecting peer moved from %v to %v", trustA, got)
		}
	})
}

func TestCoordinatorGivesUpAfterMaxRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...)})
		for _, p := range ids {
			e.del.behave[p] = coFailWith(errors.New("broken"))
		}
		id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithMaxRetries(3))
		res, err := e.wait(t, id)
		if !errors.Is(err, ErrDelegationFailed) {
			t.Fatalf("Wait error = %v, want ErrDelegationFailed", err)
		}
		if res.Success || res.Attempts != 4 || res.Error == "" {
			t.Errorf("result = %+v; want a failure after 4 attempts with an error", res)
		}
		calls := e.del.Calls()
		if len(calls) != 4 {
			t.Fatalf("%d attempts made, want 4", len(calls))
		}
		for i := 1; i < len(calls); i++ {
			if calls[i].peer == calls[i-1].peer {
				t.Errorf("attempts %d and %d both went to %s; want a different peer each time", i, i+1, calls[i].peer)
			}
		}
		if st := e.state(t, id); st.State != StateFailed || len(st.Tried) != 4 {
			t.Errorf("status = %+v; want failed with 4 nodes tried", st)
		}
	})
}

func TestCoordinatorRetriesALocalFailureAndGivesUp(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{})
		id := e.submit(t, NewSkillTask("test.fail", RawInput(nil), "").WithMaxRetries(1))
		res, err := e.wait(t, id)
		if !errors.Is(err, ErrDelegationFailed) || res.Attempts != 2 || res.Code != grid.CodeExecutionFailed {
			t.Fatalf("Wait = %+v, %v; want ErrDelegationFailed after 2 attempts", res, err)
		}
		if m := e.c.Metrics().PerNode[e.self]; m.Failed != 2 || m.Submitted != 2 {
			t.Errorf("metrics of this node = %+v; want 2 submitted, 2 failed", m)
		}
	})
}

func TestCoordinatorTimesTasksOut(t *testing.T) {
	tests := []struct {
		name string
		run  func(t *testing.T, e *coEnv) TaskID
		// timeouts is what metrics count: a task whose deadline passes
		// while it waits in this node's queue counts against no node.
		timeouts uint64
	}{
		{"a running local task times out at its deadline", func(t *testing.T, e *coEnv) TaskID {
			return e.submit(t, coSleepTask(t, "", 60_000).WithTimeout(time.Second))
		}, 1},
		{"a queued local task times out at its deadline, against no node", func(t *testing.T, e *coEnv) TaskID {
			e.submit(t, NewSkillTask("test.block", RawInput(nil), "")) // holds the only worker
			<-e.started
			return e.submit(t, NewSkillTask("echo", RawInput(nil), "").WithTimeout(time.Second))
		}, 0},
		{"a delegated task times out at its deadline", func(t *testing.T, e *coEnv) TaskID {
			e.del.behave[e.peers[0]] = coBlockUntilDone
			return e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithTimeout(time.Second))
		}, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newCoEnv(t, coEnvConfig{workers: 1, dir: coRemoteDir(rtPeers(t, 1)...)})
				e.peers = []peer.ID{e.c.router.dir.Providers("remote.only")[0].Peer}
				start := time.Now()
				id := tc.run(t, e)
				res, err := e.wait(t, id)
				if !errors.Is(err, ErrTimeout) || res.Code != grid.CodeTimeout {
					t.Fatalf("Wait = %+v, %v; want ErrTimeout", res, err)
				}
				// Within the queue's sweep interval (250 ms) of the deadline.
				if d := time.Since(start); d < time.Second || d > 1250*time.Millisecond {
					t.Errorf("timed out after %v, want 1-1.25 s", d)
				}
				if st := e.state(t, id); st.State != StateTimedOut {
					t.Errorf("state = %v, want timed_out", st.State)
				}
				if m := e.c.Metrics(); m.TimedOut != tc.timeouts || m.Failed != 0 {
					t.Errorf("metrics count %d timeouts and %d failures, want %d and 0", m.TimedOut, m.Failed, tc.timeouts)
				}
			})
		})
	}
}

func TestCoordinatorCancelsTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{workers: 1, dir: coRemoteDir(rtPeers(t, 1)...)})
		remotePeer := e.c.router.dir.Providers("remote.only")[0].Peer
		canceledRemote := make(chan struct{})
		e.del.behave[remotePeer] = func(ctx context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
			<-ctx.Done()
			close(canceledRemote)
			return &grid.RemoteResult{ID: t.ID, Success: true}, nil // too late: must be dropped
		}
		running := e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
		<-e.started
		queued := e.submit(t, NewSkillTask("echo", RawInput(nil), ""))
		delegated := e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))
		synctest.Wait()
		if s := e.state(t, running).State; s != StateRunning {
			t.Errorf("state of the running task = %v, want running", s)
		}
		if s := e.state(t, queued).State; s != StateQueued {
			t.Errorf("state of the queued task = %v, want queued", s)
		}
		if s := e.state(t, delegated).State; s != StateDelegated {
			t.Errorf("state of the delegated task = %v, want delegated", s)
		}
		for _, id := range []TaskID{queued, running, delegated} {
			if err := e.c.Cancel(id); err != nil {
				t.Fatalf("Cancel: %v", err)
			}
			res, err := e.wait(t, id)
			if !errors.Is(err, ErrCanceled) || res.Success || res.Code != grid.CodeCanceled {
				t.Errorf("Wait = %+v, %v; want ErrCanceled", res, err)
			}
			if err := e.c.Cancel(id); !errors.Is(err, ErrTaskFinished) {
				t.Errorf("second Cancel = %v, want ErrTaskFinished", err)
			}
		}
		<-canceledRemote
		synctest.Wait()
		if qs := e.c.QueueStats(); qs.InFlight != 0 || qs.Depth != [grid.NumLevels]int{} {
			t.Errorf("queue stats after cancel = %+v; want it empty", qs)
		}
		if st := e.state(t, delegated); st.State != StateCanceled {
			t.Errorf("the late result of a canceled task changed its state to %v", st.State)
		}
		if m := e.c.Metrics(); m.Completed != 0 || m.Failed != 0 {
			t.Errorf("metrics = %+v; canceled attempts should record no outcome", m)
		}
		if err := e.c.Cancel(grid.NewTaskID()); !errors.Is(err, ErrTaskNotFound) {
			t.Errorf("Cancel of an unknown task = %v, want ErrTaskNotFound", err)
		}
	})
}

func TestCoordinatorWaitHonoursItsContext(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{})
	id := e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := e.c.Wait(ctx, id); !errors.Is(err, context.Canceled) {
		t.Fatalf("Wait = %v, want context.Canceled", err)
	}
	if _, err := e.c.Wait(context.Background(), grid.NewTaskID()); !errors.Is(err, ErrTaskNotFound) {
		t.Errorf("Wait for an unknown task = %v, want ErrTaskNotFound", err)
	}
}

func TestCoordinatorDeliversOneResultPerTask(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...)})
		a, b := ids[0], ids[1]
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess)
		// a answers after the task has timed out; b is never reached.
		e.del.behave[a] = func(ctx context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
			<-ctx.Done()
			time.Sleep(time.Second)
			return &grid.RemoteResult{ID: t.ID, Success: true, Output: []byte("late")}, nil
		}
		e.del.behave[b] = coSucceedAs(b)
		var mu sync.Mutex
		var events []Event
		unsub := e.c.Subscribe(func(ev Event) { mu.Lock(); events = append(events, ev); mu.Unlock() })
		defer unsub()
		id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithTimeout(time.Second))
		res, err := e.wait(t, id)
		if !errors.Is(err, ErrTimeout) {
			t.Fatalf("Wait = %+v, %v; want ErrTimeout", res, err)
		}
		time.Sleep(5 * time.Second)
		synctest.Wait()
		if got, _ := e.c.GetResult(id); got != res || got.Success {
			t.Errorf("result changed after the late answer: %+v", got)
		}
		mu.Lock()
		defer mu.Unlock()
		terminal := 0
		for _, ev := range events {
			if ev.State.Terminal() {
				terminal++
			}
		}
		if terminal != 1 || len(events) != 2 || events[0].State != StateDelegated || events[1].State != StateTimedOut {
			t.Errorf("events = %+v; want delegated then timed_out, nothing after", events)
		}
	})
}

func TestCoordinatorSubscribersSeeEveryStateChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...)})
		e.trust.Record(ids[0], "remote.only", reputation.OutcomeSuccess)
		e.del.behave[ids[0]] = coFailWith(errors.New("down"))
		e.del.behave[ids[1]] = coSucceedAs(ids[1])
		ch := make(chan Event, 16)
		unsub := e.c.Subscribe(func(ev Event) { ch <- ev })
		local := e.submit(t, NewSkillTask("echo", RawInput(nil), ""))
		if _, err := e.wait(t, local); err != nil {
			t.Fatal(err)
		}
		remote := e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))
		if _, err := e.wait(t, remote); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		unsub()
		close(ch)
		var got []string
		for ev := range ch {
			got = append(got, fmt.Sprintf("%s:%s:%d", ev.TaskID.Short(), ev.State, ev.Attempt))
		}
		want := []string{
			local.Short() + ":queued:1", local.Short() + ":succeeded:1",
			remote.Short() + ":delegated:1", remote.Short() + ":retrying:1",
			remote.Short() + ":delegated:2", remote.Short() + ":succeeded:2",
		}
		if !slices.Equal(got, want) {
			t.Errorf("events = %v, want %v", got, want)
		}
	})
}

func TestCoordinatorListPagesTasksNewestFirst(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{})
		var ids []TaskID
		for range 5 {
			id := e.submit(t, NewSkillTask("echo", RawInput(nil), ""))
			if _, err := e.wait(t, id); err != nil {
				t.Fatal(err)
			}
			ids = append(ids, id)
			time.Sleep(time.Millisecond)
		}
		blocked := e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
		<-e.started
		page1 := e.c.List(ListFilter{Limit: 2})
		page2 := e.c.List(ListFilter{Limit: 2, After: page1[1].ID})
		page3 := e.c.List(ListFilter{Limit: 2, Offset: 4})
		got := func(sts []TaskStatus) []TaskID {
			var out []TaskID
			for _, s := range sts {
				out = append(out, s.ID)
			}
			return out
		}
		if want := []TaskID{blocked, ids[4]}; !slices.Equal(got(page1), want) {
			t.Errorf("page 1 = %v, want %v", got(page1), want)
		}
		if want := []TaskID{ids[3], ids[2]}; !slices.Equal(got(page2), want) {
			t.Errorf("page 2 = %v, want %v", got(page2), want)
		}
		if want := []TaskID{ids[1], ids[0]}; !slices.Equal(got(page3), want) {
			t.Errorf("page 3 = %v, want %v", got(page3), want)
		}
		running := e.c.List(ListFilter{States: []TaskState{StateRunning}})
		if len(running) != 1 || running[0].ID != blocked {
			t.Errorf("running tasks = %v, want only the blocked one", got(running))
		}
		if done := e.c.List(ListFilter{States: []TaskState{StateSucceeded}, Limit: 10}); len(done) != 5 {
			t.Errorf("%d succeeded tasks listed, want 5", len(done))
		}
	})
}

func TestCoordinatorDropsResultsAfterTheirRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{opts: []CoordinatorOption{WithResultRetention(time.Minute)}})
		id := e.submit(t, NewSkillTask("echo", RawInput(nil), ""))
		if _, err := e.wait(t, id); err != nil {
			t.Fatal(err)
		}
		time.Sleep(59 * time.Second)
		if _, ok := e.c.GetResult(id); !ok {
			t.Fatal("result gone before its retention ended")
		}
		time.Sleep(2 * time.Second)
		if _, ok := e.c.GetResult(id); ok {
			t.Fatal("result still there after its retention ended")
		}
		if _, err := e.c.Status(id); !errors.Is(err, ErrTaskNotFound) {
			t.Errorf("Status after retention = %v, want ErrTaskNotFound", err)
		}
	})
}

func TestCoordinatorMaxTasksDropsTheOldestFinishedTasks(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{workers: 1, opts: []CoordinatorOption{WithMaxTasks(3)}})
	for range 5 {
		id := e.submit(t, NewSkillTask("echo", RawInput(nil), ""))
		if _, err := e.wait(t, id); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(e.c.List(ListFilter{})); n != 3 {
		t.Errorf("%d tasks kept, want 3", n)
	}
	for range 3 {
		e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
	}
	if _, err := e.c.SubmitTask(context.Background(), NewSkillTask("echo", RawInput(nil), "")); !errors.Is(err, ErrQueueFull) {
		t.Errorf("SubmitTask with 3 unfinished tasks = %v, want ErrQueueFull", err)
	}
}

func TestCoordinatorLifecycle(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{})
	id := e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
	<-e.started
	if err := e.c.Start(context.Background()); err == nil {
		t.Error("second Start succeeded")
	}
	if err := e.c.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	res, err := e.c.Wait(context.Background(), id)
	if !errors.Is(err, ErrCanceled) || !errors.Is(err, ErrClosed) || res.Success {
		t.Errorf("Wait after Close = %+v, %v; want ErrCanceled and ErrClosed", res, err)
	}
	if _, err := e.c.SubmitTask(context.Background(), NewSkillTask("echo", RawInput(nil), "")); !errors.Is(err, ErrClosed) {
		t.Errorf("SubmitTask after Close = %v, want ErrClosed", err)
	}
	if err := e.c.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}

	fresh := newCoEnv(t, coEnvConfig{})
	_ = fresh.c.Close()
	c, err := NewCoordinator(Deps{Self: e.self, Registry: e.reg, Executor: coExecutor(t, e.reg, e.self), Trust: e.trust}, WithLogger(coQuiet))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.SubmitTask(context.Background(), NewSkillTask("echo", RawInput(nil), "")); !errors.Is(err, ErrNotStarted) {
		t.Errorf("SubmitTask before Start = %v, want ErrNotStarted", err)
	}
	if _, err := NewCoordinator(Deps{}, WithMaxTasks(0)); err == nil {
		t.Error("NewCoordinator accepted empty deps")
	}
}

func coExecutor(tb testing.TB, reg *Registry, self peer.ID) *Executor {
	tb.Helper()
	x, err := NewExecutor(reg, self, WithExecLogger(coQuiet))
	if err != nil {
		tb.Fatal(err)
	}
	return x
}

// coReplies collects what HandleTask's reply gets.
type coReplies struct {
	mu  sync.Mutex
	got []*grid.RemoteResult
	ch  chan *grid.RemoteResult
}

func newCoReplies() *coReplies { return &coReplies{ch: make(chan *grid.RemoteResult, 16)} }

func (r *coReplies) reply(res *grid.RemoteResult) {
	r.mu.Lock()
	r.got = append(r.got, res)
	r.mu.Unlock()
	r.ch <- res
}

func (r *coReplies) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got)
}

func TestCoordinatorHandleTaskAdmission(t *testing.T) {
	remote := func(skill string, in string) *grid.RemoteTask {
		return &grid.RemoteTask{ID: grid.NewTaskID(), Skill: skill, Input: []byte(in), InputKind: grid.InputJSON, Priority: 96, Deadline: time.Now().Add(time.Minute)}
	}
	tests := []struct {
		name  string
		cfg   coEnvConfig
		setup func(t *testing.T, e *coEnv, from peer.ID)
		task  *grid.RemoteTask
		want  grid.RejectReason // RejectUnspecified: admitted
	}{
		{name: "a task for a registered skill with valid input is admitted", task: remote("echo", `"hi"`)},
		{name: "an unknown skill is rejected", task: remote("no.such", `{}`), want: grid.RejectUnknownSkill},
		{name: "invalid input is rejected", task: remote("hash.sha256", `{"data":1}`), want: grid.RejectInvalidInput},
		{
			name: "a requester below the accept threshold is rejected",
			cfg:  coEnvConfig{opts: []CoordinatorOption{WithAcceptThreshold(0.6)}},
			task: remote("echo", `{}`), want: grid.RejectTrustTooLow,
		},
		{
			name: "a full queue is rejected with a retry hint",
			cfg:  coEnvConfig{workers: 1, queueOpts: []grid.QueueOption{grid.WithMaxPerLevel(1)}},
			setup: func(t *testing.T, e *coEnv, from peer.ID) {
				e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
				<-e.started
				e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
			},
			task: remote("echo", `{}`), want: grid.RejectQueueFull,
		},
		{
			name:  "a closed node rejects everything",
			setup: func(t *testing.T, e *coEnv, from peer.ID) { _ = e.c.Close() },
			task:  remote("echo", `{}`), want: grid.RejectShuttingDown,
		},
		{name: "a task without an ID is malformed", task: &grid.RemoteTask{Skill: "echo"}, want: grid.RejectMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e := newCoEnv(t, tc.cfg)
			from := rtPeers(t, 1)[0]
			if tc.setup != nil {
				tc.setup(t, e, from)
			}
			rs := newCoReplies()
			err := e.c.HandleTask(from, tc.task, grid.ReplyFunc(rs.reply))
			if tc.want == grid.RejectUnspecified {
				if err != nil {
					t.Fatalf("HandleTask = %v, want admitted", err)
				}
				res := <-rs.ch
				if !res.Success || string(res.Output) != string(tc.task.Input) || res.ID != tc.task.ID || res.Executor != e.self {
					t.Errorf("reply = %+v; want the echo of the input", res)
				}
				return
			}
			var rej *grid.RejectError
			if !errors.As(err, &rej) || rej.Reason != tc.want {
				t.Fatalf("HandleTask = %v, want a rejection for %v", err, tc.want)
			}
			if tc.want == grid.RejectQueueFull || tc.want == grid.RejectRateLimited {
				if rej.RetryAfter <= 0 {
					t.Errorf("rejection %v has no retry hint", rej)
				}
			}
			if rs.count() != 0 {
				t.Errorf("reply called for a rejected task")
			}
		})
	}
}

func TestCoordinatorHandleTaskRepliesOnceWhenCanceled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{workers: 1})
		from := rtPeers(t, 1)[0]
		rs := newCoReplies()
		task := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.block", InputKind: grid.InputRaw, Deadline: time.Now().Add(time.Minute)}
		if err := e.c.HandleTask(from, task, grid.ReplyFunc(rs.reply)); err != nil {
			t.Fatal(err)
		}
		<-e.started
		e.c.CancelTask(rtPeers(t, 1)[0], task.ID) // another peer cannot cancel it
		synctest.Wait()
		if rs.count() != 0 {
			t.Fatal("a cancel from another peer stopped the task")
		}
		e.c.CancelTask(from, task.ID)
		synctest.Wait()
		if rs.count() != 1 || rs.got[0].ErrorCode != grid.CodeCanceled {
			t.Fatalf("coReplies = %+v; want one CodeCanceled", rs.got)
		}
		if qs := e.c.QueueStats(); qs.InFlight != 0 {
			t.Errorf("queue still has %d in flight", qs.InFlight)
		}
		// An expired peer task is answered once, with a timeout.
		rs2 := newCoReplies()
		short := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.block", InputKind: grid.InputRaw, Deadline: time.Now().Add(time.Second)}
		if err := e.c.HandleTask(from, short, grid.ReplyFunc(rs2.reply)); err != nil {
			t.Fatal(err)
		}
		time.Sleep(3 * time.Second)
		synctest.Wait()
		if rs2.count() != 1 || rs2.got[0].ErrorCode != grid.CodeTimeout {
			t.Fatalf("coReplies = %+v; want one CodeTimeout", rs2.got)
		}
	})
}

func TestCoordinatorTellsApartIDsThatShareATableKey(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{})
	a, b := grid.NewTaskID(), grid.NewTaskID()
	b[0] = a[0]
	copy(b[8:16], a[8:16]) // same shard, same 8-byte key
	for _, id := range []TaskID{a, b} {
		task := NewSkillTask("echo", RawInput(id[:]), "")
		task.ID = id
		if got := e.submit(t, task); got != id {
			t.Fatalf("SubmitTask returned %s, want the chosen %s", got, id)
		}
	}
	for _, id := range []TaskID{a, b} {
		res, err := e.wait(t, id)
		if err != nil || !bytes.Equal(res.Output, id[:]) || res.TaskID != id {
			t.Fatalf("Wait(%s) = %+v, %v; want its own echo", id.Short(), res, err)
		}
	}
	dup := NewSkillTask("echo", RawInput(nil), "")
	dup.ID = b
	if _, err := e.c.SubmitTask(context.Background(), dup); !errors.Is(err, grid.ErrDuplicateTask) {
		t.Errorf("SubmitTask with a known ID = %v, want ErrDuplicateTask", err)
	}
}

func TestCoordinatorMaxTasksNeverDropsAnUnfinishedTask(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{opts: []CoordinatorOption{WithMaxTasks(4)}})
	long := e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
	<-e.started
	var last TaskID
	for range 20 {
		last = e.submit(t, NewSkillTask("echo", RawInput(nil), ""))
		if _, err := e.wait(t, last); err != nil {
			t.Fatal(err)
		}
	}
	if st := e.state(t, long); st.State != StateRunning {
		t.Fatalf("the long task is %v after 20 others, want still running", st.State)
	}
	if _, ok := e.c.GetResult(last); !ok {
		t.Error("the newest result is gone")
	}
	if n := len(e.c.List(ListFilter{})); n > 4 {
		t.Errorf("%d tasks kept, want at most 4", n)
	}
	if err := e.c.Cancel(long); err != nil {
		t.Errorf("Cancel of the long task: %v", err)
	}
}

func TestCoordinatorRetentionKeepsUnfinishedTasks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{opts: []CoordinatorOption{WithResultRetention(time.Minute)}})
		done := e.submit(t, NewSkillTask("echo", RawInput(nil), ""))
		if _, err := e.wait(t, done); err != nil {
			t.Fatal(err)
		}
		long := e.submit(t, NewSkillTask("test.block", RawInput(nil), "").WithTimeout(time.Hour))
		<-e.started
		time.Sleep(2 * time.Minute)
		if _, err := e.c.Status(done); !errors.Is(err, ErrTaskNotFound) {
			t.Errorf("Status of an expired result = %v, want ErrTaskNotFound", err)
		}
		if st := e.state(t, long); st.State != StateRunning {
			t.Errorf("the unfinished task is %v, want running", st.State)
		}
	})
}

func TestCoordinatorHandleTaskAnswersARepeatedRequestOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{workers: 1})
		from := rtPeers(t, 1)[0]
		task := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.block", InputKind: grid.InputRaw, Deadline: time.Now().Add(time.Minute)}
		first, second := newCoReplies(), newCoReplies()
		if err := e.c.HandleTask(from, task, grid.ReplyFunc(first.reply)); err != nil {
			t.Fatal(err)
		}
		<-e.started
		newer := *task
		newer.Attempt++
		if err := e.c.HandleTask(from, &newer, grid.ReplyFunc(second.reply)); err != nil {
			t.Fatalf("a newer attempt: %v", err)
		}
		synctest.Wait()
		if first.count() != 1 || first.got[0].ErrorCode != grid.CodeCanceled {
			t.Errorf("first reply = %+v; want one CodeCanceled (superseded)", first.got)
		}
		var rej *grid.RejectError
		if err := e.c.HandleTask(rtPeers(t, 1)[0], task, grid.ReplyFunc(func(*grid.RemoteResult) {})); !errors.As(err, &rej) || rej.Reason != grid.RejectDuplicate {
			t.Errorf("the same ID from another peer = %v, want a duplicate rejection", err)
		}
		e.c.CancelTask(from, task.ID)
		synctest.Wait()
		if second.count() != 1 || first.count() != 1 {
			t.Errorf("coReplies: first %d, second %d; want one each", first.count(), second.count())
		}
		if n := len(e.started); n != 0 {
			t.Errorf("the work ran %d more times", n)
		}
	})
}

func TestCoordinatorRefusesATaskNoTrustedNodeMayRun(t *testing.T) {
	ids := rtPeers(t, 2)
	e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...)})
	_, err := e.c.SubmitTask(context.Background(), NewSkillTask("remote.only", RawInput(nil), "").WithMinTrust(0.9))
	var nc *NoCapableNodeError
	if !errors.As(err, &nc) || nc.Reason != AllBelowTrust || nc.Checked != 2 {
		t.Fatalf("SubmitTask = %v; want a NoCapableNodeError saying both providers are below the minimum trust", err)
	}
	if errors.Is(err, ErrUnknownSkill) {
		t.Errorf("error %v says the skill is unknown, but two nodes offer it", err)
	}
	if len(e.del.Calls()) != 0 {
		t.Error("a peer below the minimum trust was sent the task")
	}
}
