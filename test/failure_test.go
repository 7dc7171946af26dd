package test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// TestKillWorkerMidBatch runs three cortexd processes: a requester R that
// offers only echo, and two workers that offer debug.sleep, five slots
// each. It submits a batch of 20 sleeps through R's API, waits until one
// worker (the victim) has finished some of them and runs more, and kills
// it with SIGKILL. Every task must succeed within the bound: the ones the
// victim finished before the kill with its result, the ones it ran or
// queued on the other worker. And each must end exactly once as a user of
// R's API sees it: one terminal event per task on R's event stream, and a
// final status that does not change afterwards.
func TestKillWorkerMidBatch(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	const (
		tasks   = 20
		sleepMS = 1500
		bound   = 60 * time.Second // from the first submission to the last task's end
	)
	bin := cortexdBinary(t)
	rRepo := initDaemonRepo(t, bin, "echo")
	startDaemon(t, bin, rRepo)
	r := repoClient(t, rRepo)
	boot := daemonLoopbackAddr(t, r)
	workers := make([]*killWorker, 2)
	for i := range workers {
		// Five workers each: whatever the split, one of them runs its share
		// in more than one round.
		repo := initDaemonRepo(t, bin, "debug.sleep")
		appendConfig(t, repo, "queue:\n  workers: 5\n")
		w := &killWorker{proc: startDaemon(t, bin, repo, "--bootstrap", boot), api: repoClient(t, repo)}
		id, err := w.api.ID(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		w.id = id.ID
		workers[i] = w
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*bound)
	defer cancel()
	pollUntil(t, 30*time.Second, "R to list both workers as providers of debug.sleep", func() error {
		return wantProviders(ctx, r, "debug.sleep", workers[0].id, workers[1].id)
	})

	events := watchTerminalEvents(t, ctx, r)
	start := time.Now()
	ids := make([]string, tasks)
	for i := range ids {
		sub, err := r.Submit(ctx, apiv1.SubmitRequest{
			Skill: "debug.sleep", Input: json.RawMessage(fmt.Sprintf(`{"ms":%d}`, sleepMS)), Timeout: apiv1.Duration(bound),
		})
		if err != nil {
			t.Fatalf("submit task %d: %v", i, err)
		}
		ids[i] = sub.ID
	}

	// The victim is the worker R sent tasks to (R routes a burst to the
	// best-scored worker, so which is not known in advance), once it has
	// finished some and runs more: its finished results must stay, its
	// running and queued tasks must move.
	var victim, survivor *killWorker
	var held []string // tasks R shows delegated to the victim when it dies
	pollUntil(t, 20*time.Second, "a worker to have finished tasks of the batch and run more", func() error {
		for i, w := range workers {
			m, err := w.api.Metrics(ctx)
			if err != nil {
				return err
			}
			if m.Queue.InFlight == 0 {
				continue
			}
			done, delegated := tasksOn(ctx, r, ids, w.id)
			if done > 0 && len(delegated) > 0 {
				victim, survivor, held = w, workers[1-i], delegated
				return nil
			}
		}
		return errors.New("no worker has yet")
	})
	if err := victim.proc.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	err := <-victim.proc.done
	victim.proc.done <- err
	t.Logf("killed worker %s with %d tasks delegated to it, %v after the first submission", short(victim.id), len(held), killed.Sub(start).Round(time.Millisecond))

	final := make(map[string]*apiv1.Task, tasks)
	moved, before := 0, 0
	for _, id := range ids {
		wctx, wcancel := context.WithDeadline(ctx, start.Add(bound))
		task, err := r.Wait(wctx, id)
		wcancel()
		if err != nil {
			t.Fatalf("task %s did not finish within %v of the first submission: %v", id, bound, err)
		}
		final[id] = task
		res := task.Result
		switch {
		case task.State != apiv1.StateSucceeded || res == nil:
			t.Errorf("task %s ended %s (error %+v); want succeeded", id, task.State, task.Error)
		case string(res.Output) != fmt.Sprintf(`{"slept_ms":%d}`, sleepMS):
			t.Errorf("task %s output %s; want slept_ms %d", id, res.Output, sleepMS)
		case res.ExecutedBy == survivor.id:
			if slices.Contains(task.Tried, victim.id) {
				moved++
			}
		case res.ExecutedBy == victim.id:
			before++
			if task.FinishedAt == nil || task.FinishedAt.After(killed) {
				t.Errorf("task %s reports a result from the killed worker, finished at %v, after the kill at %v", id, task.FinishedAt, killed)
			}
		default:
			t.Errorf("task %s executed by %s; want one of the workers", id, res.ExecutedBy)
		}
	}
	t.Logf("all %d tasks succeeded %v after the first submission: %d on the killed worker before the kill, %d moved from it",
		tasks, time.Since(start).Round(time.Millisecond), before, moved)
	if moved == 0 {
		t.Errorf("no task moved from the killed worker to %s; want the ones it held", short(survivor.id))
	}
	if before == 0 {
		t.Errorf("no task kept the result the killed worker gave before the kill")
	}
	for _, id := range held {
		if res := final[id].Result; res != nil && res.ExecutedBy == victim.id {
			continue // it finished before the kill
		}
		if !slices.Contains(final[id].Tried, survivor.id) {
			t.Errorf("task %s, delegated to the killed worker, tried %v; want it moved to %s", id, final[id].Tried, short(survivor.id))
		}
	}

	// A local task after the batch: once its end is on the stream, every
	// end published before it is too.
	marker, err := r.Submit(ctx, apiv1.SubmitRequest{Skill: "echo", Input: json.RawMessage(`"marker"`)})
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the marker task's end on the event stream", func() error {
		if err := events.err(); err != nil {
			return err
		}
		if events.count(marker.ID) == 0 {
			return errors.New("not yet")
		}
		return nil
	})
	for _, id := range ids {
		if n := events.count(id); n != 1 {
			t.Errorf("task %s has %d terminal events on R's event stream; want exactly 1", id, n)
		}
		again, err := r.Task(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		was := final[id]
		if again.State != was.State || again.Result == nil || again.Result.ExecutedBy != was.Result.ExecutedBy || !again.FinishedAt.Equal(*was.FinishedAt) {
			t.Errorf("task %s changed after it finished: now %s by %v at %v", id, again.State, again.Result, again.FinishedAt)
		}
	}
}

