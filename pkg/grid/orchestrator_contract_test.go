package grid

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	ma "github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// These tests hold the orchestrator to the task protocol's contract
// (docs/protocol.md): what a peer may send, and what each side answers.

// futureFrame is env as a peer of a newer version would send it: its body
// carries a field this version does not know, and the frame is followed
// by a whole message of a type this version does not know.
func futureFrame(tb testing.TB, env *cortexv1.Envelope) []byte {
	tb.Helper()
	var body proto.Message
	var num protowire.Number
	switch b := env.Body.(type) {
	case *cortexv1.Envelope_Request:
		body, num = b.Request, 1
	case *cortexv1.Envelope_Ack:
		body, num = b.Ack, 2
	case *cortexv1.Envelope_Result:
		body, num = b.Result, 3
	case *cortexv1.Envelope_Heartbeat:
		body, num = b.Heartbeat, 5
	default:
		tb.Fatalf("futureFrame: unexpected body %T", env.Body)
	}
	m, err := proto.Marshal(body)
	if err != nil {
		tb.Fatal(err)
	}
	m = protowire.AppendVarint(protowire.AppendTag(m, 99, protowire.VarintType), 7)                 // a new scalar
	m = protowire.AppendBytes(protowire.AppendTag(m, 100, protowire.BytesType), []byte("progress")) // a new sub-message
	e := protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), m)
	e = protowire.AppendVarint(protowire.AppendTag(e, 30, protowire.VarintType), 1) // a new envelope field
	frame := protowire.AppendBytes(nil, e)
	// A message of a new type: Envelope field 16, say a progress report.
	progress := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), bytes.Repeat([]byte{9}, 32))
	progress = protowire.AppendVarint(protowire.AppendTag(progress, 2, protowire.VarintType), 50)
	newType := protowire.AppendBytes(protowire.AppendTag(nil, 16, protowire.BytesType), progress)
	return append(frame, protowire.AppendBytes(nil, newType)...)
}

// TestOrchestratorWorksWithAFutureExecutor delegates to an executor of a
// newer version: its acks, heartbeats and results carry unknown fields,
// and a message of an unknown type follows each. The tasks complete and
// the unknowns are counted.
func TestOrchestratorWorksWithAFutureExecutor(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	client := startOrchestrator(t, clientH, nil)
	serveRawExecutor(t, serverH, func(rp *rawPeer, env *cortexv1.Envelope) {
		req := env.GetRequest()
		if req == nil {
			return
		}
		var b []byte
		b = append(b, futureFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: req.TaskId, Accepted: true, Attempt: req.Attempt}}})...)
		b = append(b, futureFrame(t, heartbeatEnv(req.TaskId))...)
		b = append(b, futureFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{
			TaskId: req.TaskId, Success: true, Output: append([]byte("v2:"), req.Input...), Attempt: req.Attempt,
		}}})...)
		rp.mu.Lock()
		_, _ = rp.s.Write(b)
		rp.mu.Unlock()
	})
	for i := range 3 {
		task := &RemoteTask{ID: NewTaskID(), Skill: "text.echo", Input: []byte{'a' + byte(i)}, InputKind: InputRaw,
			Deadline: time.Now().Add(time.Minute), Attempt: 1}
		res, err := client.Delegate(orchCtx(t), serverH.ID(), task)
		if err != nil || string(res.Output) != "v2:"+string(task.Input) {
			t.Fatalf("task %d with a future executor: %+v, %v", i, res, err)
		}
	}
	if st := client.Stats(); st.Unknown == 0 || st.Malformed != 0 {
		t.Fatalf("stats %+v: want unknowns counted and nothing malformed", st)
	}
	if client.streamsOpened.Load() != 1 {
		t.Fatalf("%d streams opened, want the one", client.streamsOpened.Load())
	}
}

