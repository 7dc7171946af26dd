package grid

import (
	"errors"
	"fmt"
	"math"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// The task stream's hot path encodes and decodes cortex.v1.Envelope by
// hand with protowire: no reflection, no allocation, and byte slices that
// alias the frame instead of copies. The generated types in
// pkg/wire/cortexv1 remain the specification; the tests check that these
// encoders produce exactly what proto.Marshal produces and that
// decodeEnvelope agrees with proto.Unmarshal on arbitrary input.

// Field numbers of proto/cortex/v1/task.proto.
const (
	fEnvRequest = 1
	fEnvAck     = 2
	fEnvResult  = 3
	fEnvCancel  = 4
	fEnvHeartbt = 5

	fReqTaskID     = 1
	fReqSkill      = 2
	fReqVersion    = 3
	fReqInput      = 4
	fReqInputKind  = 5
	fReqPriority   = 6
	fReqDeadline   = 7
	fReqMinTrust   = 8
	fReqAttempt    = 9
	fReqRequester  = 10
	fAckTaskID     = 1
	fAckAccepted   = 2
	fAckReason     = 3
	fAckMessage    = 4
	fAckRetryAfter = 5
	fResTaskID     = 1
	fResSuccess    = 2
	fResOutput     = 3
	fResErrorCode  = 4
	fResErrorMsg   = 5
	fResExecTime   = 6
	fResExecutor   = 7
	fCancelTaskID  = 1
	fHbTaskIDs     = 1
	fHbInterval    = 2
)

// envKind says which body an envelope carries; the values are the
// envelope's field numbers, and zero means none.
type envKind uint8

const (
	envRequest envKind = fEnvRequest
	envAck     envKind = fEnvAck
	envResult  envKind = fEnvResult
	envCancel  envKind = fEnvCancel
	envHeartbt envKind = fEnvHeartbt
)

// envelope is a decoded Envelope. Byte slices alias the decoded frame and
// are valid only as long as it is.
type envelope struct {
	kind   envKind
	taskID []byte

	// TaskRequest
	skill, version, input, requester []byte
	inputKind                        int32
	priority                         uint32
	deadlineMs                       int64
	minTrust                         float64
	attempt                          uint32

	// TaskAck
	accepted     bool
	reason       int32
	message      []byte
	retryAfterMs uint32

	// TaskResult
	success    bool
	output     []byte
	errorCode  int32
	errorMsg   []byte
	execTimeUs int64
	executor   []byte

	// TaskHeartbeat
	ids        [][]byte // its backing array is reused across decodes
	intervalMs uint32
}

// reset empties e for a body of kind, keeping the ids backing array.
func (e *envelope) reset(kind envKind) {
	clear(e.ids)
	*e = envelope{kind: kind, ids: e.ids[:0]}
}

// errBadEncoding is wrapped when a frame is not a valid Envelope.
var errBadEncoding = errors.New("bad protobuf encoding")

// decodeEnvelope decodes b into e with proto3 semantics: unknown fields
// and fields of an unexpected wire type are skipped, a repeated scalar
// keeps its last value, a repeated body merges, and a different body
// replaces the one before.
func decodeEnvelope(b []byte, e *envelope) error {
	e.reset(0)
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: envelope tag: %w", errBadEncoding, protowire.ParseError(n))
		}
		b = b[n:]
		if num >= fEnvRequest && num <= fEnvHeartbt && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return fmt.Errorf("%w: envelope body: %w", errBadEncoding, protowire.ParseError(n))
			}
			b = b[n:]
			if e.kind != envKind(num) {
				e.reset(envKind(num))
			}
			if err := e.decodeBody(v); err != nil {
				return err
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return fmt.Errorf("%w: envelope field %d: %w", errBadEncoding, num, protowire.ParseError(n))
		}
		b = b[n:]
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

