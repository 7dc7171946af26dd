package skill

import (
	"context"
	"errors"
	"runtime"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// stCountSkill ("test.count") counts its runs and echoes its input; while
// gate is set and open, a run waits for it (or its context).
type stCountSkill struct {
	runs *atomic.Int64
	gate chan struct{}
}

func (stCountSkill) Descriptor() Descriptor { return Descriptor{ID: "test.count", Version: "1.0.0"} }

func (s stCountSkill) Execute(ctx context.Context, in SkillInput) ([]byte, error) {
	s.runs.Add(1)
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return append([]byte("ran: "), in.Data...), nil
}

// stEnv is what the coordinators of one node share across a "restart":
// the store, the identity, the registry and the trust graph.
type stEnv struct {
	st    *store.Store
	self  peer.ID
	peers []peer.ID
	reg   *Registry
	trust *reputation.Graph
	runs  atomic.Int64
	gate  chan struct{}
}

func newStEnv(tb testing.TB) *stEnv {
	tb.Helper()
	st, err := store.Open(tb.TempDir(), store.WithLogger(coQuiet))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = st.Close() })
	ids := rtPeers(tb, 3)
	e := &stEnv{st: st, self: ids[0], peers: ids[1:], reg: rtRegistry(tb), gate: make(chan struct{})}
	if err := e.reg.Register(stCountSkill{runs: &e.runs, gate: e.gate}); err != nil {
		tb.Fatal(err)
	}
	if e.trust, err = reputation.NewGraph(e.self, reputation.WithLogger(coQuiet)); err != nil {
		tb.Fatal(err)
	}
	return e
}

// start builds and starts a coordinator on e's store, as a restarted node
// would. del, if not nil, is its Delegator, with dir its directory.
func (e *stEnv) start(tb testing.TB, workers int, del grid.Delegator, dir Directory) *DelegationCoordinator {
	tb.Helper()
	exec, err := NewExecutor(e.reg, e.self, WithWorkers(workers), WithExecLogger(coQuiet))
	if err != nil {
		tb.Fatal(err)
	}
	d := Deps{Self: e.self, Registry: e.reg, Executor: exec, Trust: e.trust}
	if del != nil {
		d.Remote, d.Directory = del, dir
	}
	c, err := NewCoordinator(d, WithLogger(coQuiet), WithStore(e.st), WithRetryBackoff(time.Millisecond, 10*time.Millisecond))
	if err != nil {
		tb.Fatal(err)
	}
	if err := c.Start(context.Background()); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c
}

func stWait(tb testing.TB, c *DelegationCoordinator, id TaskID) (*SkillResult, error) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	res, err := c.Wait(ctx, id)
	if errors.Is(err, context.DeadlineExceeded) {
		tb.Fatalf("task %s did not finish", id.Short())
	}
	return res, err
}

