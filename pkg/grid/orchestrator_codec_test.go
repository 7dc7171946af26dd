package grid

import (
	"bytes"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

func orchPeerID(tb testing.TB) peer.ID {
	tb.Helper()
	_, pub, err := crypto.GenerateEd25519Key(nil)
	if err != nil {
		tb.Fatal(err)
	}
	id, err := peer.IDFromPublicKey(pub)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// protoFrame is the frame the generated code produces for m.
func protoFrame(tb testing.TB, m *cortexv1.Envelope) []byte {
	tb.Helper()
	b, err := wire.AppendFrame(nil, m)
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

func TestOrchestratorCodecEncodersMatchProtoMarshal(t *testing.T) {
	requester := orchPeerID(t)
	id, id2 := NewTaskID(), NewTaskID()
	deadline := time.UnixMilli(1_900_000_123_456)
	manyIDBytes := make([][]byte, maxHeartbeatIDs)
	for i := range manyIDBytes {
		id := NewTaskID()
		manyIDBytes[i] = id[:]
	}
	cases := []struct {
		name string
		fast []byte
		want *cortexv1.Envelope
	}{
		{"a full request", appendRequestFrame(nil, &RemoteTask{
			ID: id, Skill: "image.resize", Version: "1.2.0", Input: []byte(`{"w":800}`), InputKind: InputJSON,
			Priority: 255, Deadline: deadline, MinTrust: 0.5, Attempt: 3, Requester: requester,
		}, []byte(requester)), &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: id[:], SkillId: "image.resize", SkillVersion: "1.2.0", Input: []byte(`{"w":800}`),
			InputKind: cortexv1.InputKind_INPUT_KIND_JSON, Priority: 255, DeadlineUnixMs: deadline.UnixMilli(),
			MinTrust: 0.5, Attempt: 3, Requester: []byte(requester),
		}}}},
		{"a request with every optional field zero", appendRequestFrame(nil, &RemoteTask{
			ID: id, Skill: "a", InputKind: InputRaw, Deadline: deadline,
		}, nil), &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: id[:], SkillId: "a", InputKind: cortexv1.InputKind_INPUT_KIND_RAW, DeadlineUnixMs: deadline.UnixMilli(),
		}}}},
		{"a request with a minimum trust of minus zero", appendRequestFrame(nil, &RemoteTask{
			ID: id, Skill: "a", InputKind: InputRaw, Deadline: deadline, MinTrust: math.Copysign(0, -1),
		}, nil), &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: id[:], SkillId: "a", InputKind: cortexv1.InputKind_INPUT_KIND_RAW, DeadlineUnixMs: deadline.UnixMilli(),
			MinTrust: math.Copysign(0, -1),
		}}}},
		{"a request with a 100 KiB input", appendRequestFrame(nil, &RemoteTask{
			ID: id, Skill: "a", Input: bytes.Repeat([]byte{1}, 100<<10), InputKind: InputRaw, Deadline: deadline,
		}, nil), &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: id[:], SkillId: "a", Input: bytes.Repeat([]byte{1}, 100<<10), InputKind: cortexv1.InputKind_INPUT_KIND_RAW,
			DeadlineUnixMs: deadline.UnixMilli(),
		}}}},
		{"an accepting ack", appendAckFrame(nil, &id, 2, nil),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: id[:], Accepted: true, Attempt: 2}}}},
		{"a rejecting ack", appendAckFrame(nil, &id, 1, &RejectError{Reason: RejectRateLimited, Message: "slow down", RetryAfter: 1500 * time.Millisecond}),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{
				TaskId: id[:], Reason: cortexv1.RejectReason_REJECT_REASON_RATE_LIMITED, Message: "slow down", RetryAfterMs: 1500, Attempt: 1,
			}}}},
		{"an over-budget ack keeps its reason", appendAckFrame(nil, &id, 0, &RejectError{Reason: RejectOverBudget, RetryAfter: time.Second}),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{
				TaskId: id[:], Reason: cortexv1.RejectReason_REJECT_REASON_OVER_BUDGET, RetryAfterMs: 1000,
			}}}},
		{"a rejecting ack with an unknown reason goes out as unspecified", appendAckFrame(nil, &id, 0, &RejectError{Reason: 99}),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: id[:]}}}},
		{"a successful result", appendResultFrame(nil, &id, 3, &RemoteResult{Success: true, Output: []byte("out"), ExecTime: 1500 * time.Microsecond}, []byte(requester)),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{
				TaskId: id[:], Success: true, Output: []byte("out"), ExecTimeUs: 1500, Executor: []byte(requester), Attempt: 3,
			}}}},
		{"a failed result with a negative error code", appendResultFrame(nil, &id, 0, &RemoteResult{ErrorCode: -3, ErrorMessage: "héllo"}, nil),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{
				TaskId: id[:], ErrorCode: -3, ErrorMessage: "héllo",
			}}}},
		{"a result whose message is not UTF-8 goes out repaired", appendResultFrame(nil, &id, 0, &RemoteResult{ErrorMessage: "bad\xffbyte"}, nil),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: id[:], ErrorMessage: "bad\uFFFDbyte"}}}},
		{"a cancel", appendCancelFrame(nil, &id, 4),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Cancel{Cancel: &cortexv1.TaskCancel{TaskId: id[:], Attempt: 4}}}},
		{"a heartbeat for two tasks", appendHeartbeatFrame(nil, [][]byte{id[:], id2[:]}, 5000),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Heartbeat{Heartbeat: &cortexv1.TaskHeartbeat{
				TaskIds: [][]byte{id[:], id2[:]}, IntervalMs: 5000,
			}}}},
		{"a heartbeat with no interval", appendHeartbeatFrame(nil, [][]byte{id[:]}, 0),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Heartbeat{Heartbeat: &cortexv1.TaskHeartbeat{TaskIds: [][]byte{id[:]}}}}},
		{"a full heartbeat frame", appendHeartbeatFrame(nil, manyIDBytes, math.MaxUint32),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Heartbeat{Heartbeat: &cortexv1.TaskHeartbeat{
				TaskIds: manyIDBytes, IntervalMs: math.MaxUint32,
			}}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if want := protoFrame(t, tc.want); !bytes.Equal(tc.fast, want) {
				t.Fatalf("frame differs from proto.Marshal's:\n got %x\nwant %x", tc.fast, want)
			}
		})
	}
}

