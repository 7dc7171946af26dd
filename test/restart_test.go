package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// TestRestartAfterKillResumesEveryTask submits 20 debug.sleep tasks to a
// daemon with two workers (two run, the rest wait in the queue), kills it
// with SIGKILL, restarts it on the same repo and checks that every task
// reaches exactly one terminal state, succeeded, with its result readable
// through the API (issue 5: nothing accepted is lost).
func TestRestartAfterKillResumesEveryTask(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	repo := initDaemonRepo(t, bin, "debug.sleep")
	cfgPath := filepath.Join(repo, "config.yaml")
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg = append(cfg, "queue:\n  workers: 2\n"...)
	if err := os.WriteFile(cfgPath, cfg, 0o600); err != nil {
		t.Fatal(err)
	}
	r := startDaemon(t, bin, repo)
	c := repoClient(t, repo)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	const n = 20
	ids := make([]string, 0, n)
	for i := range n {
		ms := 300 + 10*i
		task, err := c.Submit(ctx, apiv1.SubmitRequest{
			Skill: "debug.sleep", Input: json.RawMessage(fmt.Sprintf(`{"ms":%d}`, ms)), Timeout: apiv1.Duration(time.Minute),
		})
		if err != nil {
			t.Fatalf("submit %d: %v", i, err)
		}
		ids = append(ids, task.ID)
	}
	// Some run, the others wait in the queue.
	pollUntil(t, 10*time.Second, "a task running", func() error {
		l, err := c.Tasks(ctx, client.ListOptions{State: apiv1.StateRunning})
		if err != nil {
			return err
		}
		if len(l.Tasks) == 0 {
			return errors.New("none running")
		}
		return nil
	})
	queued, err := c.Tasks(ctx, client.ListOptions{State: apiv1.StateQueued})
	if err != nil || len(queued.Tasks) == 0 {
		t.Fatalf("before the kill: %d queued (err %v), want some", len(queued.Tasks), err)
	}

	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.done
	// A killed daemon leaves DIR/api behind: remove it, so that startDaemon
	// waits for the new one's.
	if err := os.Remove(filepath.Join(repo, "api")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	r2 := startDaemon(t, bin, repo)
	c2 := repoClient(t, repo)

	for i, id := range ids {
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		done, err := c2.Wait(wctx, id)
		wcancel()
		if err != nil {
			t.Fatalf("task %d (%s) after the restart: %v", i, id, err)
		}
		if done.State != apiv1.StateSucceeded || done.Result == nil {
			t.Fatalf("task %d ended %s (error %+v), want succeeded", i, done.State, done.Error)
		}
		if want := fmt.Sprintf(`{"slept_ms":%d}`, 300+10*i); string(done.Result.Output) != want {
			t.Errorf("task %d output %s, want %s", i, done.Result.Output, want)
		}
		got, err := c2.Task(ctx, id)
		if err != nil || got.State != apiv1.StateSucceeded {
			t.Errorf("task %d read again: %v %v", i, got.State, err)
		}
	}
	// Exactly one entry, terminal, per task.
	list, err := c2.Tasks(ctx, client.ListOptions{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, task := range list.Tasks {
		seen[task.ID]++
		if task.State != apiv1.StateSucceeded {
			t.Errorf("task %s listed as %s", task.ID, task.State)
		}
	}
	for i, id := range ids {
		if seen[id] != 1 {
			t.Errorf("task %d (%s) listed %d times, want 1", i, id, seen[id])
		}
	}
	if !strings.Contains(r2.stderr.String(), "resuming tasks after a restart") {
		t.Errorf("the restarted daemon did not log resuming its tasks")
	}

	// A second daemon on the same repo is refused.
	code, _, stderr := runCLI(t, bin, "--repo", repo, "daemon")
	if code == 0 || !strings.Contains(stderr, "in use") && !strings.Contains(stderr, "lock") {
		t.Errorf("a second daemon on the repo: exit %d, stderr %q; want a refusal", code, stderr)
	}

	// Metrics survive a restart: saved at shutdown, restored at start.
	m2, err := c2.Metrics(ctx)
	if err != nil || m2.Tasks.Completed < n {
		t.Fatalf("metrics before the second restart: %+v, %v; want %d or more completed", m2, err, n)
	}
	if err := r2.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-r2.done; err != nil {
		t.Errorf("daemon exit after SIGTERM: %v", err)
	}
	startDaemon(t, bin, repo)
	m3, err := repoClient(t, repo).Metrics(ctx)
	if err != nil || m3.Tasks.Completed != m2.Tasks.Completed || m3.Tasks.Submitted < m2.Tasks.Submitted {
		t.Errorf("metrics after a clean restart: %+v (err %v), want those before: %+v", m3.Tasks, err, m2.Tasks)
	}
	// Results are still readable after the second restart.
	if got, err := repoClient(t, repo).Task(ctx, ids[0]); err != nil || got.State != apiv1.StateSucceeded || got.Result == nil {
		t.Errorf("task 0 after the second restart: %+v, %v", got, err)
	}
}
