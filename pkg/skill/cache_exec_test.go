package skill

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// peerTask is a peer's request for test.det on data, due in d.
func peerTask(data string, d time.Duration) *grid.RemoteTask {
	return &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.det", Input: []byte(data), InputKind: grid.InputRaw,
		Deadline: time.Now().Add(d), Attempt: 1}
}

// send hands rt from peer p to e's coordinator and returns its replies.
func send(t testing.TB, e *coEnv, p peer.ID, rt *grid.RemoteTask) *coReplies {
	t.Helper()
	r := newCoReplies()
	if err := e.c.HandleTask(p, rt, grid.ReplyFunc(r.reply)); err != nil {
		t.Fatalf("request %s from %s: %v", rt.ID.Short(), p.ShortString(), err)
	}
	return r
}

// awaitJoins waits until n requests joined a run going on in rc.
func awaitJoins(t *testing.T, rc *ResultCache, n uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for rc.peerJoins.Load() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d requests joined the run, want %d", rc.peerJoins.Load(), n)
		}
		time.Sleep(time.Millisecond)
	}
}

func TestExecutingNodeSharesOneRunBetweenIdenticalRequests(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, rc := newCaEnv(t, s, CacheConfig{})
	a, b := e.peers[0], e.peers[1]
	rts := []*grid.RemoteTask{peerTask("x", time.Minute), peerTask("x", time.Minute), peerTask("x", time.Minute)}
	first := send(t, e, a, rts[0])
	<-s.started
	replies := []*coReplies{first, send(t, e, b, rts[1]), send(t, e, a, rts[2])}
	close(s.gate)
	for i, r := range replies {
		res := ciResult(t, r)
		if !res.Success || string(res.Output) != "out:x" || res.ID != rts[i].ID || res.Executor != e.self {
			t.Fatalf("request %d: %+v", i, res)
		}
		if want := i > 0; res.Cached != want {
			t.Errorf("request %d: cached = %v, want %v", i, res.Cached, want)
		}
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("skill ran %d times for three identical requests, want 1", n)
	}
	if st := rc.Stats(); st.PeerMisses != 1 || st.PeerShared != 2 || st.PeerHits != 0 || st.Entries != 1 {
		t.Errorf("stats = %+v, want 1 peer miss, 2 shared, 1 entry", st)
	}
	// Later, the cache answers at once.
	if res := ciResult(t, send(t, e, b, peerTask("x", time.Minute))); !res.Success || !res.Cached || s.runs.Load() != 1 {
		t.Fatalf("a later request: %+v after %d runs; want a cached success, no run", res, s.runs.Load())
	}
	if st := rc.Stats(); st.PeerHits != 1 {
		t.Errorf("stats = %+v, want 1 peer hit", st)
	}
}

func TestExecutingNodeKeepsASharedRunUntilTheLastWaiterLeaves(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, rc := newCaEnv(t, s, CacheConfig{})
	a, b := e.peers[0], e.peers[1]

	// The requester the run started for cancels: the other still gets it.
	rt1, rt2 := peerTask("x", time.Minute), peerTask("x", time.Minute)
	r1 := send(t, e, a, rt1)
	<-s.started
	r2 := send(t, e, b, rt2)
	e.c.CancelTask(a, rt1.ID)
	if res := ciResult(t, r1); res.ErrorCode != grid.CodeCanceled {
		t.Fatalf("canceled request: %+v, want CodeCanceled", res)
	}
	if n := s.canceled.Load(); n != 0 {
		t.Fatal("the shared run was canceled while a request waited for it")
	}
	close(s.gate)
	if res := ciResult(t, r2); !res.Success || string(res.Output) != "out:x" {
		t.Fatalf("the remaining request: %+v", res)
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("skill ran %d times, want 1", n)
	}

	// Every requester cancels: the run stops, and nothing is cached.
	s.gate = make(chan struct{})
	defer close(s.gate)
	rt3, rt4 := peerTask("y", time.Minute), peerTask("y", time.Minute)
	r3 := send(t, e, a, rt3)
	<-s.started
	r4 := send(t, e, b, rt4)
	e.c.CancelTask(b, rt4.ID)
	ciResult(t, r4)
	if n := s.canceled.Load(); n != 0 {
		t.Fatal("the shared run was canceled while a request waited for it")
	}
	e.c.CancelTask(a, rt3.ID)
	if res := ciResult(t, r3); res.ErrorCode != grid.CodeCanceled {
		t.Fatalf("canceled request: %+v, want CodeCanceled", res)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.canceled.Load() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the run went on after its last requester canceled")
		}
		time.Sleep(time.Millisecond)
	}
	rc.mu.Lock()
	left := len(rc.runs)
	rc.mu.Unlock()
	if st := rc.Stats(); st.Entries != 1 || left != 0 {
		t.Errorf("cache holds %d entries (want 1, of x) and %d runs (want 0)", st.Entries, left)
	}
}

