package skill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/store"
)

// caSkill is a deterministic skill that counts its runs and, if gate is
// not nil, blocks each run until gate is closed (or its ctx ends).
type caSkill struct {
	runs     atomic.Int64
	canceled atomic.Int64 // runs stopped by their ctx
	gate     chan struct{}
	started  chan struct{}
	det      bool
	fail     error // returned by every run, once the gate opens
}

func (s *caSkill) Descriptor() Descriptor {
	return Descriptor{ID: "test.det", Version: "1.0.0", Deterministic: s.det}
}

func (s *caSkill) Execute(ctx context.Context, in SkillInput) ([]byte, error) {
	s.runs.Add(1)
	if s.started != nil {
		s.started <- struct{}{}
	}
	if s.gate != nil {
		select {
		case <-s.gate:
		case <-ctx.Done():
			s.canceled.Add(1)
			return nil, ctx.Err()
		}
	}
	if s.fail != nil {
		return nil, s.fail
	}
	return append([]byte("out:"), in.Data...), nil
}

// newCaEnv is a coordinator with s registered and a cache of cfg.
func newCaEnv(t testing.TB, s *caSkill, cfg CacheConfig) (*coEnv, *ResultCache) {
	t.Helper()
	e := newCoEnv(t, coEnvConfig{workers: 4})
	if err := e.reg.Register(s); err != nil {
		t.Fatal(err)
	}
	rc, err := NewResultCache(cfg)
	if err != nil {
		t.Fatal(err)
	}
	e.c.UseResultCache(rc)
	t.Cleanup(func() { e.c.UseResultCache(nil) })
	return e, rc
}

func caTask(e *coEnv, data string) *SkillTask {
	return NewSkillTask("test.det", RawInput([]byte(data)), e.self)
}

func TestCacheKeyNamesSkillVersionModuleKindAndInput(t *testing.T) {
	in := SkillInput{Kind: grid.InputRaw, Data: []byte("x")}
	base := cacheKey("a", "1", [32]byte{}, in)
	if cacheKey("a", "1", [32]byte{}, SkillInput{Kind: grid.InputRaw, Data: []byte("x")}) != base {
		t.Fatal("the same task gave two keys")
	}
	others := map[string]CacheKey{
		"skill":   cacheKey("b", "1", [32]byte{}, in),
		"version": cacheKey("a", "2", [32]byte{}, in),
		"module":  cacheKey("a", "1", [32]byte{1}, in),
		"kind":    cacheKey("a", "1", [32]byte{}, SkillInput{Kind: grid.InputJSON, Data: []byte("x")}),
		"input":   cacheKey("a", "1", [32]byte{}, SkillInput{Kind: grid.InputRaw, Data: []byte("y")}),
		"split":   cacheKey("a1", "", [32]byte{}, in),
	}
	for what, k := range others {
		if k == base {
			t.Errorf("a different %s gave the same key", what)
		}
	}
	mod := ciModuleSkill{id: "m", hash: [32]byte{7}}
	desc := mod.Descriptor()
	if keyOf(mod, &desc, in) != cacheKey("m", "1.0.0", [32]byte{7}, in) {
		t.Error("keyOf does not use the module hash of a ModuleSkill")
	}
}

func TestCacheEvictsLeastRecentlyUsedWithinMaxBytes(t *testing.T) {
	one := CachedResult{Output: make([]byte, 100)}
	rc, err := NewResultCache(CacheConfig{MaxBytes: 2*one.size() + 10})
	if err != nil {
		t.Fatal(err)
	}
	k := func(i int) CacheKey { return CacheKey{byte(i)} }
	rc.Put(k(1), one)
	rc.Put(k(2), one)
	if _, ok := rc.Get(k(1)); !ok { // 1 is now the most recently used
		t.Fatal("entry 1 missing before any eviction")
	}
	rc.Put(k(3), one)
	if _, ok := rc.Get(k(2)); ok {
		t.Error("entry 2, the least recently used, was not evicted")
	}
	for _, i := range []int{1, 3} {
		if _, ok := rc.Get(k(i)); !ok {
			t.Errorf("entry %d was evicted", i)
		}
	}
	st := rc.Stats()
	if st.Entries != 2 || st.Bytes != 2*one.size() || st.Evictions != 1 {
		t.Errorf("stats = %+v, want 2 entries of %d bytes and 1 eviction", st, 2*one.size())
	}
	rc.Put(k(4), CachedResult{Output: make([]byte, 1000)}) // larger than the cache
	if _, ok := rc.Get(k(4)); ok || rc.Stats().Entries != 2 {
		t.Error("a result larger than the whole cache was stored")
	}
	if _, err := NewResultCache(CacheConfig{MaxBytes: -1}); err == nil {
		t.Error("a negative max bytes was accepted")
	}
}

