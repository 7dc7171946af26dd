package grid

import (
	"bytes"
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// These tests run real hosts on loopback, whose I/O testing/synctest
// cannot fake, so they use short heartbeat intervals and bound every wait;
// the lease arithmetic itself is tested without a network.

const (
	testHeartbeat   = 100 * time.Millisecond
	testLeaseMisses = 3
)

func leaseOpts() []OrchestratorOption {
	return []OrchestratorOption{WithHeartbeatInterval(testHeartbeat), WithLeaseMisses(testLeaseMisses)}
}

// newLeasePair is newOrchPair with short heartbeats on both sides.
func newLeasePair(tb testing.TB) *orchPair {
	tb.Helper()
	p := &orchPair{clientH: newOrchHost(tb), serverH: newOrchHost(tb), handler: newOrchHandler()}
	connectOrchHosts(tb, p.clientH, p.serverH)
	p.server = startOrchestrator(tb, p.serverH, p.handler, leaseOpts()...)
	p.client = startOrchestrator(tb, p.clientH, nil, leaseOpts()...)
	return p
}

// rawPeer is a hand-driven executor: a test answers each frame a
// requester sends as it likes, from any goroutine.
type rawPeer struct {
	mu sync.Mutex
	s  network.Stream
	w  *wire.Writer
}

func (r *rawPeer) send(tb testing.TB, envs ...*cortexv1.Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, env := range envs {
		if err := r.w.WriteMsg(env); err != nil {
			return // the requester reset the stream: fine for these tests
		}
	}
	_ = r.w.Flush()
}

// serveRawExecutor makes h answer task streams by calling onFrame for
// every frame read; each new stream is sent on the returned channel.
func serveRawExecutor(tb testing.TB, h host.Host, onFrame func(*rawPeer, *cortexv1.Envelope)) <-chan *rawPeer {
	tb.Helper()
	streams := make(chan *rawPeer, 4)
	h.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) {
		rp := &rawPeer{s: s, w: wire.NewWriter(s)}
		streams <- rp
		r := wire.NewReader(s, wire.DefaultMaxMessageSize)
		for {
			var env cortexv1.Envelope
			if err := r.ReadMsg(&env); err != nil {
				_ = s.Reset()
				return
			}
			onFrame(rp, &env)
		}
	})
	return streams
}

func ackEnv(id []byte) *cortexv1.Envelope {
	return &cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: id, Accepted: true}}}
}

func heartbeatEnv(ids ...[]byte) *cortexv1.Envelope {
	return &cortexv1.Envelope{Body: &cortexv1.Envelope_Heartbeat{Heartbeat: &cortexv1.TaskHeartbeat{
		TaskIds: ids, IntervalMs: uint32(testHeartbeat.Milliseconds()),
	}}}
}

// delegateAsync runs Delegate on its own goroutine.
func delegateAsync(tb testing.TB, o *Orchestrator, p peer.ID, t *RemoteTask) <-chan error {
	errc := make(chan error, 1)
	go func() {
		_, err := o.Delegate(orchCtx(tb), p, t)
		errc <- err
	}()
	return errc
}

func TestOrchestratorLongTaskKeepsItsLeaseThroughHeartbeats(t *testing.T) {
	p := newLeasePair(t)
	const took = 5 * testHeartbeat // longer than the lease of 3 intervals
	p.handler.set(func(_ peer.ID, task *RemoteTask, reply func(*RemoteResult)) error {
		time.AfterFunc(took, func() { reply(&RemoteResult{ID: task.ID, Success: true, Output: task.Input}) })
		return nil
	})
	start := time.Now()
	res, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("long"))
	if err != nil {
		t.Fatalf("Delegate of a task running %s with a lease of %d×%s: %v", took, testLeaseMisses, testHeartbeat, err)
	}
	if string(res.Output) != "long" {
		t.Fatalf("result = %+v, want the echo", res)
	}
	if d := time.Since(start); d < took {
		t.Fatalf("Delegate returned after %s, before the task finished", d)
	}
}

