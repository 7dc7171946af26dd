package wire_test

import (
	"bytes"
	"errors"
	"math"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// toProto converts a decoded Envelope into the generated type. Empty
// byte fields become nil, as proto.Unmarshal leaves them.
func toProto(e *wire.Envelope) *cortexv1.Envelope {
	nb := func(b []byte) []byte {
		if len(b) == 0 {
			return nil
		}
		return append([]byte(nil), b...)
	}
	switch e.Kind {
	case wire.KindRequest:
		r := &e.Request
		return &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: nb(r.TaskID), SkillId: string(r.SkillID), SkillVersion: string(r.SkillVersion), Input: nb(r.Input),
			InputKind: cortexv1.InputKind(r.InputKind), Priority: r.Priority, DeadlineUnixMs: r.DeadlineUnixMs,
			MinTrust: r.MinTrust, Attempt: r.Attempt, Requester: nb(r.Requester), ModuleSha256: nb(r.ModuleSHA256), NoCache: r.NoCache,
		}}}
	case wire.KindAck:
		a := &e.Ack
		return &cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{
			TaskId: nb(a.TaskID), Accepted: a.Accepted, Reason: cortexv1.RejectReason(a.Reason), Message: string(a.Message),
			RetryAfterMs: a.RetryAfterMs, Attempt: a.Attempt,
		}}}
	case wire.KindResult:
		r := &e.Result
		return &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{
			TaskId: nb(r.TaskID), Success: r.Success, Output: nb(r.Output), ErrorCode: cortexv1.ErrorCode(r.ErrorCode),
			ErrorMessage: string(r.ErrorMessage), ExecTimeUs: r.ExecTimeUs, Executor: nb(r.Executor), Attempt: r.Attempt, Cached: r.Cached,
		}}}
	case wire.KindCancel:
		return &cortexv1.Envelope{Body: &cortexv1.Envelope_Cancel{Cancel: &cortexv1.TaskCancel{
			TaskId: nb(e.Cancel.TaskID), Attempt: e.Cancel.Attempt,
		}}}
	case wire.KindHeartbeat:
		hb := &cortexv1.TaskHeartbeat{IntervalMs: e.Heartbeat.IntervalMs}
		for _, id := range e.Heartbeat.TaskIDs {
			hb.TaskIds = append(hb.TaskIds, append([]byte{}, id...))
		}
		return &cortexv1.Envelope{Body: &cortexv1.Envelope_Heartbeat{Heartbeat: hb}}
	case wire.KindProgress:
		p := &e.Progress
		return &cortexv1.Envelope{Body: &cortexv1.Envelope_Progress{Progress: &cortexv1.TaskProgress{
			TaskId: nb(p.TaskID), Attempt: p.Attempt, Fraction: p.Fraction, Message: string(p.Message),
		}}}
	}
	return &cortexv1.Envelope{}
}

// hasUnknown reports whether m or its body kept unknown fields.
func hasUnknown(m *cortexv1.Envelope) bool {
	if len(m.ProtoReflect().GetUnknown()) > 0 {
		return true
	}
	var body proto.Message
	switch b := m.Body.(type) {
	case *cortexv1.Envelope_Request:
		body = b.Request
	case *cortexv1.Envelope_Ack:
		body = b.Ack
	case *cortexv1.Envelope_Result:
		body = b.Result
	case *cortexv1.Envelope_Cancel:
		body = b.Cancel
	case *cortexv1.Envelope_Heartbeat:
		body = b.Heartbeat
	case *cortexv1.Envelope_Progress:
		body = b.Progress
	default:
		return false
	}
	return len(body.ProtoReflect().GetUnknown()) > 0
}

