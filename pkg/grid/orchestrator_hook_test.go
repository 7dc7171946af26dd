package grid

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// testHookCtx is a HookContext whose Done channel closes on cancel only,
// never at its deadline: the orchestrator is to keep that itself. (Done
// is for waiting on a stream that is still opening.)
type testHookCtx struct {
	deadline time.Time
	once     sync.Once
	done     chan struct{}
	mu       sync.Mutex
	err      error
	hook     CancelHook
}

func (h *testHookCtx) Deadline() (time.Time, bool) { return h.deadline, true }
func (h *testHookCtx) Value(any) any               { return nil }

func (h *testHookCtx) Done() <-chan struct{} {
	h.once.Do(func() { h.done = make(chan struct{}) })
	return h.done
}

func (h *testHookCtx) Err() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err == nil && !time.Now().Before(h.deadline) {
		return context.DeadlineExceeded
	}
	return h.err
}

func (h *testHookCtx) SetCancelHook(c CancelHook) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.err != nil || h.hook != nil {
		return false
	}
	h.hook = c
	return true
}

func (h *testHookCtx) StopCancelHook(c CancelHook) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.hook == nil || h.hook != c {
		return false
	}
	h.hook = nil
	return true
}

func (h *testHookCtx) cancel() {
	h.Done()
	h.mu.Lock()
	if h.err != nil {
		h.mu.Unlock()
		return
	}
	close(h.done)
	h.err = context.Canceled
	c := h.hook
	h.hook = nil
	h.mu.Unlock()
	if c != nil {
		c.ContextCanceled()
	}
}

func (h *testHookCtx) hooked() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.hook != nil
}

func TestOrchestratorHookContextCancelReachesExecutor(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	task := p.task("x")
	ctx := &testHookCtx{deadline: task.Deadline}
	out := newAsyncOutcome()
	p.client.DelegateAsync(ctx, p.serverH.ID(), task, out.done)
	orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	if !ctx.hooked() {
		t.Fatal("no cancel hook set on the HookContext")
	}
	ctx.cancel()
	if ev := orchRecv(t, out.ch, 5*time.Second, "done being called"); !errors.Is(ev.err, context.Canceled) || ev.res != nil {
		t.Fatalf("done(%v, %v), want only context.Canceled", ev.res, ev.err)
	}
	if got := orchRecv(t, p.handler.cancels, 5*time.Second, "CancelTask on the executor"); got != task.ID {
		t.Fatalf("canceled %s, want %s", got.Short(), task.ID.Short())
	}
	_ = p.client.Close()
	if n := out.calls.Load(); n != 1 {
		t.Fatalf("done called %d times, want once", n)
	}
}

func TestOrchestratorHookContextDeadlineKeptByTheCall(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	p.client.cfg.resultGrace = 10 * time.Second // the context's deadline comes first
	task := p.task("x")
	ctx := &testHookCtx{deadline: time.Now().Add(300 * time.Millisecond)}
	out := newAsyncOutcome()
	start := time.Now()
	p.client.DelegateAsync(ctx, p.serverH.ID(), task, out.done)
	ev := orchRecv(t, out.ch, 5*time.Second, "done being called")
	if !errors.Is(ev.err, context.DeadlineExceeded) || ev.res != nil {
		t.Fatalf("done(%v, %v), want only context.DeadlineExceeded", ev.res, ev.err)
	}
	if d := time.Since(start); d < 300*time.Millisecond || d > 4*time.Second {
		t.Fatalf("done after %s; want at the context's deadline, 300ms", d)
	}
	if got := orchRecv(t, p.handler.cancels, 5*time.Second, "the cancel reaching the executor"); got != task.ID {
		t.Fatalf("canceled %s, want %s", got.Short(), task.ID.Short())
	}
	if ctx.hooked() {
		t.Fatal("the call ended and left its hook set")
	}
}

func TestOrchestratorHookContextCanceledBeforeTheHook(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	task := p.task("x")
	// Err says nil when DelegateAsync first looks, then the hook is refused.
	ctx := &lateEndedCtx{testHookCtx: testHookCtx{deadline: task.Deadline}}
	out := newAsyncOutcome()
	p.client.DelegateAsync(ctx, p.serverH.ID(), task, out.done)
	if ev := orchRecv(t, out.ch, 5*time.Second, "done being called"); !errors.Is(ev.err, context.Canceled) {
		t.Fatalf("done(%v, %v), want context.Canceled", ev.res, ev.err)
	}
	if got := orchRecv(t, p.handler.cancels, 5*time.Second, "the cancel reaching the executor"); got != task.ID {
		t.Fatalf("canceled %s, want %s", got.Short(), task.ID.Short())
	}
}

// lateEndedCtx ends as SetCancelHook is called.
type lateEndedCtx struct{ testHookCtx }

func (l *lateEndedCtx) SetCancelHook(CancelHook) bool {
	l.cancel()
	return false
}

// overridingHandler embeds a handler and overrides its HandleTask: the
// orchestrator must call the override, never the embedded one.
type overridingHandler struct {
	*orchHandler
	calls atomic.Int32
}

func (h *overridingHandler) HandleTask(_ peer.ID, t *RemoteTask, r Replier) error {
	h.calls.Add(1)
	r.Reply(&RemoteResult{ID: t.ID, Success: true, Output: t.Input})
	r.Reply(&RemoteResult{ID: t.ID, Success: true, Output: []byte("a second reply is ignored")})
	return nil
}

func TestOrchestratorCallsTheHandleTaskOfAHandlerThatEmbedsAnother(t *testing.T) {
	serverH, clientH := newOrchHost(t), newOrchHost(t)
	h := &overridingHandler{orchHandler: newOrchHandler()}
	h.orchHandler.set(func(peer.ID, *RemoteTask, func(*RemoteResult)) error {
		t.Error("the embedded handler's HandleTask was called")
		return &RejectError{Reason: RejectUnknownSkill}
	})
	connectOrchHosts(t, clientH, serverH)
	startOrchestrator(t, serverH, h)
	client := startOrchestrator(t, clientH, nil)
	for i := range 3 {
		task := &RemoteTask{ID: NewTaskID(), Skill: "text.echo", Input: []byte{'a' + byte(i)}, InputKind: InputRaw,
			Deadline: time.Now().Add(30 * time.Second), Attempt: 1, Requester: clientH.ID()}
		res, err := client.Delegate(orchCtx(t), serverH.ID(), task)
		if err != nil || !res.Success || string(res.Output) != string(task.Input) {
			t.Fatalf("Delegate = %+v, %v; want the echo of %q", res, err, task.Input)
		}
	}
	if n := h.calls.Load(); n != 3 {
		t.Fatalf("the override was called %d times, want 3", n)
	}
}
