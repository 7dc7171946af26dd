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
	// with the queue entry and the result, after the worker has settled the
	// entry on the queue: completed if the result is a success, failed
	// without retry if not. Done must not Complete or Fail qt.ID itself (a
	// later attempt may have enqueued the same ID by then). It runs on the
	// worker, so it should be quick.
	Done func(qt *grid.QueuedTask, res SkillResult)

	// rec is the coordinator's record of the task, for a local attempt of
	// a task submitted to a DelegationCoordinator; set before the job is
	// enqueued and not changed after.
	rec *record
	// inc is the peer's task, for a job run for a peer.
	inc *incoming
	// progress, if set, takes the running skill's ReportProgress calls.
	progress func(j *Job, fraction float64, msg string)
	// run is the shared run of peers' identical tasks the job executes
	// (see execRun); set before the job is enqueued and not changed after.
	run *execRun

	mu       sync.Mutex
	cancel   context.CancelFunc // of the running skill's context; nil for a skill that takes none
	started  bool
	canceled bool
}

// Cancel stops the job: if it runs, its context is canceled; if it has not
// started, it will not start (the worker reports it canceled). A skill that
// ignores its context (one that returns at once, such as echo) runs
// without a context of its own: Cancel cannot stop it once it has started.
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

// begin marks the job started and records the cancel func of its run, nil
// if the run has no context of its own. It returns false if the job was
// canceled before it started.
func (j *Job) begin(cancel context.CancelFunc) bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	if j.canceled {
		return false
	}
	j.started = true
	j.cancel = cancel
	return true
}

// Started reports whether a worker has begun running the job.
func (j *Job) Started() bool {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.started
}