func TestCacheForgetsEntriesOlderThanTheTTL(t *testing.T) {
	rc, err := NewResultCache(CacheConfig{TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Unix(1000, 0)
	rc.now = func() time.Time { return now }
	rc.Put(CacheKey{1}, CachedResult{Output: []byte("a")})
	now = now.Add(59 * time.Second)
	if _, ok := rc.Get(CacheKey{1}); !ok {
		t.Fatal("entry gone before its TTL")
	}
	now = now.Add(time.Second)
	if _, ok := rc.Get(CacheKey{1}); ok {
		t.Fatal("entry served at its TTL")
	}
	if st := rc.Stats(); st.Entries != 0 || st.Bytes != 0 {
		t.Errorf("stats after expiry = %+v, want empty", st)
	}
}

func TestCoordinatorAnswersARepeatFromTheCache(t *testing.T) {
	s := &caSkill{det: true}
	e, rc := newCaEnv(t, s, CacheConfig{})
	first, err := e.wait(t, e.submit(t, caTask(e, "a")))
	if err != nil || first.Cached {
		t.Fatalf("first run: %+v, %v; want an uncached success", first, err)
	}
	id := e.submit(t, caTask(e, "a"))
	if st := e.state(t, id); st.State != StateSucceeded { // at once, no wait
		t.Fatalf("cached task is %s right after submission, want succeeded", st.State)
	}
	res, err := e.wait(t, id)
	if err != nil || !res.Cached || string(res.Output) != "out:a" || res.ExecutedBy != e.self || res.TaskID != id {
		t.Fatalf("repeat: %+v, %v; want the cached output of the first run, for its own ID", res, err)
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("skill ran %d times, want 1", n)
	}
	if _, err := e.wait(t, e.submit(t, caTask(e, "b"))); err != nil {
		t.Fatal(err)
	}
	if n := s.runs.Load(); n != 2 {
		t.Fatalf("another input: skill ran %d times in all, want 2", n)
	}
	if st := rc.Stats(); st.Hits != 1 || st.Misses != 2 {
		t.Errorf("stats = %+v, want 1 hit and 2 misses", st)
	}
}

func TestCoordinatorRunsNoCacheTasksAndNonDeterministicSkills(t *testing.T) {
	s := &caSkill{det: true}
	e, _ := newCaEnv(t, s, CacheConfig{})
	for range 2 {
		tk := caTask(e, "a")
		tk.NoCache = true
		if res, err := e.wait(t, e.submit(t, tk)); err != nil || res.Cached {
			t.Fatalf("no_cache task: %+v, %v", res, err)
		}
	}
	if n := s.runs.Load(); n != 2 {
		t.Fatalf("no_cache: skill ran %d times, want 2", n)
	}

	nd := &caSkill{}
	e2, rc := newCaEnv(t, nd, CacheConfig{})
	for range 2 {
		if res, err := e2.wait(t, e2.submit(t, caTask(e2, "a"))); err != nil || res.Cached {
			t.Fatalf("non-deterministic skill: %+v, %v", res, err)
		}
	}
	if n := nd.runs.Load(); n != 2 || rc.Stats().Entries != 0 {
		t.Fatalf("non-deterministic skill ran %d times (want 2), cache holds %d entries (want 0)", n, rc.Stats().Entries)
	}
}

func TestCoordinatorSharesOneRunAndSurvivesTheCancelOfAWaiter(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, rc := newCaEnv(t, s, CacheConfig{})
	lead := e.submit(t, caTask(e, "a"))
	<-s.started
	b, c := e.submit(t, caTask(e, "a")), e.submit(t, caTask(e, "a"))
	if err := e.c.Cancel(b); err != nil {
		t.Fatal(err)
	}
	if res, err := e.wait(t, b); !errors.Is(err, ErrCanceled) {
		t.Fatalf("canceled waiter: %+v, %v; want ErrCanceled", res, err)
	}
	if st := e.state(t, c); st.State != StateQueued {
		t.Fatalf("other waiter is %s after a cancel, want queued", st.State)
	}
	close(s.gate)
	for _, id := range []TaskID{lead, c} {
		res, err := e.wait(t, id)
		if err != nil || string(res.Output) != "out:a" || res.TaskID != id {
			t.Fatalf("task %s: %+v, %v", id.Short(), res, err)
		}
		if want := id == c; res.Cached != want {
			t.Errorf("task %s: cached = %v, want %v", id.Short(), res.Cached, want)
		}
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("skill ran %d times for three identical tasks, want 1", n)
	}
	if st := rc.Stats(); st.Shared != 1 || st.Misses != 1 {
		t.Errorf("stats = %+v, want 1 shared and 1 miss", st)
	}
}

func TestCoordinatorRunsAWaiterWhenTheSharedRunIsCanceled(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{}), started: make(chan struct{}, 8)}
	e, _ := newCaEnv(t, s, CacheConfig{})
	lead := e.submit(t, caTask(e, "a"))
	<-s.started
	w := e.submit(t, caTask(e, "a"))
	if err := e.c.Cancel(lead); err != nil {
		t.Fatal(err)
	}
	select {
	case <-s.started: // the waiter runs it
	case <-time.After(10 * time.Second):
		t.Fatal("the waiter did not run after the shared run was canceled")
	}
	close(s.gate)
	res, err := e.wait(t, w)
	if err != nil || res.Cached || string(res.Output) != "out:a" {
		t.Fatalf("waiter: %+v, %v; want its own uncached success", res, err)
	}
}

