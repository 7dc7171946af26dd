package grid

import (
	"context"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// asyncOutcome records the calls of a DelegateAsync callback.
type asyncOutcome struct {
	calls atomic.Int32
	ch    chan ended
}

func newAsyncOutcome() *asyncOutcome { return &asyncOutcome{ch: make(chan ended, 4)} }

func (a *asyncOutcome) done(res *RemoteResult, err error) {
	a.calls.Add(1)
	if res != nil {
		r := *res // valid only during the callback
		res = &r
	}
	a.ch <- ended{res: res, err: err}
}

func TestOrchestratorDelegateAsyncReturnsAtOnceAndCallsDoneOnce(t *testing.T) {
	p := newOrchPair(t)
	replies := holdTasks(p.handler)
	task := p.task("hello")
	out := newAsyncOutcome()
	p.client.DelegateAsync(orchCtx(t), p.serverH.ID(), task, out.done)
	got := orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	if n := out.calls.Load(); n != 0 {
		t.Fatalf("done called %d times before the executor replied", n)
	}
	reply, _ := replies.Load(got.ID)
	reply.(func(*RemoteResult))(&RemoteResult{ID: got.ID, Success: true, Output: []byte("hello")})
	ev := orchRecv(t, out.ch, 5*time.Second, "done being called")
	if ev.err != nil || string(ev.res.Output) != "hello" {
		t.Fatalf("done(%v, %v), want the echoed result", ev.res, ev.err)
	}
	// Close fails whatever is pending: a call that ended must not hear of it.
	_ = p.client.Close()
	if n := out.calls.Load(); n != 1 {
		t.Fatalf("done called %d times, want once", n)
	}
}

func TestOrchestratorDelegateAsyncCancelReachesExecutor(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	ctx, cancel := context.WithCancel(orchCtx(t))
	task := p.task("x")
	out := newAsyncOutcome()
	p.client.DelegateAsync(ctx, p.serverH.ID(), task, out.done)
	orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	cancel()
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

func TestOrchestratorDelegateAsyncFailsOnTheCallersGoroutine(t *testing.T) {
	p := newOrchPair(t)
	bad := p.task("x")
	bad.Skill = ""
	closedCtx, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		ctx  context.Context
		task *RemoteTask
		want error
	}{
		{"an invalid task", context.Background(), bad, nil},
		{"a context already done", closedCtx, p.task("x"), context.Canceled},
	}
	for _, c := range cases {
		var got *ended
		p.client.DelegateAsync(c.ctx, p.serverH.ID(), c.task, func(res *RemoteResult, err error) { got = &ended{res: res, err: err} })
		if got == nil || got.err == nil || got.res != nil {
			t.Fatalf("%s: done was not called before DelegateAsync returned with only an error: %+v", c.name, got)
		}
		if c.want != nil && !errors.Is(got.err, c.want) {
			t.Fatalf("%s: error %v, want %v", c.name, got.err, c.want)
		}
	}
	_ = p.client.Close()
	var got error
	p.client.DelegateAsync(context.Background(), p.serverH.ID(), p.task("x"), func(_ *RemoteResult, err error) { got = err })
	if !errors.Is(got, ErrClosed) {
		t.Fatalf("DelegateAsync after Close: done got %v, want ErrClosed at once", got)
	}
}

func TestOrchestratorDelegateAsyncWaitsForAnOpeningStreamOffTheCaller(t *testing.T) {
	p := newOrchPair(t)
	// No stream to the server yet: the first call has to open it.
	outs := make([]*asyncOutcome, 8)
	for i := range outs {
		outs[i] = newAsyncOutcome()
		p.client.DelegateAsync(orchCtx(t), p.serverH.ID(), p.task("x"), outs[i].done)
	}
	for i, out := range outs {
		if ev := orchRecv(t, out.ch, 5*time.Second, "done being called"); ev.err != nil {
			t.Fatalf("call %d: %v", i, ev.err)
		}
	}
	if got := p.client.streamsOpened.Load(); got != 1 {
		t.Fatalf("%d streams opened, want 1", got)
	}
}

// rawRequester opens a task stream from a plain host and sends requests
// encoded as the orchestrator does.
type rawRequester struct {
	s  interface{ Write([]byte) (int, error) }
	r  *wire.Reader
	id []byte
}

func newRawRequester(tb testing.TB, from host.Host, to host.Host) *rawRequester {
	tb.Helper()
	connectOrchHosts(tb, from, to)
	s := rawTaskStream(tb, from, to.ID())
	return &rawRequester{s: s, r: wire.NewReader(s, wire.DefaultMaxMessageSize), id: []byte(from.ID())}
}

func (r *rawRequester) request(tb testing.TB, id TaskID) {
	tb.Helper()
	t := &RemoteTask{ID: id, Skill: "text.echo", Input: []byte("x"), InputKind: InputRaw, Priority: 1, Deadline: time.Now().Add(time.Minute), Attempt: 1}
	if _, err := r.s.Write(appendRequestFrame(nil, t, r.id)); err != nil {
		tb.Fatalf("write request: %v", err)
	}
}

// next reads the next ack or result (heartbeats skipped): its kind and
// task ID.
func (r *rawRequester) next(tb testing.TB) (kind string, id TaskID) {
	tb.Helper()
	for {
		var env cortexv1.Envelope
		if err := r.r.ReadMsg(&env); err != nil {
			tb.Fatalf("read frame: %v", err)
		}
		switch {
		case env.GetAck() != nil:
			if !env.GetAck().GetAccepted() {
				tb.Fatalf("task rejected: %v", env.GetAck())
			}
			return "ack", TaskID(env.GetAck().GetTaskId())
		case env.GetResult() != nil:
			return "result", TaskID(env.GetResult().GetTaskId())
		}
	}
}

func TestOrchestratorResultWithinTheAckDelayAnswersAlone(t *testing.T) {
	p := newOrchPair(t, WithAckDelay(4*time.Second))
	replies := holdTasks(p.handler)
	rr := newRawRequester(t, newOrchHost(t), p.serverH)
	first, second := NewTaskID(), NewTaskID()
	rr.request(t, first)
	rr.request(t, second)
	// The reader handles requests in order: once the second is in the
	// handler, HandleTask of the first has returned, its ack held back.
	orchRecv(t, p.handler.tasks, 5*time.Second, "the first task reaching the handler")
	orchRecv(t, p.handler.tasks, 5*time.Second, "the second task reaching the handler")
	for _, id := range []TaskID{first, second} {
		reply, _ := replies.Load(id)
		reply.(func(*RemoteResult))(&RemoteResult{ID: id, Success: true, Output: []byte("x")})
		if kind, got := rr.next(t); kind != "result" || got != id {
			t.Fatalf("got a %s for %s, want the result of %s with no ack before it", kind, got.Short(), id.Short())
		}
	}
}

func TestOrchestratorLongTaskIsAckedAfterTheAckDelay(t *testing.T) {
	p := newOrchPair(t, WithAckDelay(20*time.Millisecond))
	replies := holdTasks(p.handler)
	rr := newRawRequester(t, newOrchHost(t), p.serverH)
	id := NewTaskID()
	start := time.Now()
	rr.request(t, id)
	if kind, got := rr.next(t); kind != "ack" || got != id {
		t.Fatalf("got a %s for %s, want the ack of %s", kind, got.Short(), id.Short())
	}
	if d := time.Since(start); d < 20*time.Millisecond {
		t.Fatalf("ack came after %s, before the ack delay", d)
	}
	reply, _ := replies.Load(id)
	reply.(func(*RemoteResult))(&RemoteResult{ID: id, Success: true})
	if kind, got := rr.next(t); kind != "result" || got != id {
		t.Fatalf("got a %s for %s, want the result of %s", kind, got.Short(), id.Short())
	}
}

// Replies racing the ack delay: for every task the ack, if any, comes
// before the result, and the result comes exactly once.
func TestOrchestratorAckNeverFollowsItsResult(t *testing.T) {
	p := newOrchPair(t, WithAckDelay(200*time.Microsecond))
	var wg sync.WaitGroup
	p.handler.set(func(_ peer.ID, t *RemoteTask, reply func(*RemoteResult)) error {
		id := t.ID
		wg.Add(1)
		time.AfterFunc(time.Duration(rand.IntN(400))*time.Microsecond, func() {
			defer wg.Done()
			reply(&RemoteResult{ID: id, Success: true})
		})
		return nil
	})
	rr := newRawRequester(t, newOrchHost(t), p.serverH)
	const n = 400
	for range n {
		rr.request(t, NewTaskID())
	}
	seen := make(map[TaskID]string, n)
	acks := 0
	for results := 0; results < n; {
		kind, id := rr.next(t)
		if prev := seen[id]; prev == "result" {
			t.Fatalf("task %s: a %s after its result", id.Short(), kind)
		}
		if kind == "ack" {
			acks++
		} else {
			results++
		}
		seen[id] = kind
	}
	wg.Wait()
	t.Logf("%d of %d tasks were acked before their result", acks, n)
}

func TestOrchestratorAckDelayIsValidated(t *testing.T) {
	h := newOrchHost(t)
	for _, opts := range [][]OrchestratorOption{
		{WithAckDelay(-time.Millisecond)},
		{WithAckTimeout(time.Second), WithAckDelay(500 * time.Millisecond)},
	} {
		if _, err := NewOrchestrator(h, nil, opts...); err == nil || !strings.Contains(err.Error(), "ack delay") {
			t.Fatalf("NewOrchestrator = %v, want an ack delay error", err)
		}
	}
}
