package store

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"
)

func TestPrunerRemovesRecordsPastRetention(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, t.TempDir(), WithRetention(time.Hour), WithPruneInterval(time.Minute))
		if err := s.Start(context.Background()); err != nil {
			t.Fatalf("start: %v", err)
		}
		ctx := context.Background()
		start := time.Now()
		peerA := newPeer(t)
		accept := func(n int, finish bool) {
			t.Helper()
			rec := sampleTask(n, "")
			rec.CreatedAt = time.Now()
			if err := s.Accept(ctx, rec); err != nil {
				t.Fatalf("accept %d: %v", n, err)
			}
			if finish {
				if err := s.Update(ctx, Transition{ID: rec.ID, State: StateFailed, Error: "x"}); err != nil {
					t.Fatalf("finish %d: %v", n, err)
				}
			}
		}
		acceptRemote := func(n int, deadline time.Duration, finish bool) {
			t.Helper()
			r := remoteTask(peerA, n)
			r.Deadline, r.ReceivedAt = start.Add(deadline), time.Now()
			if err := s.AcceptRemote(ctx, r); err != nil {
				t.Fatalf("accept remote %d: %v", n, err)
			}
			if finish {
				if err := s.FinishRemote(ctx, peerA, r.ID, Result{Success: true}, false); err != nil {
					t.Fatalf("finish remote %d: %v", n, err)
				}
			}
		}
		accept(1, true)                        // finished at start: pruned
		acceptRemote(1, 30*time.Second, true)  // finished at start, undelivered: pruned
		acceptRemote(2, 30*time.Second, false) // never finished, deadline long past: pruned
		acceptRemote(3, 40*time.Minute, false) // never finished, deadline recent: kept
		time.Sleep(30 * time.Minute)
		accept(2, true)  // finished 31 minutes before the check: kept
		accept(3, false) // live: kept, however old
		time.Sleep(31*time.Minute + time.Second)
		synctest.Wait()

		if _, err := s.Get(taskID(1)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("task finished an hour ago: %v, want ErrNotFound", err)
		}
		for _, n := range []int{2, 3} {
			if _, err := s.Get(taskID(n)); err != nil {
				t.Fatalf("task %d within retention: %v", n, err)
			}
		}
		if all, err := s.List(Filter{}); err != nil || len(all) != 2 {
			t.Fatalf("list after pruning: %d records, %v; want 2", len(all), err)
		}
		for _, n := range []int{1, 2} {
			if _, err := s.Remote(peerA, taskID(n)); !errors.Is(err, ErrNotFound) {
				t.Fatalf("remote task %d: %v, want ErrNotFound", n, err)
			}
		}
		if _, err := s.Remote(peerA, taskID(3)); err != nil {
			t.Fatalf("remote task within its deadline's retention: %v", err)
		}
		if pending, err := s.PendingDeliveries(peerA); err != nil || len(pending) != 0 {
			t.Fatalf("pending after pruning: %d, %v; want none", len(pending), err)
		}
		if st := s.Stats(); st.Pruned != 3 {
			t.Fatalf("pruned %d records, want 3", st.Pruned)
		}
		if err := s.Start(context.Background()); err == nil {
			t.Fatal("second Start succeeded")
		}
	})
}

func TestPruneWorksInChunks(t *testing.T) {
	now := t0
	s := openStore(t, t.TempDir(), WithRetention(time.Minute), withClock(func() time.Time { return now }))
	ctx := context.Background()
	const n = pruneChunk*2 + 10
	var recs []*TaskRecord
	for i := range n {
		rec := sampleTask(i, "")
		rec.State, rec.Result = StateSucceeded, &Result{Success: true, FinishedAt: t0}
		recs = append(recs, rec)
	}
	acceptAll(t, s, recs)
	now = t0.Add(2 * time.Minute)
	fresh := sampleTask(n, "") // finished now, without a finishing time of its own
	fresh.State, fresh.Error = StateCanceled, "canceled"
	fresh.UpdatedAt = now
	if err := s.Accept(ctx, fresh); err != nil {
		t.Fatalf("accept: %v", err)
	}
	got, err := s.Prune(ctx)
	if err != nil || got != n {
		t.Fatalf("prune: %d, %v; want %d", got, err, n)
	}
	if st := s.Stats(); st.PruneCommits != 3 {
		t.Fatalf("pruned in %d transactions, want 3", st.PruneCommits)
	}
	if all, err := s.List(Filter{}); err != nil || len(all) != 1 || all[0].ID != fresh.ID {
		t.Fatalf("list after pruning: %d, %v; want the task finished now only", len(all), err)
	}
}