func TestOrchestratorSlowButHeartbeatingTaskWaitsForItsDeadline(t *testing.T) {
	p := newLeasePair(t)
	holdTasks(p.handler)
	p.client.cfg.resultGrace = 50 * time.Millisecond
	task := p.task("slow")
	task.Deadline = time.Now().Add(12 * testHeartbeat) // four leases
	_, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), task)
	if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrLeaseExpired) || errors.Is(err, ErrPeerGone) {
		t.Fatalf("Delegate = %v, want only context.DeadlineExceeded: a slow peer is not a dead one", err)
	}
}

func TestOrchestratorPeerThatAcksAndGoesSilentLosesTheLease(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	serveRawExecutor(t, serverH, func(rp *rawPeer, env *cortexv1.Envelope) {
		if req := env.GetRequest(); req != nil {
			rp.send(t, ackEnv(req.TaskId)) // and then nothing, ever
		}
	})
	client := startOrchestrator(t, clientH, nil, leaseOpts()...)
	p := &orchPair{clientH: clientH}
	task := p.task("x") // 30 s deadline
	start := time.Now()
	_, err := client.Delegate(orchCtx(t), serverH.ID(), task)
	elapsed := time.Since(start)
	if !errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("Delegate = %v, want ErrLeaseExpired", err)
	}
	// Nothing at all came on the stream: the peer is unreachable.
	if !errors.Is(err, ErrPeerGone) {
		t.Fatalf("Delegate = %v, want it to wrap ErrPeerGone too: the whole stream went silent", err)
	}
	lease := testLeaseMisses * testHeartbeat
	if elapsed < lease || elapsed > 5*time.Second {
		t.Fatalf("lease of %s expired after %s, want between the lease and 5s (the deadline is 30s)", lease, elapsed)
	}
}

func TestOrchestratorPeerAliveButSilentAboutATaskLosesItsLease(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	var mu sync.Mutex
	var kept []byte // the one task the peer keeps reporting
	cancels := make(chan []byte, 4)
	streams := serveRawExecutor(t, serverH, func(rp *rawPeer, env *cortexv1.Envelope) {
		switch {
		case env.GetRequest() != nil:
			req := env.GetRequest()
			mu.Lock()
			if string(req.Input) == "kept" {
				kept = req.TaskId
			}
			mu.Unlock()
			rp.send(t, ackEnv(req.TaskId))
		case env.GetCancel() != nil:
			cancels <- env.GetCancel().TaskId
		}
	})
	client := startOrchestrator(t, clientH, nil, leaseOpts()...)
	p := &orchPair{clientH: clientH}
	keptTask, lostTask := p.task("kept"), p.task("lost")
	keptErr := delegateAsync(t, client, serverH.ID(), keptTask)
	rp := orchRecv(t, streams, 5*time.Second, "the task stream opening")
	stop := make(chan struct{})
	beats := make(chan struct{})
	go func() { // heartbeats that list only the kept task
		defer close(beats)
		tick := time.NewTicker(testHeartbeat)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				mu.Lock()
				id := kept
				mu.Unlock()
				if id != nil {
					rp.send(t, heartbeatEnv(id))
				}
			}
		}
	}()
	t.Cleanup(func() { close(stop); <-beats })

	start := time.Now()
	_, err := client.Delegate(orchCtx(t), serverH.ID(), lostTask)
	elapsed := time.Since(start)
	if !errors.Is(err, ErrLeaseExpired) || errors.Is(err, ErrPeerGone) {
		t.Fatalf("Delegate of the unreported task = %v, want ErrLeaseExpired without ErrPeerGone", err)
	}
	if lease := testLeaseMisses * testHeartbeat; elapsed < lease || elapsed > 5*time.Second {
		t.Fatalf("lease of %s expired after %s", lease, elapsed)
	}
	if got := orchRecv(t, cancels, 5*time.Second, "the cancel reaching the peer"); !bytes.Equal(got, lostTask.ID[:]) {
		t.Fatalf("peer got a cancel for %x, want %s", got, lostTask.ID.Short())
	}
	// The stream stays, and the task the peer keeps reporting is still
	// awaited: its result is delivered.
	rp.send(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: keptTask.ID[:], Success: true}}})
	if err := orchRecv(t, keptErr, 5*time.Second, "the kept task's Delegate returning"); err != nil {
		t.Fatalf("Delegate of the reported task = %v, want its result", err)
	}
	if got := client.streamsOpened.Load(); got != 1 {
		t.Fatalf("client opened %d streams, want 1: an alive peer's stream is kept", got)
	}
}