func TestExecutingNodeAnswersRepeatedWorkFromItsCache(t *testing.T) {
	s := &caSkill{det: true}
	e, rc := newCaEnv(t, s, CacheConfig{})
	for i, from := range e.peers {
		rt := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "test.det", Input: []byte("x"), InputKind: grid.InputRaw,
			Deadline: time.Now().Add(time.Minute), Attempt: 1}
		r := newCoReplies()
		if err := e.c.HandleTask(from, rt, grid.ReplyFunc(r.reply)); err != nil {
			t.Fatalf("requester %d: %v", i, err)
		}
		res := ciResult(t, r)
		if !res.Success || string(res.Output) != "out:x" || res.ID != rt.ID {
			t.Fatalf("requester %d: %+v", i, res)
		}
	}
	if n := s.runs.Load(); n != 1 {
		t.Fatalf("skill ran %d times for two requesters, want 1", n)
	}
	if st := rc.Stats(); st.PeerHits != 1 || st.PeerMisses != 1 || st.Hits != 0 || st.Misses != 0 {
		t.Errorf("stats = %+v, want 1 peer hit and 1 peer miss", st)
	}
}

func TestCoordinatorDedupsConcurrentSubmissions(t *testing.T) {
	s := &caSkill{det: true, gate: make(chan struct{})}
	e, _ := newCaEnv(t, s, CacheConfig{})
	const n = 200
	ids := make([]TaskID, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { ids[i] = e.submit(t, caTask(e, "a")) })
	}
	wg.Wait()
	close(s.gate)
	for _, id := range ids {
		if res, err := e.wait(t, id); err != nil || string(res.Output) != "out:a" {
			t.Fatalf("task %s: %+v, %v", id.Short(), res, err)
		}
	}
	if got := s.runs.Load(); got != 1 {
		t.Fatalf("skill ran %d times for %d identical tasks, want 1", got, n)
	}
}

