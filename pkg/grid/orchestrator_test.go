package grid

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// orchHandler is a TaskHandler whose behaviour each test sets. By default
// it echoes the input back at once.
type orchHandler struct {
	mu      sync.Mutex
	handle  func(from peer.ID, t *RemoteTask, reply func(*RemoteResult)) error
	tasks   chan *RemoteTask // every admitted task, if non-nil
	cancels chan TaskID
}

// set replaces the behaviour; nil restores the echo.
func (h *orchHandler) set(fn func(from peer.ID, t *RemoteTask, reply func(*RemoteResult)) error) {
	h.mu.Lock()
	h.handle = fn
	h.mu.Unlock()
}

func newOrchHandler() *orchHandler {
	return &orchHandler{cancels: make(chan TaskID, 1024)}
}

func (h *orchHandler) HandleTask(from peer.ID, t *RemoteTask, r Replier) error {
	reply := r.Reply
	h.mu.Lock()
	handle, tasks := h.handle, h.tasks
	h.mu.Unlock()
	if handle != nil {
		if err := handle(from, t, reply); err != nil {
			return err
		}
	} else {
		reply(&RemoteResult{ID: t.ID, Success: true, Output: t.Input, ExecTime: time.Microsecond})
	}
	if tasks != nil {
		tasks <- t
	}
	return nil
}

func (h *orchHandler) CancelTask(_ peer.ID, id TaskID) { h.cancels <- id }

// holdTasks makes h keep every task without replying; the replies are
// kept in the returned map.
func holdTasks(h *orchHandler) *sync.Map {
	var replies sync.Map
	h.mu.Lock()
	h.tasks = make(chan *RemoteTask, 1024)
	h.mu.Unlock()
	h.set(func(_ peer.ID, t *RemoteTask, reply func(*RemoteResult)) error {
		replies.Store(t.ID, reply)
		return nil
	})
	return &replies
}

func newOrchHost(tb testing.TB) host.Host {
	tb.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay())
	if err != nil {
		tb.Fatalf("new host: %v", err)
	}
	tb.Cleanup(func() { _ = h.Close() })
	return h
}

func connectOrchHosts(tb testing.TB, a, b host.Host) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.Connect(ctx, peer.AddrInfo{ID: b.ID(), Addrs: b.Addrs()}); err != nil {
		tb.Fatalf("connect hosts: %v", err)
	}
}

func orchQuietLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

func startOrchestrator(tb testing.TB, h host.Host, handler TaskHandler, opts ...OrchestratorOption) *Orchestrator {
	tb.Helper()
	opts = append([]OrchestratorOption{WithOrchLogger(orchQuietLogger())}, opts...)
	o, err := NewOrchestrator(h, handler, opts...)
	if err != nil {
		tb.Fatalf("new orchestrator: %v", err)
	}
	if err := o.Start(context.Background()); err != nil {
		tb.Fatalf("start orchestrator: %v", err)
	}
	tb.Cleanup(func() { _ = o.Close() })
	return o
}

// orchPair is a delegating node and an executing node, connected.
type orchPair struct {
	client, server   *Orchestrator
	clientH, serverH host.Host
	handler          *orchHandler
}

func newOrchPair(tb testing.TB, serverOpts ...OrchestratorOption) *orchPair {
	tb.Helper()
	p := &orchPair{clientH: newOrchHost(tb), serverH: newOrchHost(tb), handler: newOrchHandler()}
	connectOrchHosts(tb, p.clientH, p.serverH)
	p.server = startOrchestrator(tb, p.serverH, p.handler, serverOpts...)
	p.client = startOrchestrator(tb, p.clientH, nil)
	return p
}

func (p *orchPair) task(input string) *RemoteTask {
	return &RemoteTask{
		ID:        NewTaskID(),
		Skill:     "text.echo",
		Input:     []byte(input),
		InputKind: InputRaw,
		Priority:  100,
		Deadline:  time.Now().Add(30 * time.Second),
		Attempt:   1,
		Requester: p.clientH.ID(),
	}
}

func orchCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	tb.Cleanup(cancel)
	return ctx
}

func orchRecv[T any](tb testing.TB, ch <-chan T, d time.Duration, what string) T {
	tb.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(d):
		tb.Fatalf("%s did not happen within %s", what, d)
		var zero T
		return zero
	}
}

func TestOrchestratorDelegateEchoesInput(t *testing.T) {
	p := newOrchPair(t)
	task := p.task("hello grid")
	res, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), task)
	if err != nil {
		t.Fatalf("Delegate: %v", err)
	}
	if !res.Success || string(res.Output) != "hello grid" || res.ID != task.ID {
		t.Fatalf("result = %+v, want a success echoing the input for task %s", res, task.ID.Short())
	}
	if res.Executor != p.serverH.ID() {
		t.Fatalf("executor = %s, want %s", res.Executor, p.serverH.ID())
	}
}

func TestOrchestratorConcurrentDelegatesShareOneStream(t *testing.T) {
	p := newOrchPair(t)
	var n atomic.Int64
	p.handler.set(func(_ peer.ID, task *RemoteTask, reply func(*RemoteResult)) error {
		res := &RemoteResult{ID: task.ID, Success: true, Output: task.Input}
		if n.Add(1)%2 == 0 {
			go reply(res) // half reply later, from another goroutine
		} else {
			reply(res) // half before HandleTask returns
		}
		return nil
	})
	const callers, each = 32, 20
	ctx := orchCtx(t)
	errs := make(chan error, callers)
	for c := range callers {
		go func() {
			for i := range each {
				task := p.task(string(rune('a'+c)) + string(rune('a'+i)))
				res, err := p.client.Delegate(ctx, p.serverH.ID(), task)
				if err == nil && string(res.Output) != string(task.Input) {
					err = errors.New("result carries another task's output")
				}
				if err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range callers {
		if err := orchRecv(t, errs, 20*time.Second, "a caller finishing"); err != nil {
			t.Fatal(err)
		}
	}
	if got := p.client.streamsOpened.Load(); got != 1 {
		t.Fatalf("client opened %d task streams, want 1", got)
	}
	if got := p.server.streamsAccepted.Load(); got != 1 {
		t.Fatalf("server accepted %d task streams, want 1", got)
	}
}

func TestOrchestratorRejectionReachesCallerWithReason(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want RejectError
	}{
		{"a full queue comes back as queue full with its retry hint",
			&RejectError{Reason: RejectQueueFull, Message: "normal level full", RetryAfter: 250 * time.Millisecond},
			RejectError{Reason: RejectQueueFull, Message: "normal level full", RetryAfter: 250 * time.Millisecond}},
		{"an unknown skill comes back as unknown skill",
			&RejectError{Reason: RejectUnknownSkill},
			RejectError{Reason: RejectUnknownSkill}},
		{"too low a trust comes back as trust too low",
			&RejectError{Reason: RejectTrustTooLow, Message: "requester trust 0.10 < 0.50"},
			RejectError{Reason: RejectTrustTooLow, Message: "requester trust 0.10 < 0.50"}},
		{"a wrapped reject error keeps its reason",
			errors.Join(errors.New("context"), &RejectError{Reason: RejectInvalidInput, Message: "bad json"}),
			RejectError{Reason: RejectInvalidInput, Message: "bad json"}},
		{"a plain error comes back as unspecified with its text",
			errors.New("boom"),
			RejectError{Reason: RejectUnspecified, Message: "boom"}},
	}
	p := newOrchPair(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p.handler.set(func(peer.ID, *RemoteTask, func(*RemoteResult)) error { return tc.err })
			_, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("x"))
			var rej *RejectError
			if !errors.As(err, &rej) || !errors.Is(err, ErrRejected) {
				t.Fatalf("Delegate error = %v, want a *RejectError", err)
			}
			if *rej != tc.want {
				t.Fatalf("rejection = %+v, want %+v", *rej, tc.want)
			}
		})
	}
}

