package wire

import (
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The task stream's codec: cortex.v1.Envelope encoded and decoded by hand
// with protowire, with no reflection and no allocation, and byte slices
// that alias the frame instead of copies. The generated types in package
// cortexv1 remain the specification; FuzzEnvelopeCodec checks that this
// codec decodes exactly what proto.Unmarshal decodes and encodes exactly
// what proto.Marshal encodes.
//
// Adding a message takes the .proto, its struct here (fields, size,
// appendTo, set) and a line in Envelope.body.

// Kind says which body an Envelope carries; the values are the
// Envelope's field numbers. KindNone is an envelope with no body this
// version knows: an empty one, or one of a newer message type.
type Kind uint8

// Envelope bodies.
const (
	KindNone      Kind = 0
	KindRequest   Kind = 1
	KindAck       Kind = 2
	KindResult    Kind = 3
	KindCancel    Kind = 4
	KindHeartbeat Kind = 5
	KindProgress  Kind = 6
)

// Envelope is a decoded cortex.v1.Envelope. Only the body of Kind is
// meaningful. Byte slices alias the decoded frame and are valid only as
// long as it is.
type Envelope struct {
	Kind Kind
	// Unknown counts the fields DecodeEnvelope skipped, at any depth: a
	// field or message type of a newer version, or a known field number
	// with an unexpected wire type. They are not encoded again.
	Unknown int

	Request   Request
	Ack       Ack
	Result    Result
	Cancel    Cancel
	Heartbeat Heartbeat
	Progress  Progress
}

// Request is cortex.v1.TaskRequest. String fields are bytes, checked to
// be UTF-8 on decode.
type Request struct {
	TaskID         []byte
	SkillID        []byte
	SkillVersion   []byte
	Input          []byte
	InputKind      int32
	Priority       uint32
	DeadlineUnixMs int64
	MinTrust       float64
	Attempt        uint32
	Requester      []byte
	ModuleSHA256   []byte // empty or, to be valid, 32 bytes; checked by the grid
	NoCache        bool
}

// Ack is cortex.v1.TaskAck.
type Ack struct {
	TaskID       []byte
	Accepted     bool
	Reason       int32
	Message      []byte
	RetryAfterMs uint32
	Attempt      uint32
}

// Result is cortex.v1.TaskResult.
type Result struct {
	TaskID       []byte
	Success      bool
	Output       []byte
	ErrorCode    int32
	ErrorMessage []byte
	ExecTimeUs   int64
	Executor     []byte
	Attempt      uint32
	Cached       bool
}

// Cancel is cortex.v1.TaskCancel.
type Cancel struct {
	TaskID  []byte
	Attempt uint32
}

// Heartbeat is cortex.v1.TaskHeartbeat.
type Heartbeat struct {
	TaskIDs    [][]byte // its backing array is reused across decodes
	IntervalMs uint32
}

// Progress is cortex.v1.TaskProgress.
type Progress struct {
	TaskID   []byte
	Attempt  uint32
	Fraction float64
	Message  []byte
}

// MaxProgressMessage is the most bytes a TaskProgress message carries;
// receivers drop a report with a longer one.
const MaxProgressMessage = 200

// message is what each body implements.
type message interface {
	size() int
	appendTo(b []byte) []byte
	// set stores one decoded field and reports whether it is known.
	set(num protowire.Number, v fieldValue) (bool, error)
}

// body returns the body of kind k in e, or nil for an unknown kind. It is
// the one place that lists the message types.
func (e *Envelope) body(k Kind) message {
	switch k {
	case KindRequest:
		return &e.Request
	case KindAck:
		return &e.Ack
	case KindResult:
		return &e.Result
	case KindCancel:
		return &e.Cancel
	case KindHeartbeat:
		return &e.Heartbeat
	case KindProgress:
		return &e.Progress
	}
	return nil
}

// reset empties e, keeping the heartbeat IDs' backing array.
func (e *Envelope) reset() {
	ids := e.Heartbeat.TaskIDs
	clear(ids)
	*e = Envelope{}
	e.Heartbeat.TaskIDs = ids[:0]
}

// resetBody empties the body of kind k, for a body that replaces another.
func (e *Envelope) resetBody(k Kind) {
	switch k {
	case KindRequest:
		e.Request = Request{}
	case KindAck:
		e.Ack = Ack{}
	case KindResult:
		e.Result = Result{}
	case KindCancel:
		e.Cancel = Cancel{}
	case KindHeartbeat:
		clear(e.Heartbeat.TaskIDs)
		e.Heartbeat = Heartbeat{TaskIDs: e.Heartbeat.TaskIDs[:0]}
	case KindProgress:
		e.Progress = Progress{}
	}
}

// DecodeEnvelope decodes a frame body into e with proto3 semantics:
// unknown fields and fields of an unexpected wire type are skipped (and
// counted in e.Unknown), a repeated scalar keeps its last value, a
// repeated body merges, and a different body replaces the one before. It
// returns an error wrapping ErrMalformed if b is not a valid Envelope;
// e then holds what was decoded before the fault (a request's task ID,
// say, which comes first).
func DecodeEnvelope(b []byte, e *Envelope) error {
	e.reset()
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: envelope tag: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		var m message
		if typ == protowire.BytesType && num < 256 {
			m = e.body(Kind(num))
		}
		if m != nil {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: envelope body: %w", ErrMalformed, protowire.ParseError(n))
			}
			b = b[n:]
			if e.Kind != Kind(num) {
				e.resetBody(Kind(num))
				e.Kind = Kind(num)
			}
			if err := decodeMessage(v, m, &e.Unknown); err != nil {
				return err
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("%w: envelope field %d: %w", ErrMalformed, num, protowire.ParseError(n))
		}
		b = b[n:]
		e.Unknown++
	}
	return nil
}