// FuzzOrchestratorDecodeEnvelope runs whatever wire.DecodeEnvelope
// accepts through the orchestrator's validation: no panic, and what
// passes is within bounds. (wire.FuzzEnvelopeCodec holds the codec itself
// to the generated code.)
func FuzzOrchestratorDecodeEnvelope(f *testing.F) {
	id := NewTaskID()
	body := func(fr []byte) []byte { // strip the frame length
		_, n := protowire.ConsumeVarint(fr)
		return fr[n:]
	}
	f.Add(body(appendRequestFrame(nil, &RemoteTask{ID: id, Skill: "text.echo", Input: []byte("hi"), InputKind: InputRaw,
		Priority: 7, Deadline: time.UnixMilli(1_800_000_060_000), MinTrust: 0.25, Attempt: 1}, []byte(orchPeerID(f)))))
	f.Add(body(appendResultFrame(nil, &id, 1, &RemoteResult{Success: true, Output: []byte("hi"), ErrorMessage: "x"}, nil)))
	f.Add(body(appendAckFrame(nil, &id, 1, &RejectError{Reason: RejectQueueFull, Message: "full", RetryAfter: time.Second})))
	f.Add(body(appendCancelFrame(nil, &id, 1)))
	f.Add(body(appendHeartbeatFrame(nil, [][]byte{id[:], {1, 2, 3}}, 5000)))
	from := orchPeerID(f)
	now := time.UnixMilli(1_800_000_000_000)
	f.Fuzz(func(t *testing.T, b []byte) {
		var e wire.Envelope
		if wire.DecodeEnvelope(b, &e) != nil {
			return
		}
		switch e.Kind {
		case wire.KindRequest:
			var c strCache
			var task RemoteTask
			if _, err := decodeRequest(&e.Request, &c, now, from, &task); err == nil {
				if validateOutgoing(&task) != nil {
					t.Fatalf("a request that passed validation would not be sent back out: %+v", task)
				}
				if task.Requester != from {
					t.Fatalf("a request's requester is %s, want the stream's peer %s", task.Requester, from)
				}
			}
		case wire.KindResult:
			var r RemoteResult
			if _, err := decodeResult(&e.Result, from, &r); err == nil && (!orchValidUTF8(r.ErrorMessage) || len(r.Output) > wire.MaxTaskOutput) {
				t.Fatal("a decoded result carries invalid UTF-8 or too much output")
			} else if err != nil && !errors.Is(err, ErrInvalidResult) {
				t.Fatalf("decodeResult error %v does not wrap ErrInvalidResult", err)
			}
		case wire.KindAck:
			if _, rej, err := decodeAck(&e.Ack); err == nil && rej != nil && (rej.Reason > maxRejectReason || rej.RetryAfter > maxRetryAfter) {
				t.Fatalf("a decoded rejection is out of range: %+v", rej)
			}
		case wire.KindHeartbeat:
			o := &Orchestrator{cfg: defaultOrchConfig(), log: orchQuietLogger()}
			out := &outStream{o: o, pending: map[TaskID]*call{}}
			out.onHeartbeat(&e.Heartbeat)
			allIDs := !slices.ContainsFunc(e.Heartbeat.TaskIDs, func(b []byte) bool { return len(b) != len(TaskID{}) })
			if (o.stats.malformed.Load() == 0) != allIDs {
				t.Fatalf("onHeartbeat counted %d malformed for IDs %x", o.stats.malformed.Load(), e.Heartbeat.TaskIDs)
			}
			if max := o.leaseChecks(maxHeartbeatInterval); out.lease > max {
				t.Fatalf("a declared interval of %d ms set a lease of %d checks, above the cap %d", e.Heartbeat.IntervalMs, out.lease, max)
			}
		}
	})
}