// TestOrchestratorServesAFutureRequester runs tasks for a requester of a
// newer version, whose requests carry unknown fields and are followed by
// messages of an unknown type, all on one stream.
func TestOrchestratorServesAFutureRequester(t *testing.T) {
	p := newOrchPair(t)
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	s := rawTaskStream(t, rogue, p.serverH.ID())
	want := map[TaskID]string{}
	for i := range 3 {
		task := p.task(string(rune('a' + i)))
		want[task.ID] = string(task.Input)
		if _, err := s.Write(futureFrame(t, taskEnv(task))); err != nil {
			t.Fatal(err)
		}
	}
	r := wire.NewReader(s, 0)
	for len(want) > 0 {
		var env cortexv1.Envelope
		if err := r.ReadMsg(&env); err != nil {
			t.Fatalf("%d results missing: %v", len(want), err)
		}
		if ack := env.GetAck(); ack != nil && !ack.Accepted {
			t.Fatalf("a future request was rejected: %v", ack)
		}
		if res := env.GetResult(); res != nil {
			if want[TaskID(res.TaskId)] != string(res.Output) || res.Attempt != 1 {
				t.Fatalf("result %v: want output %q for attempt 1", res, want[TaskID(res.TaskId)])
			}
			delete(want, TaskID(res.TaskId))
		}
	}
	if st := p.server.Stats(); st.Unknown < 6 {
		t.Fatalf("stats %+v: want every unknown field and message type counted", st)
	}
}

// TestOrchestratorIgnoresAStaleAttemptsResult has the executor send, for
// attempt 2 of a task, a late result of attempt 1 first: it must not
// complete attempt 2.
func TestOrchestratorIgnoresAStaleAttemptsResult(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	client := startOrchestrator(t, clientH, nil)
	serveRawExecutor(t, serverH, func(rp *rawPeer, env *cortexv1.Envelope) {
		req := env.GetRequest()
		if req == nil {
			return
		}
		rp.send(t,
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: req.TaskId, Accepted: true, Attempt: req.Attempt - 1}}},
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: req.TaskId, Success: true, Output: []byte("stale"), Attempt: req.Attempt - 1}}},
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: req.TaskId, Success: true, Output: []byte("fresh"), Attempt: req.Attempt}}},
		)
	})
	task := &RemoteTask{ID: NewTaskID(), Skill: "text.echo", InputKind: InputRaw, Deadline: time.Now().Add(time.Minute), Attempt: 2}
	res, err := client.Delegate(orchCtx(t), serverH.ID(), task)
	if err != nil || string(res.Output) != "fresh" {
		t.Fatalf("attempt 2 = %+v, %v; want the result of attempt 2", res, err)
	}
	if st := client.Stats(); st.Dropped < 2 {
		t.Fatalf("stats %+v: want the stale ack and result counted as dropped", st)
	}
}

// TestOrchestratorMalformedResultFailsOnlyItsTask has the executor answer
// one task with a result that does not decode and one with an output over
// the cap: those two fail with ErrInvalidResult, a third on the same
// stream succeeds.
func TestOrchestratorMalformedResultFailsOnlyItsTask(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	client := startOrchestrator(t, clientH, nil, WithMaxMessageSize(wire.MaxTaskOutput+64<<10))
	serveRawExecutor(t, serverH, func(rp *rawPeer, env *cortexv1.Envelope) {
		req := env.GetRequest()
		if req == nil {
			return
		}
		var frame []byte
		switch string(req.Input) {
		case "bad utf-8":
			body := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), req.TaskId)
			body = protowire.AppendString(protowire.AppendTag(body, 5, protowire.BytesType), "\xff")
			frame = protowire.AppendBytes(nil, protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), body))
		case "too much":
			frame = envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{
				TaskId: req.TaskId, Success: true, Output: make([]byte, wire.MaxTaskOutput+1), Attempt: req.Attempt}}})
		default:
			frame = envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{
				TaskId: req.TaskId, Success: true, Output: req.Input, Attempt: req.Attempt}}})
		}
		rp.mu.Lock()
		_, _ = rp.s.Write(frame)
		rp.mu.Unlock()
	})
	run := func(in string) (*RemoteResult, error) {
		return client.Delegate(orchCtx(t), serverH.ID(), &RemoteTask{ID: NewTaskID(), Skill: "text.echo", Input: []byte(in),
			InputKind: InputRaw, Deadline: time.Now().Add(time.Minute), Attempt: 1})
	}
	for _, in := range []string{"bad utf-8", "too much"} {
		if _, err := run(in); !errors.Is(err, ErrInvalidResult) || errors.Is(err, ErrPeerGone) {
			t.Fatalf("task answered with %q: %v, want ErrInvalidResult alone", in, err)
		}
	}
	if res, err := run("fine"); err != nil || string(res.Output) != "fine" {
		t.Fatalf("a good task after them: %+v, %v", res, err)
	}
	if client.streamsOpened.Load() != 1 {
		t.Fatalf("%d streams opened, want the one throughout", client.streamsOpened.Load())
	}
}