func TestExecutingNodeGivesEveryWaiterTheFailureAndCachesNone(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8), fail: errors.New("bad input")}
	e, rc := newCaEnv(t, s, CacheConfig{})
	r1 := send(t, e, e.peers[0], peerTask("x", time.Minute))
	<-s.started
	r2 := send(t, e, e.peers[1], peerTask("x", time.Minute))
	awaitJoins(t, rc, 1)
	close(s.gate)
	for i, r := range []*coReplies{r1, r2} {
		if res := ciResult(t, r); res.Success || res.Cached || res.ErrorCode != grid.CodeExecutionFailed {
			t.Fatalf("request %d: %+v, want an uncached execution failure", i, res)
		}
	}
	if st := rc.Stats(); st.Entries != 0 || st.PeerShared != 0 {
		t.Fatalf("stats = %+v, want no entry and nothing shared", st)
	}
	if res := ciResult(t, send(t, e, e.peers[0], peerTask("x", time.Minute))); res.Success {
		t.Fatalf("a request after the failure: %+v", res)
	}
	if n := s.runs.Load(); n != 2 {
		t.Fatalf("skill ran %d times, want 2 (once for the two waiters, once after)", n)
	}
}

func TestExecutingNodeRunsNoCacheRequestsOnTheirOwn(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, rc := newCaEnv(t, s, CacheConfig{})
	var rs []*coReplies
	for _, p := range e.peers {
		rt := peerTask("x", time.Minute)
		rt.NoCache = true
		rs = append(rs, send(t, e, p, rt))
		<-s.started
	}
	close(s.gate)
	for i, r := range rs {
		if res := ciResult(t, r); !res.Success || res.Cached {
			t.Fatalf("no_cache request %d: %+v", i, res)
		}
	}
	if st := rc.Stats(); s.runs.Load() != 2 || st.Entries != 0 || st.PeerMisses != 0 {
		t.Fatalf("no_cache: %d runs (want 2), stats %+v (want untouched)", s.runs.Load(), st)
	}
}

func TestLocalSubmissionJoinsAPeersRunAndWaitersAreCapped(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, rc := newCaEnv(t, s, CacheConfig{})
	rc.maxWaiters = 3
	r1 := send(t, e, e.peers[0], peerTask("x", time.Minute))
	<-s.started
	id := e.submit(t, caTask(e, "x"))
	if st := e.state(t, id); st.State != StateQueued {
		t.Fatalf("local task is %s, want queued behind the peer's run", st.State)
	}
	r2 := send(t, e, e.peers[1], peerTask("x", time.Minute))
	// The fourth waiter is one too many.
	err := e.c.HandleTask(e.peers[1], peerTask("x", time.Minute), grid.ReplyFunc(newCoReplies().reply))
	var rej *grid.RejectError
	if !errors.As(err, &rej) || rej.Reason != grid.RejectQueueFull || rej.RetryAfter <= 0 {
		t.Fatalf("request past the cap: %v, want RejectQueueFull with a retry-after", err)
	}
	close(s.gate)
	res, werr := e.wait(t, id)
	if werr != nil || !res.Cached || string(res.Output) != "out:x" || res.ExecutedBy != e.self {
		t.Fatalf("local task: %+v, %v; want the peer's run's output, cached", res, werr)
	}
	for i, r := range []*coReplies{r1, r2} {
		if res := ciResult(t, r); !res.Success {
			t.Fatalf("request %d: %+v", i, res)
		}
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("skill ran %d times for a peer's and a local task, want 1", n)
	}
	if st := rc.Stats(); st.Shared != 1 || st.Misses != 0 {
		t.Errorf("stats = %+v, want 1 local shared and no local miss", st)
	}
}

