package skill

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type countHook struct{ n atomic.Int32 }

func (h *countHook) ContextCanceled() { h.n.Add(1) }

type ctxKey struct{}

func TestRemoteAttemptCancelCallsItsHookOnce(t *testing.T) {
	var wg sync.WaitGroup
	var a remoteAttempt
	a.init(context.WithValue(context.Background(), ctxKey{}, "v"), time.Now().Add(time.Hour), &wg)
	if a.Value(ctxKey{}) != "v" {
		t.Fatalf("Value = %v, want the parent's", a.Value(ctxKey{}))
	}
	h := &countHook{}
	if !a.SetCancelHook(h) {
		t.Fatal("SetCancelHook refused on a live attempt")
	}
	if a.SetCancelHook(&countHook{}) {
		t.Fatal("a second hook was accepted")
	}
	if err := a.Err(); err != nil {
		t.Fatalf("Err = %v before cancel", err)
	}
	done := a.Done()
	a.cancel()
	a.cancel()
	wg.Wait() // the hook runs on a goroutine on wg
	if n := h.n.Load(); n != 1 {
		t.Fatalf("hook called %d times, want once", n)
	}
	select {
	case <-done:
	default:
		t.Fatal("Done not closed by cancel")
	}
	if !errors.Is(a.Err(), context.Canceled) {
		t.Fatalf("Err = %v, want context.Canceled", a.Err())
	}
	if a.SetCancelHook(&countHook{}) {
		t.Fatal("a hook was accepted after cancel")
	}
	if a.timer != nil && a.timer.Stop() {
		t.Fatal("the deadline timer still runs after cancel")
	}
}

func TestRemoteAttemptStoppedHookIsNotCalled(t *testing.T) {
	var wg sync.WaitGroup
	var a remoteAttempt
	a.init(context.Background(), time.Now().Add(time.Hour), &wg)
	h := &countHook{}
	a.SetCancelHook(h)
	if a.StopCancelHook(&countHook{}) {
		t.Fatal("StopCancelHook removed another hook")
	}
	if !a.StopCancelHook(h) {
		t.Fatal("StopCancelHook did not remove the hook")
	}
	a.cancel()
	wg.Wait()
	if n := h.n.Load(); n != 0 {
		t.Fatalf("a stopped hook was called %d times", n)
	}
	if a.StopCancelHook(h) {
		t.Fatal("StopCancelHook reported a hook after cancel")
	}
}

func TestRemoteAttemptDeadline(t *testing.T) {
	var wg sync.WaitGroup
	var a remoteAttempt
	d := time.Now().Add(100 * time.Millisecond)
	a.init(context.Background(), d, &wg)
	if got, ok := a.Deadline(); !ok || !got.Equal(d) {
		t.Fatalf("Deadline = %v, %v; want %v", got, ok, d)
	}
	// No timer until Done is asked for: Err tells by the clock.
	if a.timer != nil {
		t.Fatal("a timer before Done was called")
	}
	select {
	case <-a.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("Done not closed at the deadline")
	}
	if !errors.Is(a.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err = %v, want context.DeadlineExceeded", a.Err())
	}

	var b remoteAttempt
	b.init(context.Background(), time.Now().Add(-time.Millisecond), &wg)
	if !errors.Is(b.Err(), context.DeadlineExceeded) {
		t.Fatalf("Err past the deadline without Done = %v, want context.DeadlineExceeded", b.Err())
	}
	b.cancel()
	select {
	case <-b.Done(): // made after the end: closed at once
	default:
		t.Fatal("Done made after cancel is not closed")
	}
}