// TestOrchestratorRequesterIgnoresMessagesOnlyItSends has the executor
// send a request and a cancel on the requester's stream: both are
// dropped, and the task completes.
func TestOrchestratorRequesterIgnoresMessagesOnlyItSends(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	client := startOrchestrator(t, clientH, nil)
	serveRawExecutor(t, serverH, func(rp *rawPeer, env *cortexv1.Envelope) {
		req := env.GetRequest()
		if req == nil {
			return
		}
		rp.send(t,
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: req}},
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Cancel{Cancel: &cortexv1.TaskCancel{TaskId: req.TaskId}}},
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: req.TaskId, Success: true, Output: []byte("ok")}}},
		)
	})
	res, err := client.Delegate(orchCtx(t), serverH.ID(), &RemoteTask{ID: NewTaskID(), Skill: "text.echo", InputKind: InputRaw,
		Deadline: time.Now().Add(time.Minute), Attempt: 1})
	if err != nil || string(res.Output) != "ok" {
		t.Fatalf("Delegate = %+v, %v", res, err)
	}
	if st := client.Stats(); st.Dropped != 2 {
		t.Fatalf("stats %+v: want the request and the cancel dropped", st)
	}
}

// TestOrchestratorHalfClosedStreamGetsItsResults sends three requests and
// closes its side of the stream: every ack and result still comes, then
// the executor closes its side (EOF, not a reset).
func TestOrchestratorHalfClosedStreamGetsItsResults(t *testing.T) {
	p := newOrchPair(t)
	replies := holdTasks(p.handler)
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	s := rawTaskStream(t, rogue, p.serverH.ID())
	want := map[TaskID]bool{}
	for i := range 3 {
		task := p.task(string(rune('a' + i)))
		want[task.ID] = true
		if _, err := s.Write(envelopeFrame(t, taskEnv(task))); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		orchRecv(t, p.handler.tasks, 5*time.Second, "a task reaching the handler")
	}
	time.Sleep(50 * time.Millisecond) // the EOF reaches the executor
	replies.Range(func(k, v any) bool {
		id := k.(TaskID)
		v.(func(*RemoteResult))(&RemoteResult{ID: id, Success: true, Output: []byte("done")})
		return true
	})
	r := wire.NewReader(s, 0)
	for {
		var env cortexv1.Envelope
		err := r.ReadMsg(&env)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("reading answers after half-closing, %d results missing: %v", len(want), err)
		}
		if res := env.GetResult(); res != nil {
			delete(want, TaskID(res.TaskId))
		}
	}
	if len(want) > 0 {
		t.Fatalf("the stream ended with %d results missing", len(want))
	}
}

// budgetPolicy gives every peer the same limits, and counts the asks.
type budgetPolicy struct {
	limits PeerLimits
	asks   atomic.Int32
}

func (b *budgetPolicy) PeerLimits(peer.ID) PeerLimits {
	b.asks.Add(1)
	return b.limits
}

// TestOrchestratorPeerByteBudget holds one task of 800 bytes for a peer
// whose budget is 1000: its next task of 300 bytes is refused over budget
// with a retry hint, one over the whole budget as too large; once the
// first is done, the 300 fit.
func TestOrchestratorPeerByteBudget(t *testing.T) {
	pol := &budgetPolicy{limits: PeerLimits{Rate: rate.Inf, MaxTasks: 10, MaxBytes: 1000}}
	p := newOrchPair(t, WithPeerPolicy(pol))
	replies := holdTasks(p.handler)
	first := p.task(string(make([]byte, 800)))
	errc := delegateAsync(t, p.client, p.serverH.ID(), first)
	orchRecv(t, p.handler.tasks, 5*time.Second, "the first task reaching the executor")
	if u := p.server.Usage(p.clientH.ID()); u.Tasks != 1 || u.Bytes < 800 || u.Bytes > 1000 {
		t.Fatalf("Usage = %+v, want 1 task and its 800 bytes (plus its ack)", u)
	}
	if n := p.client.Outstanding(p.serverH.ID()); n != 1 {
		t.Fatalf("Outstanding = %d, want 1", n)
	}
	_, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task(string(make([]byte, 300))))
	var rej *RejectError
	if !errors.As(err, &rej) || rej.Reason != RejectOverBudget || rej.RetryAfter <= 0 {
		t.Fatalf("a task over the peer's byte budget = %v, want RejectOverBudget with a retry hint", err)
	}
	_, err = p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task(string(make([]byte, 1001))))
	if !errors.As(err, &rej) || rej.Reason != RejectTooLarge {
		t.Fatalf("a task larger than the whole budget = %v, want RejectTooLarge", err)
	}
	reply, _ := replies.Load(first.ID)
	reply.(func(*RemoteResult))(&RemoteResult{Success: true})
	if err := orchRecv(t, errc, 5*time.Second, "the first task's result"); err != nil {
		t.Fatal(err)
	}
	p.handler.set(nil)
	if _, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task(string(make([]byte, 300)))); err != nil {
		t.Fatalf("the 300 bytes once the first task is done: %v", err)
	}
	if n := pol.asks.Load(); n < 1 || n > 3 {
		t.Fatalf("the policy was asked %d times in about a second of one stream, want 1 to 3", n)
	}
	if n := p.client.Outstanding(p.serverH.ID()); n != 0 {
		t.Fatalf("Outstanding = %d after every task ended, want 0", n)
	}
}

