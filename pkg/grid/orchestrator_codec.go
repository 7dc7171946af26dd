package grid

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// Limits on what a task message may carry. A request that exceeds one gets
// a TaskAck rejecting it as malformed.
const (
	maxSkillIDLen       = reputation.MaxSkillIDLen
	maxVersionLen       = 64
	maxErrorMessageLen  = 1024
	maxRejectMessageLen = 256
	maxDeadlineAhead    = 24 * time.Hour
	maxRetryAfter       = time.Hour
	maxExecTime         = 24 * time.Hour
)

// The wire enums must keep the values of the grid enums they carry.
var _ = [1]struct{}{}[int(cortexv1.RejectReason_REJECT_REASON_OVER_BUDGET)-int(RejectOverBudget)]
var _ = [1]struct{}{}[int(cortexv1.ErrorCode_ERROR_CODE_INTERNAL)-int(CodeInternal)]
var _ = [1]struct{}{}[int(cortexv1.InputKind_INPUT_KIND_RAW)-int(InputRaw)]

// errInvalidMessage is wrapped by every validation failure of a message a
// peer sent or a task a caller asked to send.
var errInvalidMessage = errors.New("invalid task message")

func invalidf(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errInvalidMessage, fmt.Sprintf(format, args...))
}

// validateOutgoing checks a task before it is sent, so that the peer never
// sees a request we would refuse ourselves.
func validateOutgoing(t *RemoteTask) error {
	switch {
	case t == nil:
		return invalidf("nil task")
	case t.ID.IsZero():
		return invalidf("zero task ID")
	case t.Deadline.IsZero() || t.Deadline.UnixMilli() <= 0:
		return invalidf("no deadline")
	case t.Attempt < 0 || t.Attempt > math.MaxInt32:
		return invalidf("attempt %d out of range", t.Attempt)
	}
	if err := checkSkill(t.Skill, t.Version); err != nil {
		return err
	}
	if t.InputKind != InputJSON && t.InputKind != InputRaw {
		return invalidf("unknown input kind %d", t.InputKind)
	}
	return checkTrust(t.MinTrust)
}

func checkSkill(skill, version string) error {
	switch {
	case skill == "" || len(skill) > maxSkillIDLen:
		return invalidf("skill ID of %d bytes (want 1-%d)", len(skill), maxSkillIDLen)
	case reputation.SkillID(skill).Validate() != nil:
		return invalidf("%v", reputation.SkillID(skill).Validate())
	case len(version) > maxVersionLen:
		return invalidf("skill version of %d bytes (max %d)", len(version), maxVersionLen)
	case !utf8.ValidString(skill) || !utf8.ValidString(version):
		return invalidf("skill ID or version is not UTF-8")
	}
	return nil
}

func checkTrust(v float64) error {
	if !(v >= 0 && v <= 1) { // also false for NaN
		return invalidf("min trust %v outside [0, 1]", v)
	}
	return nil
}

// strCache turns the byte slices of a stream's requests into strings,
// reusing the previous string when the bytes repeat (the common case: one
// peer sends many tasks for a few skills), so that they cost no
// allocation. It is owned by one stream's reader.
type strCache struct {
	skill, version string
}

func (c *strCache) str(b []byte, last *string) string {
	if string(b) != *last { // compiles to a comparison, no allocation
		*last = string(b)
	}
	return *last
}

