package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// httpError is an error with the status and code it is answered with.
type httpError struct {
	status int
	code   string
	msg    string
}

func (e *httpError) Error() string { return e.msg }

func badRequest(format string, args ...any) error {
	return &httpError{http.StatusBadRequest, apiv1.CodeInvalidRequest, fmt.Sprintf(format, args...)}
}

// errorStatus maps an error from the engine to an HTTP status and an API
// error code. Unknown errors are internal: 500.
func errorStatus(err error) (int, string) {
	var he *httpError
	var mbe *http.MaxBytesError
	if status, code, ok := installStatus(err); ok && !errors.As(err, &he) {
		return status, code
	}
	switch {
	case errors.As(err, &he):
		return he.status, he.code
	case errors.Is(err, skill.ErrDependencyFailed):
		return http.StatusConflict, apiv1.CodeDependencyFailed // a task's error only (status 0 in apiv1.Codes)
	case errors.Is(err, skill.ErrDuplicateSkill):
		return http.StatusConflict, apiv1.CodeSkillExists
	case errors.As(err, &mbe):
		return http.StatusRequestEntityTooLarge, apiv1.CodeTooLarge
	case errors.Is(err, skill.ErrInvalidInput):
		return http.StatusBadRequest, apiv1.CodeInvalidInput
	case errors.Is(err, skill.ErrUnknownSkill):
		return http.StatusNotFound, apiv1.CodeUnknownSkill
	case errors.Is(err, skill.ErrTaskNotFound):
		return http.StatusNotFound, apiv1.CodeNotFound
	case errors.Is(err, skill.ErrQueueFull):
		return http.StatusTooManyRequests, apiv1.CodeQueueFull
	case errors.Is(err, skill.ErrNoCapableNode):
		return http.StatusServiceUnavailable, apiv1.CodeNoCapableNode
	case errors.Is(err, skill.ErrTaskFinished):
		return http.StatusConflict, apiv1.CodeFinished
	case errors.Is(err, skill.ErrClosed), errors.Is(err, grid.ErrClosed), errors.Is(err, errDraining), errors.Is(err, skill.ErrNotStarted):
		return http.StatusServiceUnavailable, apiv1.CodeShuttingDown
	case errors.Is(err, skill.ErrTimeout):
		return http.StatusGatewayTimeout, apiv1.CodeTimeout
	case errors.Is(err, skill.ErrCanceled):
		return http.StatusConflict, apiv1.CodeCanceled
	case errors.Is(err, skill.ErrDelegationFailed):
		return http.StatusBadGateway, apiv1.CodeDelegation
	}
	return http.StatusInternalServerError, apiv1.CodeInternal
}

// errorMessage is the message an error is answered with: err's own, but
// without the coordinator's "submit task: " prefix, and for
// ErrNoCapableNode one built from the skill and the reason, without the
// chain of what was being done:
//
//	unknown skill "nope.skill": no node on the grid offers it
func errorMessage(err error) string {
	var nc *skill.NoCapableNodeError
	if !errors.As(err, &nc) {
		// The coordinator's "doing what" prefix says nothing to a client
		// that has just submitted.
		return strings.TrimPrefix(err.Error(), "submit task: ")
	}
	var msg string
	switch nc.Reason {
	case skill.NoProvider:
		return fmt.Sprintf("unknown skill %q: no node on the grid offers it", nc.Skill)
	case skill.AllBelowTrust:
		msg = fmt.Sprintf("no node may run %q: every node that offers it (%d) is below the minimum trust %.2f", nc.Skill, nc.Checked, nc.MinTrust)
	case skill.AllUnreachable:
		msg = fmt.Sprintf("no node may run %q: every node that offers it with enough trust is unreachable", nc.Skill)
	default:
		msg = fmt.Sprintf("no node may run %q: %s", nc.Skill, nc.Reason)
	}
	if h := nc.Hint(); h != "" {
		msg += ": " + h
	}
	return msg
}

// writeError answers with err as an apiv1.ErrorBody.
func (s *Server) writeError(w http.ResponseWriter, r *http.Request, err error) {
	status, code := errorStatus(err)
	msg := errorMessage(err)
	if status == http.StatusInternalServerError {
		s.log.Error("api request failed", "method", r.Method, "path", r.URL.Path, "err", err)
	} else {
		s.log.Debug("api request refused", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	switch code {
	case apiv1.CodeQueueFull:
		w.Header().Set("Retry-After", "1")
	case apiv1.CodeTooLarge:
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			msg = fmt.Sprintf("the request body is larger than the limit of %d bytes (api.max_body_bytes)", mbe.Limit)
		}
	}
	writeJSON(w, status, apiv1.ErrorBody{Error: apiv1.Error{Code: code, Message: msg}})
}

// writeJSON answers with v as JSON.
func writeJSON(w http.ResponseWriter, status int, v any) {
	var buf bytes.Buffer
	if err := newJSONEncoder(&buf).Encode(v); err != nil { // Encode ends with a newline
		slog.Error("encode API response", "err", err)
		status = http.StatusInternalServerError
		buf.Reset()
		buf.WriteString(`{"error":{"code":"internal","message":"encode response"}}` + "\n")
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// newJSONEncoder returns an encoder that leaves <, > and & as they are:
// the API's answers are not HTML.
func newJSONEncoder(w io.Writer) *json.Encoder {
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	return enc
}