func TestOrchestratorDelegateOnlyNodeRejectsTasks(t *testing.T) {
	p := newOrchPair(t)
	// The client has no handler: a task sent to it is rejected, not lost.
	_, err := p.server.Delegate(orchCtx(t), p.clientH.ID(), &RemoteTask{
		ID: NewTaskID(), Skill: "text.echo", InputKind: InputRaw, Attempt: 1,
		Deadline: time.Now().Add(time.Minute), Requester: p.serverH.ID(),
	})
	var rej *RejectError
	if !errors.As(err, &rej) || rej.Reason != RejectUnknownSkill {
		t.Fatalf("Delegate to a delegate-only node = %v, want an unknown-skill rejection", err)
	}
}

func TestOrchestratorAckTimeoutWhenPeerStaysSilent(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	serverH.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) {
		_, _ = io.Copy(io.Discard, s) // read everything, answer nothing
	})
	client := startOrchestrator(t, clientH, nil, WithAckTimeout(200*time.Millisecond))
	p := &orchPair{clientH: clientH}
	start := time.Now()
	_, err := client.Delegate(orchCtx(t), serverH.ID(), p.task("x"))
	if !errors.Is(err, ErrAckTimeout) {
		t.Fatalf("Delegate = %v, want ErrAckTimeout", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("ack timeout of 200ms took %s", d)
	}
}

func TestOrchestratorResultTimeoutAfterDeadline(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	p.client.cfg.resultGrace = 50 * time.Millisecond
	task := p.task("x")
	task.Deadline = time.Now().Add(300 * time.Millisecond)
	_, err := p.client.Delegate(context.Background(), p.serverH.ID(), task)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Delegate = %v, want context.DeadlineExceeded", err)
	}
	if got := orchRecv(t, p.handler.cancels, 5*time.Second, "the cancel reaching the executor"); got != task.ID {
		t.Fatalf("canceled %s, want %s", got.Short(), task.ID.Short())
	}
}

func TestOrchestratorCancelReachesExecutor(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	ctx, cancel := context.WithCancel(orchCtx(t))
	task := p.task("x")
	errc := make(chan error, 1)
	go func() {
		_, err := p.client.Delegate(ctx, p.serverH.ID(), task)
		errc <- err
	}()
	orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	cancel()
	if err := orchRecv(t, errc, 5*time.Second, "Delegate returning"); !errors.Is(err, context.Canceled) {
		t.Fatalf("Delegate = %v, want context.Canceled", err)
	}
	if got := orchRecv(t, p.handler.cancels, 5*time.Second, "CancelTask on the executor"); got != task.ID {
		t.Fatalf("canceled %s, want %s", got.Short(), task.ID.Short())
	}
}

func TestOrchestratorPeerDisconnectFailsPendingQuickly(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	const n = 5
	errc := make(chan error, n)
	for range n {
		go func() {
			_, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("x"))
			errc <- err
		}()
	}
	for range n {
		orchRecv(t, p.handler.tasks, 5*time.Second, "a task reaching the executor")
	}
	start := time.Now()
	if err := p.serverH.Network().ClosePeer(p.clientH.ID()); err != nil {
		t.Fatal(err)
	}
	for range n {
		if err := orchRecv(t, errc, 5*time.Second, "Delegate returning"); !errors.Is(err, ErrPeerGone) {
			t.Fatalf("Delegate = %v, want ErrPeerGone", err)
		}
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("pending calls failed %s after the disconnect, want under 2s", d)
	}
	for range n { // the executor drops the orphans
		orchRecv(t, p.handler.cancels, 5*time.Second, "CancelTask for an orphaned task")
	}
	// The next call reconnects and opens a new stream.
	p.handler.set(nil)
	if _, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("again")); err != nil {
		t.Fatalf("Delegate after reconnecting: %v", err)
	}
}

