package store

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
)

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// openStore opens a store in dir and closes it at the end of the test.
func openStore(tb testing.TB, dir string, opts ...Option) *Store {
	tb.Helper()
	s, err := Open(dir, append([]Option{WithLogger(quiet)}, opts...)...)
	if err != nil {
		tb.Fatalf("open store: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func newPeer(tb testing.TB) peer.ID {
	tb.Helper()
	return test.RandPeerIDFatal(tb)
}

// taskID returns an ID whose first bytes are n, so that IDs sort as n does.
func taskID(n int) grid.TaskID {
	var id grid.TaskID
	id[0], id[1], id[2] = byte(n>>16), byte(n>>8), byte(n)
	id[31] = 1
	return id
}

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func sampleTask(n int, requester peer.ID) *TaskRecord {
	return &TaskRecord{
		ID: taskID(n), Skill: "hash.sha256", Version: "1.0.0", InputKind: grid.InputJSON,
		Input: []byte(fmt.Sprintf(`{"data":"task %d"}`, n)), Priority: 96, Timeout: 5 * time.Minute,
		MinTrust: 0.3, MaxRetries: 3, Requester: requester, CreatedAt: t0.Add(time.Duration(n) * time.Millisecond),
	}
}

// acceptAll accepts recs from 32 goroutines.
func acceptAll(tb testing.TB, s *Store, recs []*TaskRecord) {
	tb.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(recs))
	next := make(chan *TaskRecord)
	for range 32 {
		wg.Go(func() {
			for r := range next {
				errs <- s.Accept(context.Background(), r)
			}
		})
	}
	for _, r := range recs {
		next <- r
	}
	close(next)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			tb.Fatalf("accept: %v", err)
		}
	}
}

// checkRecord compares records, times as instants.
func checkRecord(tb testing.TB, got, want TaskRecord) {
	tb.Helper()
	times := func(r *TaskRecord) []time.Time {
		ts := []time.Time{r.CreatedAt, r.UpdatedAt}
		if r.Result != nil {
			ts = append(ts, r.Result.FinishedAt)
		}
		return ts
	}
	gt, wt := times(&got), times(&want)
	if len(gt) != len(wt) {
		tb.Fatalf("record %s: result %+v, want %+v", got.ID.Short(), got.Result, want.Result)
	}
	for i := range gt {
		if !gt[i].Equal(wt[i]) {
			tb.Fatalf("record %s: time %d is %v, want %v", got.ID.Short(), i, gt[i], wt[i])
		}
	}
	got.CreatedAt, got.UpdatedAt, want.CreatedAt, want.UpdatedAt = time.Time{}, time.Time{}, time.Time{}, time.Time{}
	if got.Result != nil {
		g, w := *got.Result, *want.Result
		g.FinishedAt, w.FinishedAt = time.Time{}, time.Time{}
		got.Result, want.Result = &g, &w
	}
	if !reflect.DeepEqual(got, want) {
		tb.Fatalf("record %s:\n got %+v\nwant %+v", got.ID.Short(), got, want)
	}
}