// errCodeFieldNumber is protowire's (unexported) error code for an
// invalid field number; protowire.ParseError turns it into its error.
const errCodeFieldNumber = -2

// consumeTag is protowire.ConsumeTag that also refuses field numbers
// above the largest valid one, as proto.Unmarshal does.
func consumeTag(b []byte) (protowire.Number, protowire.Type, int) {
	num, typ, n := protowire.ConsumeTag(b)
	if n >= 0 && num > protowire.MaxValidNumber {
		return 0, 0, errCodeFieldNumber
	}
	return num, typ, n
}

// fieldValue is one decoded field value of a scalar or bytes wire type.
type fieldValue struct {
	typ    protowire.Type
	varint uint64 // VarintType
	fixed  uint64 // Fixed64Type
	bytes  []byte // BytesType
}

// decodeMessage decodes the fields of one body message into m.
func decodeMessage(b []byte, m message, unknown *int) error {
	var v fieldValue
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: tag: %w", ErrMalformed, protowire.ParseError(n))
		}
		b = b[n:]
		v = fieldValue{typ: typ}
		into := m
		switch typ {
		case protowire.VarintType:
			v.varint, n = protowire.ConsumeVarint(b)
		case protowire.BytesType:
			v.bytes, n = protowire.ConsumeBytes(b)
		case protowire.Fixed64Type:
			v.fixed, n = protowire.ConsumeFixed64(b)
		default:
			n, into = protowire.ConsumeFieldValue(num, typ, b), nil
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %w", ErrMalformed, num, protowire.ParseError(n))
		}
		b = b[n:]
		known := false
		if into != nil {
			var err error
			if known, err = into.set(num, v); err != nil {
				return err
			}
		}
		if !known {
			*unknown++
		}
	}
	return nil
}

// Field setters: each returns whether num with v's wire type is a field
// of the message.

func setVarint[T ~uint32 | ~int32 | ~int64](dst *T, v fieldValue) bool {
	if v.typ != protowire.VarintType {
		return false
	}
	*dst = T(v.varint)
	return true
}

func setBool(dst *bool, v fieldValue) bool {
	if v.typ != protowire.VarintType {
		return false
	}
	*dst = v.varint != 0
	return true
}

func setBytes(dst *[]byte, v fieldValue) bool {
	if v.typ != protowire.BytesType {
		return false
	}
	*dst = v.bytes
	return true
}

// setString is setBytes for a proto3 string field, which must be UTF-8.
func setString(dst *[]byte, num protowire.Number, v fieldValue) (bool, error) {
	if v.typ != protowire.BytesType {
		return false, nil
	}
	if !utf8.Valid(v.bytes) {
		return true, fmt.Errorf("%w: field %d is not valid UTF-8", ErrMalformed, num)
	}
	*dst = v.bytes
	return true, nil
}