func TestExecutingNodeRunsAgainForAWaiterWithALaterDeadline(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, rc := newCaEnv(t, s, CacheConfig{})
	short := send(t, e, e.peers[0], peerTask("x", 300*time.Millisecond))
	<-s.started
	long := send(t, e, e.peers[1], peerTask("x", time.Minute))
	if res := ciResult(t, short); res.ErrorCode != grid.CodeTimeout {
		t.Fatalf("the short request: %+v, want CodeTimeout", res)
	}
	select {
	case <-s.started:
	case <-time.After(10 * time.Second):
		t.Fatal("no run for the request whose deadline had not passed")
	}
	close(s.gate)
	if res := ciResult(t, long); !res.Success || string(res.Output) != "out:x" {
		t.Fatalf("the long request: %+v", res)
	}
	if st := rc.Stats(); st.PeerMisses != 2 || st.Entries != 1 {
		t.Errorf("stats = %+v, want 2 peer misses (a run each), 1 entry", st)
	}
}

// BenchmarkCacheDedupIncoming: 1000 identical requests from two peers at
// once, while the first runs; the skill must run once per round.
func BenchmarkCacheDedupIncoming(b *testing.B) {
	const n = 1000
	for round := 0; b.Loop(); round++ {
		b.StopTimer()
		s := &caSkill{det: true, gate: make(chan struct{})}
		e, _ := newCaEnv(b, s, CacheConfig{})
		b.StartTimer()
		rs := make([]*coReplies, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				r := &coReplies{ch: make(chan *grid.RemoteResult, 1)}
				if err := e.c.HandleTask(e.peers[i%2], peerTask("same", time.Minute), grid.ReplyFunc(r.reply)); err != nil {
					b.Error(err)
				}
				rs[i] = r
			})
		}
		wg.Wait()
		close(s.gate)
		for i, r := range rs {
			select {
			case res := <-r.ch:
				if !res.Success {
					b.Fatalf("request %d: %+v", i, res)
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("request %d: no result", i)
			}
		}
		if got := s.runs.Load(); got != 1 {
			b.Fatalf("round %d: skill ran %d times for %d identical requests, want 1", round, got, n)
		}
	}
	b.ReportMetric(n, "tasks/op")
}

// BenchmarkCacheIncoming is a peer's request answered from the cache
// (hit) against one that runs (miss, a new input each time; no_cache, the
// same input opting out), in the same run.
func BenchmarkCacheIncoming(b *testing.B) {
	s := &caSkill{det: true}
	e, _ := newCaEnv(b, s, CacheConfig{})
	r := &coReplies{ch: make(chan *grid.RemoteResult, 1)}
	run := func(b *testing.B, rt func(i int) *grid.RemoteTask) {
		for i := 0; b.Loop(); i++ {
			if err := e.c.HandleTask(e.peers[i%2], rt(i), grid.ReplyFunc(r.reply)); err != nil {
				b.Fatal(err)
			}
			if res := <-r.ch; !res.Success {
				b.Fatalf("%+v", res)
			}
		}
	}
	b.Run("miss", func(b *testing.B) {
		run(b, func(i int) *grid.RemoteTask { return peerTask(fmt.Sprint("miss-", i), time.Minute) })
	})
	b.Run("no_cache", func(b *testing.B) {
		run(b, func(int) *grid.RemoteTask { rt := peerTask("hit", time.Minute); rt.NoCache = true; return rt })
	})
	b.Run("hit", func(b *testing.B) {
		run(b, func(int) *grid.RemoteTask { return peerTask("hit", time.Minute) })
	})
}