// decodeRequest validates a request a peer sent and converts it into t;
// the input is copied out of the frame. The requester is from, the
// stream's authenticated remote peer: the message's requester field is
// not believed, and its value is ignored. On failure it returns the
// reason to put in the rejecting TaskAck.
func decodeRequest(e *wire.Request, c *strCache, now time.Time, from peer.ID, t *RemoteTask) (RejectReason, error) {
	id, err := TaskIDFromBytes(e.TaskID)
	if err != nil {
		return RejectMalformed, invalidf("task ID of %d bytes", len(e.TaskID))
	}
	if id.IsZero() {
		return RejectMalformed, invalidf("zero task ID")
	}
	switch {
	case len(e.SkillID) == 0 || len(e.SkillID) > maxSkillIDLen:
		return RejectMalformed, invalidf("skill ID of %d bytes (want 1-%d)", len(e.SkillID), maxSkillIDLen)
	case len(e.SkillVersion) > maxVersionLen:
		return RejectMalformed, invalidf("skill version of %d bytes (max %d)", len(e.SkillVersion), maxVersionLen)
	case e.InputKind != int32(InputJSON) && e.InputKind != int32(InputRaw):
		return RejectMalformed, invalidf("unknown input kind %d", e.InputKind)
	case e.Priority > math.MaxUint8:
		return RejectMalformed, invalidf("priority %d above 255", e.Priority)
	case e.Attempt > math.MaxInt32:
		return RejectMalformed, invalidf("attempt %d out of range", e.Attempt)
	case len(e.Input) > wire.MaxTaskInput:
		return RejectTooLarge, invalidf("input of %d bytes (max %d per task)", len(e.Input), wire.MaxTaskInput)
	}
	if err := checkTrust(e.MinTrust); err != nil {
		return RejectMalformed, err
	}
	if n := len(e.ModuleSHA256); n != 0 && n != 32 {
		return RejectMalformed, invalidf("module sha256 of %d bytes (want 32, or none)", n)
	}
	if e.DeadlineUnixMs <= 0 {
		return RejectMalformed, invalidf("no deadline")
	}
	deadline := time.UnixMilli(e.DeadlineUnixMs)
	if deadline.Sub(now) > maxDeadlineAhead {
		return RejectMalformed, invalidf("deadline %s is more than %s ahead", deadline.UTC().Format(time.RFC3339), maxDeadlineAhead)
	}
	if !deadline.After(now) {
		return RejectDeadlinePassed, invalidf("deadline passed %s ago", now.Sub(deadline).Round(time.Millisecond))
	}
	var input []byte
	if len(e.Input) > 0 {
		input = append([]byte(nil), e.Input...)
	}
	*t = RemoteTask{
		ID:        id,
		Skill:     c.str(e.SkillID, &c.skill),
		Version:   c.str(e.SkillVersion, &c.version),
		Input:     input,
		InputKind: InputKind(e.InputKind),
		Priority:  uint8(e.Priority),
		Deadline:  deadline,
		MinTrust:  e.MinTrust,
		Attempt:   int(e.Attempt),
		Requester: from,
		NoCache:   e.NoCache,
	}
	copy(t.ModuleSHA256[:], e.ModuleSHA256)
	if err := reputation.SkillID(t.Skill).Validate(); err != nil {
		return RejectMalformed, invalidf("%v", err)
	}
	return RejectUnspecified, nil
}

// decodeResult validates a result a peer sent and converts it into *res
// (which the caller may reuse), copying the output out of the frame: the
// one copy of it, which the result's receiver keeps. The executor is the
// authenticated peer the stream goes to, whatever the message claims. It
// reports false if the result names no usable task ID; res.ID is set
// otherwise, even with an error. An error wraps ErrInvalidResult.
func decodeResult(e *wire.Result, from peer.ID, res *RemoteResult) (bool, error) {
	id, err := TaskIDFromBytes(e.TaskID)
	if err != nil {
		return false, fmt.Errorf("%w: task ID of %d bytes", ErrInvalidResult, len(e.TaskID))
	}
	if len(e.Output) > wire.MaxTaskOutput {
		*res = RemoteResult{ID: id}
		return true, fmt.Errorf("%w: output of %d bytes (max %d)", ErrInvalidResult, len(e.Output), wire.MaxTaskOutput)
	}
	code := ErrorCode(e.ErrorCode)
	if code < CodeNone || code > CodeInternal {
		code = CodeInternal
	}
	if !e.Success && code == CodeNone {
		code = CodeExecutionFailed
	}
	var out []byte
	if len(e.Output) > 0 {
		out = append([]byte(nil), e.Output...)
	}
	var msg string
	if len(e.ErrorMessage) > 0 {
		msg = truncateUTF8(string(e.ErrorMessage), maxErrorMessageLen)
	}
	exec := time.Duration(min(max(e.ExecTimeUs, 0), maxExecTime.Microseconds())) * time.Microsecond
	*res = RemoteResult{
		ID:           id,
		Success:      e.Success,
		Output:       out,
		ErrorCode:    code,
		ErrorMessage: msg,
		ExecTime:     exec,
		Executor:     from,
		Cached:       e.Cached,
	}
	return true, nil
}

// decodeAck validates an ack a peer sent. It returns the task ID and, for
// a rejection, the error to give the caller.
func decodeAck(e *wire.Ack) (TaskID, *RejectError, error) {
	id, err := TaskIDFromBytes(e.TaskID)
	if err != nil {
		return id, nil, invalidf("ack task ID of %d bytes", len(e.TaskID))
	}
	if e.Accepted {
		return id, nil, nil
	}
	reason := RejectReason(e.Reason)
	if reason < RejectUnspecified || reason > maxRejectReason {
		reason = RejectUnspecified
	}
	retry := time.Duration(e.RetryAfterMs) * time.Millisecond
	return id, &RejectError{
		Reason:     reason,
		Message:    truncateUTF8(string(e.Message), maxRejectMessageLen),
		RetryAfter: min(retry, maxRetryAfter),
	}, nil
}

