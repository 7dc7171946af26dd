package test

import (
	"context"
	"encoding/json"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// TestCacheAnswersASecondRequesterWithoutRunningAgain: node B offers a
// deterministic skill and has a result cache; two other nodes ask it for
// the same work, one after the other. B runs it once, and answers the
// second requester from its cache.
func TestCacheAnswersASecondRequesterWithoutRunningAgain(t *testing.T) {
	var runs atomic.Int64
	det := funcSkill{
		desc: skill.Descriptor{ID: "test.det", Version: "1.0.0", Description: "test skill: deterministic", Deterministic: true},
		fn: func(_ context.Context, in skill.SkillInput) ([]byte, error) {
			runs.Add(1)
			return append([]byte("det:"), in.Data...), nil
		},
	}
	b := newHarnessNode(t, harnessConfig{skills: []skill.Skill{det}})
	rc, err := skill.NewResultCache(skill.CacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b.Coord.UseResultCache(rc)
	t.Cleanup(func() { b.Coord.UseResultCache(nil) })
	a1 := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{b}})
	a2 := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{b}})

	for i, a := range []*harnessNode{a1, a2} {
		a.awaitOffer(t, "test.det", b.ID)
		res := a.run(t, skill.NewSkillTask("test.det", skill.RawInput([]byte("same")), ""))
		if string(res.Output) != "det:same" || res.ExecutedBy != b.ID {
			t.Fatalf("requester %d: output %q from %s, want %q from B", i+1, res.Output, res.ExecutedBy.ShortString(), "det:same")
		}
		if n := runs.Load(); n != 1 {
			t.Fatalf("after requester %d: B ran the skill %d times, want 1", i+1, n)
		}
		if res.Cached != (i == 1) {
			t.Errorf("requester %d: result cached = %v, want %v (B answered from its cache the second time)", i+1, res.Cached, i == 1)
		}
	}
	// A requester that opts out gets a fresh run on B: no_cache travels.
	fresh := skill.NewSkillTask("test.det", skill.RawInput([]byte("same")), "")
	fresh.NoCache = true
	if res := a2.run(t, fresh); res.Cached || runs.Load() != 2 {
		t.Fatalf("a no_cache task: cached %v, B ran the skill %d times in all; want a fresh run (2)", res.Cached, runs.Load())
	}
	runs.Store(1)
	if st := rc.Stats(); st.PeerHits != 1 || st.PeerMisses != 1 {
		t.Errorf("B's cache: %+v, want 1 peer hit and 1 peer miss", st)
	}

	// Another input: B runs it.
	a1.run(t, skill.NewSkillTask("test.det", skill.RawInput([]byte("other")), ""))
	if n := runs.Load(); n != 2 {
		t.Fatalf("another input: B ran the skill %d times in all, want 2", n)
	}
}

// TestCacheSurvivesADaemonRestart runs a real daemon: a repeated
// hash.sha256 task is answered from the cache (cached: true), raw
// submissions included, no_cache runs it, and the cache is still there
// after a kill -9 and restart (it is written through to the store within
// a quarter second).
func TestCacheSurvivesADaemonKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	repo := initDaemonRepo(t, bin, "hash.sha256")
	r := startDaemon(t, bin, repo)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	run := func(c *client.Client, req apiv1.SubmitRequest, raw bool) *apiv1.Result {
		t.Helper()
		var task *apiv1.Task
		var err error
		if raw {
			task, err = c.SubmitRaw(ctx, req, strings.NewReader("raw bytes"), int64(len("raw bytes")))
		} else {
			task, err = c.Submit(ctx, req)
		}
		if err != nil {
			t.Fatalf("submit: %v", err)
		}
		done, err := c.Wait(ctx, task.ID)
		if err != nil || done.State != apiv1.StateSucceeded || done.Result == nil {
			t.Fatalf("task %s: %+v, %v; want a success", task.ID, done, err)
		}
		return done.Result
	}
	req := apiv1.SubmitRequest{Skill: "hash.sha256", Input: json.RawMessage(`{"data":"aGVsbG8="}`)}
	c := repoClient(t, repo)
	first := run(c, req, false)
	if first.Cached {
		t.Fatal("the first run is marked cached")
	}
	if again := run(c, req, false); !again.Cached || string(again.Output) != string(first.Output) || again.ExecutedBy != first.ExecutedBy {
		t.Fatalf("repeat: %+v; want the first run's output, cached, executed by %s", again, first.ExecutedBy)
	}
	nc := req
	nc.NoCache = true
	if res := run(c, nc, false); res.Cached {
		t.Error("a no_cache task was answered from the cache")
	}
	if res := run(c, apiv1.SubmitRequest{Skill: "hash.sha256"}, true); res.Cached {
		t.Error("the first raw run is marked cached")
	}
	if res := run(c, apiv1.SubmitRequest{Skill: "hash.sha256", NoCache: true}, true); res.Cached {
		t.Error("a raw no_cache task was answered from the cache")
	}
	if res := run(c, apiv1.SubmitRequest{Skill: "hash.sha256"}, true); !res.Cached {
		t.Error("a repeated raw task was not answered from the cache")
	}
	prom, err := c.Prometheus(ctx)
	if err != nil || !strings.Contains(prom, `cortex_tasks_cache_lookups_total{result="hit"} 2`) {
		t.Errorf("metrics: %v; want 2 cache hits in:\n%s", err, prom)
	}

	// The writer flushes within 250 ms plus one commit; a second is ample
	// on a loaded machine. No clean shutdown: nothing is saved at exit.
	time.Sleep(time.Second)
	if err := r.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-r.done
	startDaemon(t, bin, repo)
	c = repoClient(t, repo)
	if res := run(c, req, false); !res.Cached || string(res.Output) != string(first.Output) {
		t.Fatalf("after kill -9 and restart: %+v; want the cached output", res)
	}
	if res := run(c, apiv1.SubmitRequest{Skill: "hash.sha256"}, true); !res.Cached {
		t.Error("after kill -9 and restart: the raw task was not answered from the cache")
	}
}