func TestOrchestratorCloseFailsPendingWithErrClosed(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	errc := make(chan error, 1)
	go func() {
		_, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("x"))
		errc <- err
	}()
	orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	if err := p.client.Close(); err != nil {
		t.Fatal(err)
	}
	if err := orchRecv(t, errc, 5*time.Second, "Delegate returning"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delegate = %v, want ErrClosed", err)
	}
	if _, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("x")); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delegate after Close = %v, want ErrClosed", err)
	}
	if err := p.client.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
}

func TestOrchestratorRateLimitRejectsExcess(t *testing.T) {
	p := newOrchPair(t, WithPeerPolicy(FixedLimits{Rate: rate.Every(time.Hour), Burst: 2, MaxTasks: 10, MaxBytes: 1 << 20}))
	ctx := orchCtx(t)
	for i := range 2 {
		if _, err := p.client.Delegate(ctx, p.serverH.ID(), p.task("x")); err != nil {
			t.Fatalf("request %d within the burst: %v", i+1, err)
		}
	}
	_, err := p.client.Delegate(ctx, p.serverH.ID(), p.task("x"))
	var rej *RejectError
	if !errors.As(err, &rej) || rej.Reason != RejectRateLimited || rej.RetryAfter <= 0 {
		t.Fatalf("request over the limit = %v, want a rate-limited rejection with a retry hint", err)
	}
}

func TestOrchestratorInFlightCapRejectsExcess(t *testing.T) {
	p := newOrchPair(t, WithPeerPolicy(FixedLimits{Rate: rate.Inf, MaxTasks: 1, MaxBytes: 1 << 20}))
	replies := holdTasks(p.handler)
	first := p.task("first")
	errc := make(chan error, 1)
	go func() {
		_, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), first)
		errc <- err
	}()
	orchRecv(t, p.handler.tasks, 5*time.Second, "the first task reaching the executor")
	_, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("second"))
	var rej *RejectError
	if !errors.As(err, &rej) || rej.Reason != RejectOverBudget || rej.RetryAfter <= 0 {
		t.Fatalf("second task = %v, want an over-budget rejection with a retry hint", err)
	}
	reply, _ := replies.Load(first.ID)
	reply.(func(*RemoteResult))(&RemoteResult{ID: first.ID, Success: true})
	if err := orchRecv(t, errc, 5*time.Second, "the first Delegate returning"); err != nil {
		t.Fatal(err)
	}
	p.handler.set(nil)
	if _, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("third")); err != nil {
		t.Fatalf("task after the first finished: %v", err)
	}
}

// rawTaskStream opens a task stream from a plain host, as a misbehaving peer
// would.
func rawTaskStream(tb testing.TB, from host.Host, to peer.ID) network.Stream {
	tb.Helper()
	s, err := from.NewStream(orchCtx(tb), to, wire.ProtocolTask)
	if err != nil {
		tb.Fatalf("open raw stream: %v", err)
	}
	tb.Cleanup(func() { _ = s.Reset() })
	_ = s.SetDeadline(time.Now().Add(10 * time.Second))
	return s
}

