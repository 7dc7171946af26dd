package api

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Limits of a submission.
const (
	maxRetriesLimit = 100
	maxVersionLen   = 64  // as the task protocol allows
	maxErrorDetail  = 200 // bytes of a decoder's message quoted in an error
)

// parseSubmit reads the body of POST /v1/tasks, an apiv1.SubmitRequest,
// checks it and returns the task it asks for, with d's values for what it
// leaves out and self as the requester. A task it returns has a valid
// skill ID, a version of at most 64 bytes, a timeout in (0, MaxTimeout], a
// minimum trust in [0, 1], 0 to 100 retries, a retry policy as
// retryPolicy returns and, for a JSON input, valid JSON. Its errors are 400 invalid_request answers whose messages are at
// most a few hundred bytes, whatever the body, or the *http.MaxBytesError
// of a body over the limit. Input schemas are checked later, by the node
// that has the skill.
func parseSubmit(body io.Reader, d TaskDefaults, self peer.ID) (*skill.SkillTask, error) {
	var req apiv1.SubmitRequest
	if err := decodeBody(body, &req); err != nil {
		return nil, err
	}
	return buildTask(&req, d, self)
}

// decodeBody reads one JSON object into v, refusing unknown fields and
// trailing data. Its errors name the field whose value is wrong, or say
// where the JSON breaks.
func decodeBody(body io.Reader, v any) error {
	var mbe *http.MaxBytesError
	var fe *apiv1.FieldError
	var se *json.SyntaxError
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		switch {
		case errors.As(err, &mbe):
			return err
		case errors.Is(err, io.EOF):
			return badRequest("the request body is empty: send a JSON object such as {\"skill\":\"echo\"}")
		case errors.As(err, &fe):
			return badRequest("%s", clip(fe.Error(), maxErrorDetail))
		case errors.As(err, &se):
			return badRequest("the request body is not valid JSON: %s (at byte %d)", clip(se.Error(), maxErrorDetail), se.Offset)
		case errors.Is(err, io.ErrUnexpectedEOF):
			return badRequest("the request body is not valid JSON: it ends before the object does")
		}
		return badRequest("%s", clip(err.Error(), maxErrorDetail))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		if errors.As(err, &mbe) {
			return err
		}
		return badRequest("the request body has data after the JSON object")
	}
	return nil
}

// buildTask checks a submission and turns it into a SkillTask with d's
// values for what it leaves out.
func buildTask(req *apiv1.SubmitRequest, d TaskDefaults, self peer.ID) (*skill.SkillTask, error) {
	if req.Skill == "" {
		return nil, badRequest(`"skill" is required`)
	}
	if err := reputation.SkillID(req.Skill).Validate(); err != nil {
		return nil, badRequest("%s", clip(err.Error(), maxErrorDetail))
	}
	if err := checkVersion(req.Version); err != nil {
		return nil, err
	}
	var in skill.SkillInput
	switch {
	case req.Input != nil && req.InputBase64 != nil:
		return nil, badRequest(`set "input" or "input_base64", not both`)
	case len(req.InputBase64) > apiv1.MaxInputBytes:
		return nil, inputTooLarge(int64(len(req.InputBase64)))
	case len(req.Input) > apiv1.MaxInputBytes:
		return nil, inputTooLarge(int64(len(req.Input)))
	case req.InputBase64 != nil:
		in = skill.RawInput(req.InputBase64)
	case req.Input != nil:
		in = skill.SkillInput{Kind: grid.InputJSON, Data: req.Input}
	default:
		in = skill.SkillInput{Kind: grid.InputJSON, Data: []byte("null")}
	}
	t := skill.NewSkillTask(reputation.SkillID(req.Skill), in, self).
		WithVersion(req.Version).WithTimeout(d.Timeout).WithMinTrust(d.MinTrust).WithMaxRetries(d.MaxRetries)
	if req.Priority != nil {
		t.WithPriority(uint8(*req.Priority))
	}
	t.NoCache = req.NoCache
	switch to := time.Duration(req.Timeout); {
	case to < 0:
		return nil, badRequest(`"timeout" must be positive, not %s`, to)
	case to > apiv1.MaxTimeout:
		return nil, badRequest(`"timeout" must be at most %s, not %s`, apiv1.MaxTimeout, to)
	case to > 0:
		t.WithTimeout(to)
	}
	if req.MinTrust != nil {
		if v := *req.MinTrust; !(v >= 0 && v <= 1) {
			return nil, badRequest(`"min_trust" must be between 0 and 1, not %s`, plainNumber(v))
		}
		t.WithMinTrust(*req.MinTrust)
	}
	if req.MaxRetries != nil {
		if v := *req.MaxRetries; v < 0 || v > maxRetriesLimit {
			return nil, badRequest(`"max_retries" must be between 0 and %d, not %d`, maxRetriesLimit, v)
		}
		t.WithMaxRetries(*req.MaxRetries)
	}
	if req.Retry != nil {
		p, err := retryPolicy(req.Retry)
		if err != nil {
			return nil, err
		}
		t.WithRetry(p)
	}
	return t, nil
}