// checkCodec holds the hand codec to the generated code on one frame
// body: both decoders accept or refuse it, agree on what it says, count
// unknown fields where the generated code keeps some, and encode what
// they decoded to the same bytes.
func checkCodec(t *testing.T, b []byte) {
	t.Helper()
	var m cortexv1.Envelope
	protoErr := proto.Unmarshal(b, &m)
	var e wire.Envelope
	handErr := wire.DecodeEnvelope(b, &e)
	if (protoErr == nil) != (handErr == nil) {
		t.Fatalf("body %x: proto.Unmarshal error %v, DecodeEnvelope error %v", b, protoErr, handErr)
	}
	if handErr != nil {
		if !errors.Is(handErr, wire.ErrMalformed) {
			t.Fatalf("body %x: DecodeEnvelope error %v does not wrap ErrMalformed", b, handErr)
		}
		return
	}
	if hasUnknown(&m) && e.Unknown == 0 {
		t.Fatalf("body %x: the generated code kept unknown fields, DecodeEnvelope counted none", b)
	}
	var known cortexv1.Envelope
	if err := (proto.UnmarshalOptions{DiscardUnknown: true}).Unmarshal(b, &known); err != nil {
		t.Fatal(err)
	}
	got := toProto(&e)
	if !proto.Equal(got, &known) {
		t.Fatalf("body %x: DecodeEnvelope says\n%v\nproto.Unmarshal says\n%v", b, got, &known)
	}
	want, err := proto.MarshalOptions{Deterministic: true}.Marshal(&known)
	if err != nil {
		t.Fatal(err)
	}
	frame := wire.AppendEnvelopeFrame(nil, &e)
	n, k := protowire.ConsumeVarint(frame)
	if k < 0 || int(n) != len(frame)-k {
		t.Fatalf("body %x: AppendEnvelopeFrame wrote a length prefix of %d for a body of %d bytes", b, n, len(frame)-k)
	}
	if !bytes.Equal(frame[k:], want) {
		t.Fatalf("body %x: AppendEnvelopeFrame encodes\n%x\nproto.Marshal encodes\n%x", b, frame[k:], want)
	}
}

// codecSeeds are valid and tricky envelope bodies.
func codecSeeds(tb testing.TB) [][]byte {
	tb.Helper()
	marshal := func(m *cortexv1.Envelope) []byte {
		b, err := proto.Marshal(m)
		if err != nil {
			tb.Fatal(err)
		}
		return b
	}
	id := bytes.Repeat([]byte{7}, 32)
	req := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
		TaskId: id, SkillId: "text.echo", SkillVersion: "1.0.0", Input: []byte("hi"), InputKind: 2, Priority: 7,
		DeadlineUnixMs: 1_900_000_000_000, MinTrust: 0.25, Attempt: 2, Requester: []byte("peer"),
	}}})
	wasmReq := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
		TaskId: id, SkillId: "text.upper", InputKind: 2, DeadlineUnixMs: 1_900_000_000_000, Attempt: 1,
		ModuleSha256: bytes.Repeat([]byte{0xab}, 32), NoCache: true,
	}}})
	shortModule := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
		TaskId: id, ModuleSha256: []byte{1, 2, 3},
	}}})
	negTrust := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{MinTrust: math.Copysign(0, -1)}}})
	negKind := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{InputKind: -1}}})
	ack := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{
		TaskId: id, Reason: 11, Message: "over budget", RetryAfterMs: 1500, Attempt: 3,
	}}})
	res := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{
		TaskId: id, Success: true, Output: []byte("out"), ErrorCode: -3, ErrorMessage: "héllo", ExecTimeUs: 1500,
		Executor: []byte("peer"), Attempt: 1, Cached: true,
	}}})
	cancel := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Cancel{Cancel: &cortexv1.TaskCancel{TaskId: id, Attempt: 4}}})
	hb := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Heartbeat{Heartbeat: &cortexv1.TaskHeartbeat{
		TaskIds: [][]byte{id, {}, {1, 2, 3}}, IntervalMs: 5000,
	}}})
	prog := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Progress{Progress: &cortexv1.TaskProgress{
		TaskId: id, Attempt: 2, Fraction: 0.5, Message: "resizing: 2 of 4",
	}}})
	progNeg := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Progress{Progress: &cortexv1.TaskProgress{
		TaskId: id, Fraction: math.Copysign(0, -1),
	}}})
	progNaN := marshal(&cortexv1.Envelope{Body: &cortexv1.Envelope_Progress{Progress: &cortexv1.TaskProgress{
		TaskId: id, Fraction: math.NaN(), Attempt: 1,
	}}})
	tag := func(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }
	field := func(num protowire.Number, v []byte) []byte {
		return protowire.AppendBytes(tag(num, protowire.BytesType), v)
	}
	// A future peer: a new field in a request, a new message type.
	futureField := append(append([]byte{}, req...), field(1, protowire.AppendVarint(tag(42, protowire.VarintType), 9))...)
	futureType := field(17, field(1, id))
	wrongType := protowire.AppendVarint(tag(1, protowire.VarintType), 1)
	group := append(tag(12, protowire.StartGroupType), tag(12, protowire.EndGroupType)...)
	badUTF8 := field(1, field(2, []byte("\xff")))
	return [][]byte{
		req, negTrust, negKind, ack, res, cancel, hb, nil,
		futureField, futureType,
		append(append([]byte{}, hb...), hb...),     // repeated heartbeats merge
		append(append([]byte{}, hb...), cancel...), // a cancel replaces a heartbeat
		append(append([]byte{}, req...), req...),   // a repeated body merges
		append(append([]byte{}, req...), ack...),   // another body replaces it
		append(append([]byte{}, wrongType...), cancel...),
		append(append([]byte{}, group...), ack...),
		badUTF8,
		wasmReq, shortModule, // module_sha256: any length decodes; the grid checks it
		{0x0a, 0x05, 0x08},       // truncated body
		{0x00},                   // field number zero
		{0x0c},                   // an end group with no start
		{0x0a, 0x02, 0x28, 0xff}, // truncated varint in a body
		prog, progNeg, progNaN,
		append(append([]byte{}, prog...), cancel...),      // a cancel replaces a progress report
		field(6, field(4, []byte("\xff"))),                // a progress message that is not UTF-8
		field(6, append(tag(3, protowire.VarintType), 1)), // a fraction of the wrong wire type
	}
}