func TestPeersRequestWaitsForAnIdenticalLocalTaskRunningHere(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, rc := newCaEnv(t, s, CacheConfig{})
	id := e.submit(t, caTask(e, "x"))
	<-s.started
	r := send(t, e, e.peers[0], peerTask("x", time.Minute))
	awaitJoins(t, rc, 1)
	close(s.gate)
	if res, err := e.wait(t, id); err != nil || res.Cached {
		t.Fatalf("local task: %+v, %v", res, err)
	}
	if res := ciResult(t, r); !res.Success || !res.Cached || string(res.Output) != "out:x" {
		t.Fatalf("peer's request: %+v; want the local run's output, cached", res)
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("skill ran %d times for a local task and a peer's, want 1", n)
	}
	if st := rc.Stats(); st.PeerShared != 1 || st.PeerMisses != 0 {
		t.Errorf("stats = %+v, want 1 peer shared, no peer miss", st)
	}

	// The local task's caller cancels it: the peer's request runs, and
	// a local follower waits for that run.
	s.gate = make(chan struct{})
	lead := e.submit(t, caTask(e, "y"))
	<-s.started
	r = send(t, e, e.peers[1], peerTask("y", time.Minute))
	awaitJoins(t, rc, 2)
	follower := e.submit(t, caTask(e, "y"))
	if err := e.c.Cancel(lead); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.started:
	case <-time.After(10 * time.Second):
		t.Fatal("the peer's request did not run after the local task it waited for was canceled")
	}
	close(s.gate)
	if res := ciResult(t, r); !res.Success || res.Cached {
		t.Fatalf("peer's request: %+v; want its own run's output", res)
	}
	if res, err := e.wait(t, follower); err != nil || !res.Cached || string(res.Output) != "out:y" {
		t.Fatalf("local follower: %+v, %v; want the peer's run's output, cached", res, err)
	}
	if n := s.runs.Load(); n != 3 {
		t.Fatalf("skill ran %d times in all, want 3 (x once, y canceled, y once)", n)
	}
}

func TestSharedRunSurvivesALostRequesterAndStopsAtClose(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, rc := newCaEnv(t, s, CacheConfig{})
	defer close(s.gate)
	rt1, rt2 := peerTask("x", time.Minute), peerTask("x", time.Minute)
	r1 := send(t, e, e.peers[0], rt1)
	<-s.started
	r2 := send(t, e, e.peers[1], rt2)
	awaitJoins(t, rc, 1)
	e.c.AbandonTask(e.peers[0], rt1) // its requester's connection is lost
	if res := ciResult(t, r1); res.ErrorCode != grid.CodeCanceled {
		t.Fatalf("abandoned request: %+v, want CodeCanceled", res)
	}
	if n := s.canceled.Load(); n != 0 {
		t.Fatal("the shared run stopped when one of its two requesters was lost")
	}
	if err := e.c.Close(); err != nil {
		t.Fatal(err)
	}
	if res := ciResult(t, r2); res.ErrorCode != grid.CodeCanceled {
		t.Fatalf("request at Close: %+v, want CodeCanceled", res)
	}
	if n := s.canceled.Load(); n != 1 {
		t.Fatalf("%d runs stopped by Close, want 1", n)
	}
	if st := rc.Stats(); st.Entries != 0 {
		t.Errorf("cache holds %d entries after a canceled run, want 0", st.Entries)
	}
}

func TestSharedRunsTakeOneQueuePlacePerKey(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e := newCoEnv(t, coEnvConfig{workers: 1, queueOpts: []grid.QueueOption{grid.WithMaxPerLevel(1)}})
	if err := e.reg.Register(s); err != nil {
		t.Fatal(err)
	}
	rc, err := NewResultCache(CacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	e.c.UseResultCache(rc)
	a, b := e.peers[0], e.peers[1]
	rx := send(t, e, a, peerTask("x", time.Minute)) // runs on the one worker
	<-s.started
	ry := send(t, e, a, peerTask("y", time.Minute)) // takes the one queue place
	ry2 := send(t, e, b, peerTask("y", time.Minute))
	for range 2 { // a new key finds no place, and leaves no run behind
		err := e.c.HandleTask(b, peerTask("z", time.Minute), grid.ReplyFunc(newCoReplies().reply))
		var rej *grid.RejectError
		if !errors.As(err, &rej) || rej.Reason != grid.RejectQueueFull {
			t.Fatalf("a third key with the queue full: %v, want RejectQueueFull", err)
		}
	}
	close(s.gate)
	for i, r := range []*coReplies{rx, ry, ry2} {
		if res := ciResult(t, r); !res.Success {
			t.Fatalf("request %d: %+v", i, res)
		}
	}
	if n := s.runs.Load(); n != 2 {
		t.Fatalf("skill ran %d times, want 2 (x and y)", n)
	}
	rc.mu.Lock()
	left := len(rc.runs)
	rc.mu.Unlock()
	if left != 0 {
		t.Errorf("%d runs left after every request was answered", left)
	}
}
