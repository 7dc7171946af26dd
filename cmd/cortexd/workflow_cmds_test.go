package main

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

// workflowAPI serves a real single-node engine with a workflow engine.
func workflowAPI(t *testing.T) (repo, url string) {
	t.Helper()
	e := apitest.NewEngine(t)
	w := workflow.New(e.Coordinator, workflow.Options{})
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	repo = t.TempDir()
	if code, _, stderr := cli(t, "--repo", repo, "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	tok, err := os.ReadFile(filepath.Join(repo, "api-token"))
	if err != nil {
		t.Fatal(err)
	}
	deps := e.Deps()
	deps.Workflows = w
	s, err := api.New(deps, api.WithToken(strings.TrimSpace(string(tok))))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return repo, srv.URL
}

func TestCLIWorkflowRunGetListCancel(t *testing.T) {
	repo, url := workflowAPI(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "wf.yaml")
	if err := os.WriteFile(file, []byte(`
name: demo
steps:
  - name: greet
    skill: echo
    input: {"hello": "grid"}
  - name: digest
    skill: hash.sha256
    input: {"data": "aGVsbG8="}
  - name: both
    skill: echo
    depends_on: [greet, digest]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := cli(t, "--repo", repo, "--api", url, "workflow", "run", file, "--wait")
	if code != 0 {
		t.Fatalf("workflow run --wait: exit %d\n%s\n%s", code, stdout, stderr)
	}
	for _, want := range []string{"(demo) succeeded", "STEP", "STATE", "NODE", "TASK", "greet", "digest", "both", "succeeded",
		"both:", `"hello": "grid"`, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("workflow run --wait printed no %q:\n%s", want, stdout)
		}
	}
	if strings.Contains(stdout, "greet:\n") {
		t.Errorf("printed the output of greet, which another step depends on:\n%s", stdout)
	}
	id := strings.Fields(stdout)[1]
	if !strings.Contains(stderr, "workflow "+id+" succeeded") {
		t.Errorf("stderr %q", stderr)
	}

	code, stdout, stderr = cli(t, "--repo", repo, "--api", url, "workflow", "get", id)
	if code != 0 || !strings.Contains(stdout, "greet") || strings.Count(stdout, "succeeded") != 4 {
		t.Errorf("workflow get: exit %d\n%s\n%s", code, stdout, stderr)
	}
	code, stdout, _ = cli(t, "--repo", repo, "--api", url, "workflow", "list")
	if code != 0 || !strings.Contains(stdout, id) || !strings.Contains(stdout, "3/3") {
		t.Errorf("workflow list: exit %d\n%s", code, stdout)
	}
	code, _, stderr = cli(t, "--repo", repo, "--api", url, "workflow", "cancel", id)
	if code != exitFailed || !strings.Contains(stderr, "already succeeded") {
		t.Errorf("cancel of a finished workflow: exit %d: %s", code, stderr)
	}

	// Without --wait: the ID; then a cancel while its first step sleeps.
	slow := filepath.Join(dir, "slow.json")
	os.WriteFile(slow, []byte(`{"steps":[{"name":"nap","skill":"debug.sleep","input":{"ms":20000}},{"name":"then","skill":"echo","depends_on":["nap"]}]}`), 0o644)
	code, stdout, stderr = cli(t, "--repo", repo, "--api", url, "workflow", "run", slow)
	if code != 0 || len(strings.TrimSpace(stdout)) != 32 {
		t.Fatalf("workflow run: exit %d %q %q", code, stdout, stderr)
	}
	id = strings.TrimSpace(stdout)
	code, stdout, stderr = cli(t, "--repo", repo, "--api", url, "workflow", "cancel", id)
	if code != 0 || stdout != id+" canceled\n" {
		t.Errorf("cancel: exit %d %q %q", code, stdout, stderr)
	}
}

func TestCLIWorkflowErrors(t *testing.T) {
	repo, url := workflowAPI(t)
	dir := t.TempDir()
	cycle := filepath.Join(dir, "cycle.yaml")
	os.WriteFile(cycle, []byte("steps:\n  - {name: a, skill: echo, depends_on: [b]}\n  - {name: b, skill: echo, depends_on: [a]}\n"), 0o644)
	failing := filepath.Join(dir, "fail.yaml")
	os.WriteFile(failing, []byte("steps:\n  - {name: bad, skill: image.resize, input: {image: AAAA, width: 1, height: 1}, max_retries: 0}\n  - {name: after, skill: echo, depends_on: [bad]}\n"), 0o644)
	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"a cycle exits 2 naming it", []string{"workflow", "run", cycle}, exitUsage, `steps "a" -> "b" -> "a" form a cycle`},
		{"a missing file exits 2", []string{"workflow", "run", filepath.Join(dir, "none.yaml")}, exitUsage, "read the workflow"},
		{"a missing ID exits 2", []string{"workflow", "get"}, exitUsage, "workflow get: missing ID"},
		{"an unknown workflow exits 1", []string{"workflow", "get", strings.Repeat("0", 32)}, exitFailed, "no workflow"},
		{"a bad state filter exits 2", []string{"workflow", "list", "--state", "lost"}, exitUsage, "--state"},
		{"--input-from with --input exits 2", []string{"task", "submit", "echo", "--input", "1", "--input-from", strings.Repeat("ab", 32)}, exitUsage, "leave out --input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, append([]string{"--repo", repo, "--api", url}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) {
				t.Errorf("exit %d, want %d; stderr %q does not say %q", code, tc.code, stderr, tc.msg)
			}
		})
	}
	code, stdout, stderr := cli(t, "--repo", repo, "--api", url, "workflow", "run", failing, "--wait")
	if code != exitFailed || !strings.Contains(stdout, "dependency_failed") || !strings.Contains(stdout, `after: step "bad" it depends on ended failed`) || !strings.Contains(stderr, "failed") {
		t.Errorf("a failing workflow: exit %d\n%s\n%s", code, stdout, stderr)
	}
}

func TestCLISubmitInputFrom(t *testing.T) {
	repo, url := workflowAPI(t)
	code, first, stderr := cli(t, "--repo", repo, "--api", url, "task", "submit", "echo", "--input", `{"data":"aGVsbG8="}`)
	if code != 0 {
		t.Fatalf("submit: exit %d: %s", code, stderr)
	}
	first = strings.TrimSpace(first)
	code, stdout, stderr := cli(t, "--repo", repo, "--api", url, "task", "submit", "hash.sha256", "--input-from", first, "--wait")
	if code != 0 || !strings.Contains(stdout, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824") {
		t.Fatalf("submit --input-from --wait: exit %d %q %q", code, stdout, stderr)
	}
	code, _, stderr = cli(t, "--repo", repo, "--api", url, "task", "list", "--state", "waiting")
	if code != 0 {
		t.Errorf("task list --state waiting: exit %d: %s", code, stderr)
	}
}

func TestCLICompletesWorkflowIDs(t *testing.T) {
	repo, url := workflowAPI(t)
	// An empty stdin is no workflow.
	code, stdout, stderr := cli(t, "--repo", repo, "--api", url, "workflow", "run", "-")
	if code != exitUsage || !strings.Contains(stderr, "empty") {
		t.Fatalf("run from empty stdin: exit %d %q %q", code, stdout, stderr)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "w.yaml")
	os.WriteFile(file, []byte("name: named\nsteps: [{name: a, skill: echo}]\n"), 0o644)
	code, stdout, stderr = cli(t, "--repo", repo, "--api", url, "workflow", "run", file, "--wait")
	if code != 0 {
		t.Fatalf("run: exit %d %s", code, stderr)
	}
	id := strings.Fields(stdout)[1]
	code, stdout, _ = cli(t, "--repo", repo, "--api", url, "__complete", "workflow", "get", "")
	if code != 0 || !strings.Contains(stdout, id+"\tnamed succeeded") {
		t.Errorf("completions of workflow get: %q, want %s", stdout, id)
	}
	code, stdout, _ = cli(t, "--repo", repo, "--api", url, "__complete", "workflow", "cancel", "")
	if code != 0 || strings.Contains(stdout, id) {
		t.Errorf("completions of workflow cancel offer a finished workflow: %q", stdout)
	}
	code, stdout, _ = cli(t, "--repo", repo, "--api", url, "__complete", "workflow", "list", "--state", "")
	if code != 0 || !strings.Contains(stdout, "canceled") {
		t.Errorf("completions of workflow list --state: %q", stdout)
	}
}