func orchValidUTF8(s string) bool { return strings.ToValidUTF8(s, "") == s }

// requestEnvelope encodes r and decodes it with the hand decoder.
func requestEnvelope(tb testing.TB, r *cortexv1.TaskRequest) *wire.Request {
	tb.Helper()
	b, err := proto.Marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: r}})
	if err != nil {
		tb.Fatal(err)
	}
	var e wire.Envelope
	if err := wire.DecodeEnvelope(b, &e); err != nil {
		tb.Fatal(err)
	}
	return &e.Request
}

func TestOrchestratorCodecRequestValidation(t *testing.T) {
	requester := orchPeerID(t)
	now := time.UnixMilli(1_800_000_000_000)
	good := func() *cortexv1.TaskRequest {
		id := NewTaskID()
		return &cortexv1.TaskRequest{
			TaskId: id[:], SkillId: "text.echo", SkillVersion: "1.0.0", Input: []byte("in"),
			InputKind: cortexv1.InputKind_INPUT_KIND_JSON, Priority: 130, DeadlineUnixMs: now.Add(time.Minute).UnixMilli(),
			MinTrust: 0.5, Attempt: 2, Requester: []byte(requester),
		}
	}
	cases := []struct {
		name   string
		modify func(*cortexv1.TaskRequest)
		want   RejectReason // RejectUnspecified with ok: accepted
		ok     bool
	}{
		{"a well-formed request is accepted", func(*cortexv1.TaskRequest) {}, 0, true},
		{"a skill ID of exactly 128 bytes is accepted", func(r *cortexv1.TaskRequest) { r.SkillId = strings.Repeat("a", 128) }, 0, true},
		{"a task ID of 31 bytes is malformed", func(r *cortexv1.TaskRequest) { r.TaskId = r.TaskId[:31] }, RejectMalformed, false},
		{"a zero task ID is malformed", func(r *cortexv1.TaskRequest) { r.TaskId = make([]byte, 32) }, RejectMalformed, false},
		{"a skill ID of 129 bytes is malformed", func(r *cortexv1.TaskRequest) { r.SkillId = strings.Repeat("a", 129) }, RejectMalformed, false},
		{"a version of 65 bytes is malformed", func(r *cortexv1.TaskRequest) { r.SkillVersion = strings.Repeat("1", 65) }, RejectMalformed, false},
		{"a priority of 300 is malformed", func(r *cortexv1.TaskRequest) { r.Priority = 300 }, RejectMalformed, false},
		{"an unspecified input kind is malformed", func(r *cortexv1.TaskRequest) { r.InputKind = 0 }, RejectMalformed, false},
		{"a NaN minimum trust is malformed", func(r *cortexv1.TaskRequest) { r.MinTrust = math.NaN() }, RejectMalformed, false},
		{"a negative minimum trust is malformed", func(r *cortexv1.TaskRequest) { r.MinTrust = -0.1 }, RejectMalformed, false},
		{"an attempt above 2^31 is malformed", func(r *cortexv1.TaskRequest) { r.Attempt = math.MaxUint32 }, RejectMalformed, false},
		{"a missing requester is ignored", func(r *cortexv1.TaskRequest) { r.Requester = nil }, 0, true},
		{"a requester that is not a peer ID is ignored", func(r *cortexv1.TaskRequest) { r.Requester = []byte("nobody") }, 0, true},
		{"an input over the wire's per-task cap is too large", func(r *cortexv1.TaskRequest) { r.Input = make([]byte, wire.MaxTaskInput+1) }, RejectTooLarge, false},
		{"a negative deadline is malformed", func(r *cortexv1.TaskRequest) { r.DeadlineUnixMs = -5 }, RejectMalformed, false},
		{"a deadline two days ahead is malformed", func(r *cortexv1.TaskRequest) { r.DeadlineUnixMs = now.Add(48 * time.Hour).UnixMilli() }, RejectMalformed, false},
		{"a module sha256 of 32 bytes is accepted", func(r *cortexv1.TaskRequest) { r.ModuleSha256 = make([]byte, 32) }, 0, true},
		{"a module sha256 of 31 bytes is malformed", func(r *cortexv1.TaskRequest) { r.ModuleSha256 = make([]byte, 31) }, RejectMalformed, false},
		{"a module sha256 of 33 bytes is malformed", func(r *cortexv1.TaskRequest) { r.ModuleSha256 = make([]byte, 33) }, RejectMalformed, false},
		{"a deadline that has passed is rejected as passed", func(r *cortexv1.TaskRequest) { r.DeadlineUnixMs = now.Add(-time.Second).UnixMilli() }, RejectDeadlinePassed, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := good()
			tc.modify(r)
			var c strCache
			var task RemoteTask
			reason, err := decodeRequest(requestEnvelope(t, r), &c, now, requester, &task)
			if tc.ok {
				if err != nil {
					t.Fatalf("decodeRequest: %v", err)
				}
				if task.Skill != r.SkillId || task.Requester != requester || task.Priority != uint8(r.Priority) ||
					task.Attempt != int(r.Attempt) || task.Deadline.UnixMilli() != r.DeadlineUnixMs || string(task.Input) != "in" {
					t.Fatalf("decoded task %+v does not match the request", &task)
				}
				return
			}
			if !errors.Is(err, errInvalidMessage) || reason != tc.want {
				t.Fatalf("decodeRequest = %v, reason %s; want errInvalidMessage, reason %s", err, reason, tc.want)
			}
		})
	}
}

