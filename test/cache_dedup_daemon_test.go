package test

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

var spinGuest struct {
	once sync.Once
	path string
	err  error
}

// spinGuestModule builds test/testdata/spinupper for wasip1 once per test
// binary and returns the module's path; it skips without a go tool.
func spinGuestModule(t *testing.T) string {
	t.Helper()
	gobin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("no go tool to build the wasip1 guest: " + err.Error())
	}
	spinGuest.once.Do(func() {
		dir, err := os.MkdirTemp("", "cortexd-spin-guest-")
		if err != nil {
			spinGuest.err = err
			return
		}
		out := filepath.Join(dir, "spinupper.wasm")
		cmd := exec.Command(gobin, "build", "-o", out, "./testdata/spinupper")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			spinGuest.err = &buildError{err: err, out: string(msg)}
			return
		}
		spinGuest.path = out
	})
	if spinGuest.err != nil {
		t.Fatal(spinGuest.err)
	}
	return spinGuest.path
}

// TestDaemonExecutingNodeRunsIdenticalTasksFromTwoRequestersOnce runs
// three daemons: node 3 has a slow deterministic wasm skill (added with
// --deterministic), nodes 1 and 2 lack it and do not fetch modules, so
// their tasks for it can run only on node 3. Both submit the same task at
// once; node 3 runs it once, answers both (one of them marked cached),
// and its metrics count one miss and one shared lookup. A third request
// afterwards is a hit, and a no_cache one runs again.
func TestDaemonExecutingNodeRunsIdenticalTasksFromTwoRequestersOnce(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	module := spinGuestModule(t)
	bin := cortexdBinary(t)
	repo1, repo2, repo3 := initDaemonRepo(t, bin, "echo"), initDaemonRepo(t, bin, "echo"), initDaemonRepo(t, bin, "echo")
	startDaemon(t, bin, repo3)
	boot := daemonLoopbackAddr(t, repoClient(t, repo3))
	startDaemon(t, bin, repo1, "--bootstrap", boot)
	startDaemon(t, bin, repo2, "--bootstrap", boot)
	id3 := nodeID(t, repo3)

	code, stdout, stderr := runCLI(t, bin, "--repo", repo3, "skill", "add", module, "--name", "test.spin", "--version", "1.0.0",
		"--deterministic", "--timeout", "2m")
	if code != 0 {
		t.Fatalf("skill add on node 3: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	for _, repo := range []string{repo1, repo2} {
		pollUntil(t, 30*time.Second, "a requester to learn that node 3 offers test.spin", func() error {
			if s := skillOf(t, repo, "test.spin"); len(s.Providers) != 1 || s.Providers[0] != id3 {
				return &skillError{s}
			}
			return nil
		})
	}

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	req := apiv1.SubmitRequest{Skill: "test.spin", Input: json.RawMessage(`"same work"`)}
	submit := func(repo string, req apiv1.SubmitRequest) (*apiv1.Result, error) {
		c := repoClient(t, repo)
		task, err := c.Submit(ctx, req)
		if err != nil {
			return nil, err
		}
		done, err := c.Wait(ctx, task.ID)
		if err != nil {
			return nil, err
		}
		if done.State != apiv1.StateSucceeded || done.Result == nil {
			return nil, &stateError{done}
		}
		return done.Result, nil
	}

	var wg sync.WaitGroup
	start := make(chan struct{})
	results := make([]*apiv1.Result, 2)
	errs := make([]error, 2)
	for i, repo := range []string{repo1, repo2} {
		wg.Go(func() {
			<-start
			results[i], errs[i] = submit(repo, req)
		})
	}
	begun := time.Now()
	close(start)
	wg.Wait()
	t.Logf("two identical tasks answered in %v", time.Since(begun).Round(time.Millisecond))
	cached := 0
	for i, res := range results {
		if errs[i] != nil {
			t.Fatalf("requester %d: %v", i+1, errs[i])
		}
		if string(res.Output) != `"SAME WORK"` || res.ExecutedBy != id3 {
			t.Fatalf("requester %d: output %s from %s, want \"SAME WORK\" from node 3 %s", i+1, res.Output, res.ExecutedBy, id3)
		}
		if res.Cached {
			cached++
		}
		t.Logf("requester %d: cached %v, executed in %.0f ms", i+1, res.Cached, res.DurationMS)
	}
	if cached != 1 {
		t.Errorf("%d of the two results are marked cached, want 1 (the one that waited for the other's run)", cached)
	}
	c3 := repoClient(t, repo3)
	want := func(lines ...string) {
		t.Helper()
		prom, err := c3.Prometheus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range lines {
			if !strings.Contains(prom, l) {
				t.Errorf("node 3's metrics lack %q:\n%s", l, linesWith(prom, "cache"))
			}
		}
	}
	want(`cortex_peer_tasks_cache_lookups_total{result="miss"} 1`, `cortex_peer_tasks_cache_lookups_total{result="shared"} 1`,
		`cortex_peer_tasks_cache_lookups_total{result="hit"} 0`)

	// Afterwards the cache answers; no_cache runs it again.
	if res, err := submit(repo1, req); err != nil || !res.Cached {
		t.Fatalf("a third identical task: %+v, %v; want a cached result", res, err)
	}
	nc := req
	nc.NoCache = true
	if res, err := submit(repo2, nc); err != nil || res.Cached {
		t.Fatalf("a no_cache task: %+v, %v; want a fresh run", res, err)
	}
	want(`cortex_peer_tasks_cache_lookups_total{result="miss"} 1`, `cortex_peer_tasks_cache_lookups_total{result="hit"} 1`)
}

type skillError struct{ s apiv1.Skill }

func (e *skillError) Error() string { b, _ := json.Marshal(e.s); return "test.spin: " + string(b) }

type stateError struct{ t *apiv1.Task }

func (e *stateError) Error() string {
	b, _ := json.Marshal(e.t)
	return "task did not succeed: " + string(b)
}

// linesWith returns the lines of s that contain sub.
func linesWith(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