func TestOrchestratorKilledConnectionFailsAtOnceWithPeerGone(t *testing.T) {
	p := newOrchPair(t) // default 5 s heartbeats: a 15 s lease
	holdTasks(p.handler)
	errc := delegateAsync(t, p.client, p.serverH.ID(), p.task("x"))
	orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	start := time.Now()
	if err := p.clientH.Network().ClosePeer(p.serverH.ID()); err != nil {
		t.Fatal(err)
	}
	err := orchRecv(t, errc, 5*time.Second, "Delegate returning")
	if !errors.Is(err, ErrPeerGone) || errors.Is(err, ErrLeaseExpired) {
		t.Fatalf("Delegate = %v, want ErrPeerGone and no lease expiry", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Fatalf("a closed connection took %s to fail the task, want under 1s (the lease is 15s)", d)
	}
}

func TestOrchestratorCloseFlushesQueuedResults(t *testing.T) {
	p := newOrchPair(t)
	replies := holdTasks(p.handler)
	const n = 64
	tasks := make([]*RemoteTask, n)
	errs := make([]<-chan error, n)
	for i := range tasks {
		tasks[i] = p.task(string(rune('a' + i%26)))
		errs[i] = delegateAsync(t, p.client, p.serverH.ID(), tasks[i])
	}
	for range n {
		orchRecv(t, p.handler.tasks, 5*time.Second, "a task reaching the executor")
	}
	// The results are queued on the executor's writer, and Close comes
	// right after, as when a draining daemon shuts down.
	for _, task := range tasks {
		reply, _ := replies.Load(task.ID)
		reply.(func(*RemoteResult))(&RemoteResult{ID: task.ID, Success: true, Output: task.Input})
	}
	if err := p.server.Close(); err != nil {
		t.Fatal(err)
	}
	for i := range tasks {
		if err := orchRecv(t, errs[i], 5*time.Second, "Delegate returning"); err != nil {
			t.Fatalf("task %d of %d: Delegate = %v, want the result sent before Close", i+1, n, err)
		}
	}
}

func TestOrchestratorCloseRejectsRequestsWhileFlushing(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	errc := delegateAsync(t, p.client, p.serverH.ID(), p.task("running"))
	orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	p.server.draining.Store(true) // as Close does before it flushes
	_, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("late"))
	var rej *RejectError
	if !errors.As(err, &rej) || rej.Reason != RejectShuttingDown {
		t.Fatalf("Delegate while the executor closes = %v, want a shutting-down rejection", err)
	}
	if err := p.server.Close(); err != nil {
		t.Fatal(err)
	}
	if err := orchRecv(t, errc, 5*time.Second, "Delegate returning"); !errors.Is(err, ErrPeerGone) {
		t.Fatalf("Delegate of a task the executor dropped at Close = %v, want ErrPeerGone at once", err)
	}
}

