package grid

import (
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// Limits on what a task message may carry. A peer that exceeds one gets a
// TaskAck rejecting the task as malformed.
const (
	maxSkillIDLen       = 128
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
	case t.Requester == "":
		return invalidf("no requester")
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
	requester      peer.ID
}

func (c *strCache) str(b []byte, last *string) string {
	if string(b) != *last { // compiles to a comparison, no allocation
		*last = string(b)
	}
	return *last
}

// decodeRequest validates a request a peer sent and converts it into t;
// the input is copied out of the frame. On failure it returns the reason
// to put in the rejecting TaskAck.
func decodeRequest(e *envelope, c *strCache, now time.Time, t *RemoteTask) (RejectReason, error) {
	id, err := TaskIDFromBytes(e.taskID)
	if err != nil {
		return RejectMalformed, invalidf("task ID of %d bytes", len(e.taskID))
	}
	if id.IsZero() {
		return RejectMalformed, invalidf("zero task ID")
	}
	switch {
	case len(e.skill) == 0 || len(e.skill) > maxSkillIDLen:
		return RejectMalformed, invalidf("skill ID of %d bytes (want 1-%d)", len(e.skill), maxSkillIDLen)
	case len(e.version) > maxVersionLen:
		return RejectMalformed, invalidf("skill version of %d bytes (max %d)", len(e.version), maxVersionLen)
	case e.inputKind != int32(InputJSON) && e.inputKind != int32(InputRaw):
		return RejectMalformed, invalidf("unknown input kind %d", e.inputKind)
	case e.priority > math.MaxUint8:
		return RejectMalformed, invalidf("priority %d above 255", e.priority)
	case e.attempt > math.MaxInt32:
		return RejectMalformed, invalidf("attempt %d out of range", e.attempt)
	}
	if err := checkTrust(e.minTrust); err != nil {
		return RejectMalformed, err
	}
	requester := c.requester
	if requester == "" || string(e.requester) != string(requester) {
		if requester, err = peer.IDFromBytes(e.requester); err != nil {
			return RejectMalformed, invalidf("requester is not a peer ID: %v", err)
		}
		c.requester = requester
	}
	if e.deadlineMs <= 0 {
		return RejectMalformed, invalidf("no deadline")
	}
	deadline := time.UnixMilli(e.deadlineMs)
	if deadline.Sub(now) > maxDeadlineAhead {
		return RejectMalformed, invalidf("deadline %s is more than %s ahead", deadline.UTC().Format(time.RFC3339), maxDeadlineAhead)
	}
	if !deadline.After(now) {
		return RejectUnspecified, fmt.Errorf("%w: deadline passed %s ago", errInvalidMessage, now.Sub(deadline).Round(time.Millisecond))
	}
	var input []byte
	if len(e.input) > 0 {
		input = append([]byte(nil), e.input...)
	}
	*t = RemoteTask{
		ID:        id,
		Skill:     c.str(e.skill, &c.skill),
		Version:   c.str(e.version, &c.version),
		Input:     input,
		InputKind: InputKind(e.inputKind),
		Priority:  uint8(e.priority),
		Deadline:  deadline,
		MinTrust:  e.minTrust,
		Attempt:   int(e.attempt),
		Requester: requester,
	}
	return RejectUnspecified, nil
}

// decodeResult validates a result a peer sent and converts it, copying
// the output out of the frame. The executor is the authenticated peer the
// stream goes to, whatever the message claims.
func decodeResult(e *envelope, from peer.ID) (*RemoteResult, error) {
	id, err := TaskIDFromBytes(e.taskID)
	if err != nil {
		return nil, invalidf("result task ID of %d bytes", len(e.taskID))
	}
	code := ErrorCode(e.errorCode)
	if code < CodeNone || code > CodeInternal {
		code = CodeInternal
	}
	if !e.success && code == CodeNone {
		code = CodeExecutionFailed
	}
	var out []byte
	if len(e.output) > 0 {
		out = append([]byte(nil), e.output...)
	}
	var msg string
	if len(e.errorMsg) > 0 {
		msg = truncateUTF8(string(e.errorMsg), maxErrorMessageLen)
	}
	exec := time.Duration(min(max(e.execTimeUs, 0), maxExecTime.Microseconds())) * time.Microsecond
	return &RemoteResult{
		ID:           id,
		Success:      e.success,
		Output:       out,
		ErrorCode:    code,
		ErrorMessage: msg,
		ExecTime:     exec,
		Executor:     from,
	}, nil
}

// decodeAck validates an ack a peer sent. It returns the task ID and, for
// a rejection, the error to give the caller.
func decodeAck(e *envelope) (TaskID, *RejectError, error) {
	id, err := TaskIDFromBytes(e.taskID)
	if err != nil {
		return id, nil, invalidf("ack task ID of %d bytes", len(e.taskID))
	}
	if e.accepted {
		return id, nil, nil
	}
	reason := RejectReason(e.reason)
	if reason < RejectUnspecified || reason > RejectMalformed {
		reason = RejectUnspecified
	}
	retry := time.Duration(e.retryAfterMs) * time.Millisecond
	return id, &RejectError{
		Reason:     reason,
		Message:    truncateUTF8(string(e.message), maxRejectMessageLen),
		RetryAfter: min(retry, maxRetryAfter),
	}, nil
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