// stPoll polls cond every millisecond until it holds, for at most 10 s:
// for state written behind (the store) or reached by another goroutine.
func stPoll(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("waiting for %s: timed out", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func (e *stEnv) countTask(in string) *SkillTask {
	return NewSkillTask("test.count", RawInput([]byte(in)), e.self)
}

func TestStoreAcceptedTaskIsOnDiskWhenSubmitReturns(t *testing.T) {
	e := newStEnv(t)
	c := e.start(t, 1, nil, nil)
	id, err := c.SubmitTask(context.Background(), e.countTask("x"))
	if err != nil {
		t.Fatal(err)
	}
	rec, err := e.st.Get(id)
	if err != nil {
		t.Fatalf("task not in the store when SubmitTask returned: %v", err)
	}
	if rec.Skill != "test.count" || string(rec.Input) != "x" || rec.State.Terminal() {
		t.Fatalf("stored record %+v", rec)
	}
	close(e.gate)
	if _, err := stWait(t, c, id); err != nil {
		t.Fatal(err)
	}
	// Wait returns only once the terminal state is on disk.
	rec, err = e.st.Get(id)
	if err != nil || rec.State != store.StateSucceeded || rec.Result == nil || string(rec.Result.Output) != "ran: x" {
		t.Fatalf("after Wait the store has %+v (err %v), want succeeded with the output", rec, err)
	}
}

func TestStoreRecoversUnfinishedTasksAfterRestart(t *testing.T) {
	e := newStEnv(t)
	c1 := e.start(t, 1, nil, nil)
	// One task runs (blocked on the gate), two wait in the queue.
	var ids []TaskID
	for _, in := range []string{"a", "b", "c"} {
		id, err := c1.SubmitTask(context.Background(), e.countTask(in))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	stPoll(t, "a worker begins the first task", func() bool { return e.runs.Load() > 0 })
	// Stopping without finishing: Close cancels them in memory but leaves
	// them live on disk, as a crash would.
	_ = c1.Close()
	live, err := e.st.Recover()
	if err != nil || len(live) != 3 {
		t.Fatalf("store has %d live tasks (err %v) after the stop, want 3", len(live), err)
	}
	close(e.gate)
	c2 := e.start(t, 2, nil, nil)
	for i, id := range ids {
		res, err := stWait(t, c2, id)
		if err != nil {
			t.Fatalf("task %d after restart: %v", i, err)
		}
		if want := "ran: " + []string{"a", "b", "c"}[i]; string(res.Output) != want {
			t.Errorf("task %d output %q, want %q", i, res.Output, want)
		}
		st, err := c2.Status(id)
		if err != nil || st.State != StateSucceeded {
			t.Errorf("task %d status %v (err %v), want succeeded", i, st.State, err)
		}
	}
	// The first ran twice (begun before the stop, then again); the others once.
	if n := e.runs.Load(); n != 4 {
		t.Errorf("the skill ran %d times, want 4", n)
	}
	if live, _ := e.st.Recover(); len(live) != 0 {
		t.Errorf("%d tasks still live on disk", len(live))
	}
}

func TestStoreFinishedResultReadableAfterRestart(t *testing.T) {
	e := newStEnv(t)
	close(e.gate)
	c1 := e.start(t, 1, nil, nil)
	id, err := c1.SubmitTask(context.Background(), e.countTask("kept"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stWait(t, c1, id); err != nil {
		t.Fatal(err)
	}
	_ = c1.Close()

	c2 := e.start(t, 1, nil, nil)
	res, ok := c2.GetResult(id)
	if !ok || !res.Success || string(res.Output) != "ran: kept" {
		t.Fatalf("GetResult after restart: %+v, %v", res, ok)
	}
	res, err = stWait(t, c2, id)
	if err != nil || string(res.Output) != "ran: kept" {
		t.Fatalf("Wait after restart: %+v, %v", res, err)
	}
	st, err := c2.Status(id)
	if err != nil || st.State != StateSucceeded || st.Result == nil || st.Skill != "test.count" {
		t.Fatalf("Status after restart: %+v, %v", st, err)
	}
	list := c2.List(ListFilter{States: []TaskState{StateSucceeded}})
	if !slices.ContainsFunc(list, func(s TaskStatus) bool { return s.ID == id }) {
		t.Fatalf("List after restart does not have the task: %+v", list)
	}
	if e.runs.Load() != 1 {
		t.Errorf("the skill ran %d times, want 1", e.runs.Load())
	}
	if _, err := c2.Status(grid.NewTaskID()); !errors.Is(err, ErrTaskNotFound) {
		t.Errorf("Status of an unknown task: %v, want ErrTaskNotFound", err)
	}
}

func TestStoreFailedTaskKeepsItsErrorKindAfterRestart(t *testing.T) {
	e := newStEnv(t)
	c1 := e.start(t, 1, nil, nil)
	task := NewSkillTask("test.fail.never", RawInput(nil), e.self)
	if _, err := c1.SubmitTask(context.Background(), task); err == nil {
		t.Fatal("a task for an unknown skill was accepted")
	}
	task = e.countTask("t")
	task.Timeout = 50 * time.Millisecond
	id, err := c1.SubmitTask(context.Background(), task)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stWait(t, c1, id); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Wait: %v, want ErrTimeout", err)
	}
	_ = c1.Close()
	c2 := e.start(t, 1, nil, nil)
	if _, err := stWait(t, c2, id); !errors.Is(err, ErrTimeout) {
		t.Fatalf("Wait after restart: %v, want ErrTimeout", err)
	}
}

func TestStoreRepeatedRemoteRequestIsAnsweredFromTheStore(t *testing.T) {
	e := newStEnv(t)
	close(e.gate)
	c1 := e.start(t, 1, nil, nil)
	from := e.peers[0]
	rt := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.count", Input: []byte("p"), InputKind: grid.InputRaw, Priority: 96, Deadline: time.Now().Add(time.Minute), Attempt: 1}
	handle := func(c *DelegationCoordinator) *grid.RemoteResult {
		t.Helper()
		rep := newCoReplies()
		if err := c.HandleTask(from, rt, grid.ReplyFunc(rep.reply)); err != nil {
			t.Fatalf("HandleTask: %v", err)
		}
		select {
		case res := <-rep.ch:
			return res
		case <-time.After(10 * time.Second):
			t.Fatal("no reply")
			return nil
		}
	}
	first := handle(c1)
	if !first.Success || string(first.Output) != "ran: p" {
		t.Fatalf("first reply %+v", first)
	}
	// The result is written behind the reply: wait until it is on disk.
	stPoll(t, "the result on disk", func() bool {
		rr, err := e.st.Remote(from, rt.ID)
		return err == nil && rr.State.Terminal()
	})
	again := handle(c1)
	if !again.Success || string(again.Output) != "ran: p" {
		t.Fatalf("repeated reply %+v", again)
	}
	_ = c1.Close()
	c2 := e.start(t, 1, nil, nil)
	after := handle(c2)
	if !after.Success || string(after.Output) != "ran: p" {
		t.Fatalf("reply after restart %+v", after)
	}
	if n := e.runs.Load(); n != 1 {
		t.Fatalf("the skill ran %d times for one task, want 1", n)
	}
}

func TestStorePeerTaskRunningAtRestartFailsAsRestarted(t *testing.T) {
	e := newStEnv(t)
	c1 := e.start(t, 1, nil, nil)
	from := e.peers[0]
	rt := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.count", Input: []byte("q"), InputKind: grid.InputRaw, Priority: 96, Deadline: time.Now().Add(time.Minute), Attempt: 1}
	rep := newCoReplies()
	if err := c1.HandleTask(from, rt, grid.ReplyFunc(rep.reply)); err != nil {
		t.Fatal(err)
	}
	stPoll(t, "a worker begins the task", func() bool { return e.runs.Load() > 0 })
	// The admission is written behind: wait for it, as a crash after it would.
	stPoll(t, "the admission on disk", func() bool {
		_, err := e.st.Remote(from, rt.ID)
		return err == nil
	})
	_ = c1.Close() // as a crash: the peer's task stays live on disk
	c2 := e.start(t, 1, nil, nil)
	rep2 := newCoReplies()
	if err := c2.HandleTask(from, rt, grid.ReplyFunc(rep2.reply)); err != nil {
		t.Fatal(err)
	}
	select {
	case res := <-rep2.ch:
		if res.Success || res.ErrorCode != grid.CodeInternal || res.ErrorMessage != restartedMessage {
			t.Fatalf("reply after restart %+v, want a CodeInternal %q failure", res, restartedMessage)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no reply")
	}
	if n := e.runs.Load(); n != 1 {
		t.Fatalf("the skill ran %d times, want 1", n)
	}
}

func TestStoreDelegatedTaskIsSentAgainToTheSamePeer(t *testing.T) {
	e := newStEnv(t)
	close(e.gate)
	a, b := e.peers[0], e.peers[1]
	dir := coRemoteDir(a, b)
	started := make(chan struct{}, 1)
	del1 := &coDelegator{behave: map[peer.ID]func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error){
		a: func(ctx context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
			started <- struct{}{}
			return coBlockUntilDone(ctx, t)
		},
		b: func(ctx context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
			started <- struct{}{}
			return coBlockUntilDone(ctx, t)
		},
	}}
	c1 := e.start(t, 1, del1, dir)
	id, err := c1.SubmitTask(context.Background(), NewSkillTask("remote.only", RawInput([]byte("r")), e.self))
	if err != nil {
		t.Fatal(err)
	}
	<-started
	st, _ := c1.Status(id)
	first := st.Peer
	// The delegation is written behind: wait for it before the "crash".
	stPoll(t, "the delegation on disk", func() bool {
		rec, err := e.st.Get(id)
		return err == nil && rec.State == store.StateDelegated
	})
	_ = c1.Close()

	del2 := &coDelegator{behave: map[peer.ID]func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error){
		a: coSucceedAs(a), b: coSucceedAs(b),
	}}
	c2 := e.start(t, 1, del2, dir)
	res, err := stWait(t, c2, id)
	if err != nil || !res.Success {
		t.Fatalf("after restart: %+v, %v", res, err)
	}
	calls := del2.Calls()
	if len(calls) != 1 || calls[0].peer != first || calls[0].attempt != 2 {
		t.Fatalf("calls after restart %+v, want one, attempt 2, to %s", calls, first)
	}
}

// A store that can no longer take the terminal write calls back at once,
// under the coordinator's lock: the task still finishes and Wait returns,
// with no goroutine started for it.
func TestStoreFinishWithAClosedStoreWakesWaitersInline(t *testing.T) {
	e := newStEnv(t)
	c := e.start(t, 1, nil, nil)
	id, err := c.SubmitTask(context.Background(), e.countTask("x"))
	if err != nil {
		t.Fatal(err)
	}
	stPoll(t, "the task to run", func() bool { return e.runs.Load() == 1 })
	if err := e.st.Close(); err != nil {
		t.Fatal(err)
	}
	before := runtime.NumGoroutine()
	close(e.gate)
	res, err := stWait(t, c, id)
	if err != nil || !res.Success || string(res.Output) != "ran: x" {
		t.Fatalf("Wait = %+v, %v; want the result, though the store is closed", res, err)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("%d goroutines after the task finished, %d before: the terminal write left one behind", n, before)
	}
}

// A task with an ID the caller chose takes the same one-sync path as one
// whose ID the coordinator makes: on disk when SubmitTask returns, and a
// second submission of the ID is refused, while the first is in memory
// and, from the store, after a restart; the skill runs once.
func TestStoreChosenIDIsOnDiskAndRefusedTwice(t *testing.T) {
	e := newStEnv(t)
	c1 := e.start(t, 1, nil, nil)
	ctx := context.Background()
	tk := e.countTask("chosen")
	tk.ID = grid.NewTaskID()
	id, err := c1.SubmitTask(ctx, tk)
	if err != nil || id != tk.ID {
		t.Fatalf("submit: %s, %v", id.Short(), err)
	}
	if rec, err := e.st.Get(id); err != nil || rec.State.Terminal() || string(rec.Input) != "chosen" {
		t.Fatalf("task not in the store when SubmitTask returned: %+v, %v", rec, err)
	}
	again := e.countTask("again")
	again.ID = id
	if _, err := c1.SubmitTask(ctx, again); !errors.Is(err, grid.ErrDuplicateTask) {
		t.Errorf("the ID again while the task runs: %v, want ErrDuplicateTask", err)
	}
	close(e.gate)
	if res, err := stWait(t, c1, id); err != nil || string(res.Output) != "ran: chosen" {
		t.Fatalf("wait: %+v, %v", res, err)
	}
	again = e.countTask("again")
	again.ID = id
	if _, err := c1.SubmitTask(ctx, again); !errors.Is(err, grid.ErrDuplicateTask) {
		t.Errorf("the ID again after the task finished: %v, want ErrDuplicateTask", err)
	}
	_ = c1.Close()

	c2 := e.start(t, 1, nil, nil)
	again = e.countTask("again")
	again.ID = id
	if _, err := c2.SubmitTask(ctx, again); !errors.Is(err, grid.ErrDuplicateTask) {
		t.Errorf("the ID again after a restart: %v, want ErrDuplicateTask", err)
	}
	if res, err := stWait(t, c2, id); err != nil || string(res.Output) != "ran: chosen" {
		t.Errorf("after the refusals the task's result is %+v, %v, want the first run's", res, err)
	}
	if n := e.runs.Load(); n != 1 {
		t.Errorf("the skill ran %d times, want 1", n)
	}
}
