package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// flakySkill fails every run with an execution error (code
// execution_failed) and counts its runs.
type flakySkill struct{ runs atomic.Int64 }

func (*flakySkill) Descriptor() skill.Descriptor {
	return skill.Descriptor{ID: "test.flaky", Version: "1.0.0", Description: "fails every run"}
}

func (s *flakySkill) Execute(context.Context, skill.SkillInput) ([]byte, error) {
	s.runs.Add(1)
	return nil, errors.New("flaky: failed on purpose")
}

// TestAPIRetryPolicy submits tasks of a skill that always fails: the task
// whose retry_on leaves out execution_failed fails after one attempt,
// while the default policy and one that lists the code use every attempt.
func TestAPIRetryPolicy(t *testing.T) {
	e := newEngine(t)
	flaky := &flakySkill{}
	if err := e.Registry.Register(flaky); err != nil {
		t.Fatal(err)
	}
	h := server(t, e).Handler()
	cases := []struct {
		name     string
		body     string
		attempts int
		msg      string // in the task's error
	}{
		{"retry_on without execution_failed stops after one attempt",
			`{"skill":"test.flaky","retry":{"max_attempts":3,"base_backoff":"1ms","max_backoff":"2ms","retry_on":["timeout","internal"]}}`, 1, "its retry policy does not retry"},
		{"the default retry_on retries an execution failure",
			`{"skill":"test.flaky","retry":{"max_attempts":3,"base_backoff":"1ms","max_backoff":"2ms"}}`, 3, "after 3 attempts"},
		{"retry_on with execution_failed retries it",
			`{"skill":"test.flaky","retry":{"max_attempts":2,"base_backoff":"1ms","max_backoff":"2ms","retry_on":["execution_failed"]}}`, 2, "after 2 attempts"},
		{"max_attempts overrides max_retries",
			`{"skill":"test.flaky","max_retries":5,"retry":{"max_attempts":1}}`, 1, "after 1 attempts"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := flaky.runs.Load()
			task := submit(t, h, tc.body)
			a := request(t, h, "GET", "/v1/tasks/"+task.ID+"/wait?timeout=10s", "")
			var done apiv1.Task
			if err := json.Unmarshal(a.body, &done); err != nil || a.status != 200 {
				t.Fatalf("wait: %d %s", a.status, a.body)
			}
			if done.State != apiv1.StateFailed || done.Error == nil || done.Error.Code != apiv1.CodeDelegation {
				t.Fatalf("task ended %s with error %+v, want failed with %s", done.State, done.Error, apiv1.CodeDelegation)
			}
			if !strings.Contains(done.Error.Message, tc.msg) {
				t.Errorf("error %q does not say %q", done.Error.Message, tc.msg)
			}
			if done.Attempts != tc.attempts {
				t.Errorf("%d attempts, want %d (error: %s)", done.Attempts, tc.attempts, done.Error.Message)
			}
			if runs := flaky.runs.Load() - before; runs != int64(tc.attempts) {
				t.Errorf("the skill ran %d times, want %d", runs, tc.attempts)
			}
		})
	}
}

// TestAPIRetryPolicyRefused checks that a bad policy is a 400 that names
// the field.
func TestAPIRetryPolicyRefused(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()
	for body, field := range map[string]string{
		`{"skill":"echo","retry":{"max_attempts":0.5}}`:                      "retry.max_attempts",
		`{"skill":"echo","retry":{"base_backoff":"-5s"}}`:                    "retry.base_backoff",
		`{"skill":"echo","retry":{"base_backoff":"2s","max_backoff":"1s"}}`:  "retry.max_backoff",
		`{"skill":"echo","retry":{"retry_on":["execution_failed","bogus"]}}`: "retry.retry_on",
	} {
		a := request(t, h, "POST", "/v1/tasks", body)
		if a.status != 400 || a.errorCode(t) != apiv1.CodeInvalidRequest {
			t.Errorf("%s: %d %s, want 400 %s", body, a.status, a.body, apiv1.CodeInvalidRequest)
			continue
		}
		var eb apiv1.ErrorBody
		if err := json.Unmarshal(a.body, &eb); err != nil || !strings.Contains(eb.Error.Message, field) {
			t.Errorf("%s: message %q does not name %s", body, eb.Error.Message, field)
		}
	}
}
