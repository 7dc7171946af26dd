package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// TestCLISubmitRetryFlags checks that the retry flags of task submit reach
// the daemon as the request's retry policy.
func TestCLISubmitRetryFlags(t *testing.T) {
	var mu sync.Mutex
	var got []apiv1.SubmitRequest
	daemon := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/v1/tasks" {
			http.NotFound(w, r)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var req apiv1.SubmitRequest
		if err := json.Unmarshal(b, &req); err != nil {
			t.Errorf("the CLI sent %s: %v", b, err)
		}
		mu.Lock()
		got = append(got, req)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(apiv1.Task{ID: strings.Repeat("ab", 32), Skill: req.Skill, State: apiv1.StateQueued})
	}))
	defer daemon.Close()
	repo := t.TempDir()
	if code, _, stderr := cli(t, "--repo", repo, "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	cases := []struct {
		name string
		args []string
		want *apiv1.RetryPolicy
	}{
		{"no retry flag sends no policy", nil, nil},
		{"every flag", []string{"--attempts", "5", "--backoff", "200ms", "--max-backoff", "10s", "--retry-on", "execution_failed, timeout,execution_failed"},
			&apiv1.RetryPolicy{MaxAttempts: 5, BaseBackoff: apiv1.Duration(200 * time.Millisecond), MaxBackoff: apiv1.Duration(10 * time.Second),
				RetryOn: []string{apiv1.CodeExecution, apiv1.CodeTimeout}}},
		{"attempts alone", []string{"--attempts", "1"}, &apiv1.RetryPolicy{MaxAttempts: 1}},
		{"attempts 0 is the default, as in the API", []string{"--attempts", "0", "--backoff", "1s"}, &apiv1.RetryPolicy{BaseBackoff: apiv1.Duration(time.Second)}},
		{"retry-on alone", []string{"--retry-on", "internal"}, &apiv1.RetryPolicy{RetryOn: []string{apiv1.CodeInternal}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			mu.Lock()
			got = got[:0]
			mu.Unlock()
			args := append([]string{"--repo", repo, "--api", daemon.URL, "task", "submit", "echo"}, tc.args...)
			if code, stdout, stderr := cli(t, args...); code != 0 || strings.TrimSpace(stdout) != strings.Repeat("ab", 32) {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, stdout, stderr)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("the daemon got %d submissions, want 1", len(got))
			}
			if r := got[0].Retry; !sameRetry(r, tc.want) {
				t.Errorf("retry policy %+v, want %+v", r, tc.want)
			}
		})
	}
}

func sameRetry(a, b *apiv1.RetryPolicy) bool {
	if a == nil || b == nil {
		return a == b
	}
	return a.MaxAttempts == b.MaxAttempts && a.BaseBackoff == b.BaseBackoff && a.MaxBackoff == b.MaxBackoff && slices.Equal(a.RetryOn, b.RetryOn)
}

// TestCLISubmitRetryFlagErrors checks that a bad retry flag exits 2 with
// one line naming the flag, before any daemon is asked.
func TestCLISubmitRetryFlagErrors(t *testing.T) {
	repo := t.TempDir()
	if code, _, stderr := cli(t, "--repo", repo, "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	cases := []struct {
		args []string
		msg  string
	}{
		{[]string{"--attempts", "-1"}, "--attempts must be between 0 and 101 (0: --max-retries + 1), got -1"},
		{[]string{"--attempts", "102"}, "--attempts must be between 0 and 101"},
		{[]string{"--attempts", "many"}, "--attempts"},
		{[]string{"--backoff", "soon"}, "--backoff"},
		{[]string{"--backoff", "-1s"}, "--backoff must be between 0 and 24h"},
		{[]string{"--max-backoff", "25h"}, "--max-backoff must be between 0 and 24h"},
		{[]string{"--backoff", "2s", "--max-backoff", "1s"}, "--max-backoff 1s is below --backoff 2s"},
		{[]string{"--retry-on", "flaky"}, `--retry-on: unknown error code "flaky": want execution_failed, timeout, canceled, unknown_skill, internal`},
		{[]string{"--retry-on", "timeout,invalid_input"}, "--retry-on: invalid_input is never retried"},
		{[]string{"--retry-on", " , "}, "--retry-on is empty"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			args := append([]string{"--repo", repo, "task", "submit", "echo"}, tc.args...)
			code, _, stderr := cli(t, args...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d; stderr: %s", code, exitUsage, stderr)
			}
			first, _, _ := strings.Cut(stderr, "\n")
			if !strings.HasPrefix(first, "cortexd: ") || !strings.Contains(first, tc.msg) {
				t.Errorf("first stderr line %q does not say %q", first, tc.msg)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 1 {
				t.Errorf("stderr has %d lines, want at most 2 (the error and a usage hint): %s", n+1, stderr)
			}
		})
	}
}