func envelopeFrame(tb testing.TB, env *cortexv1.Envelope) []byte {
	tb.Helper()
	b, err := wire.AppendFrame(nil, env)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// TestOrchestratorFramingErrorsResetTheStream sends what breaks the
// framing itself: the executor resets the stream, and serves the next.
func TestOrchestratorFramingErrorsResetTheStream(t *testing.T) {
	cases := []struct {
		name  string
		frame []byte
	}{
		{"a length above the cap", binary.AppendUvarint(nil, 1<<20)},
		{"a length that overflows 64 bits", bytes.Repeat([]byte{0xff}, 12)},
	}
	p := newOrchPair(t, WithMaxMessageSize(64<<10))
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := rawTaskStream(t, rogue, p.serverH.ID())
			if _, err := s.Write(tc.frame); err != nil {
				t.Fatalf("write: %v", err)
			}
			_, err := s.Read(make([]byte, 1))
			if !errors.Is(err, network.ErrReset) {
				t.Fatalf("read after the bad frame = %v, want the stream reset", err)
			}
			if _, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("still here")); err != nil {
				t.Fatalf("good request after the bad frame: %v", err)
			}
		})
	}
}

// TestOrchestratorBadMessagesStayWithTheirTask sends, on one stream, bad
// messages amid good requests: each bad one is dropped and counted (a
// request with a usable ID is rejected), and every good task completes on
// the same stream.
func TestOrchestratorBadMessagesStayWithTheirTask(t *testing.T) {
	p := newOrchPair(t)
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	deadline := time.Now().Add(time.Minute).UnixMilli()
	badUTF8ID := NewTaskID()
	badUTF8 := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType),
		protowire.AppendString(protowire.AppendTag(protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), badUTF8ID[:]), 2, protowire.BytesType), "\xff"))
	type badMessage struct {
		name      string
		frame     []byte
		rejectsID *TaskID // the request this answers with a malformed rejection
		counter   func(OrchestratorStats) uint64
	}
	bad := []badMessage{
		{"a body that is not protobuf", []byte{4, 0xff, 0xff, 0xff, 0xff}, nil, func(s OrchestratorStats) uint64 { return s.Malformed }},
		{"a request with a string that is not UTF-8", protowire.AppendBytes(nil, badUTF8), &badUTF8ID, func(s OrchestratorStats) uint64 { return s.Malformed }},
		{"an empty envelope", []byte{0}, nil, func(s OrchestratorStats) uint64 { return s.Unknown }},
		{"an ack sent to the executor", envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: make([]byte, 32)}}}),
			nil, func(s OrchestratorStats) uint64 { return s.Dropped }},
		{"a result sent to the executor", envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: make([]byte, 32)}}}),
			nil, func(s OrchestratorStats) uint64 { return s.Dropped }},
		{"a heartbeat sent to the executor", envelopeFrame(t, heartbeatEnv(make([]byte, 32))), nil, func(s OrchestratorStats) uint64 { return s.Dropped }},
		{"a request whose task ID is 5 bytes", envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: make([]byte, 5), SkillId: "text.echo", InputKind: cortexv1.InputKind_INPUT_KIND_RAW, DeadlineUnixMs: deadline,
		}}}), nil, func(s OrchestratorStats) uint64 { return s.Malformed }},
		{"a request whose task ID is all zero", envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: make([]byte, 32), SkillId: "text.echo", InputKind: cortexv1.InputKind_INPUT_KIND_RAW, DeadlineUnixMs: deadline,
		}}}), &TaskID{}, func(s OrchestratorStats) uint64 { return s.Malformed }},
	}
	s := rawTaskStream(t, rogue, p.serverH.ID())
	var good []TaskID
	for _, b := range bad {
		task := p.task("good")
		good = append(good, task.ID)
		before := b.counter(p.server.Stats())
		if _, err := s.Write(append(envelopeFrame(t, taskEnv(task)), b.frame...)); err != nil {
			t.Fatalf("%s: write: %v", b.name, err)
		}
		awaitStat(t, b.name, func() bool { return b.counter(p.server.Stats()) > before })
	}
	// Every good task gets its result; the bad requests with an ID get a
	// malformed rejection; nothing resets the stream.
	want := make(map[TaskID]bool)
	for _, id := range good {
		want[id] = true
	}
	r := wire.NewReader(s, 0)
	rejected := 0
	for len(want) > 0 || rejected < 2 {
		var env cortexv1.Envelope
		if err := r.ReadMsg(&env); err != nil {
			t.Fatalf("reading answers, %d results and %d rejections missing: %v", len(want), 2-rejected, err)
		}
		switch {
		case env.GetResult() != nil:
			delete(want, TaskID(env.GetResult().GetTaskId()))
		case env.GetAck() != nil && !env.GetAck().GetAccepted():
			ack := env.GetAck()
			if ack.GetReason() != cortexv1.RejectReason_REJECT_REASON_MALFORMED || !slices.ContainsFunc(bad, func(b badMessage) bool {
				return b.rejectsID != nil && *b.rejectsID == TaskID(ack.GetTaskId())
			}) {
				t.Fatalf("unexpected rejection %v", ack)
			}
			rejected++
		}
	}
}