func TestEnvelopeCodecAgreesWithGeneratedCode(t *testing.T) {
	for _, b := range codecSeeds(t) {
		checkCodec(t, b)
	}
}

// FuzzEnvelopeCodec checks the hand codec against the generated code on
// arbitrary frame bodies (see checkCodec).
func FuzzEnvelopeCodec(f *testing.F) {
	for _, b := range codecSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkCodec(t, b)
	})
}

func TestEnvelopeCodecCountsAFuturePeersFields(t *testing.T) {
	seeds := codecSeeds(t)
	var e wire.Envelope
	if err := wire.DecodeEnvelope(seeds[8], &e); err != nil || e.Kind != wire.KindRequest || e.Unknown != 1 {
		t.Fatalf("a request with a new field: kind %d, %d unknown, %v; want a request with 1 unknown field", e.Kind, e.Unknown, err)
	}
	if err := wire.DecodeEnvelope(seeds[9], &e); err != nil || e.Kind != wire.KindNone || e.Unknown != 1 {
		t.Fatalf("a new message type: kind %d, %d unknown, %v; want no body and 1 unknown field", e.Kind, e.Unknown, err)
	}
}

func TestProgressFrameRoundTrips(t *testing.T) {
	id := bytes.Repeat([]byte{9}, 32)
	in := wire.Progress{TaskID: id, Attempt: 3, Fraction: 0.75, Message: []byte("stage 3 of 4")}
	frame := wire.AppendProgressFrame(nil, &in)
	_, k := protowire.ConsumeVarint(frame)
	var e wire.Envelope
	if err := wire.DecodeEnvelope(frame[k:], &e); err != nil {
		t.Fatal(err)
	}
	got := e.Progress
	if e.Kind != wire.KindProgress || !bytes.Equal(got.TaskID, id) || got.Attempt != 3 || got.Fraction != 0.75 || string(got.Message) != "stage 3 of 4" {
		t.Fatalf("decoded kind %d %+v, want a progress report %+v", e.Kind, got, in)
	}
	var m cortexv1.Envelope
	if err := proto.Unmarshal(frame[k:], &m); err != nil || m.GetProgress().GetFraction() != 0.75 {
		t.Fatalf("proto.Unmarshal: %v, %v", &m, err)
	}
}

func BenchmarkEnvelopeCodec(b *testing.B) {
	req := &wire.Request{TaskID: bytes.Repeat([]byte{7}, 32), SkillID: []byte("text.echo"), Input: make([]byte, 128),
		InputKind: 2, Priority: 100, DeadlineUnixMs: 1_900_000_000_000, Attempt: 1, Requester: make([]byte, 38)}
	var buf []byte
	var e wire.Envelope
	b.ReportAllocs()
	for b.Loop() {
		buf = wire.AppendRequestFrame(buf[:0], req)
		_, k := protowire.ConsumeVarint(buf)
		if err := wire.DecodeEnvelope(buf[k:], &e); err != nil {
			b.Fatal(err)
		}
	}
}