func TestAcceptedTaskSurvivesReopen(t *testing.T) {
	dir := t.TempDir()
	req, exec := newPeer(t), newPeer(t)
	s := openStore(t, dir)
	rec := sampleTask(1, req)
	if err := s.Accept(context.Background(), rec); err != nil {
		t.Fatalf("accept: %v", err)
	}
	if err := s.Update(context.Background(), Transition{ID: rec.ID, State: StateDelegated, Attempt: 1, Peer: exec, At: t0.Add(time.Second)}); err != nil {
		t.Fatalf("update: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s2 := openStore(t, dir)
	got, err := s2.Get(rec.ID)
	if err != nil {
		t.Fatalf("get after reopen: %v", err)
	}
	want := *rec
	want.State, want.Attempt, want.Peer, want.Tried, want.UpdatedAt = StateDelegated, 1, exec, []peer.ID{exec}, t0.Add(time.Second)
	checkRecord(t, got, want)
}

func TestAcceptRefuses(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	if err := s.Accept(ctx, sampleTask(1, "")); err != nil {
		t.Fatalf("accept: %v", err)
	}
	noSkill := sampleTask(2, "")
	noSkill.Skill = ""
	noTime := sampleTask(3, "")
	noTime.CreatedAt = time.Time{}
	cases := []struct {
		name string
		rec  *TaskRecord
		want error
	}{
		{"an ID already recorded is refused", sampleTask(1, ""), ErrExists},
		{"a record without a skill is refused", noSkill, ErrInvalid},
		{"a record without a creation time is refused", noTime, ErrInvalid},
		{"a zero ID is refused", &TaskRecord{Skill: "x", CreatedAt: t0}, ErrInvalid},
		{"a nil record is refused", nil, ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := s.Accept(ctx, c.rec); !errors.Is(err, c.want) {
				t.Fatalf("accept: %v, want %v", err, c.want)
			}
		})
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Accept(canceled, sampleTask(9, "")); !errors.Is(err, context.Canceled) {
		t.Fatalf("accept with a canceled context: %v, want context.Canceled", err)
	}
	if _, err := s.Get(taskID(9)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("get of a task whose accept was canceled: %v, want ErrNotFound", err)
	}
}

func TestUpdateTransitions(t *testing.T) {
	p1, p2 := newPeer(t), newPeer(t)
	ok := &Result{Success: true, Output: []byte("out"), Duration: time.Millisecond, ExecutedBy: p2, FinishedAt: t0.Add(time.Minute)}
	at := func(s int) time.Time { return t0.Add(time.Duration(s) * time.Second) }
	cases := []struct {
		name      string
		steps     []Transition
		wantState State
		wantTried []peer.ID
		wantErr   error // of the last step
	}{
		{"attempts are recorded with their peers", []Transition{
			{State: StateDelegated, Attempt: 1, Peer: p1, At: at(1)},
			{State: StateRetrying, Attempt: 1, At: at(2)},
			{State: StateDelegated, Attempt: 2, Peer: p2, At: at(3)},
		}, StateDelegated, []peer.ID{p1, p2}, nil},
		{"a change from an older attempt is ignored", []Transition{
			{State: StateDelegated, Attempt: 2, Peer: p2, At: at(1)},
			{State: StateRetrying, Attempt: 1, Peer: p1, At: at(2)},
		}, StateDelegated, []peer.ID{p2}, nil},
		{"an earlier step of the same attempt is ignored", []Transition{
			{State: StateRunning, Attempt: 1, Peer: p1, At: at(1)},
			{State: StateQueued, Attempt: 1, Peer: p1, At: at(2)},
		}, StateRunning, []peer.ID{p1}, nil},
		{"a terminal state is final", []Transition{
			{State: StateSucceeded, Attempt: 1, Peer: p2, At: at(1), Result: ok},
			{State: StateFailed, Attempt: 2, Peer: p1, At: at(2), Error: "late"},
		}, StateSucceeded, []peer.ID{p2}, ErrFinished},
		{"the same terminal state again is ignored", []Transition{
			{State: StateCanceled, Attempt: 0, At: at(1), Error: "canceled"},
			{State: StateCanceled, Attempt: 0, At: at(2), Error: "canceled"},
		}, StateCanceled, nil, nil},
		{"success without a result is refused", []Transition{
			{State: StateSucceeded, Attempt: 1, At: at(1)},
		}, StateQueued, nil, ErrInvalid},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := openStore(t, t.TempDir())
			ctx := context.Background()
			rec := sampleTask(i, "")
			if err := s.Accept(ctx, rec); err != nil {
				t.Fatalf("accept: %v", err)
			}
			var err error
			for _, tr := range c.steps {
				tr.ID = rec.ID
				err = s.Update(ctx, tr)
			}
			if !errors.Is(err, c.wantErr) {
				t.Fatalf("last update: %v, want %v", err, c.wantErr)
			}
			got, gerr := s.Get(rec.ID)
			if gerr != nil {
				t.Fatalf("get: %v", gerr)
			}
			if got.State != c.wantState || !reflect.DeepEqual(got.Tried, c.wantTried) {
				t.Fatalf("state %s tried %v, want %s %v", got.State, got.Tried, c.wantState, c.wantTried)
			}
			if got.State.Terminal() && got.Result == nil {
				t.Fatalf("terminal record without a result")
			}
		})
	}
	t.Run("an unknown task is not found", func(t *testing.T) {
		s := openStore(t, t.TempDir())
		err := s.Update(context.Background(), Transition{ID: taskID(7), State: StateRunning})
		if !errors.Is(err, ErrNotFound) {
			t.Fatalf("update: %v, want ErrNotFound", err)
		}
	})
}

func TestUpdateAsyncAppliesInOrder(t *testing.T) {
	s := openStore(t, t.TempDir())
	rec := sampleTask(1, "")
	if err := s.Accept(context.Background(), rec); err != nil {
		t.Fatalf("accept: %v", err)
	}
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	wg.Add(n)
	for i := 1; i <= n; i++ {
		tr := Transition{ID: rec.ID, State: StateDelegated, Attempt: i, Peer: peer.ID(fmt.Sprint("p", i))}
		if i == n {
			tr.State, tr.Result = StateSucceeded, &Result{Success: true, Output: []byte("done")}
		}
		s.UpdateAsync(tr, func(err error) { errs <- err; wg.Done() })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("async update: %v", err)
		}
	}
	got, err := s.Get(rec.ID)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	if got.State != StateSucceeded || got.Attempt != n || string(got.Result.Output) != "done" || len(got.Tried) != maxTried {
		t.Fatalf("got %s attempt %d tried %d output %q; want succeeded, %d, %d, done",
			got.State, got.Attempt, len(got.Tried), got.Result.Output, n, maxTried)
	}
	if st := s.Stats(); st.Commits >= st.Writes {
		t.Fatalf("%d commits for %d writes: async updates were not grouped", st.Commits, st.Writes)
	}
}