// awaitStat waits until cond holds, for a counter to move.
func awaitStat(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	for end := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(end) {
			tb.Fatalf("%s: not counted within 5s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestOrchestratorInvalidRequestFieldsAreRejectedAsMalformed(t *testing.T) {
	p := newOrchPair(t)
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	good := func() *cortexv1.TaskRequest {
		id := NewTaskID()
		return &cortexv1.TaskRequest{
			TaskId: id[:], SkillId: "text.echo", Input: []byte("hi"), InputKind: cortexv1.InputKind_INPUT_KIND_RAW,
			Priority: 10, DeadlineUnixMs: time.Now().Add(time.Minute).UnixMilli(), Attempt: 1, Requester: []byte(rogue.ID()),
		}
	}
	cases := []struct {
		name   string
		modify func(*cortexv1.TaskRequest)
	}{
		{"a skill ID of 200 bytes", func(r *cortexv1.TaskRequest) { r.SkillId = string(bytes.Repeat([]byte{'a'}, 200)) }},
		{"an empty skill ID", func(r *cortexv1.TaskRequest) { r.SkillId = "" }},
		{"a version of 100 bytes", func(r *cortexv1.TaskRequest) { r.SkillVersion = string(bytes.Repeat([]byte{'1'}, 100)) }},
		{"a priority of 256", func(r *cortexv1.TaskRequest) { r.Priority = 256 }},
		{"an unknown input kind", func(r *cortexv1.TaskRequest) { r.InputKind = 9 }},
		{"no deadline", func(r *cortexv1.TaskRequest) { r.DeadlineUnixMs = 0 }},
		{"a deadline a year ahead", func(r *cortexv1.TaskRequest) { r.DeadlineUnixMs = time.Now().AddDate(1, 0, 0).UnixMilli() }},
		{"a minimum trust above 1", func(r *cortexv1.TaskRequest) { r.MinTrust = 1.5 }},
	}
	s := rawTaskStream(t, rogue, p.serverH.ID())
	r := wire.NewReader(s, wire.DefaultMaxMessageSize)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			req := good()
			tc.modify(req)
			if _, err := s.Write(envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: req}})); err != nil {
				t.Fatal(err)
			}
			var env cortexv1.Envelope
			if err := r.ReadMsg(&env); err != nil {
				t.Fatalf("read ack: %v", err)
			}
			ack := env.GetAck()
			if ack == nil || ack.Accepted || ack.Reason != cortexv1.RejectReason_REJECT_REASON_MALFORMED || !bytes.Equal(ack.TaskId, req.TaskId) {
				t.Fatalf("answer = %v, want a malformed rejection for the task", &env)
			}
		})
	}
	// The same stream still serves a good request.
	req := good()
	if _, err := s.Write(envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: req}})); err != nil {
		t.Fatal(err)
	}
	// The echo replies at once, so the result may come without an ack.
	var res cortexv1.Envelope
	if err := r.ReadMsg(&res); err != nil {
		t.Fatalf("good request: %v", err)
	}
	if ack := res.GetAck(); ack != nil {
		if !ack.GetAccepted() {
			t.Fatalf("good request rejected: %v", &res)
		}
		if err := r.ReadMsg(&res); err != nil {
			t.Fatalf("good request: %v", err)
		}
	}
	if string(res.GetResult().GetOutput()) != "hi" || !bytes.Equal(res.GetResult().GetTaskId(), req.TaskId) {
		t.Fatalf("good request: got %v, want its result", &res)
	}
}