// TestOrchestratorNodeByteBudget lets two peers share a node budget of
// 1000 bytes: with 800 held for one, the other's 300 are refused.
func TestOrchestratorNodeByteBudget(t *testing.T) {
	p := newOrchPair(t, WithNodeByteBudget(1000))
	replies := holdTasks(p.handler)
	first := p.task(string(make([]byte, 800)))
	errc := delegateAsync(t, p.client, p.serverH.ID(), first)
	orchRecv(t, p.handler.tasks, 5*time.Second, "the first task reaching the executor")

	otherH := newOrchHost(t)
	connectOrchHosts(t, otherH, p.serverH)
	other := startOrchestrator(t, otherH, nil)
	task := p.task(string(make([]byte, 300)))
	task.Requester = otherH.ID()
	_, err := other.Delegate(orchCtx(t), p.serverH.ID(), task)
	var rej *RejectError
	if !errors.As(err, &rej) || rej.Reason != RejectOverBudget || rej.RetryAfter <= 0 {
		t.Fatalf("another peer's task over the node's budget = %v, want RejectOverBudget with a retry hint", err)
	}
	reply, _ := replies.Load(first.ID)
	reply.(func(*RemoteResult))(&RemoteResult{Success: true})
	if err := orchRecv(t, errc, 5*time.Second, "the first task's result"); err != nil {
		t.Fatal(err)
	}
}

// TestOrchestratorDuplicatesAndAttempts sends the same task ID twice while
// it runs: the same attempt is a duplicate, a newer one reaches the
// handler.
func TestOrchestratorDuplicatesAndAttempts(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	s := rawTaskStream(t, rogue, p.serverH.ID())
	r := wire.NewReader(s, 0)
	task := p.task("x")
	send := func(attempt int) {
		task.Attempt = attempt
		if _, err := s.Write(envelopeFrame(t, taskEnv(task))); err != nil {
			t.Fatal(err)
		}
	}
	readAck := func() *cortexv1.TaskAck {
		var env cortexv1.Envelope
		if err := r.ReadMsg(&env); err != nil || env.GetAck() == nil {
			t.Fatalf("read ack: %v, %v", &env, err)
		}
		return env.GetAck()
	}
	send(1)
	if ack := readAck(); !ack.Accepted || ack.Attempt != 1 {
		t.Fatalf("first request: %v", ack)
	}
	send(1)
	if ack := readAck(); ack.Accepted || ack.Reason != cortexv1.RejectReason_REJECT_REASON_DUPLICATE || ack.Attempt != 1 {
		t.Fatalf("the same attempt again: %v, want DUPLICATE echoing attempt 1", ack)
	}
	send(2)
	if ack := readAck(); !ack.Accepted || ack.Attempt != 2 {
		t.Fatalf("a newer attempt: %v, want it accepted", ack)
	}
	orchRecv(t, p.handler.tasks, 5*time.Second, "attempt 1 at the handler")
	if got := orchRecv(t, p.handler.tasks, 5*time.Second, "attempt 2 at the handler"); got.Attempt != 2 {
		t.Fatalf("the handler got attempt %d, want 2", got.Attempt)
	}
}

