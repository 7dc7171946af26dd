package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// stateFilter returns the coordinator state behind an API state name; the
// API uses the coordinator's names.
func stateFilter(name string) ([]skill.TaskState, bool) {
	st, err := skill.ParseTaskState(name)
	if err != nil {
		return nil, false
	}
	return []skill.TaskState{st}, true
}

// codeOf maps a failed result's error code to an API error code. The API
// spells codes as grid.ErrorCode.String does; a missing or unknown code
// reads as execution_failed.
func codeOf(c grid.ErrorCode) string {
	if _, ok := grid.ParseErrorCode(c.String()); ok {
		return c.String()
	}
	return apiv1.CodeExecution
}

// retryCode returns the grid error code behind one of apiv1.RetryCodes,
// the inverse of codeOf for those codes.
func retryCode(name string) grid.ErrorCode {
	if c, ok := grid.ParseErrorCode(name); ok {
		return c
	}
	return grid.CodeExecutionFailed
}

// taskOf converts a task status for the API.
func taskOf(st skill.TaskStatus) apiv1.Task {
	t := apiv1.Task{
		ID:        st.ID.String(),
		Skill:     string(st.Skill),
		Version:   st.Version,
		State:     st.State.String(),
		Priority:  st.Priority,
		Level:     grid.LevelOf(st.Priority).String(),
		Attempts:  st.Attempts,
		CreatedAt: st.CreatedAt,
		Deadline:  st.Deadline,
	}
	if st.Peer != "" {
		t.Node = st.Peer.String()
	}
	for _, p := range st.Tried {
		t.Tried = append(t.Tried, p.String())
	}
	if p := st.Progress; p != nil {
		t.Progress = &apiv1.Progress{Fraction: p.Fraction, Message: p.Message, UpdatedAt: p.UpdatedAt}
	}
	if !st.FinishedAt.IsZero() {
		fin := st.FinishedAt
		t.FinishedAt = &fin
	}
	if r := st.Result; r != nil && st.State.Terminal() {
		t.Result = resultOf(r)
		if r.ExecutedBy != "" {
			t.Node = r.ExecutedBy.String()
		}
	}
	if st.State.Terminal() && st.State != skill.StateSucceeded {
		code := apiv1.CodeExecution
		switch {
		case st.Err != nil:
			if _, c := errorStatus(st.Err); c != apiv1.CodeInternal || st.Result == nil {
				code = c
			} else {
				code = codeOf(st.Result.Code)
			}
		case st.Result != nil:
			code = codeOf(st.Result.Code)
		}
		msg := st.Error
		if msg == "" && st.Result != nil {
			msg = st.Result.Error
		}
		reason := failureReason(st, code, msg)
		if reason != "" && st.Peer != "" {
			// The coordinator's message wraps the reason in the chain of what
			// it was doing ("task T: invalid input: peer P: delegate task T
			// to P: task rejected: invalid input: ..."): say it once.
			msg = fmt.Sprintf("node %s refused the input: %s", st.Peer, reason)
		}
		t.Error = &apiv1.Error{Code: code, Message: msg, Reason: reason}
	}
	return t
}

// invalidInputRejection begins the message of a peer's refusal of input.
var invalidInputRejection = (&grid.RejectError{Reason: grid.RejectInvalidInput}).Error() + ": "

// failureReason returns the cause of a failed task alone, for
// apiv1.Error.Reason. For invalid input that is what the node that checked
// the input said: the message of the peer's rejection, or of the failed
// result, without what the coordinator wrapped around it. Other failures
// have no reason apart from the message.
func failureReason(st skill.TaskStatus, code, msg string) string {
	if code != apiv1.CodeInvalidInput {
		return ""
	}
	var rej *grid.RejectError
	if errors.As(st.Err, &rej) && rej.Message != "" {
		return rej.Message
	}
	// A failed result carries the peer's message as text only (as does a
	// task read back from the store): the coordinator words it "task T:
	// invalid input: peer P: <the peer's message>", or without the peer
	// for a local run. The reason is what follows the last of those marks.
	reason := msg
	if i := strings.Index(reason, "peer "+st.Peer.String()+": "); st.Peer != "" && i >= 0 {
		reason = reason[i+len("peer "+st.Peer.String()+": "):]
	} else if i := strings.Index(reason, skill.ErrInvalidInput.Error()+": "); i >= 0 {
		reason = reason[i+len(skill.ErrInvalidInput.Error()+": "):]
	}
	return strings.TrimPrefix(reason, invalidInputRejection)
}

func resultOf(r *skill.SkillResult) *apiv1.Result {
	out := &apiv1.Result{
		Success:    r.Success,
		DurationMS: float64(r.Duration) / float64(time.Millisecond),
		Attempts:   r.Attempts,
		Cached:     r.Cached,
	}
	if r.ExecutedBy != "" {
		out.ExecutedBy = r.ExecutedBy.String()
	}
	switch {
	case len(r.Output) == 0:
	case json.Valid(r.Output):
		out.Output = json.RawMessage(r.Output)
	default:
		out.OutputBase64 = r.Output
	}
	return out
}