func TestOrchestratorDropsResultsForUnknownTasks(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	// A peer that answers every request with a stray result first, then a
	// duplicate of the real one after it.
	serverH.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) {
		r, w := wire.NewReader(s, 1<<20), wire.NewWriter(s)
		var env cortexv1.Envelope
		for r.ReadMsg(&env) == nil {
			id := env.GetRequest().GetTaskId()
			stray := NewTaskID()
			for _, m := range []*cortexv1.Envelope{
				{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: stray[:], Success: true, Output: []byte("stray")}}},
				{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: id, Accepted: true}}},
				{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: id, Success: true, Output: []byte("real")}}},
				{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: id, Success: true, Output: []byte("duplicate")}}},
			} {
				_ = w.WriteMsg(m)
			}
			_ = w.Flush()
		}
	})
	client := startOrchestrator(t, clientH, nil)
	p := &orchPair{clientH: clientH}
	for range 3 {
		res, err := client.Delegate(orchCtx(t), serverH.ID(), p.task("x"))
		if err != nil || string(res.Output) != "real" {
			t.Fatalf("Delegate = %v, %v; want the real result", res, err)
		}
	}
	if got := client.streamsOpened.Load(); got != 1 {
		t.Fatalf("stray results cost %d streams, want 1", got)
	}
}

func TestOrchestratorRefusesTasksItCannotSend(t *testing.T) {
	p := newOrchPair(t)
	small := startOrchestrator(t, newOrchHost(t), nil, WithMaxMessageSize(1024))
	cases := []struct {
		name   string
		o      *Orchestrator
		modify func(*RemoteTask)
		want   error
	}{
		{"a task with a zero ID", p.client, func(t *RemoteTask) { t.ID = TaskID{} }, errInvalidMessage},
		{"a task without a deadline", p.client, func(t *RemoteTask) { t.Deadline = time.Time{} }, errInvalidMessage},
		{"a task with a skill ID that is not UTF-8", p.client, func(t *RemoteTask) { t.Skill = "\xff" }, errInvalidMessage},
		{"a task with a minimum trust that is NaN", p.client, func(t *RemoteTask) { t.MinTrust = orchNaN() }, errInvalidMessage},
		{"a task larger than the frame cap", small, func(t *RemoteTask) { t.Input = make([]byte, 2048) }, wire.ErrMessageTooLarge},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			task := p.task("x")
			tc.modify(task)
			if _, err := tc.o.Delegate(orchCtx(t), p.serverH.ID(), task); !errors.Is(err, tc.want) {
				t.Fatalf("Delegate = %v, want %v", err, tc.want)
			}
		})
	}
}

func orchNaN() float64 { var z float64; return z / z }