// TestOrchestratorRequestReasonsAndRequester checks the reasons of a past
// deadline and the requester the handler sees: the stream's peer, not
// the one the request names.
func TestOrchestratorRequestReasonsAndRequester(t *testing.T) {
	p := newOrchPair(t)
	var seen atomic.Value
	p.handler.set(func(from peer.ID, task *RemoteTask, reply func(*RemoteResult)) error {
		seen.Store([2]peer.ID{from, task.Requester})
		reply(&RemoteResult{Success: true})
		return nil
	})
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	s := rawTaskStream(t, rogue, p.serverH.ID())
	r := wire.NewReader(s, 0)

	late := p.task("late")
	late.Deadline = time.Now().Add(-time.Second)
	if _, err := s.Write(envelopeFrame(t, taskEnv(late))); err != nil {
		t.Fatal(err)
	}
	var env cortexv1.Envelope
	if err := r.ReadMsg(&env); err != nil || env.GetAck().GetReason() != cortexv1.RejectReason_REJECT_REASON_DEADLINE_PASSED {
		t.Fatalf("a past deadline: %v, %v; want DEADLINE_PASSED", &env, err)
	}

	claims := p.task("claims") // names the client as requester, sent by rogue
	if _, err := s.Write(envelopeFrame(t, taskEnv(claims))); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadMsg(&env); err != nil || env.GetResult() == nil {
		t.Fatalf("a request naming another requester: %v, %v; want it run", &env, err)
	}
	if got := seen.Load().([2]peer.ID); got[0] != rogue.ID() || got[1] != rogue.ID() {
		t.Fatalf("the handler saw from %s, requester %s; want the stream's peer %s for both", got[0], got[1], rogue.ID())
	}
}

// TestOrchestratorCloseJoinsTheOpeningGoroutine delegates to a peer whose
// address accepts TCP and never answers, so the task waits for its stream
// on a goroutine of its own; Close must not return before that goroutine
// has finished the task.
func TestOrchestratorCloseJoinsTheOpeningGoroutine(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns sync.WaitGroup
	conns.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close() // held open, silent, until the test ends
		}
	})
	clientH := newOrchHost(t)
	addr, err := manet.FromNetAddr(l.Addr())
	if err != nil {
		t.Fatal(err)
	}
	silent := orchPeerID(t)
	clientH.Peerstore().AddAddrs(silent, []ma.Multiaddr{addr}, time.Hour)
	o, err := NewOrchestrator(clientH, nil, WithOrchLogger(orchQuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	var finished atomic.Bool
	o.DelegateAsync(context.Background(), silent, &RemoteTask{ID: NewTaskID(), Skill: "text.echo", InputKind: InputRaw,
		Deadline: time.Now().Add(time.Minute), Attempt: 1}, func(_ *RemoteResult, err error) {
		time.Sleep(100 * time.Millisecond) // the goroutine is still busy when the stream's open fails
		finished.Store(true)
	})
	time.Sleep(100 * time.Millisecond) // the dial is under way
	_ = o.Close()
	if !finished.Load() {
		t.Fatal("Close returned before the goroutine waiting for the stream had finished its task")
	}
	_ = l.Close()
}

// TestOrchestratorCountsSkippedMessagesForPrometheus reads the skipped
// messages' counter through a registry.
func TestOrchestratorCountsSkippedMessagesForPrometheus(t *testing.T) {
	reg := prometheus.NewRegistry()
	p := newOrchPair(t, WithOrchRegisterer(reg))
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	s := rawTaskStream(t, rogue, p.serverH.ID())
	if _, err := s.Write([]byte{0}); err != nil { // an empty envelope
		t.Fatal(err)
	}
	awaitStat(t, "the empty envelope", func() bool { return p.server.Stats().Unknown == 1 })
	if got := skippedCount(t, reg, "unknown"); got != 1 {
		t.Fatalf("cortex_task_messages_skipped_total{why=unknown} = %v, want 1", got)
	}
	_ = p.server.Close()
	if mfs, err := reg.Gather(); err != nil || len(mfs) != 0 {
		t.Fatalf("after Close %d metrics are left registered (%v), want none", len(mfs), err)
	}
}

// skippedCount reads cortex_task_messages_skipped_total{why} from reg.
func skippedCount(tb testing.TB, reg *prometheus.Registry, why string) float64 {
	tb.Helper()
	v, ok := counterByLabel(tb, reg, "cortex_task_messages_skipped_total", "why")[why]
	if !ok {
		tb.Fatalf("no cortex_task_messages_skipped_total{why=%q}", why)
	}
	return v
}

// counterByLabel reads the counter name from reg, by the value of its
// label.
func counterByLabel(tb testing.TB, reg *prometheus.Registry, name, label string) map[string]float64 {
	tb.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		tb.Fatal(err)
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label {
					out[l.GetValue()] = m.GetCounter().GetValue()
				}
			}
		}
	}
	return out
}