// decodeBody decodes one body message of e's kind into e.
func (e *envelope) decodeBody(b []byte) error {
	for len(b) > 0 {
		num, typ, n := consumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: tag: %w", errBadEncoding, protowire.ParseError(n))
		}
		b = b[n:]
		var known bool
		switch typ {
		case protowire.VarintType:
			v, m := protowire.ConsumeVarint(b)
			if m < 0 {
				return fmt.Errorf("%w: field %d: %w", errBadEncoding, num, protowire.ParseError(m))
			}
			known, n = e.setVarint(num, v), m
		case protowire.BytesType:
			v, m := protowire.ConsumeBytes(b)
			if m < 0 {
				return fmt.Errorf("%w: field %d: %w", errBadEncoding, num, protowire.ParseError(m))
			}
			var err error
			if known, err = e.setBytes(num, v); err != nil {
				return err
			}
			n = m
		case protowire.Fixed64Type:
			v, m := protowire.ConsumeFixed64(b)
			if m < 0 {
				return fmt.Errorf("%w: field %d: %w", errBadEncoding, num, protowire.ParseError(m))
			}
			if e.kind == envRequest && num == fReqMinTrust {
				e.minTrust, known = math.Float64frombits(v), true
			}
			n = m
		}
		if !known {
			n = protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return fmt.Errorf("%w: field %d: %w", errBadEncoding, num, protowire.ParseError(n))
			}
		}
		b = b[n:]
	}
	return nil
}

func (e *envelope) setVarint(num protowire.Number, v uint64) bool {
	switch e.kind {
	case envRequest:
		switch num {
		case fReqInputKind:
			e.inputKind = int32(v)
		case fReqPriority:
			e.priority = uint32(v)
		case fReqDeadline:
			e.deadlineMs = int64(v)
		case fReqAttempt:
			e.attempt = uint32(v)
		default:
			return false
		}
	case envAck:
		switch num {
		case fAckAccepted:
			e.accepted = v != 0
		case fAckReason:
			e.reason = int32(v)
		case fAckRetryAfter:
			e.retryAfterMs = uint32(v)
		default:
			return false
		}
	case envResult:
		switch num {
		case fResSuccess:
			e.success = v != 0
		case fResErrorCode:
			e.errorCode = int32(v)
		case fResExecTime:
			e.execTimeUs = int64(v)
		default:
			return false
		}
	case envHeartbt:
		if num != fHbInterval {
			return false
		}
		e.intervalMs = uint32(v)
	default:
		return false
	}
	return true
}

func (e *envelope) setBytes(num protowire.Number, v []byte) (bool, error) {
	var dst *[]byte
	isString := false
	switch e.kind {
	case envRequest:
		switch num {
		case fReqTaskID:
			dst = &e.taskID
		case fReqSkill:
			dst, isString = &e.skill, true
		case fReqVersion:
			dst, isString = &e.version, true
		case fReqInput:
			dst = &e.input
		case fReqRequester:
			dst = &e.requester
		}
	case envAck:
		switch num {
		case fAckTaskID:
			dst = &e.taskID
		case fAckMessage:
			dst, isString = &e.message, true
		}
	case envResult:
		switch num {
		case fResTaskID:
			dst = &e.taskID
		case fResOutput:
			dst = &e.output
		case fResErrorMsg:
			dst, isString = &e.errorMsg, true
		case fResExecutor:
			dst = &e.executor
		}
	case envCancel:
		if num == fCancelTaskID {
			dst = &e.taskID
		}
	case envHeartbt:
		if num == fHbTaskIDs { // repeated: every occurrence counts
			e.ids = append(e.ids, v)
			return true, nil
		}
	}
	if dst == nil {
		return false, nil
	}
	if isString && !utf8.Valid(v) {
		return true, fmt.Errorf("%w: field %d is not valid UTF-8", errBadEncoding, num)
	}
	*dst = v
	return true, nil
}

// Encoders. Each appends one whole frame (uvarint length, then the
// Envelope) to dst, writing fields in number order and leaving out zero
// values, as proto.Marshal does.

