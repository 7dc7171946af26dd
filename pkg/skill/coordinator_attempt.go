package skill

import (
	"context"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// remoteAttempt is the context of one remote attempt, made by beginLocked:
// its deadline is the task's, its values the coordinator's context's, and
// it ends when cancel is called (by the attempt's end, Cancel or Close).
// It is a grid.HookContext: the orchestrator hooks its cancel and keeps its
// deadline with the call's own timer, so an attempt costs no cancelCtx,
// timer or AfterFunc goroutine. A Delegator that waits on Done gets a
// channel made then, closed at the deadline by a timer started then.
// The first attempt's is allocated with its record.
//
// The hook runs on a goroutine of its own, on c.wg: cancel is called under
// a shard lock (abortLocked), and the hook ends the call, whose done
// settles the record under that lock. The goroutine is made only for an
// attempt canceled while its call is pending, as context.AfterFunc did.
type remoteAttempt struct {
	parent   context.Context // the coordinator's: values only
	deadline time.Time
	wg       *sync.WaitGroup // the coordinator's: the hook's goroutine

	mu    sync.Mutex
	err   error           // set once ended
	done  chan struct{}   // made by Done; closed when ended
	timer *time.Timer     // started by Done: ends the attempt at its deadline
	hook  grid.CancelHook // called when canceled
}

var _ grid.HookContext = (*remoteAttempt)(nil)

func (a *remoteAttempt) init(parent context.Context, deadline time.Time, wg *sync.WaitGroup) {
	a.parent, a.deadline, a.wg = parent, deadline, wg
}

// Deadline is the task's deadline.
func (a *remoteAttempt) Deadline() (time.Time, bool) { return a.deadline, true }

// Value looks key up in the coordinator's context.
func (a *remoteAttempt) Value(key any) any { return a.parent.Value(key) }

// Err is context.Canceled once canceled, context.DeadlineExceeded once
// the deadline has passed (whether or not a timer noticed), else nil.
func (a *remoteAttempt) Err() error {
	a.mu.Lock()
	err := a.err
	a.mu.Unlock()
	if err == nil && !time.Now().Before(a.deadline) {
		err = context.DeadlineExceeded
	}
	return err
}

// Done returns a channel closed when the attempt ends. The first call
// makes it and starts the timer that closes it at the deadline.
func (a *remoteAttempt) Done() <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.done == nil {
		a.done = make(chan struct{})
		if a.err != nil {
			close(a.done)
		} else {
			a.timer = time.AfterFunc(time.Until(a.deadline), a.expire)
		}
	}
	return a.done
}

// SetCancelHook implements grid.HookContext.
func (a *remoteAttempt) SetCancelHook(h grid.CancelHook) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.err != nil || a.hook != nil {
		return false
	}
	a.hook = h
	return true
}

// StopCancelHook implements grid.HookContext.
func (a *remoteAttempt) StopCancelHook(h grid.CancelHook) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hook != h || a.hook == nil {
		return false
	}
	a.hook = nil
	return true
}

// cancel ends the attempt as canceled: its channel closes, its timer
// stops and its hook is started. Calls after the first, or after the
// deadline ended it, do nothing.
func (a *remoteAttempt) cancel() { a.end(context.Canceled) }

func (a *remoteAttempt) expire() { a.end(context.DeadlineExceeded) }

func (a *remoteAttempt) end(err error) {
	a.mu.Lock()
	if a.err != nil {
		a.mu.Unlock()
		return
	}
	a.err = err
	if a.done != nil {
		close(a.done)
	}
	if a.timer != nil {
		a.timer.Stop()
	}
	h := a.hook
	a.hook = nil
	if h != nil {
		// Under mu: a hook still set means its call has not ended, so the
		// attempt's own place on wg is held, and Close cannot be past Wait.
		a.wg.Add(1)
	}
	a.mu.Unlock()
	if h != nil {
		go func() {
			defer a.wg.Done()
			h.ContextCanceled()
		}()
	}
}
