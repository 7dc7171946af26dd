package test

// A task-protocol client written from docs/protocol.md alone: it uses the
// generated cortexv1 types, google.golang.org/protobuf and go-libp2p, and
// nothing of cortexd's own beyond the protocol ID constant. It talks to a
// cortexd process built from this tree, as a second implementation would.

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// specMaxFrame is the largest frame body the protocol allows (section 3.2).
const specMaxFrame = 16 << 20

// specClient is one requester's task stream to one node (section 14). Its
// reader goroutine dispatches the node's frames to the pending deliveries
// by task ID; Close resets the stream and waits for the reader.
type specClient struct {
	host host.Host
	node peer.ID
	s    network.Stream

	wmu sync.Mutex // one frame at a time on the stream

	mu      sync.Mutex
	pending map[[32]byte]chan *cortexv1.Envelope // acks and results, in arrival order

	heartbeats chan *cortexv1.TaskHeartbeat
	progress   sync.Map     // task ID -> *atomic.Int64: progress reports (4.7) in bounds
	skipped    atomic.Int64 // frames the client did not understand
	readDone   chan error   // the reader's end: nil for a clean EOF
}

// newSpecClient makes a host, connects it to the node at addr (a multiaddr
// ending in /p2p/<id>) and opens one task stream; t.Cleanup closes it all.
func newSpecClient(t testing.TB, addr string) *specClient {
	t.Helper()
	ma, err := multiaddr.NewMultiaddr(addr)
	if err != nil {
		t.Fatalf("node address %q: %v", addr, err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		t.Fatalf("node address %q: %v", addr, err)
	}
	h, err := libp2p.New(
		libp2p.NoListenAddrs, // a client need not listen
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
	)
	if err != nil {
		t.Fatalf("new client host: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := h.Connect(ctx, *ai); err != nil {
		t.Fatalf("connect to %s: %v", addr, err)
	}
	s, err := h.NewStream(ctx, ai.ID, wire.ProtocolTask)
	if err != nil {
		t.Fatalf("open %s stream: %v", wire.ProtocolTask, err)
	}
	c := &specClient{
		host: h, node: ai.ID, s: s,
		pending:    make(map[[32]byte]chan *cortexv1.Envelope),
		heartbeats: make(chan *cortexv1.TaskHeartbeat, 256),
		readDone:   make(chan error, 1),
	}
	go func() { c.readDone <- c.readLoop() }()
	t.Cleanup(c.close)
	return c
}

// close resets the stream, which ends the reader, and waits for it.
func (c *specClient) close() {
	_ = c.s.Reset()
	<-c.readDone
	c.readDone <- nil // for a second close
}

// readLoop reads frames until the stream ends (section 3.2, step 4 of 14).
func (c *specClient) readLoop() error {
	br := bufio.NewReader(c.s)
	for {
		n, err := binary.ReadUvarint(br)
		switch {
		case errors.Is(err, io.EOF):
			return nil // the node closed between frames
		case err != nil:
			return fmt.Errorf("read frame length: %w", err)
		case n > specMaxFrame:
			_ = c.s.Reset()
			return fmt.Errorf("frame of %d bytes declared, over the %d-byte limit", n, specMaxFrame)
		}
		body := make([]byte, n)
		if _, err := io.ReadFull(br, body); err != nil {
			return fmt.Errorf("read frame body of %d bytes: %w", n, err)
		}
		env := &cortexv1.Envelope{}
		if err := proto.Unmarshal(body, env); err != nil {
			c.skipped.Add(1)
			continue
		}
		switch b := env.Body.(type) {
		case *cortexv1.Envelope_Ack:
			c.dispatch(b.Ack.GetTaskId(), env)
		case *cortexv1.Envelope_Result:
			c.dispatch(b.Result.GetTaskId(), env)
		case *cortexv1.Envelope_Heartbeat:
			select {
			case c.heartbeats <- b.Heartbeat:
			default: // nobody is looking at heartbeats this long
			}
		case *cortexv1.Envelope_Progress:
			// Section 4.7: optional; counted per task while in bounds.
			p := b.Progress
			if f := p.GetFraction(); len(p.GetTaskId()) != 32 || !(f >= 0 && f <= 1) || len(p.GetMessage()) > 200 {
				c.skipped.Add(1)
				continue
			}
			n, _ := c.progress.LoadOrStore([32]byte(p.GetTaskId()), new(atomic.Int64))
			n.(*atomic.Int64).Add(1)
		default: // no body, one we do not handle, or one from the future
			c.skipped.Add(1)
		}
	}
}

func (c *specClient) dispatch(id []byte, env *cortexv1.Envelope) {
	if len(id) != 32 {
		c.skipped.Add(1)
		return
	}
	c.mu.Lock()
	ch := c.pending[[32]byte(id)]
	c.mu.Unlock()
	if ch == nil {
		c.skipped.Add(1) // not ours, or answered already
		return
	}
	select {
	case ch <- env:
	default:
		c.skipped.Add(1) // more than any delivery may get
	}
}

// progressOf returns how many progress reports d got.
func (c *specClient) progressOf(d *delivery) int64 {
	n, ok := c.progress.Load(d.id)
	if !ok {
		return 0
	}
	return n.(*atomic.Int64).Load()
}

// send writes env as one frame: its length as a uvarint, then its bytes.
func (c *specClient) send(env *cortexv1.Envelope) error {
	body, err := proto.Marshal(env)
	if err != nil {
		return err
	}
	frame := binary.AppendUvarint(make([]byte, 0, len(body)+binary.MaxVarintLen64), uint64(len(body)))
	frame = append(frame, body...)
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err = c.s.Write(frame)
	return err
}

// delivery is one pending (task ID, attempt).
type delivery struct {
	id      [32]byte
	attempt uint32
	events  chan *cortexv1.Envelope
}

// request registers a delivery of req, attempt 1 with a fresh random ID,
// and sends it (step 6 of section 14).
func (c *specClient) request(t testing.TB, req *cortexv1.TaskRequest) *delivery {
	t.Helper()
	d := &delivery{attempt: 1, events: make(chan *cortexv1.Envelope, 4)}
	if _, err := rand.Read(d.id[:]); err != nil {
		t.Fatal(err)
	}
	req.TaskId, req.Attempt, req.Requester = d.id[:], d.attempt, []byte(c.host.ID())
	if req.DeadlineUnixMs == 0 {
		req.DeadlineUnixMs = time.Now().Add(time.Minute).UnixMilli()
	}
	c.mu.Lock()
	c.pending[d.id] = d.events
	c.mu.Unlock()
	if err := c.send(&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: req}}); err != nil {
		t.Fatalf("send request: %v", err)
	}
	return d
}