func sizeBytesField(num protowire.Number, n int) int {
	return protowire.SizeTag(num) + protowire.SizeBytes(n)
}

func sizeVarintField(num protowire.Number, v uint64) int {
	if v == 0 {
		return 0
	}
	return protowire.SizeTag(num) + protowire.SizeVarint(v)
}

func sizeOptBytes(num protowire.Number, n int) int {
	if n == 0 {
		return 0
	}
	return sizeBytesField(num, n)
}

func appendOptBytes(b []byte, num protowire.Number, v []byte) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendOptString(b []byte, num protowire.Number, v string) []byte {
	if len(v) == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func appendOptVarint(b []byte, num protowire.Number, v uint64) []byte {
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

// enumVarint encodes an enum (int32) as protobuf does: negative values
// take ten bytes.
func enumVarint(v int32) uint64 { return uint64(int64(v)) }

// appendFrameHeader appends the frame length and the envelope's body tag
// and length for a body of n bytes.
func appendFrameHeader(dst []byte, kind envKind, n int) []byte {
	env := sizeBytesField(protowire.Number(kind), n)
	dst = protowire.AppendVarint(dst, uint64(env))
	dst = protowire.AppendTag(dst, protowire.Number(kind), protowire.BytesType)
	return protowire.AppendVarint(dst, uint64(n))
}

// appendRequestFrame appends t's TaskRequest frame; requester is the
// requester's peer ID bytes.
func appendRequestFrame(dst []byte, t *RemoteTask, requester []byte) []byte {
	var trust uint64
	if t.MinTrust != 0 || math.Signbit(t.MinTrust) {
		trust = math.Float64bits(t.MinTrust)
	}
	n := sizeBytesField(fReqTaskID, len(t.ID)) +
		sizeOptBytes(fReqSkill, len(t.Skill)) +
		sizeOptBytes(fReqVersion, len(t.Version)) +
		sizeOptBytes(fReqInput, len(t.Input)) +
		sizeVarintField(fReqInputKind, uint64(t.InputKind)) +
		sizeVarintField(fReqPriority, uint64(t.Priority)) +
		sizeVarintField(fReqDeadline, uint64(t.Deadline.UnixMilli())) +
		sizeVarintField(fReqAttempt, uint64(t.Attempt)) +
		sizeOptBytes(fReqRequester, len(requester))
	if trust != 0 {
		n += protowire.SizeTag(fReqMinTrust) + protowire.SizeFixed64()
	}
	dst = appendFrameHeader(dst, envRequest, n)
	dst = appendOptBytes(dst, fReqTaskID, t.ID[:])
	dst = appendOptString(dst, fReqSkill, t.Skill)
	dst = appendOptString(dst, fReqVersion, t.Version)
	dst = appendOptBytes(dst, fReqInput, t.Input)
	dst = appendOptVarint(dst, fReqInputKind, uint64(t.InputKind))
	dst = appendOptVarint(dst, fReqPriority, uint64(t.Priority))
	dst = appendOptVarint(dst, fReqDeadline, uint64(t.Deadline.UnixMilli()))
	if trust != 0 {
		dst = protowire.AppendTag(dst, fReqMinTrust, protowire.Fixed64Type)
		dst = protowire.AppendFixed64(dst, trust)
	}
	dst = appendOptVarint(dst, fReqAttempt, uint64(t.Attempt))
	return appendOptBytes(dst, fReqRequester, requester)
}

// appendAckFrame appends a TaskAck frame: accepted if rej is nil, else
// rejected with rej's reason, message (made valid UTF-8 and truncated) and
// retry hint (capped).
func appendAckFrame(dst []byte, id *TaskID, rej *RejectError) []byte {
	var accepted, reason, retry uint64
	var msg string
	if rej == nil {
		accepted = 1
	} else {
		r := rej.Reason
		if r < RejectUnspecified || r > RejectMalformed {
			r = RejectUnspecified
		}
		reason = enumVarint(int32(r))
		msg = truncateUTF8(rej.Message, maxRejectMessageLen)
		retry = uint64(min(max(rej.RetryAfter, 0), maxRetryAfter).Milliseconds())
	}
	n := sizeBytesField(fAckTaskID, len(id)) +
		sizeVarintField(fAckAccepted, accepted) +
		sizeVarintField(fAckReason, reason) +
		sizeOptBytes(fAckMessage, len(msg)) +
		sizeVarintField(fAckRetryAfter, retry)
	dst = appendFrameHeader(dst, envAck, n)
	dst = appendOptBytes(dst, fAckTaskID, id[:])
	dst = appendOptVarint(dst, fAckAccepted, accepted)
	dst = appendOptVarint(dst, fAckReason, reason)
	dst = appendOptString(dst, fAckMessage, msg)
	return appendOptVarint(dst, fAckRetryAfter, retry)
}

// appendResultFrame appends a TaskResult frame for task id, whatever r.ID
// says; the error message is made valid UTF-8 and truncated. executor is
// this node's peer ID bytes.
func appendResultFrame(dst []byte, id *TaskID, r *RemoteResult, executor []byte) []byte {
	success := boolVarint(r.Success)
	code := enumVarint(int32(r.ErrorCode))
	exec := uint64(max(r.ExecTime.Microseconds(), 0))
	msg := truncateUTF8(r.ErrorMessage, maxErrorMessageLen)
	n := sizeBytesField(fResTaskID, len(id)) +
		sizeVarintField(fResSuccess, success) +
		sizeOptBytes(fResOutput, len(r.Output)) +
		sizeVarintField(fResErrorCode, code) +
		sizeOptBytes(fResErrorMsg, len(msg)) +
		sizeVarintField(fResExecTime, exec) +
		sizeOptBytes(fResExecutor, len(executor))
	dst = appendFrameHeader(dst, envResult, n)
	dst = appendOptBytes(dst, fResTaskID, id[:])
	dst = appendOptVarint(dst, fResSuccess, success)
	dst = appendOptBytes(dst, fResOutput, r.Output)
	dst = appendOptVarint(dst, fResErrorCode, code)
	dst = appendOptString(dst, fResErrorMsg, msg)
	dst = appendOptVarint(dst, fResExecTime, exec)
	return appendOptBytes(dst, fResExecutor, executor)
}

// appendCancelFrame appends a TaskCancel frame for task id.
func appendCancelFrame(dst []byte, id *TaskID) []byte {
	dst = appendFrameHeader(dst, envCancel, sizeBytesField(fCancelTaskID, len(id)))
	return appendOptBytes(dst, fCancelTaskID, id[:])
}

// heartbeatIDSize is the encoded size of one task ID in a TaskHeartbeat.
var heartbeatIDSize = sizeBytesField(fHbTaskIDs, len(TaskID{}))

// maxHeartbeatIDs is how many task IDs one TaskHeartbeat frame carries at
// most: few enough for its body to fit the smallest frame cap a peer may
// set (minMaxMessageSize), so that any peer can read it.
var maxHeartbeatIDs = (minMaxMessageSize - 16) / heartbeatIDSize

// appendHeartbeatFrame appends a TaskHeartbeat frame listing ids, with the
// sender's heartbeat interval in milliseconds.
func appendHeartbeatFrame(dst []byte, ids []TaskID, intervalMs uint32) []byte {
	n := len(ids)*heartbeatIDSize + sizeVarintField(fHbInterval, uint64(intervalMs))
	dst = appendFrameHeader(dst, envHeartbt, n)
	for i := range ids {
		dst = protowire.AppendTag(dst, fHbTaskIDs, protowire.BytesType)
		dst = protowire.AppendBytes(dst, ids[i][:])
	}
	return appendOptVarint(dst, fHbInterval, uint64(intervalMs))
}