func BenchmarkCache(b *testing.B) {
	s := &caSkill{det: true}
	e, _ := newCaEnv(b, s, CacheConfig{})
	ctx := context.Background()
	run := func(b *testing.B, tk func(i int) *SkillTask) {
		for i := 0; b.Loop(); i++ {
			id, err := e.c.SubmitTask(ctx, tk(i))
			if err != nil {
				b.Fatal(err)
			}
			if _, err := e.c.Wait(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
	}
	b.Run("miss", func(b *testing.B) {
		run(b, func(i int) *SkillTask { return caTask(e, fmt.Sprint("miss-", i)) })
	})
	b.Run("no_cache", func(b *testing.B) {
		run(b, func(int) *SkillTask { tk := caTask(e, "hit"); tk.NoCache = true; return tk })
	})
	b.Run("hit", func(b *testing.B) {
		run(b, func(int) *SkillTask { return caTask(e, "hit") })
	})
}

// BenchmarkCacheDedup submits 1000 identical tasks at once while the first
// runs; the skill must run once per round.
func BenchmarkCacheDedup(b *testing.B) {
	ctx := context.Background()
	const n = 1000
	for round := 0; b.Loop(); round++ {
		b.StopTimer()
		s := &caSkill{det: true, gate: make(chan struct{})}
		e, _ := newCaEnv(b, s, CacheConfig{})
		b.StartTimer()
		ids := make([]TaskID, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Go(func() {
				id, err := e.c.SubmitTask(ctx, caTask(e, "same"))
				if err != nil {
					b.Error(err)
				}
				ids[i] = id
			})
		}
		wg.Wait()
		close(s.gate)
		for _, id := range ids {
			if _, err := e.c.Wait(ctx, id); err != nil {
				b.Fatal(err)
			}
		}
		if got := s.runs.Load(); got != 1 {
			b.Fatalf("round %d: skill ran %d times for %d identical tasks, want 1", round, got, n)
		}
	}
	b.ReportMetric(n, "tasks/op")
}

func TestCachePersistWritesChangesThroughAndRestores(t *testing.T) {
	one := CachedResult{Output: make([]byte, 100)}
	max := 2*one.size() + 10
	dir := t.TempDir()
	open := func() *store.Store {
		st, err := store.Open(dir, store.WithLogger(slog.New(slog.DiscardHandler)))
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	now := time.Now()
	clock := func() time.Time { return now }
	p := rtPeers(t, 1)[0]

	st := open()
	rc, err := NewResultCache(CacheConfig{MaxBytes: max, TTL: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	rc.now = clock
	w, n, err := rc.Persist(st, nil)
	if err != nil || n != 0 {
		t.Fatalf("Persist on an empty store: %d, %v", n, err)
	}
	rc.Put(CacheKey{1}, CachedResult{Output: []byte("a"), ExecutedBy: p, Duration: time.Second})
	now = now.Add(time.Millisecond)
	rc.Put(CacheKey{2}, CachedResult{Output: []byte("b")})
	now = now.Add(time.Millisecond)
	rc.Put(CacheKey{3}, one) // evicts 1, the least recently used
	// The writer gets there by itself, without Close.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var keys []byte
		_ = st.EachCache(func(k [32]byte, _ []byte) error { keys = append(keys, k[0]); return nil })
		if string(keys) == "\x02\x03" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("store holds keys %v, want [2 3]", keys)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := st.WriteCache(context.Background(), []store.CacheRecord{{Key: [32]byte{7}, Value: []byte("garbage")}}, nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	st = open()
	defer st.Close()
	again, _ := NewResultCache(CacheConfig{MaxBytes: max, TTL: time.Minute})
	again.now = clock
	w, n, err = again.Persist(st, nil)
	if err != nil || n != 2 {
		t.Fatalf("Persist after reopen restored %d entries (%v), want 2", n, err)
	}
	defer w.Close()
	if r, ok := again.Get(CacheKey{2}); !ok || string(r.Output) != "b" {
		t.Fatalf("restored entry 2 = %+v, %v", r, ok)
	}
	if _, ok := again.Get(CacheKey{1}); ok {
		t.Fatal("the evicted entry came back")
	}

	// Past the TTL nothing is restored, and the store is emptied (the
	// undecodable entry went at the last Persist).
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	now = now.Add(time.Minute)
	late, _ := NewResultCache(CacheConfig{TTL: time.Minute})
	late.now = clock
	w, n, err = late.Persist(st, nil)
	if err != nil || n != 0 {
		t.Fatalf("Persist past the TTL restored %d (%v), want 0", n, err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	left := 0
	_ = st.EachCache(func([32]byte, []byte) error { left++; return nil })
	if left != 0 {
		t.Fatalf("store still holds %d entries past their TTL", left)
	}
}

func TestCacheEntryCodecRoundTripsAndRefusesTruncation(t *testing.T) {
	p := rtPeers(t, 1)[0]
	in := CachedResult{Output: []byte("out"), ExecutedBy: p, Duration: 3 * time.Second, StoredAt: time.Unix(1700000000, 5)}
	b := encodeCacheEntry(&in)
	got, err := decodeCacheEntry(b)
	if err != nil || string(got.Output) != "out" || got.ExecutedBy != p || got.Duration != in.Duration || !got.StoredAt.Equal(in.StoredAt) {
		t.Fatalf("round trip: %+v, %v", got, err)
	}
	for n := range 17 + 2 {
		if _, err := decodeCacheEntry(b[:n]); err == nil {
			t.Errorf("decoded %d bytes of an entry", n)
		}
	}
}