func TestRecoverListsExactlyTheLiveTasks(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx := context.Background()
	states := []State{StateQueued, StateRunning, StateDelegated, StateRetrying, StateSucceeded, StateFailed, StateCanceled, StateTimedOut}
	var want []grid.TaskID
	for i, st := range states {
		rec := sampleTask(100-i, "") // created in the reverse order of i
		if err := s.Accept(ctx, rec); err != nil {
			t.Fatalf("accept: %v", err)
		}
		tr := Transition{ID: rec.ID, State: st, Attempt: 1, Peer: "x"}
		if st == StateSucceeded {
			tr.Result = &Result{Success: true}
		}
		if err := s.Update(ctx, tr); err != nil {
			t.Fatalf("update to %s: %v", st, err)
		}
		if !st.Terminal() {
			want = append([]grid.TaskID{rec.ID}, want...) // oldest first
		}
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	got, err := openStore(t, dir).Recover()
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	var ids []grid.TaskID
	for _, r := range got {
		ids = append(ids, r.ID)
		if r.State.Terminal() {
			t.Fatalf("recovered a %s task", r.State)
		}
	}
	if !reflect.DeepEqual(ids, want) {
		t.Fatalf("recovered %d tasks %v, want %v", len(ids), ids, want)
	}
}

func TestListPagesNewestFirst(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	var all []grid.TaskID // expected order: newest first, equal times by ID ascending
	for i := 9; i >= 0; i-- {
		for j := range 2 {
			rec := sampleTask(i*2+j, "")
			rec.CreatedAt = t0.Add(time.Duration(i) * time.Second) // pairs share a time
			if err := s.Accept(ctx, rec); err != nil {
				t.Fatalf("accept: %v", err)
			}
			all = append(all, rec.ID)
			if j == 1 {
				err := s.Update(ctx, Transition{ID: rec.ID, State: StateFailed, Error: "boom"})
				if err != nil {
					t.Fatalf("update: %v", err)
				}
			}
		}
	}
	var paged []grid.TaskID
	var after grid.TaskID
	for {
		page, err := s.List(Filter{After: after, Limit: 3})
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		if len(page) == 0 {
			break
		}
		for _, r := range page {
			paged = append(paged, r.ID)
		}
		after = page[len(page)-1].ID
	}
	if !reflect.DeepEqual(paged, all) {
		t.Fatalf("pages gave\n%v\nwant\n%v", paged, all)
	}
	failed, err := s.List(Filter{States: []State{StateFailed}, Limit: 100})
	if err != nil {
		t.Fatalf("list failed: %v", err)
	}
	if len(failed) != 10 {
		t.Fatalf("listed %d failed tasks, want 10", len(failed))
	}
	for _, r := range failed {
		if r.State != StateFailed || r.Error != "boom" {
			t.Fatalf("listed %s (%q) under failed", r.State, r.Error)
		}
	}
	if got, err := s.List(Filter{After: taskID(999)}); err != nil || len(got) != 0 {
		t.Fatalf("list after an unknown ID: %d records, %v; want none", len(got), err)
	}
}

func TestConcurrentAcceptsShareCommits(t *testing.T) {
	s := openStore(t, t.TempDir())
	const callers, each = 64, 8
	start := make(chan struct{})
	var wg sync.WaitGroup
	errs := make(chan error, callers*each)
	for c := range callers {
		wg.Go(func() {
			<-start
			for i := range each {
				errs <- s.Accept(context.Background(), sampleTask(c*each+i, ""))
			}
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("accept: %v", err)
		}
	}
	st := s.Stats()
	if st.Writes != callers*each || st.Commits > st.Writes/4 {
		t.Fatalf("%d writes in %d commits; want %d writes in at most a quarter as many commits", st.Writes, st.Commits, callers*each)
	}
}

func TestCloseDrainsQueuedWrites(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx := context.Background()
	const n = 100
	var recs []*TaskRecord
	for i := range n {
		recs = append(recs, sampleTask(i, ""))
	}
	acceptAll(t, s, recs)
	var mu sync.Mutex
	var results []error
	for i := range n {
		s.UpdateAsync(Transition{ID: taskID(i), State: StateCanceled}, func(err error) {
			mu.Lock()
			results = append(results, err)
			mu.Unlock()
		})
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second close: %v", err)
	}
	if len(results) != n {
		t.Fatalf("close returned with %d of %d async writes answered", len(results), n)
	}
	for _, err := range results {
		if err != nil {
			t.Fatalf("queued update: %v", err)
		}
	}
	if err := s.Accept(ctx, sampleTask(n, "")); !errors.Is(err, ErrClosed) {
		t.Fatalf("accept after close: %v, want ErrClosed", err)
	}
	var asyncErr error
	s.UpdateAsync(Transition{ID: taskID(0), State: StateFailed}, func(err error) { asyncErr = err })
	if !errors.Is(asyncErr, ErrClosed) {
		t.Fatalf("async update after close: %v, want ErrClosed", asyncErr)
	}
	if _, err := s.Get(taskID(0)); !errors.Is(err, ErrClosed) {
		t.Fatalf("get after close: %v, want ErrClosed", err)
	}
	live, err := openStore(t, dir).Recover()
	if err != nil || len(live) != 0 {
		t.Fatalf("after reopening: %d live tasks, %v; want 0", len(live), err)
	}
}