func TestOrchestratorOptionsAreValidated(t *testing.T) {
	h := newOrchHost(t)
	_, err := NewOrchestrator(h, nil, WithMaxMessageSize(10), WithAckTimeout(0), WithNodeByteBudget(0), WithFrameTimeout(-time.Second))
	if err == nil {
		t.Fatal("NewOrchestrator accepted four bad options")
	}
	for _, want := range []string{"max message size", "ack timeout", "node byte budget", "frame timeout"} {
		if !bytes.Contains([]byte(err.Error()), []byte(want)) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
}

// shortIdle shortens the idle timeouts, for the janitor tests.
func shortIdle(out, in time.Duration) OrchestratorOption {
	return func(c *orchConfig) { c.outIdle, c.inIdle = out, in }
}

// orchEventually polls cond until it holds or d passes.
func orchEventually(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("%s did not happen within %s", what, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOrchestratorIdleOutgoingStreamIsClosedAndReopened(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	server := startOrchestrator(t, serverH, newOrchHandler())
	client := startOrchestrator(t, clientH, nil, shortIdle(100*time.Millisecond, time.Hour))
	p := &orchPair{clientH: clientH}
	if _, err := client.Delegate(orchCtx(t), serverH.ID(), p.task("x")); err != nil {
		t.Fatal(err)
	}
	outStreams := func() int {
		client.mu.RLock()
		defer client.mu.RUnlock()
		return len(client.out)
	}
	orchEventually(t, 5*time.Second, "closing the idle stream", func() bool { return outStreams() == 0 })
	inStreams := func() int {
		server.mu.RLock()
		defer server.mu.RUnlock()
		return len(server.in)
	}
	orchEventually(t, 5*time.Second, "the executor dropping its side", func() bool { return inStreams() == 0 })
	if _, err := client.Delegate(orchCtx(t), serverH.ID(), p.task("y")); err != nil {
		t.Fatalf("Delegate after the idle close: %v", err)
	}
	if got := client.streamsOpened.Load(); got != 2 {
		t.Fatalf("streams opened = %d, want 2", got)
	}
}

func TestOrchestratorIdleIncomingStreamIsReset(t *testing.T) {
	serverH, rogue := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, rogue, serverH)
	startOrchestrator(t, serverH, newOrchHandler(), shortIdle(time.Hour, 100*time.Millisecond))
	s := rawTaskStream(t, rogue, serverH.ID())
	if _, err := s.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
		t.Fatalf("read on an idle stream = %v, want a reset", err)
	}
}

func TestOrchestratorCapsStreamsPerPeer(t *testing.T) {
	serverH, rogue := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, rogue, serverH)
	server := startOrchestrator(t, serverH, newOrchHandler())
	max := server.cfg.maxStreamsPerPeer
	// A cancel for a task the server never saw: harmless, and it makes the
	// lazily negotiated stream reach the server.
	hello := envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Cancel{Cancel: &cortexv1.TaskCancel{TaskId: make([]byte, 32)}}})
	for range max {
		if _, err := rawTaskStream(t, rogue, serverH.ID()).Write(hello); err != nil {
			t.Fatal(err)
		}
	}
	orchEventually(t, 5*time.Second, "accepting the first streams", func() bool { return server.streamsAccepted.Load() == int64(max) })
	extra := rawTaskStream(t, rogue, serverH.ID())
	if _, err := extra.Write(hello); err != nil {
		t.Fatal(err)
	}
	if _, err := extra.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
		t.Fatalf("read on stream %d = %v, want a reset", max+1, err)
	}
}

func TestOrchestratorRefusesADuplicatePendingTask(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	task := p.task("x")
	go func() { _, _ = p.client.Delegate(orchCtx(t), p.serverH.ID(), task) }()
	orchRecv(t, p.handler.tasks, 5*time.Second, "the first copy reaching the executor")
	dup := *task
	if _, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), &dup); !errors.Is(err, errDuplicate) {
		t.Fatalf("second Delegate of the same task = %v, want errDuplicate", err)
	}
}

func TestOrchestratorTaskDeadlineCutsTheAckWaitShort(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	serverH.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) { _, _ = io.Copy(io.Discard, s) })
	client := startOrchestrator(t, clientH, nil, WithAckTimeout(time.Minute), func(c *orchConfig) { c.resultGrace = 50 * time.Millisecond })
	p := &orchPair{clientH: clientH}
	task := p.task("x")
	task.Deadline = time.Now().Add(200 * time.Millisecond)
	start := time.Now()
	_, err := client.Delegate(context.Background(), serverH.ID(), task)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Delegate = %v, want context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("a 200ms task waited %s for its ack", d)
	}
}