func TestOrchestratorCodecRequestDecodingReusesStrings(t *testing.T) {
	requester := orchPeerID(t)
	now := time.Now()
	id := NewTaskID()
	e := requestEnvelope(t, &cortexv1.TaskRequest{
		TaskId: id[:], SkillId: "text.echo", Input: make([]byte, 200), InputKind: cortexv1.InputKind_INPUT_KIND_RAW,
		DeadlineUnixMs: now.Add(time.Minute).UnixMilli(), Requester: []byte(requester),
	})
	var c strCache
	var task RemoteTask
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := decodeRequest(e, &c, now, requester, &task); err != nil {
			t.Fatal(err)
		}
	})
	if allocs > 1 { // the input
		t.Fatalf("decoding a request from a known peer for a known skill took %v allocations, want 1", allocs)
	}
}

func TestOrchestratorCodecResultAndAckAreSanitized(t *testing.T) {
	from, claimed := orchPeerID(t), orchPeerID(t)
	id := NewTaskID()
	long := strings.Repeat("é", 1000) // 2000 bytes
	cases := []struct {
		name  string
		msg   *cortexv1.TaskResult
		check func(*RemoteResult) bool
	}{
		{"the executor is the stream's peer, not the claimed one",
			&cortexv1.TaskResult{TaskId: id[:], Success: true, Executor: []byte(claimed)},
			func(r *RemoteResult) bool { return r.Executor == from && r.Success }},
		{"an unknown error code becomes internal",
			&cortexv1.TaskResult{TaskId: id[:], ErrorCode: 42},
			func(r *RemoteResult) bool { return r.ErrorCode == CodeInternal }},
		{"a failure without a code becomes execution failed",
			&cortexv1.TaskResult{TaskId: id[:]},
			func(r *RemoteResult) bool { return r.ErrorCode == CodeExecutionFailed }},
		{"a long error message is cut on a rune boundary",
			&cortexv1.TaskResult{TaskId: id[:], ErrorCode: 1, ErrorMessage: long},
			func(r *RemoteResult) bool {
				return len(r.ErrorMessage) <= maxErrorMessageLen && strings.HasPrefix(long, r.ErrorMessage) && orchValidUTF8(r.ErrorMessage)
			}},
		{"a negative execution time becomes zero",
			&cortexv1.TaskResult{TaskId: id[:], Success: true, ExecTimeUs: -100},
			func(r *RemoteResult) bool { return r.ExecTime == 0 }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b, err := proto.Marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: tc.msg}})
			if err != nil {
				t.Fatal(err)
			}
			var e wire.Envelope
			if err := wire.DecodeEnvelope(b, &e); err != nil {
				t.Fatal(err)
			}
			r := &RemoteResult{}
			_, err = decodeResult(&e.Result, from, r)
			if err != nil || !tc.check(r) {
				t.Fatalf("decodeResult = %+v, %v", r, err)
			}
		})
	}
	t.Run("an ack with an unknown reason and a huge retry hint is clamped", func(t *testing.T) {
		b, err := proto.Marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{
			TaskId: id[:], Reason: 77, RetryAfterMs: math.MaxUint32,
		}}})
		if err != nil {
			t.Fatal(err)
		}
		var e wire.Envelope
		if err := wire.DecodeEnvelope(b, &e); err != nil {
			t.Fatal(err)
		}
		gotID, rej, err := decodeAck(&e.Ack)
		if err != nil || gotID != id || rej == nil || rej.Reason != RejectUnspecified || rej.RetryAfter != maxRetryAfter {
			t.Fatalf("decodeAck = %s, %+v, %v", gotID.Short(), rej, err)
		}
	})
}