func TestOrchestratorExecutorHeartbeatsOnlyWhileTasksRun(t *testing.T) {
	serverH, rogue := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, rogue, serverH)
	handler := newOrchHandler()
	replies := holdTasks(handler)
	startOrchestrator(t, serverH, handler, leaseOpts()...)
	s := rawTaskStream(t, rogue, serverH.ID())
	// A reader with the smallest frame cap a peer may set: every
	// heartbeat frame must fit it.
	r := wire.NewReader(s, minMaxMessageSize)
	const n = 70 // three heartbeat frames' worth
	want := make(map[TaskID]bool, n)
	var frames []byte
	for i := range n {
		id := NewTaskID()
		want[id] = true
		frames = append(frames, envelopeFrame(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: id[:], SkillId: "text.echo", Input: []byte{byte(i)}, InputKind: cortexv1.InputKind_INPUT_KIND_RAW,
			DeadlineUnixMs: time.Now().Add(time.Minute).UnixMilli(), Attempt: 1, Requester: []byte(rogue.ID()),
		}}})...)
	}
	if _, err := s.Write(frames); err != nil {
		t.Fatal(err)
	}
	listed := make(map[TaskID]bool, n)
	acks := 0
	for len(listed) < n {
		var env cortexv1.Envelope
		if err := r.ReadMsg(&env); err != nil {
			t.Fatalf("read: %v (acks %d, tasks listed %d)", err, acks, len(listed))
		}
		switch {
		case env.GetAck() != nil:
			acks++
		case env.GetHeartbeat() != nil:
			hb := env.GetHeartbeat()
			if hb.IntervalMs != uint32(testHeartbeat.Milliseconds()) {
				t.Fatalf("heartbeat declares %d ms, want %s", hb.IntervalMs, testHeartbeat)
			}
			for _, b := range hb.TaskIds {
				id, err := TaskIDFromBytes(b)
				if err != nil || !want[id] {
					t.Fatalf("heartbeat lists %x, which was never sent", b)
				}
				listed[id] = true
			}
		default:
			t.Fatalf("unexpected frame %v", &env)
		}
	}
	// Answer every task: the heartbeats stop.
	replies.Range(func(k, v any) bool {
		v.(func(*RemoteResult))(&RemoteResult{ID: k.(TaskID), Success: true})
		return true
	})
	results := 0
	for results < n {
		var env cortexv1.Envelope
		if err := r.ReadMsg(&env); err != nil {
			t.Fatalf("read: %v after %d results", err, results)
		}
		if env.GetResult() != nil {
			results++
		}
	}
	_ = s.SetReadDeadline(time.Now().Add(5 * testHeartbeat))
	var env cortexv1.Envelope
	err := r.ReadMsg(&env)
	if err == nil {
		t.Fatalf("the executor sent %v with no task running", &env)
	}
	if !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, context.DeadlineExceeded) && !isTimeout(err) {
		t.Fatalf("read on a quiet stream = %v, want a timeout", err)
	}
}

func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

func TestOrchestratorLeaseFollowsTheLongerInterval(t *testing.T) {
	o := &Orchestrator{cfg: defaultOrchConfig()}
	o.cfg.heartbeat, o.cfg.leaseMisses = 100*time.Millisecond, 3
	cases := []struct {
		name string
		peer time.Duration
		want uint32 // lease checks of 50 ms
	}{
		{"an unknown peer interval uses ours", 0, 6},
		{"a shorter peer interval uses ours", 10 * time.Millisecond, 6},
		{"an equal peer interval", 100 * time.Millisecond, 6},
		{"a longer peer interval is honoured", 1 * time.Second, 60},
		{"an interval between checks rounds up", 120 * time.Millisecond, 9},
		{"an absurd interval is capped", 240 * time.Hour, 3 * uint32(maxHeartbeatInterval/(50*time.Millisecond))},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := o.leaseChecks(tc.peer); got != tc.want {
				t.Fatalf("leaseChecks(%s) = %d, want %d", tc.peer, got, tc.want)
			}
		})
	}
}

func TestOrchestratorHeartbeatOptionsAreValidated(t *testing.T) {
	h := newOrchHost(t)
	cases := []struct {
		name string
		opt  OrchestratorOption
		ok   bool
	}{
		{"the defaults are valid", func(*orchConfig) {}, true},
		{"a 1 ms heartbeat is too short", WithHeartbeatInterval(time.Millisecond), false},
		{"an hour's heartbeat is too long", WithHeartbeatInterval(time.Hour), false},
		{"zero lease misses is refused", WithLeaseMisses(0), false},
		{"a thousand lease misses is refused", WithLeaseMisses(1000), false},
		{"one lease miss is allowed", WithLeaseMisses(1), true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewOrchestrator(h, nil, tc.opt)
			if (err == nil) != tc.ok {
				t.Fatalf("NewOrchestrator = %v, want ok=%v", err, tc.ok)
			}
		})
	}
}

func TestOrchestratorHeartbeatFrameFitsTheSmallestCap(t *testing.T) {
	ids := make([][]byte, maxHeartbeatIDs)
	for i := range ids {
		ids[i] = make([]byte, len(TaskID{}))
	}
	f := appendHeartbeatFrame(nil, ids, ^uint32(0))
	r := wire.NewReader(bytes.NewReader(f), minMaxMessageSize)
	if _, err := r.ReadFrame(); err != nil {
		t.Fatalf("a full heartbeat frame of %d bytes does not pass a %d-byte cap: %v", len(f), minMaxMessageSize, err)
	}
}
