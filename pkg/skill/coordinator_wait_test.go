package skill

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
)

func TestCoordinatorWakesEveryWaiterOfATaskOnce(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{workers: 1})
		id := e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
		<-e.started
		type waited struct {
			res *SkillResult
			err error
		}
		results := make(chan waited, 3)
		giveUp, cancel := context.WithCancel(t.Context())
		for _, ctx := range []context.Context{context.Background(), t.Context(), giveUp} {
			go func() {
				res, err := e.c.Wait(ctx, id)
				results <- waited{res, err}
			}()
		}
		synctest.Wait()
		if n := e.listedWaiters(id); n != 3 {
			t.Fatalf("%d waiters listed, want 3", n)
		}
		cancel()
		if w := <-results; w.res != nil || !errors.Is(w.err, context.Canceled) {
			t.Fatalf("the Wait whose ctx ended = %+v, %v; want context.Canceled", w.res, w.err)
		}
		if n := e.listedWaiters(id); n != 2 {
			t.Fatalf("%d waiters listed after one gave up, want 2", n)
		}
		if err := e.c.Cancel(id); err != nil {
			t.Fatal(err)
		}
		want, _ := e.c.GetResult(id)
		for range 2 {
			if w := <-results; w.res != want || !errors.Is(w.err, ErrCanceled) {
				t.Fatalf("Wait = %+v, %v; want the task's result and ErrCanceled", w.res, w.err)
			}
		}
		synctest.Wait()
		if len(results) != 0 || e.listedWaiters(id) != 0 {
			t.Fatal("a Wait returned twice, or a waiter is still listed")
		}
	})
}

func TestCoordinatorWaitersRacingTheirContextsGetTheResultOrTheirError(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{workers: 4})
	const tasks, waitersPerTask = 200, 3
	var wg sync.WaitGroup
	errs := make(chan error, tasks*waitersPerTask)
	for i := range tasks {
		id := e.submit(t, NewSkillTask("echo", RawInput([]byte("x")), ""))
		for j := range waitersPerTask {
			ctx, cancel := context.WithCancel(context.Background())
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer cancel()
				if j == 0 && i%2 == 0 {
					go cancel() // races with the task finishing
				}
				res, err := e.c.Wait(ctx, id)
				switch {
				case err == nil && res != nil && res.Success && string(res.Output) == "x":
				case errors.Is(err, context.Canceled) && res == nil && j == 0:
				default:
					errs <- fmt.Errorf("task %d waiter %d: Wait = %+v, %v", i, j, res, err)
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range e.c.tasks.shards {
		s := &e.c.tasks.shards[i]
		s.mu.Lock()
		s.each(func(r *record) {
			if r.waiters != nil {
				t.Errorf("task %s still lists waiters", r.task.ID.Short())
			}
		})
		s.mu.Unlock()
	}
}

func TestResultWaiterWokenBeforeItGivesUpIsNotListed(t *testing.T) {
	r := &record{}
	a, b := newResultWaiter().(*resultWaiter), newResultWaiter().(*resultWaiter)
	a.next, r.waiters = r.waiters, a
	b.next, r.waiters = r.waiters, b
	if !r.unlistWaiter(a) || r.waiters != b || b.next != nil {
		t.Fatal("unlistWaiter did not take a listed waiter off")
	}
	r.wakeWaiters()
	if r.unlistWaiter(b) {
		t.Fatal("a woken waiter was still listed")
	}
	select {
	case <-b.ch: // the wake-up Wait drains when it finds itself unlisted
	default:
		t.Fatal("the woken waiter got nothing")
	}
	if len(a.ch) != 0 {
		t.Fatal("a waiter that gave up was woken")
	}
}

// listedWaiters counts the blocked Wait calls listed on the task.
func (e *coEnv) listedWaiters(id TaskID) int {
	s := e.c.tasks.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for w := s.get(id).waiters; w != nil; w = w.next {
		n++
	}
	return n
}
