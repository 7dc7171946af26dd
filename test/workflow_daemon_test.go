package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

func stepOf(t *testing.T, wf *apiv1.Workflow, name string) apiv1.WorkflowStep {
	t.Helper()
	for _, s := range wf.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("workflow %s has no step %q: %+v", wf.ID, name, wf.Steps)
	return apiv1.WorkflowStep{}
}

func taskOutput(t *testing.T, c *client.Client, id string) string {
	t.Helper()
	task, err := c.Task(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	if task.Result == nil || !task.Result.Success {
		t.Fatalf("task %s: %s, no output (error %+v)", id, task.State, task.Error)
	}
	return string(task.Result.OutputBytes())
}

func waitWorkflow(t *testing.T, c *client.Client, id string) *apiv1.Workflow {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wf, err := c.WaitWorkflow(ctx, id)
	if err != nil {
		t.Fatalf("wait for workflow %s: %v", id, err)
	}
	return wf
}

// TestWorkflowSurvivesKillMidWorkflow kills a daemon with SIGKILL while the
// first step of a workflow runs and a chained task waits for a task, then
// restarts it on the same repo: the workflow completes with the task IDs
// chosen at submit, every step ran once, and the chained task runs on its
// input's output.
func TestWorkflowSurvivesKillMidWorkflow(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	repo := initDaemonRepo(t, bin, "echo, debug.sleep")
	cfgPath := filepath.Join(repo, "config.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(cfgPath, append(cfg, "workflow:\n  max_workflows: 1\n"...), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startDaemon(t, bin, repo)
	c := repoClient(t, repo)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	wf, err := c.SubmitWorkflow(ctx, json.RawMessage(`{"name":"restart","steps":[
		{"name":"nap","skill":"debug.sleep","input":{"ms":1500},"timeout":"1m"},
		{"name":"copy","skill":"echo","depends_on":["nap"]},
		{"name":"join","skill":"echo","depends_on":["nap","copy"],"input":"mine"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	// workflow.max_workflows: 1 reaches the engine.
	if _, err := c.SubmitWorkflow(ctx, json.RawMessage(`{"steps":[{"name":"x","skill":"echo"}]}`)); !client.IsCode(err, apiv1.CodeTooManyWorkflows) ||
		!strings.Contains(err.Error(), "workflow.max_workflows") {
		t.Errorf("a second workflow with max_workflows 1: %v, want too_many_workflows naming the key", err)
	}
	first, err := c.Submit(ctx, apiv1.SubmitRequest{Skill: "debug.sleep", Input: json.RawMessage(`{"ms":1200}`), Timeout: apiv1.Duration(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	chained, err := c.Submit(ctx, apiv1.SubmitRequest{Skill: "echo", InputFrom: first.ID})
	if err != nil {
		t.Fatal(err)
	}
	if chained.State != apiv1.StateWaiting {
		t.Errorf("chained task is %s, want waiting", chained.State)
	}
	pollUntil(t, 10*time.Second, "the first step to run", func() error {
		got, err := c.Workflow(ctx, wf.ID)
		if err != nil {
			return err
		}
		if s := stepOf(t, got, "nap"); s.State != apiv1.StateRunning {
			return fmt.Errorf("nap is %s", s.State)
		}
		return nil
	})
	before, err := c.Workflow(ctx, wf.ID)
	if err != nil {
		t.Fatal(err)
	}
	if s := stepOf(t, before, "copy"); s.State != apiv1.StateWaiting {
		t.Fatalf("copy is %s before the kill, want waiting", s.State)
	}

	prom, err := c.Prometheus(ctx)
	if err != nil || !strings.Contains(prom, "\ncortex_workflows_running 1\n") || !strings.Contains(prom, "\ncortex_chained_tasks_active 1\n") {
		t.Errorf("metrics do not count 1 workflow and 1 chained task (err %v)", err)
	}

	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.done
	if err := os.Remove(filepath.Join(repo, "api")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	startDaemon(t, bin, repo)
	c2 := repoClient(t, repo)

	got := waitWorkflow(t, c2, wf.ID)
	if got.State != apiv1.WorkflowSucceeded {
		t.Fatalf("after the restart the workflow ended %s: %+v", got.State, got.Steps)
	}
	for i, s := range got.Steps {
		if s.TaskID != before.Steps[i].TaskID || s.State != apiv1.StateSucceeded {
			t.Errorf("step %s: task %s %s after the restart, task %s before", s.Name, s.TaskID, s.State, before.Steps[i].TaskID)
		}
	}
	if out := taskOutput(t, c2, stepOf(t, got, "copy").TaskID); out != `{"slept_ms":1500}` {
		t.Errorf("copy's output %s, want nap's", out)
	}
	if out := taskOutput(t, c2, stepOf(t, got, "join").TaskID); out != `{"input":"mine","deps":{"copy":{"slept_ms":1500},"nap":{"slept_ms":1500}}}` {
		t.Errorf("join's output %s", out)
	}
	// Each step's task exists once: the restart resubmitted none that ran.
	list, err := c2.Tasks(ctx, client.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, task := range list.Tasks {
		seen[task.ID]++
	}
	for _, s := range got.Steps {
		if seen[s.TaskID] != 1 {
			t.Errorf("step %s's task listed %d times", s.Name, seen[s.TaskID])
		}
	}

	wctx, wcancel := context.WithTimeout(ctx, time.Minute)
	defer wcancel()
	done, err := c2.Wait(wctx, chained.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != apiv1.StateSucceeded || done.Result == nil || string(done.Result.Output) != `{"slept_ms":1200}` {
		t.Errorf("chained task after the restart: %s %+v", done.State, done.Result)
	}
}

// TestWorkflowSpreadOverThreeDaemons runs a workflow on node 1 of three
// daemons whose skills differ, so that its steps run on three nodes, and
// one whose failing step's dependents end dependency_failed while the
// rest runs on.
func TestWorkflowSpreadOverThreeDaemons(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	repos := []string{
		initDaemonRepo(t, bin, "echo"),
		initDaemonRepo(t, bin, "hash.sha256"),
		initDaemonRepo(t, bin, "image.resize, debug.sleep"),
	}
	startDaemon(t, bin, repos[0])
	c1 := repoClient(t, repos[0])
	boot := daemonLoopbackAddr(t, c1)
	startDaemon(t, bin, repos[1], "--bootstrap", boot)
	startDaemon(t, bin, repos[2], "--bootstrap", boot)
	ids := make([]string, 3)
	for i, r := range repos {
		id, err := repoClient(t, r).ID(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id.ID
	}
	ctx := context.Background()
	pollUntil(t, 30*time.Second, "node 1 to learn every skill", func() error {
		skills, err := c1.Skills(ctx)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, s := range skills {
			if len(s.Providers) > 0 {
				seen[s.ID] = true
			}
		}
		for _, s := range []string{"echo", "hash.sha256", "image.resize", "debug.sleep"} {
			if !seen[s] {
				return fmt.Errorf("no provider of %s yet", s)
			}
		}
		return nil
	})

	t.Run("three steps on three nodes", func(t *testing.T) {
		file := filepath.Join(t.TempDir(), "spread.yaml")
		if err := os.WriteFile(file, []byte(`
name: spread
steps:
  - name: nap
    skill: debug.sleep
    input: {ms: 10}
  - name: digest
    skill: hash.sha256
    input: {data: aGVsbG8=}
  - name: join
    skill: echo
    depends_on: [nap, digest]
`), 0o644); err != nil {
			t.Fatal(err)
		}
		code, stdout, stderr := runCLI(t, bin, "--repo", repos[0], "workflow", "run", file, "--wait")
		if code != 0 {
			t.Fatalf("workflow run: exit %d\n%s\n%s", code, stdout, stderr)
		}
		id := strings.Fields(stdout)[1]
		wf, err := c1.Workflow(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		for name, node := range map[string]string{"nap": ids[2], "digest": ids[1], "join": ids[0]} {
			if s := stepOf(t, wf, name); s.State != apiv1.StateSucceeded || s.Node != node {
				t.Errorf("step %s %s on %s, want succeeded on %s", name, s.State, s.Node, node)
			}
		}
		want := `{"deps":{"digest":{"sha256":"` + helloSHA256 + `"},"nap":{"slept_ms":10}}}`
		if out := taskOutput(t, c1, stepOf(t, wf, "join").TaskID); out != want {
			t.Errorf("join's output %s, want %s", out, want)
		}
		if !strings.Contains(stdout, helloSHA256) {
			t.Errorf("workflow run --wait did not print join's output:\n%s", stdout)
		}
	})

	t.Run("a failed step's dependents end dependency_failed", func(t *testing.T) {
		wf, err := c1.SubmitWorkflow(ctx, json.RawMessage(`{"steps":[
			{"name":"bad","skill":"image.resize","input":{"image":"AAAA","width":1,"height":1},"max_retries":0},
			{"name":"after","skill":"echo","depends_on":["bad"]},
			{"name":"later","skill":"echo","depends_on":["after"]},
			{"name":"free","skill":"hash.sha256","input":{"data":"aGVsbG8="}}]}`))
		if err != nil {
			t.Fatal(err)
		}
		got := waitWorkflow(t, c1, wf.ID)
		if got.State != apiv1.WorkflowFailed {
			t.Fatalf("workflow %s, want failed: %+v", got.State, got.Steps)
		}
		if s := stepOf(t, got, "bad"); s.State != apiv1.StateFailed || s.Node != ids[2] {
			t.Errorf("bad: %+v", s)
		}
		for _, n := range []string{"after", "later"} {
			s := stepOf(t, got, n)
			if s.State != apiv1.StateDependencyFailed {
				t.Errorf("%s: %+v, want dependency_failed", n, s)
			}
			task, err := c1.Task(ctx, s.TaskID)
			if err != nil || task.State != apiv1.StateDependencyFailed || task.Error == nil || task.Error.Code != apiv1.CodeDependencyFailed || task.Attempts != 0 {
				t.Errorf("%s's task: %+v %v", n, task, err)
			}
		}
		if s := stepOf(t, got, "free"); s.State != apiv1.StateSucceeded || s.Node != ids[1] {
			t.Errorf("free: %+v", s)
		}
		code, stdout, _ := runCLI(t, bin, "--repo", repos[0], "workflow", "get", wf.ID)
		rows := regexp.MustCompile(`(?m)^(after|later)\s+dependency_failed\s+-\s+[0-9a-f]{64}`)
		if code != 0 || len(rows.FindAllString(stdout, -1)) != 2 || !strings.Contains(stdout, `after: step "bad" it depends on ended failed`) {
			t.Errorf("workflow get: exit %d\n%s", code, stdout)
		}
	})
}