// cancel sends a TaskCancel for d.
func (c *specClient) cancel(t testing.TB, d *delivery) {
	t.Helper()
	env := &cortexv1.Envelope{Body: &cortexv1.Envelope_Cancel{Cancel: &cortexv1.TaskCancel{TaskId: d.id[:], Attempt: d.attempt}}}
	if err := c.send(env); err != nil {
		t.Fatalf("send cancel: %v", err)
	}
}

// next returns d's next ack or result, failing the test if none comes
// within wait or the stream ends.
func (c *specClient) next(t testing.TB, d *delivery, wait time.Duration) *cortexv1.Envelope {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	select {
	case env := <-d.events:
		return env
	case err := <-c.readDone:
		c.readDone <- err
		t.Fatalf("task stream ended while waiting for task %x: %v", d.id[:4], err)
	case <-timer.C:
		t.Fatalf("no ack or result for task %x within %s", d.id[:4], wait)
	}
	return nil
}

// answer waits for d's answer (section 5.1): a result, alone or after an
// accepting ack, or a rejecting ack. It returns the ack (nil if none came)
// and the result (nil for a rejection).
func (c *specClient) answer(t testing.TB, d *delivery, wait time.Duration) (*cortexv1.TaskAck, *cortexv1.TaskResult) {
	t.Helper()
	var ack *cortexv1.TaskAck
	for {
		switch b := c.next(t, d, wait).Body.(type) {
		case *cortexv1.Envelope_Ack:
			if ack != nil {
				t.Fatalf("task %x: a second ack %v after %v", d.id[:4], b.Ack, ack)
			}
			ack = b.Ack
			checkAttempt(t, "ack", b.Ack.GetAttempt(), d.attempt)
			if !ack.GetAccepted() {
				return ack, nil
			}
		case *cortexv1.Envelope_Result:
			checkAttempt(t, "result", b.Result.GetAttempt(), d.attempt)
			return ack, b.Result
		}
	}
}

