package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
	"github.com/cortexgrid/cortexd/pkg/wire"
)

// TestBlameWorkerKilledAndRestartedGetsTasksAgain runs a requester R and
// one worker W as cortexd processes. First an input over the wire limit
// is refused at submission with the limit in the message, and W's trust
// and metrics at R do not move. Then W is killed with SIGKILL while it
// holds six delegated tasks and restarted from the same repo (the same
// identity): R's trust in W must stay above the minimum trust that routing
// asks for, and every task must run on W within a minute of its coming
// back. Before the blame rules, the kill took W's trust at R from 0.60 to
// 0.20 and every task was refused as "below the minimum trust 0.30".
func TestBlameWorkerKilledAndRestartedGetsTasksAgain(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	const (
		held     = 6
		sleepMS  = 4000
		minTrust = 0.3 // trust.min_trust_default
	)
	bin := cortexdBinary(t)
	rRepo := initDaemonRepo(t, bin, "echo")
	appendConfig(t, rRepo, "breaker:\n  failures: 3\n  open_for: 2s\n")
	startDaemon(t, bin, rRepo)
	r := repoClient(t, rRepo)
	boot := daemonLoopbackAddr(t, r)
	wRepo := initDaemonRepo(t, bin, "debug.sleep")
	appendConfig(t, wRepo, "queue:\n  workers: 6\n")
	w := startDaemon(t, bin, wRepo, "--bootstrap", boot)
	wID := mustID(t, repoClient(t, wRepo))

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	pollUntil(t, 30*time.Second, "R to list W as a provider of debug.sleep", func() error {
		return wantProviders(ctx, r, "debug.sleep", wID)
	})
	// One task done: W's trust at R is 0.60, as in the field report.
	warm, err := r.Submit(ctx, apiv1.SubmitRequest{Skill: "debug.sleep", Input: json.RawMessage(`{"ms":1}`)})
	if err != nil {
		t.Fatal(err)
	}
	if done, err := r.Wait(ctx, warm.ID); err != nil || done.State != apiv1.StateSucceeded || done.Result.ExecutedBy != wID {
		t.Fatalf("warm-up task: %+v, %v; want it run on W", done, err)
	}
	trust0 := trustAt(t, ctx, r, wID)

	// An input the wire cannot carry is refused at once, naming the limit,
	// and counts against nobody.
	big := `"` + strings.Repeat("a", wire.MaxTaskInput+1) + `"`
	_, err = r.Submit(ctx, apiv1.SubmitRequest{Skill: "debug.sleep", Input: json.RawMessage(big)})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Code != apiv1.CodeInputTooLarge ||
		!strings.Contains(apiErr.Message, strconv.Itoa(wire.MaxTaskInput)) {
		t.Fatalf("submit of a %d-byte input = %v; want input_too_large naming the limit %d", len(big), err, wire.MaxTaskInput)
	}
	// Unchanged but for the decay of the seconds in between (1 h half-life).
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-3 }
	if got := trustAt(t, ctx, r, wID); !near(got.Trust, trust0.Trust) || got.Failures != 0 || got.WrongResults != 0 || !near(got.Ratings["debug.sleep"], trust0.Ratings["debug.sleep"]) {
		t.Errorf("W's trust after an oversize input = %+v; want it unchanged from %+v", got, trust0)
	}
	if m := nodeMetricsAt(t, ctx, r, wID); m.Submitted != 1 || m.Failed != 0 {
		t.Errorf("R's metrics of W after an oversize input = %+v; want the warm-up task alone", m)
	}

	ids := make([]string, held)
	for i := range ids {
		sub, err := r.Submit(ctx, apiv1.SubmitRequest{
			Skill: "debug.sleep", Input: json.RawMessage(fmt.Sprintf(`{"ms":%d}`, sleepMS)), Timeout: apiv1.Duration(2 * time.Minute),
		})
		if err != nil {
			t.Fatalf("submit task %d: %v", i, err)
		}
		ids[i] = sub.ID
	}
	pollUntil(t, 20*time.Second, "W to hold all six tasks", func() error {
		if _, delegated := tasksOn(ctx, r, ids, wID); len(delegated) != held {
			return fmt.Errorf("%d of %d delegated to W", len(delegated), held)
		}
		return nil
	})
	if err := w.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-w.done
	// The kill is seen: R's tasks leave W.
	pollUntil(t, 20*time.Second, "R to see W gone", func() error {
		if _, delegated := tasksOn(ctx, r, ids, wID); len(delegated) != 0 {
			return fmt.Errorf("%d still delegated to W", len(delegated))
		}
		return nil
	})
	if got := trustAt(t, ctx, r, wID); got.Trust < minTrust || got.Failures != 0 || got.Timeouts != 0 {
		t.Errorf("W's trust at R after the kill = %+v; want no failure recorded and trust at least %.2f", got, minTrust)
	}

	// W comes back with the same identity.
	if err := os.Remove(filepath.Join(wRepo, "api")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	startDaemon(t, bin, wRepo, "--bootstrap", boot)
	back := time.Now()
	if id := mustID(t, repoClient(t, wRepo)); id != wID {
		t.Fatalf("restarted W has ID %s; want %s", id, wID)
	}
	for _, id := range ids {
		wctx, wcancel := context.WithDeadline(ctx, back.Add(time.Minute))
		task, err := r.Wait(wctx, id)
		wcancel()
		if err != nil {
			t.Fatalf("task %s did not finish within a minute of W coming back: %v", short(id), err)
		}
		if task.State != apiv1.StateSucceeded || task.Result == nil || task.Result.ExecutedBy != wID {
			t.Errorf("task %s ended %s (error %+v, result %+v); want succeeded on W", short(id), task.State, task.Error, task.Result)
		}
	}
	t.Logf("all %d tasks ran on W %v after it came back", held, time.Since(back).Round(time.Millisecond))
	if got := trustAt(t, ctx, r, wID); got.Trust <= trust0.Trust || got.Failures != 0 {
		t.Errorf("W's trust at R after the tasks = %+v; want above %.2f, with no failure", got, trust0.Trust)
	}
	if m := nodeMetricsAt(t, ctx, r, wID); m.Failed != 0 || m.TimedOut != 0 {
		t.Errorf("R's metrics of W = %+v; want no failure or timeout: W was down, not wrong", m)
	}
}

func mustID(t testing.TB, c *client.Client) string {
	t.Helper()
	id, err := c.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return id.ID
}

// trustAt returns c's trust entry for p.
func trustAt(t testing.TB, ctx context.Context, c *client.Client, p string) apiv1.TrustEntry {
	t.Helper()
	e, err := c.TrustOf(ctx, p)
	if err != nil {
		t.Fatalf("trust of %s: %v", short(p), err)
	}
	return *e
}

// nodeMetricsAt returns c's task metrics for node p.
func nodeMetricsAt(t testing.TB, ctx context.Context, c *client.Client, p string) apiv1.TaskMetrics {
	t.Helper()
	m, err := c.Metrics(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return m.PerNode[p]
}