// Field numbers of proto/cortex/v1/task.proto.
const (
	fReqTaskID    = 1
	fReqSkill     = 2
	fReqVersion   = 3
	fReqInput     = 4
	fReqInputKind = 5
	fReqPriority  = 6
	fReqDeadline  = 7
	fReqMinTrust  = 8
	fReqAttempt   = 9
	fReqRequester = 10
	fReqModule    = 11
	fReqNoCache   = 12

	fAckTaskID     = 1
	fAckAccepted   = 2
	fAckReason     = 3
	fAckMessage    = 4
	fAckRetryAfter = 5
	fAckAttempt    = 6

	fResTaskID    = 1
	fResSuccess   = 2
	fResOutput    = 3
	fResErrorCode = 4
	fResErrorMsg  = 5
	fResExecTime  = 6
	fResExecutor  = 7
	fResAttempt   = 8
	fResCached    = 9

	fCancelTaskID  = 1
	fCancelAttempt = 2

	fHbTaskIDs  = 1
	fHbInterval = 2

	fProgTaskID   = 1
	fProgAttempt  = 2
	fProgFraction = 3
	fProgMessage  = 4
)

func (m *Request) set(num protowire.Number, v fieldValue) (bool, error) {
	switch num {
	case fReqTaskID:
		return setBytes(&m.TaskID, v), nil
	case fReqSkill:
		return setString(&m.SkillID, num, v)
	case fReqVersion:
		return setString(&m.SkillVersion, num, v)
	case fReqInput:
		return setBytes(&m.Input, v), nil
	case fReqInputKind:
		return setVarint(&m.InputKind, v), nil
	case fReqPriority:
		return setVarint(&m.Priority, v), nil
	case fReqDeadline:
		return setVarint(&m.DeadlineUnixMs, v), nil
	case fReqMinTrust:
		if v.typ != protowire.Fixed64Type {
			return false, nil
		}
		m.MinTrust = math.Float64frombits(v.fixed)
		return true, nil
	case fReqAttempt:
		return setVarint(&m.Attempt, v), nil
	case fReqRequester:
		return setBytes(&m.Requester, v), nil
	case fReqModule:
		return setBytes(&m.ModuleSHA256, v), nil
	case fReqNoCache:
		return setBool(&m.NoCache, v), nil
	}
	return false, nil
}

func (m *Ack) set(num protowire.Number, v fieldValue) (bool, error) {
	switch num {
	case fAckTaskID:
		return setBytes(&m.TaskID, v), nil
	case fAckAccepted:
		return setBool(&m.Accepted, v), nil
	case fAckReason:
		return setVarint(&m.Reason, v), nil
	case fAckMessage:
		return setString(&m.Message, num, v)
	case fAckRetryAfter:
		return setVarint(&m.RetryAfterMs, v), nil
	case fAckAttempt:
		return setVarint(&m.Attempt, v), nil
	}
	return false, nil
}

func (m *Result) set(num protowire.Number, v fieldValue) (bool, error) {
	switch num {
	case fResTaskID:
		return setBytes(&m.TaskID, v), nil
	case fResSuccess:
		return setBool(&m.Success, v), nil
	case fResOutput:
		return setBytes(&m.Output, v), nil
	case fResErrorCode:
		return setVarint(&m.ErrorCode, v), nil
	case fResErrorMsg:
		return setString(&m.ErrorMessage, num, v)
	case fResExecTime:
		return setVarint(&m.ExecTimeUs, v), nil
	case fResExecutor:
		return setBytes(&m.Executor, v), nil
	case fResAttempt:
		return setVarint(&m.Attempt, v), nil
	case fResCached:
		return setBool(&m.Cached, v), nil
	}
	return false, nil
}

func (m *Cancel) set(num protowire.Number, v fieldValue) (bool, error) {
	switch num {
	case fCancelTaskID:
		return setBytes(&m.TaskID, v), nil
	case fCancelAttempt:
		return setVarint(&m.Attempt, v), nil
	}
	return false, nil
}

func (m *Heartbeat) set(num protowire.Number, v fieldValue) (bool, error) {
	switch num {
	case fHbTaskIDs:
		if v.typ != protowire.BytesType {
			return false, nil
		}
		m.TaskIDs = append(m.TaskIDs, v.bytes) // repeated: every occurrence counts
		return true, nil
	case fHbInterval:
		return setVarint(&m.IntervalMs, v), nil
	}
	return false, nil
}

func (m *Progress) set(num protowire.Number, v fieldValue) (bool, error) {
	switch num {
	case fProgTaskID:
		return setBytes(&m.TaskID, v), nil
	case fProgAttempt:
		return setVarint(&m.Attempt, v), nil
	case fProgFraction:
		if v.typ != protowire.Fixed64Type {
			return false, nil
		}
		m.Fraction = math.Float64frombits(v.fixed)
		return true, nil
	case fProgMessage:
		return setString(&m.Message, num, v)
	}
	return false, nil
}

// Encoders. Fields go in number order, zero values left out, as
// proto.Marshal writes them.