// checkAttempt applies section 5.2: an answer carries the request's
// attempt, or 0 from a sender older than the field.
func checkAttempt(t testing.TB, what string, got, want uint32) {
	t.Helper()
	if got != 0 && got != want {
		t.Errorf("%s carries attempt %d, want %d (or 0)", what, got, want)
	}
}

// awaitHeartbeat waits for a heartbeat listing d and returns it.
func (c *specClient) awaitHeartbeat(t testing.TB, d *delivery, wait time.Duration) *cortexv1.TaskHeartbeat {
	t.Helper()
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case hb := <-c.heartbeats:
			for _, id := range hb.GetTaskIds() {
				if bytes.Equal(id, d.id[:]) {
					return hb
				}
			}
		case <-timer.C:
			t.Fatalf("no heartbeat listed task %x within %s", d.id[:4], wait)
			return nil
		}
	}
}

// specHeartbeat is the node's heartbeat interval in TestSpecClient.
const specHeartbeat = 200 * time.Millisecond

// TestSpecClient runs a cortexd daemon and drives it with specClient over
// one task stream: a built-in skill runs to success, a repeat of an
// answered request gets the recorded result, a made-up skill is rejected as
// UNKNOWN_SKILL, and a running task reports heartbeats and is canceled.
func TestSpecClient(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs a cortexd process")
	}
	bin := cortexdBinary(t)
	repo := initDaemonRepo(t, bin, "echo, debug.sleep")
	cfg := daemonConfig("echo, debug.sleep") + "tasks:\n  heartbeat_interval: " + specHeartbeat.String() + "\n"
	if err := os.WriteFile(filepath.Join(repo, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, bin, repo)
	c := newSpecClient(t, daemonLoopbackAddr(t, repoClient(t, repo)))

	// The node is a public one and this client a stranger to it: at most
	// two tasks in flight and a few requests a second (section 6.2), so
	// the subtests run one task at a time.
	var rejected *delivery
	t.Run("echo runs to success", func(t *testing.T) {
		in := []byte("hello, spec")
		d := c.request(t, &cortexv1.TaskRequest{SkillId: "echo", Input: in, InputKind: cortexv1.InputKind_INPUT_KIND_RAW, Priority: 64})
		ack, res := c.answer(t, d, 20*time.Second)
		if res == nil {
			t.Fatalf("echo rejected: %v %q", ack.GetReason(), ack.GetMessage())
		}
		if !res.GetSuccess() || !bytes.Equal(res.GetOutput(), in) {
			t.Fatalf("echo result: success %v, output %q, code %v %q; want success and output %q",
				res.GetSuccess(), res.GetOutput(), res.GetErrorCode(), res.GetErrorMessage(), in)
		}
		if res.GetErrorCode() != cortexv1.ErrorCode_ERROR_CODE_UNSPECIFIED {
			t.Errorf("successful result has error code %v", res.GetErrorCode())
		}
		if res.GetExecTimeUs() < 0 {
			t.Errorf("exec_time_us %d is negative", res.GetExecTimeUs())
		}
	})

	t.Run("a repeat of an answered request gets the same result, not a second run", func(t *testing.T) {
		req := &cortexv1.TaskRequest{SkillId: "debug.sleep", Input: []byte(`{"ms": 30}`), InputKind: cortexv1.InputKind_INPUT_KIND_JSON}
		d := c.request(t, req)
		_, first := c.answer(t, d, 20*time.Second)
		if first == nil || !first.GetSuccess() {
			t.Fatalf("debug.sleep did not succeed: %v", first)
		}
		// At once: before the daemon's store has written the first result
		// (write-behind, a few ms), the answer comes from memory.
		// The same (task ID, attempt) again, as a requester unsure whether
		// its request got through would send it (section 5.3).
		if err := c.send(&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: req}}); err != nil {
			t.Fatalf("resend request: %v", err)
		}
		ack, again := c.answer(t, d, 20*time.Second)
		switch {
		case again == nil:
			t.Fatalf("the repeat was rejected: %v %q", ack.GetReason(), ack.GetMessage())
		case ack != nil:
			t.Errorf("the repeat got an ack before its result; a recorded result answers alone")
		case !again.GetSuccess() || !bytes.Equal(again.GetOutput(), first.GetOutput()):
			t.Errorf("the repeat's result (success %v, output %q) differs from the first (output %q)", again.GetSuccess(), again.GetOutput(), first.GetOutput())
		case again.GetExecTimeUs() != first.GetExecTimeUs():
			t.Errorf("the repeat ran again: exec time %d µs, the first run's %d µs", again.GetExecTimeUs(), first.GetExecTimeUs())
		}
	})

	t.Run("a made-up skill is rejected as UNKNOWN_SKILL", func(t *testing.T) {
		d := c.request(t, &cortexv1.TaskRequest{SkillId: "spec.no-such-skill", Input: []byte("{}"), InputKind: cortexv1.InputKind_INPUT_KIND_JSON})
		ack, res := c.answer(t, d, 20*time.Second)
		switch {
		case res != nil:
			t.Fatalf("got a result for an unknown skill: %v", res)
		case ack.GetReason() != cortexv1.RejectReason_REJECT_REASON_UNKNOWN_SKILL:
			t.Fatalf("rejected with %v %q, want REJECT_REASON_UNKNOWN_SKILL", ack.GetReason(), ack.GetMessage())
		case ack.GetMessage() == "":
			t.Errorf("rejection has no message")
		}
		rejected = d
	})

	t.Run("a running task sends heartbeats and is canceled", func(t *testing.T) {
		d := c.request(t, &cortexv1.TaskRequest{SkillId: "debug.sleep", Input: []byte(`{"ms": 60000}`), InputKind: cortexv1.InputKind_INPUT_KIND_JSON,
			DeadlineUnixMs: time.Now().Add(2 * time.Minute).UnixMilli()})
		// A minute of sleep cannot be ready within the ack delay: the
		// accepting ack comes first.
		switch b := c.next(t, d, 20*time.Second).Body.(type) {
		case *cortexv1.Envelope_Ack:
			if !b.Ack.GetAccepted() {
				t.Fatalf("debug.sleep rejected: %v %q", b.Ack.GetReason(), b.Ack.GetMessage())
			}
			checkAttempt(t, "ack", b.Ack.GetAttempt(), d.attempt)
		default:
			t.Fatalf("first answer to a minute-long task is %T, want an accepting ack", b)
		}
		hb := c.awaitHeartbeat(t, d, 20*specHeartbeat)
		if got := time.Duration(hb.GetIntervalMs()) * time.Millisecond; got != specHeartbeat {
			t.Errorf("heartbeat declares interval %s, want the node's %s", got, specHeartbeat)
		}
		// debug.sleep reports progress every 100 ms (section 16).
		for end := time.Now().Add(5 * time.Second); c.progressOf(d) == 0 && time.Now().Before(end); {
			time.Sleep(20 * time.Millisecond)
		}
		if c.progressOf(d) == 0 {
			t.Error("a running debug.sleep sent no progress report in 5 s")
		}
		start := time.Now()
		c.cancel(t, d)
		_, res := c.answer(t, d, 10*time.Second)
		if res == nil {
			t.Fatal("a canceled task was rejected instead of answered")
		}
		if res.GetSuccess() || res.GetErrorCode() != cortexv1.ErrorCode_ERROR_CODE_CANCELED {
			t.Fatalf("canceled task's result: success %v, code %v %q; want ERROR_CODE_CANCELED",
				res.GetSuccess(), res.GetErrorCode(), res.GetErrorMessage())
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("the cancel took %s to answer", took)
		}
	})

	// A rejection is the whole answer: nothing more came for that task.
	if rejected != nil {
		select {
		case env := <-rejected.events:
			t.Errorf("after its rejection, the unknown-skill task got %v", env)
		default:
		}
	}
	if n := c.skipped.Load(); n != 0 {
		t.Errorf("the client skipped %d frames it could not place", n)
	}
}