func TestOrchestratorCodecTruncateUTF8(t *testing.T) {
	cases := []struct {
		name, in string
		n        int
		want     string
	}{
		{"a short valid string is kept", "héllo", 10, "héllo"},
		{"a cut inside a rune backs off to its start", "héllo", 2, "h"},
		{"invalid bytes are replaced", "a\xffb", 10, "a\uFFFDb"},
		{"an exact fit is kept", "abc", 3, "abc"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := truncateUTF8(tc.in, tc.n); got != tc.want {
				t.Fatalf("truncateUTF8(%q, %d) = %q, want %q", tc.in, tc.n, got, tc.want)
			}
		})
	}
}

func TestOrchestratorCodecRequestCarriesTheModuleHash(t *testing.T) {
	requester := orchPeerID(t)
	now := time.Now()
	out := &RemoteTask{ID: NewTaskID(), Skill: "text.upper", InputKind: InputRaw, Deadline: now.Add(time.Minute), Attempt: 1}
	for i := range out.ModuleSHA256 {
		out.ModuleSHA256[i] = byte(i + 1)
	}
	for _, tc := range []struct {
		name string
		hash [32]byte
	}{{"a wasm task's module hash arrives as sent", out.ModuleSHA256}, {"no module hash arrives as none", [32]byte{}}} {
		t.Run(tc.name, func(t *testing.T) {
			out.ModuleSHA256 = tc.hash
			frame := appendRequestFrame(nil, out, []byte(requester))
			_, k := protowire.ConsumeVarint(frame)
			var e wire.Envelope
			if err := wire.DecodeEnvelope(frame[k:], &e); err != nil {
				t.Fatal(err)
			}
			if tc.hash == ([32]byte{}) && e.Request.ModuleSHA256 != nil {
				t.Fatalf("a zero module hash went on the wire as %x", e.Request.ModuleSHA256)
			}
			var c strCache
			var in RemoteTask
			if _, err := decodeRequest(&e.Request, &c, now, requester, &in); err != nil {
				t.Fatal(err)
			}
			if in.ModuleSHA256 != tc.hash {
				t.Fatalf("module hash %x arrived as %x", tc.hash, in.ModuleSHA256)
			}
		})
	}
}