// maxRejectReason is the highest reject reason this version knows; a
// peer's higher one reads as RejectUnspecified.
const maxRejectReason = RejectOverBudget

// Encoders: each appends one whole frame to dst.

// appendRequestFrame appends t's TaskRequest frame; requester is the
// requester's peer ID bytes.
func appendRequestFrame(dst []byte, t *RemoteTask, requester []byte) []byte {
	return wire.AppendRequestFrame(dst, &wire.Request{
		TaskID:         t.ID[:],
		SkillID:        []byte(t.Skill),
		SkillVersion:   []byte(t.Version),
		Input:          t.Input,
		InputKind:      int32(t.InputKind),
		Priority:       uint32(t.Priority),
		DeadlineUnixMs: t.Deadline.UnixMilli(),
		MinTrust:       t.MinTrust,
		Attempt:        uint32(t.Attempt),
		Requester:      requester,
		ModuleSHA256:   moduleBytes(&t.ModuleSHA256),
		NoCache:        t.NoCache,
	})
}

// moduleBytes is a module hash as it goes on the wire: left out if zero.
func moduleBytes(h *[32]byte) []byte {
	if *h == ([32]byte{}) {
		return nil
	}
	return h[:]
}

// appendAckFrame appends a TaskAck frame for attempt of task id: accepted
// if rej is nil, else rejected with rej's reason, message (made valid
// UTF-8 and truncated) and retry hint (capped).
func appendAckFrame(dst []byte, id *TaskID, attempt uint32, rej *RejectError) []byte {
	m := wire.Ack{TaskID: id[:], Attempt: attempt, Accepted: rej == nil}
	if rej != nil {
		r := rej.Reason
		if r < RejectUnspecified || r > maxRejectReason {
			r = RejectUnspecified
		}
		m.Reason = int32(r)
		m.Message = []byte(truncateUTF8(rej.Message, maxRejectMessageLen))
		m.RetryAfterMs = uint32(min(max(rej.RetryAfter, 0), maxRetryAfter).Milliseconds())
	}
	return wire.AppendAckFrame(dst, &m)
}

// appendResultFrame appends a TaskResult frame for attempt of task id,
// whatever r.ID says; the error message is made valid UTF-8 and
// truncated. executor is this node's peer ID bytes.
func appendResultFrame(dst []byte, id *TaskID, attempt uint32, r *RemoteResult, executor []byte) []byte {
	return wire.AppendResultFrame(dst, &wire.Result{
		TaskID:       id[:],
		Success:      r.Success,
		Output:       r.Output,
		ErrorCode:    int32(r.ErrorCode),
		ErrorMessage: []byte(truncateUTF8(r.ErrorMessage, maxErrorMessageLen)),
		ExecTimeUs:   max(r.ExecTime.Microseconds(), 0),
		Executor:     executor,
		Attempt:      attempt,
		Cached:       r.Cached,
	})
}

// appendCancelFrame appends a TaskCancel frame for attempt of task id.
func appendCancelFrame(dst []byte, id *TaskID, attempt uint32) []byte {
	return wire.AppendCancelFrame(dst, &wire.Cancel{TaskID: id[:], Attempt: attempt})
}

// heartbeatIDSize is the encoded size of one task ID in a TaskHeartbeat:
// tag, length, 32 bytes.
const heartbeatIDSize = 1 + 1 + len(TaskID{})

// maxHeartbeatIDs is how many task IDs one TaskHeartbeat frame carries at
// most: few enough for its body to fit the smallest frame cap a peer may
// set (minMaxMessageSize), so that any peer can read it.
const maxHeartbeatIDs = (minMaxMessageSize - 16) / heartbeatIDSize

// appendHeartbeatFrame appends a TaskHeartbeat frame listing ids, with the
// sender's heartbeat interval in milliseconds.
func appendHeartbeatFrame(dst []byte, ids [][]byte, intervalMs uint32) []byte {
	return wire.AppendHeartbeatFrame(dst, &wire.Heartbeat{TaskIDs: ids, IntervalMs: intervalMs})
}

// truncateUTF8 returns s as valid UTF-8 of at most n bytes, cut on a rune
// boundary.
func truncateUTF8(s string, n int) string {
	if len(s) <= n && utf8.ValidString(s) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	cut := n
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut]
}