// TestSpecExampleFrames checks that the frames shown in hex in section 13
// of docs/protocol.md are what the generated code encodes for the messages
// the text describes, in the order it shows them.
func TestSpecExampleFrames(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	var shown []string
	for rest := string(doc); ; {
		_, block, ok := strings.Cut(rest, "```hex\n")
		if !ok {
			break
		}
		block, rest, _ = strings.Cut(block, "```")
		shown = append(shown, strings.Join(strings.Fields(block), ""))
	}

	id := make([]byte, 32)
	for i := range id {
		id[i] = byte(i + 1)
	}
	key, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	if err != nil {
		t.Fatal(err)
	}
	requester, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := requester.String(), "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"; got != want {
		t.Errorf("example requester is %s, the doc says %s", got, want)
	}
	deadline := time.Date(2027, 1, 1, 0, 0, 0, 0, time.UTC).UnixMilli()
	examples := []struct {
		name string
		env  *cortexv1.Envelope
	}{
		{"request", &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: id, SkillId: "echo", Input: []byte("hi"), InputKind: cortexv1.InputKind_INPUT_KIND_RAW,
			Priority: 64, DeadlineUnixMs: deadline, Attempt: 1, Requester: []byte(requester)}}}},
		{"result", &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{
			TaskId: id, Success: true, Output: []byte("hi"), ExecTimeUs: 12, Attempt: 1}}}},
		{"accepting ack", &cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{
			TaskId: id, Accepted: true, Attempt: 1}}}},
		{"rejecting ack", &cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{
			TaskId: id, Reason: cortexv1.RejectReason_REJECT_REASON_UNKNOWN_SKILL, Attempt: 1}}}},
		{"cancel", &cortexv1.Envelope{Body: &cortexv1.Envelope_Cancel{Cancel: &cortexv1.TaskCancel{
			TaskId: id, Attempt: 1}}}},
	}
	if len(shown) != len(examples) {
		names := make([]string, len(examples))
		for i, ex := range examples {
			names[i] = ex.name
		}
		t.Fatalf("docs/protocol.md shows %d hex frames, want %d (%s, in that order)", len(shown), len(examples), strings.Join(names, ", "))
	}
	for i, ex := range examples {
		body, err := proto.Marshal(ex.env)
		if err != nil {
			t.Fatal(err)
		}
		want := hex.EncodeToString(append(binary.AppendUvarint(nil, uint64(len(body))), body...))
		if shown[i] != want {
			t.Errorf("hex frame %d (%s) in docs/protocol.md is\n%s\nbut the generated code encodes\n%s", i+1, ex.name, shown[i], want)
		}
		// Read back as a client would: the frame is one Envelope.
		var got cortexv1.Envelope
		if err := proto.Unmarshal(body, &got); err != nil || !proto.Equal(&got, ex.env) {
			t.Errorf("%s does not round-trip: %v", ex.name, err)
		}
	}
}

// TestSpecSkillKey derives the DHT key of echo's providers by the rule of
// section 11 of docs/protocol.md and checks it against the key the doc
// shows.
func TestSpecSkillKey(t *testing.T) {
	doc, err := os.ReadFile(filepath.Join("..", "docs", "protocol.md"))
	if err != nil {
		t.Fatal(err)
	}
	h, err := mh.Sum([]byte("cortex/skill/echo"), mh.SHA2_256, -1)
	if err != nil {
		t.Fatal(err)
	}
	key := cid.NewCidV1(cid.Raw, h).String()
	if !strings.Contains(string(doc), "`"+key+"`") {
		t.Errorf("docs/protocol.md does not show echo's provider key %s", key)
	}
}