// retryPolicy checks the "retry" of a submission and converts it. A policy
// it returns has 0 to apiv1.MaxAttempts attempts, backoffs in [0,
// MaxTimeout] with the maximum, if set, not below the base, and a RetryOn
// of distinct retryable codes that is nil or not empty.
func retryPolicy(r *apiv1.RetryPolicy) (skill.RetryPolicy, error) {
	p := skill.RetryPolicy{MaxAttempts: r.MaxAttempts, BaseBackoff: time.Duration(r.BaseBackoff), MaxBackoff: time.Duration(r.MaxBackoff)}
	if p.MaxAttempts < 0 || p.MaxAttempts > apiv1.MaxAttempts {
		return p, badRequest(`"retry.max_attempts" must be between 0 and %d (0 or left out: "max_retries" + 1), got %d`, apiv1.MaxAttempts, p.MaxAttempts)
	}
	for _, f := range [...]struct {
		name string
		d    time.Duration
	}{{"base_backoff", p.BaseBackoff}, {"max_backoff", p.MaxBackoff}} {
		if f.d < 0 || f.d > apiv1.MaxTimeout {
			return p, badRequest(`"retry.%s" must be between 0 and %s, got %s`, f.name, apiv1.MaxTimeout, f.d)
		}
	}
	if p.MaxBackoff > 0 && p.MaxBackoff < p.BaseBackoff {
		return p, badRequest(`"retry.max_backoff" %s is below "retry.base_backoff" %s`, p.MaxBackoff, p.BaseBackoff)
	}
	if r.RetryOn == nil {
		return p, nil
	}
	if len(r.RetryOn) == 0 {
		return p, badRequest(`"retry.retry_on" is empty: leave it out to retry every retryable code, or set "retry.max_attempts" to 1 for no retries`)
	}
	p.RetryOn = make([]grid.ErrorCode, 0, min(len(r.RetryOn), len(apiv1.RetryCodes)))
	for _, name := range r.RetryOn {
		if err := apiv1.CheckRetryCode(name); err != nil {
			return p, badRequest(`"retry.retry_on": %v`, err)
		}
		if c := retryCode(name); !slices.Contains(p.RetryOn, c) {
			p.RetryOn = append(p.RetryOn, c)
		}
	}
	return p, nil
}

// checkVersion accepts an empty version (any) or one of at most 64 bytes
// of [0-9A-Za-z.+-], as skill versions are written ("1.0.0", "2.1-rc.1").
func checkVersion(v string) error {
	if len(v) > maxVersionLen {
		return badRequest(`"version" is %d bytes, more than %d`, len(v), maxVersionLen)
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '+' || c == '-') {
			return badRequest(`"version" %q: byte %d is not allowed; versions look like "1.0.0"`, v, i)
		}
	}
	return nil
}

// checkDefaults fills and checks the defaults given to WithDefaults.
func checkDefaults(d *TaskDefaults) error {
	var errs []error
	if d.Timeout == 0 {
		d.Timeout = skill.DefaultTimeout
	}
	if d.Timeout < 0 || d.Timeout > apiv1.MaxTimeout {
		errs = append(errs, fmt.Errorf("api: default timeout %s is not in (0, %s]", d.Timeout, apiv1.MaxTimeout))
	}
	if !(d.MinTrust >= 0 && d.MinTrust <= 1) {
		errs = append(errs, fmt.Errorf("api: default minimum trust %s is not in [0, 1]", plainNumber(d.MinTrust)))
	}
	if d.MaxRetries < 0 || d.MaxRetries > maxRetriesLimit {
		errs = append(errs, fmt.Errorf("api: default retries %d is not in [0, %d]", d.MaxRetries, maxRetriesLimit))
	}
	return errors.Join(errs...)
}

// inputTooLarge is the refusal of an input of n bytes.
func inputTooLarge(n int64) error {
	return &httpError{http.StatusRequestEntityTooLarge, apiv1.CodeInputTooLarge,
		fmt.Sprintf("the input is %d bytes, more than the %d bytes (16 MiB less 4 KiB) one task may carry: it travels to a peer in one task protocol frame; split it into several tasks", n, apiv1.MaxInputBytes)}
}

// plainNumber writes f in plain digits, never with an exponent.
func plainNumber(f float64) string { return strconv.FormatFloat(f, 'f', -1, 64) }

// clip shortens s to at most n bytes, on a rune boundary, marking the cut.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n] + "…"
}