// appendConfig appends top-level keys to a daemon repo's config.yaml.
func appendConfig(t testing.TB, repo, yaml string) {
	t.Helper()
	f, err := os.OpenFile(filepath.Join(repo, "config.yaml"), os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.WriteString(yaml)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
}

// killWorker is a worker daemon of TestKillWorkerMidBatch.
type killWorker struct {
	proc *daemonProc
	api  *client.Client
	id   string
}

// wantProviders returns nil once c lists every one of ids as a provider
// of skill.
func wantProviders(ctx context.Context, c *client.Client, skill string, ids ...string) error {
	skills, err := c.Skills(ctx)
	if err != nil {
		return err
	}
	for _, s := range skills {
		if s.ID != skill {
			continue
		}
		for _, id := range ids {
			if !slices.Contains(s.Providers, id) {
				return fmt.Errorf("%s not yet a provider of %s (providers: %v)", id, skill, s.Providers)
			}
		}
		return nil
	}
	return fmt.Errorf("no provider of %s yet", skill)
}

// tasksOn returns how many of ids c shows succeeded on node, and the
// ones it shows delegated to node.
func tasksOn(ctx context.Context, c *client.Client, ids []string, node string) (done int, delegated []string) {
	for _, id := range ids {
		task, err := c.Task(ctx, id)
		switch {
		case err != nil:
		case task.State == apiv1.StateDelegated && task.Node == node:
			delegated = append(delegated, id)
		case task.State == apiv1.StateSucceeded && task.Result != nil && task.Result.ExecutedBy == node:
			done++
		}
	}
	return done, delegated
}

// terminalEvents counts the terminal task events of a node's event stream.
// It is safe for concurrent use.
type terminalEvents struct {
	mu      sync.Mutex
	n       map[string]int
	readErr error // why the stream ended early
}

// watchTerminalEvents opens c's event stream and counts terminal task
// events until ctx ends. The subscription is live when it returns.
func watchTerminalEvents(t testing.TB, ctx context.Context, c *client.Client) *terminalEvents {
	t.Helper()
	sctx, cancel := context.WithCancel(ctx)
	es, err := c.Events(sctx, "")
	if err != nil {
		cancel()
		t.Fatalf("open the event stream: %v", err)
	}
	te := &terminalEvents{n: make(map[string]int)}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			ev, err := es.Next()
			if err != nil {
				if sctx.Err() == nil {
					te.mu.Lock()
					te.readErr = fmt.Errorf("event stream ended: %w", err)
					if errors.Is(err, io.EOF) {
						te.readErr = errors.New("event stream ended by the daemon")
					}
					te.mu.Unlock()
				}
				return
			}
			if ev.Task != nil && apiv1.Terminal(ev.Task.State) {
				te.mu.Lock()
				te.n[ev.Task.ID]++
				te.mu.Unlock()
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		_ = es.Close()
		<-done
	})
	return te
}

func (te *terminalEvents) count(id string) int {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.n[id]
}

func (te *terminalEvents) err() error {
	te.mu.Lock()
	defer te.mu.Unlock()
	return te.readErr
}

// short is the end of a peer ID, as logs print it.
func short(id string) string {
	if len(id) > 8 {
		return "…" + id[len(id)-8:]
	}
	return id
}