func sizeBytes(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func sizeVarint(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func appendBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

func boolVarint(v bool) uint64 {
	if v {
		return 1
	}
	return 0
}

// enumVarint encodes an int32 as protobuf does: negative values take ten
// bytes.
func enumVarint(v int32) uint64 { return uint64(int64(v)) }

// doubleBits is a double field's encoding, 0 when it is left out (+0
// only, as proto3 does).
func doubleBits(v float64) uint64 {
	if v != 0 || math.Signbit(v) {
		return math.Float64bits(v)
	}
	return 0
}

// trustBits is MinTrust's encoding, 0 when it is left out (+0 only).
func (m *Request) trustBits() uint64 { return doubleBits(m.MinTrust) }

func (m *Request) size() int {
	n := sizeBytes(fReqTaskID, len(m.TaskID)) +
		sizeBytes(fReqSkill, len(m.SkillID)) +
		sizeBytes(fReqVersion, len(m.SkillVersion)) +
		sizeBytes(fReqInput, len(m.Input)) +
		sizeVarint(fReqInputKind, enumVarint(m.InputKind)) +
		sizeVarint(fReqPriority, uint64(m.Priority)) +
		sizeVarint(fReqDeadline, uint64(m.DeadlineUnixMs)) +
		sizeVarint(fReqAttempt, uint64(m.Attempt)) +
		sizeBytes(fReqRequester, len(m.Requester)) +
		sizeBytes(fReqModule, len(m.ModuleSHA256)) +
		sizeVarint(fReqNoCache, boolVarint(m.NoCache))
	if m.trustBits() != 0 {
		n += protowire.SizeTag(fReqMinTrust) + protowire.SizeFixed64()
	}
	return n
}

func (m *Request) appendTo(b []byte) []byte {
	b = appendBytes(b, fReqTaskID, m.TaskID)
	b = appendBytes(b, fReqSkill, m.SkillID)
	b = appendBytes(b, fReqVersion, m.SkillVersion)
	b = appendBytes(b, fReqInput, m.Input)
	b = appendVarint(b, fReqInputKind, enumVarint(m.InputKind))
	b = appendVarint(b, fReqPriority, uint64(m.Priority))
	b = appendVarint(b, fReqDeadline, uint64(m.DeadlineUnixMs))
	if bits := m.trustBits(); bits != 0 {
		b = protowire.AppendTag(b, fReqMinTrust, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, bits)
	}
	b = appendVarint(b, fReqAttempt, uint64(m.Attempt))
	b = appendBytes(b, fReqRequester, m.Requester)
	b = appendBytes(b, fReqModule, m.ModuleSHA256)
	return appendVarint(b, fReqNoCache, boolVarint(m.NoCache))
}

func (m *Ack) size() int {
	return sizeBytes(fAckTaskID, len(m.TaskID)) +
		sizeVarint(fAckAccepted, boolVarint(m.Accepted)) +
		sizeVarint(fAckReason, enumVarint(m.Reason)) +
		sizeBytes(fAckMessage, len(m.Message)) +
		sizeVarint(fAckRetryAfter, uint64(m.RetryAfterMs)) +
		sizeVarint(fAckAttempt, uint64(m.Attempt))
}

func (m *Ack) appendTo(b []byte) []byte {
	b = appendBytes(b, fAckTaskID, m.TaskID)
	b = appendVarint(b, fAckAccepted, boolVarint(m.Accepted))
	b = appendVarint(b, fAckReason, enumVarint(m.Reason))
	b = appendBytes(b, fAckMessage, m.Message)
	b = appendVarint(b, fAckRetryAfter, uint64(m.RetryAfterMs))
	return appendVarint(b, fAckAttempt, uint64(m.Attempt))
}

func (m *Result) size() int {
	return sizeBytes(fResTaskID, len(m.TaskID)) +
		sizeVarint(fResSuccess, boolVarint(m.Success)) +
		sizeBytes(fResOutput, len(m.Output)) +
		sizeVarint(fResErrorCode, enumVarint(m.ErrorCode)) +
		sizeBytes(fResErrorMsg, len(m.ErrorMessage)) +
		sizeVarint(fResExecTime, uint64(m.ExecTimeUs)) +
		sizeBytes(fResExecutor, len(m.Executor)) +
		sizeVarint(fResAttempt, uint64(m.Attempt)) +
		sizeVarint(fResCached, boolVarint(m.Cached))
}

func (m *Result) appendTo(b []byte) []byte {
	b = appendBytes(b, fResTaskID, m.TaskID)
	b = appendVarint(b, fResSuccess, boolVarint(m.Success))
	b = appendBytes(b, fResOutput, m.Output)
	b = appendVarint(b, fResErrorCode, enumVarint(m.ErrorCode))
	b = appendBytes(b, fResErrorMsg, m.ErrorMessage)
	b = appendVarint(b, fResExecTime, uint64(m.ExecTimeUs))
	b = appendBytes(b, fResExecutor, m.Executor)
	b = appendVarint(b, fResAttempt, uint64(m.Attempt))
	return appendVarint(b, fResCached, boolVarint(m.Cached))
}

func (m *Cancel) size() int {
	return sizeBytes(fCancelTaskID, len(m.TaskID)) + sizeVarint(fCancelAttempt, uint64(m.Attempt))
}

func (m *Cancel) appendTo(b []byte) []byte {
	b = appendBytes(b, fCancelTaskID, m.TaskID)
	return appendVarint(b, fCancelAttempt, uint64(m.Attempt))
}

func (m *Heartbeat) size() int {
	n := sizeVarint(fHbInterval, uint64(m.IntervalMs))
	for _, id := range m.TaskIDs {
		n += protowire.SizeTag(fHbTaskIDs) + protowire.SizeBytes(len(id)) // repeated: empty ones too
	}
	return n
}

func (m *Heartbeat) appendTo(b []byte) []byte {
	for _, id := range m.TaskIDs {
		b = protowire.AppendTag(b, fHbTaskIDs, protowire.BytesType)
		b = protowire.AppendBytes(b, id)
	}
	return appendVarint(b, fHbInterval, uint64(m.IntervalMs))
}

func (m *Progress) size() int {
	n := sizeBytes(fProgTaskID, len(m.TaskID)) +
		sizeVarint(fProgAttempt, uint64(m.Attempt)) +
		sizeBytes(fProgMessage, len(m.Message))
	if doubleBits(m.Fraction) != 0 {
		n += protowire.SizeTag(fProgFraction) + protowire.SizeFixed64()
	}
	return n
}

func (m *Progress) appendTo(b []byte) []byte {
	b = appendBytes(b, fProgTaskID, m.TaskID)
	b = appendVarint(b, fProgAttempt, uint64(m.Attempt))
	if bits := doubleBits(m.Fraction); bits != 0 {
		b = protowire.AppendTag(b, fProgFraction, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, bits)
	}
	return appendBytes(b, fProgMessage, m.Message)
}

// appendHeader appends a frame's length and its envelope's body tag and
// length for a body of n bytes.
func appendHeader(dst []byte, k Kind, n int) []byte {
	env := protowire.SizeTag(protowire.Number(k)) + protowire.SizeBytes(n)
	dst = protowire.AppendVarint(dst, uint64(env))
	dst = protowire.AppendTag(dst, protowire.Number(k), protowire.BytesType)
	return protowire.AppendVarint(dst, uint64(n))
}

// AppendEnvelopeFrame appends e's body of e.Kind as one whole frame (a
// uvarint length, then the Envelope) to dst. An envelope of KindNone goes
// out empty.
func AppendEnvelopeFrame(dst []byte, e *Envelope) []byte {
	m := e.body(e.Kind)
	if m == nil {
		return append(dst, 0)
	}
	n := m.size()
	return m.appendTo(appendHeader(dst, e.Kind, n))
}

// AppendRequestFrame appends m as one whole frame to dst. It and the other
// Append*Frame functions are AppendEnvelopeFrame for a body the caller
// holds on its own, without building an Envelope.
func AppendRequestFrame(dst []byte, m *Request) []byte {
	return m.appendTo(appendHeader(dst, KindRequest, m.size()))
}

// AppendAckFrame appends m as one whole frame to dst.
func AppendAckFrame(dst []byte, m *Ack) []byte {
	return m.appendTo(appendHeader(dst, KindAck, m.size()))
}

// AppendResultFrame appends m as one whole frame to dst.
func AppendResultFrame(dst []byte, m *Result) []byte {
	return m.appendTo(appendHeader(dst, KindResult, m.size()))
}

// AppendCancelFrame appends m as one whole frame to dst.
func AppendCancelFrame(dst []byte, m *Cancel) []byte {
	return m.appendTo(appendHeader(dst, KindCancel, m.size()))
}

// AppendHeartbeatFrame appends m as one whole frame to dst.
func AppendHeartbeatFrame(dst []byte, m *Heartbeat) []byte {
	return m.appendTo(appendHeader(dst, KindHeartbeat, m.size()))
}

// AppendProgressFrame appends m as one whole frame to dst.
func AppendProgressFrame(dst []byte, m *Progress) []byte {
	return m.appendTo(appendHeader(dst, KindProgress, m.size()))
}
