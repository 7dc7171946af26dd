package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// fuzzSelf is the requester parseSubmit is given in the tests.
const fuzzSelf = peer.ID("\x00\x24\x08\x01\x12\x20fuzz-self-0123456789abcdef012345")

// fuzzDefaults are unusual on purpose, so that a default applied where a
// request set a value (or the reverse) shows.
var fuzzDefaults = TaskDefaults{Timeout: 77 * time.Second, MinTrust: 0.25, MaxRetries: 7}

// fuzzBodyLimit is the body limit the fuzz target reads through, as the
// server does: small, so that the over-limit path is reached.
const fuzzBodyLimit = 4 << 10

// maxErrorMessage bounds what parseSubmit's errors say, whatever the body.
const maxErrorMessage = 1 << 10

// FuzzSubmitRequest feeds arbitrary bytes as the body of POST /v1/tasks
// through parseSubmit, the function the handler uses, and checks that it
// never panics, that what it refuses gets a short 400 invalid_request (or
// 413 over the body limit), and that what it accepts satisfies the task
// invariants and survives a round trip through the client's encoding.
func FuzzSubmitRequest(f *testing.F) {
	for _, s := range []string{
		`{"skill":"echo"}`,
		`{"skill":"hash.sha256","input":{"data":"aGVsbG8="},"priority":"high","timeout":"20s","min_trust":0.4,"max_retries":2}`,
		`{"skill":"echo","input_base64":"AAEC/w==","priority":255,"timeout":86400}`,
		`{"skill":"image.resize","version":"1.0.0","input":null,"timeout":0.5}`,
		`{"skill":"echo","timeout":1e300}`,
		`{"skill":"Echo"}`,
		`{"skill":"echo"} {}`,
		`[{"skill":"echo"}]`,
		`{"skill":"echo","retry":{"max_attempts":3,"base_backoff":"200ms","max_backoff":"10s","retry_on":["execution_failed","timeout"]}}`,
		`{"skill":"echo","max_retries":4,"retry":{"retry_on":["internal","internal","unknown_skill","canceled"]}}`,
		`{"skill":"echo","retry":{"max_attempts":1,"base_backoff":0.25,"max_backoff":0}}`,
		`{"skill":"echo","retry":{"retry_on":[]}}`,
		`{"skill":"echo","retry":{"retry_on":["invalid_input"]}}`,
		`{"skill":"echo","retry":{"base_backoff":"10s","max_backoff":"1s"}}`,
		`{"skill":"echo","retry":{"max_attempts":-1,"colour":1}}`,
		`{"skill":"echo","retry":null}`,
		`{"skill":"echo","retry":"3"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		r := http.MaxBytesReader(httptest.NewRecorder(), io.NopCloser(bytes.NewReader(body)), fuzzBodyLimit)
		task, err := parseSubmit(r, fuzzDefaults, fuzzSelf)
		if err != nil {
			checkRefusal(t, body, err)
			return
		}
		checkTask(t, body, task)
		// What the client would send for this task parses to the same task.
		again, err := parseSubmit(bytes.NewReader(encodeTask(t, task)), fuzzDefaults, fuzzSelf)
		if err != nil {
			t.Fatalf("the re-encoded task of %q is refused: %v", body, err)
		}
		if !sameTask(task, again) {
			t.Fatalf("round trip of %q changed the task:\n got %+v\nwant %+v", body, again, task)
		}
	})
}

func checkRefusal(t *testing.T, body []byte, err error) {
	t.Helper()
	status, code := errorStatus(err)
	var mbe *http.MaxBytesError
	switch {
	case errors.As(err, &mbe):
		if len(body) <= fuzzBodyLimit {
			t.Fatalf("a body of %d bytes is over the limit of %d: %v", len(body), fuzzBodyLimit, err)
		}
	case status != http.StatusBadRequest || code != apiv1.CodeInvalidRequest:
		t.Fatalf("body %q refused with %d %s, want 400 %s: %v", body, status, code, apiv1.CodeInvalidRequest, err)
	}
	msg := errorMessage(err)
	if msg == "" || len(msg) > maxErrorMessage || !utf8.ValidString(msg) {
		t.Fatalf("body %q refused with a message of %d bytes (valid UTF-8: %v), want 1-%d: %.200q",
			body, len(msg), utf8.ValidString(msg), maxErrorMessage, msg)
	}
}

func checkTask(t *testing.T, body []byte, task *skill.SkillTask) {
	t.Helper()
	fail := func(format string, args ...any) {
		t.Helper()
		t.Fatalf("accepted %q as %+v: "+format, append([]any{body, task}, args...)...)
	}
	if err := task.Skill.Validate(); err != nil {
		fail("invalid skill ID: %v", err)
	}
	if len(task.Version) > maxVersionLen {
		fail("version of %d bytes", len(task.Version))
	}
	if task.Timeout <= 0 || task.Timeout > apiv1.MaxTimeout {
		fail("timeout %s not in (0, %s]", task.Timeout, apiv1.MaxTimeout)
	}
	if !(task.MinTrust >= 0 && task.MinTrust <= 1) {
		fail("minimum trust %v not in [0, 1]", task.MinTrust)
	}
	if task.MaxRetries < 0 || task.MaxRetries > maxRetriesLimit {
		fail("retries %d not in [0, %d]", task.MaxRetries, maxRetriesLimit)
	}
	rp := task.Retry
	if rp.MaxAttempts < 0 || rp.MaxAttempts > apiv1.MaxAttempts {
		fail("max attempts %d not in [0, %d]", rp.MaxAttempts, apiv1.MaxAttempts)
	}
	if rp.BaseBackoff < 0 || rp.BaseBackoff > apiv1.MaxTimeout || rp.MaxBackoff < 0 || rp.MaxBackoff > apiv1.MaxTimeout {
		fail("backoff %s, max %s not in [0, %s]", rp.BaseBackoff, rp.MaxBackoff, apiv1.MaxTimeout)
	}
	if rp.MaxBackoff > 0 && rp.MaxBackoff < rp.BaseBackoff {
		fail("max backoff %s below base %s", rp.MaxBackoff, rp.BaseBackoff)
	}
	if rp.RetryOn != nil && len(rp.RetryOn) == 0 {
		fail("an empty, non-nil retry_on (which would mean every code)")
	}
	for i, c := range rp.RetryOn {
		switch c {
		case grid.CodeExecutionFailed, grid.CodeTimeout, grid.CodeCanceled, grid.CodeUnknownSkill, grid.CodeInternal:
		default:
			fail("retry_on has code %v, which cannot be retried", c)
		}
		if slices.Contains(rp.RetryOn[:i], c) {
			fail("retry_on has code %v twice", c)
		}
	}
	switch task.Input.Kind {
	case grid.InputJSON:
		if !json.Valid(task.Input.Data) {
			fail("JSON input that is not JSON")
		}
	case grid.InputRaw:
	default:
		fail("input kind %d", task.Input.Kind)
	}
	if task.Requester != fuzzSelf || !task.ID.IsZero() || !task.CreatedAt.IsZero() {
		fail("requester, ID or creation time set by the request")
	}
	if len(task.Input.Data) > len(body) {
		fail("input of %d bytes from a body of %d", len(task.Input.Data), len(body))
	}
}

// encodeTask encodes task as the Go client would submit it.
func encodeTask(t *testing.T, task *skill.SkillTask) []byte {
	t.Helper()
	p := apiv1.Priority(task.Priority)
	trust, retries := task.MinTrust, task.MaxRetries
	req := apiv1.SubmitRequest{Skill: string(task.Skill), Version: task.Version, Priority: &p,
		Timeout: apiv1.Duration(task.Timeout), MinTrust: &trust, MaxRetries: &retries}
	if rp := task.Retry; rp.MaxAttempts != 0 || rp.BaseBackoff != 0 || rp.MaxBackoff != 0 || rp.RetryOn != nil {
		req.Retry = &apiv1.RetryPolicy{MaxAttempts: rp.MaxAttempts, BaseBackoff: apiv1.Duration(rp.BaseBackoff), MaxBackoff: apiv1.Duration(rp.MaxBackoff)}
		for _, c := range rp.RetryOn {
			req.Retry.RetryOn = append(req.Retry.RetryOn, codeOf(c))
		}
	}
	if task.Input.Kind == grid.InputRaw {
		req.InputBase64 = append([]byte{}, task.Input.Data...)
	} else {
		req.Input = task.Input.Data
	}
	b, err := json.Marshal(req)
	if err != nil {
		t.Fatalf("encode %+v: %v", req, err)
	}
	return b
}

func sameTask(a, b *skill.SkillTask) bool {
	var ca, cb bytes.Buffer
	if a.Input.Kind == grid.InputJSON {
		if json.Compact(&ca, a.Input.Data) != nil || json.Compact(&cb, b.Input.Data) != nil {
			return false
		}
	} else {
		ca.Write(a.Input.Data)
		cb.Write(b.Input.Data)
	}
	return a.Skill == b.Skill && a.Version == b.Version && a.Priority == b.Priority && a.Timeout == b.Timeout &&
		a.MinTrust == b.MinTrust && a.MaxRetries == b.MaxRetries && a.Input.Kind == b.Input.Kind &&
		a.Retry.MaxAttempts == b.Retry.MaxAttempts && a.Retry.BaseBackoff == b.Retry.BaseBackoff &&
		a.Retry.MaxBackoff == b.Retry.MaxBackoff && slices.Equal(a.Retry.RetryOn, b.Retry.RetryOn) &&
		bytes.Equal(ca.Bytes(), cb.Bytes()) && a.Requester == b.Requester
}

func TestParseSubmit(t *testing.T) {
	cases := []struct {
		name string
		body string
		want func(*skill.SkillTask) bool // nil: refused
		msg  string                      // in the refusal
	}{
		{"a bare skill gets the node's defaults", `{"skill":"echo"}`, func(k *skill.SkillTask) bool {
			return k.Timeout == fuzzDefaults.Timeout && k.MinTrust == 0.25 && k.MaxRetries == 7 &&
				k.Priority == skill.DefaultPriority && string(k.Input.Data) == "null"
		}, ""},
		{"a level name sets the priority", `{"skill":"echo","priority":"critical"}`, func(k *skill.SkillTask) bool { return k.Priority == 224 }, ""},
		{"a timeout with a unit is read", `{"skill":"echo","timeout":"1.5s"}`, func(k *skill.SkillTask) bool { return k.Timeout == 1500*time.Millisecond }, ""},
		{"a timeout as a bare number is refused: it has no unit", `{"skill":"echo","timeout":5}`, nil, `"timeout" must be a duration string with a unit, such as "30s"`},
		{"a timeout of a day is the most allowed", `{"skill":"echo","timeout":"24h"}`, func(k *skill.SkillTask) bool { return k.Timeout == 24*time.Hour }, ""},
		{"a timeout over a day is refused", `{"skill":"echo","timeout":"25h"}`, nil, "at most 24h"},
		{"a timeout beyond a Duration is refused", `{"skill":"echo","timeout":"3000000h"}`, nil, `"timeout" "3000000h" is not a duration`},
		{"a negative timeout is refused", `{"skill":"echo","timeout":"-1s"}`, nil, "positive"},
		{"a priority over 255 is refused, naming the field", `{"skill":"echo","priority":300}`, nil, `"priority" must be 0-255 or a level name (critical, high, normal, low), not 300`},
		{"a wrong type is named with the field", `{"skill":"echo","min_trust":"high"}`, nil, `"min_trust" must be a number, not a string`},
		{"a min_trust out of range prints plain digits", `{"skill":"echo","min_trust":1e8}`, nil, "not 100000000"},
		{"an unknown field is named with the known ones", `{"skill":"echo","colour":1}`, nil, `"colour" is not a field: the fields are skill, version`},
		{"broken JSON says where", `{"skill":"echo",}`, nil, "not valid JSON: invalid character '}'"},
		{"truncated JSON says so", `{"skill":"echo"`, nil, "ends before the object does"},
		{"input_base64 that is not base64 is named", `{"skill":"echo","input_base64":"%%%"}`, nil, `"input_base64" is not base64`},
		{"a version too long is refused", `{"skill":"echo","version":"` + strings.Repeat("1", 65) + `"}`, nil, "more than 64"},
		{"a version with a space is refused", `{"skill":"echo","version":"1 0"}`, nil, "not allowed"},
		{"an upper-case skill ID is refused", `{"skill":"Echo"}`, nil, "not allowed"},
		{"a NaN-free min_trust below 0 is refused", `{"skill":"echo","min_trust":-0.1}`, nil, "between 0 and 1"},
		{"trailing data is refused", `{"skill":"echo"} {}`, nil, "after the JSON object"},
		{"a stray closing brace is refused", `{"skill":"echo"}}`, nil, "after the JSON object"},
		{"an array is refused", `[{"skill":"echo"}]`, nil, "must be a JSON object"},
		{"a full retry policy is read", `{"skill":"echo","retry":{"max_attempts":3,"base_backoff":"200ms","max_backoff":"10s","retry_on":["execution_failed","timeout","internal"]}}`,
			func(k *skill.SkillTask) bool {
				return k.Retry.MaxAttempts == 3 && k.Retry.BaseBackoff == 200*time.Millisecond && k.Retry.MaxBackoff == 10*time.Second &&
					slices.Equal(k.Retry.RetryOn, []grid.ErrorCode{grid.CodeExecutionFailed, grid.CodeTimeout, grid.CodeInternal}) && k.MaxRetries == 7
			}, ""},
		{"no retry policy keeps the zero policy", `{"skill":"echo","retry":null}`, func(k *skill.SkillTask) bool {
			return k.Retry.MaxAttempts == 0 && k.Retry.BaseBackoff == 0 && k.Retry.MaxBackoff == 0 && k.Retry.RetryOn == nil
		}, ""},
		{"every retryable code is read, duplicates once", `{"skill":"echo","retry":{"retry_on":["canceled","unknown_skill","canceled"]}}`, func(k *skill.SkillTask) bool {
			return slices.Equal(k.Retry.RetryOn, []grid.ErrorCode{grid.CodeCanceled, grid.CodeUnknownSkill})
		}, ""},
		{"a backoff with a unit is read", `{"skill":"echo","retry":{"base_backoff":"0.5s"}}`, func(k *skill.SkillTask) bool { return k.Retry.BaseBackoff == 500*time.Millisecond }, ""},
		{"a backoff as a bare number is refused", `{"skill":"echo","retry":{"base_backoff":0.5}}`, nil, `"retry.base_backoff" must be a duration string with a unit`},
		{"a max backoff alone is kept", `{"skill":"echo","retry":{"max_backoff":"1s"}}`, func(k *skill.SkillTask) bool { return k.Retry.MaxBackoff == time.Second }, ""},
		{"negative max_attempts is refused", `{"skill":"echo","retry":{"max_attempts":-1}}`, nil, `"retry.max_attempts" must be between 0 and 101`},
		{"max_attempts 0 means max_retries + 1", `{"skill":"echo","max_retries":4,"retry":{"max_attempts":0}}`,
			func(k *skill.SkillTask) bool { return k.Retry.MaxAttempts == 0 && k.MaxRetries == 4 }, ""},
		{"too many attempts are refused", `{"skill":"echo","retry":{"max_attempts":102}}`, nil, `"retry.max_attempts"`},
		{"fractional max_attempts is refused", `{"skill":"echo","retry":{"max_attempts":1.5}}`, nil, `"retry.max_attempts" must be a whole number, not 1.5`},
		{"a negative base_backoff is refused", `{"skill":"echo","retry":{"base_backoff":"-1s"}}`, nil, `"retry.base_backoff" must be between 0 and 24h`},
		{"a max_backoff over a day is refused", `{"skill":"echo","retry":{"max_backoff":"25h"}}`, nil, `"retry.max_backoff" must be between 0 and 24h`},
		{"an unreadable base_backoff is named", `{"skill":"echo","retry":{"base_backoff":"soon"}}`, nil, `"retry.base_backoff" "soon" is not a duration`},
		{"an unreadable max_backoff is named", `{"skill":"echo","retry":{"max_backoff":true}}`, nil, `"retry.max_backoff" must be a duration string`},
		{"max_backoff below base_backoff is refused", `{"skill":"echo","retry":{"base_backoff":"10s","max_backoff":"1s"}}`, nil, `"retry.max_backoff" 1s is below "retry.base_backoff" 10s`},
		{"an empty retry_on is refused", `{"skill":"echo","retry":{"retry_on":[]}}`, nil, `"retry.retry_on" is empty`},
		{"invalid_input in retry_on is refused", `{"skill":"echo","retry":{"retry_on":["invalid_input"]}}`, nil, `"retry.retry_on": invalid_input is never retried`},
		{"an unknown code in retry_on is refused", `{"skill":"echo","retry":{"retry_on":["execution_failed","flaky"]}}`, nil, `"retry.retry_on": unknown error code "flaky": want execution_failed, timeout`},
		{"a retry_on that is not a list is named", `{"skill":"echo","retry":{"retry_on":"timeout"}}`, nil, `"retry.retry_on" must be a list, not a string`},
		{"an unknown retry field is refused", `{"skill":"echo","retry":{"attempts":3}}`, nil, `"retry.attempts" is not a field: the fields are max_attempts`},
		{"a retry that is not an object is refused", `{"skill":"echo","retry":3}`, nil, `"retry" must be an object`},
		{"a huge unknown field is named briefly", `{"` + strings.Repeat("x", 5000) + `":1}`, nil, "is not a field"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			task, err := parseSubmit(strings.NewReader(tc.body), fuzzDefaults, fuzzSelf)
			if tc.want == nil {
				if err == nil {
					t.Fatalf("accepted as %+v, want a refusal saying %q", task, tc.msg)
				}
				checkRefusal(t, []byte(tc.body), err)
				if !strings.Contains(err.Error(), tc.msg) {
					t.Fatalf("refused with %q, want it to say %q", err, tc.msg)
				}
				return
			}
			if err != nil {
				t.Fatalf("refused: %v", err)
			}
			checkTask(t, []byte(tc.body), task)
			if !tc.want(task) {
				t.Fatalf("task %+v is not what the request asked", task)
			}
		})
	}
}

func TestErrorMessageOfUnknownSkill(t *testing.T) {
	err := errors.Join(errors.New("submit task"), &skill.NoCapableNodeError{Skill: "nope.skill", Reason: skill.NoProvider})
	if got, want := errorMessage(err), `unknown skill "nope.skill": no node on the grid offers it`; got != want {
		t.Errorf("errorMessage = %q, want %q", got, want)
	}
	err = &skill.NoCapableNodeError{Skill: "a.b", Reason: skill.AllBelowTrust, Checked: 3, MinTrust: 0.5}
	if got := errorMessage(err); !strings.Contains(got, `"a.b"`) || !strings.Contains(got, "0.50") || !strings.Contains(got, "(3)") {
		t.Errorf("errorMessage = %q; want the skill, the count and the minimum trust", got)
	}
}
