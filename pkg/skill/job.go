package skill

import (
	"context"
	"sync"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// Job is the payload of a grid.QueuedTask that the Executor runs: the task
// and what to do with its result. Whoever enqueues a Job owns its Done.
// A Job is safe for concurrent use.
type Job struct {
	Task *SkillTask
	// Done is called exactly once by the executor worker that ran the job,
	// with the queue entry and the result. Done must call Complete or Fail
	// on the queue for qt.ID.
	Done func(qt *grid.QueuedTask, res SkillResult)

	mu       sync.Mutex
	cancel   context.CancelFunc
	canceled bool
}

// Cancel stops the job: if it runs, its context is canceled; if it has not
// started, it will not start (the worker reports it canceled).
func (j *Job) Cancel() {
	j.mu.Lock()
	j.canceled = true
	c := j.cancel
	j.mu.Unlock()
	if c != nil {
		c()
	}
}

// Canceled reports whether Cancel was called.
func (j *Job) Canceled() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.canceled
}

// begin records the cancel func of a starting run. It returns false if the
// job was canceled before it started.
func (j *Job) begin(cancel context.CancelFunc) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.canceled {
		return false
	}
	j.cancel = cancel
	return true
}

// Started reports whether a worker has begun running the job.
func (j *Job) Started() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.cancel != nil
}
