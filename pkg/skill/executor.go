package skill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ExecutorOption configures an Executor.
type ExecutorOption func(*executorConfig)

type executorConfig struct {
	workers int
	logger  *slog.Logger
}

// defaultWorkers is 4 workers per usable CPU. Skills that wait (on ctx, a
// timer, I/O) do not hold a CPU, so one worker per CPU would leave cores
// idle; CPU-bound skills gain nothing from more than one per CPU, and a
// few extra only cost goroutines. Four per CPU keeps every core busy with a
// mixed load while keeping Capacity, which peers see as this node's worker
// slots, a small honest number.
func defaultWorkers() int { return runtime.GOMAXPROCS(0) * 4 }

// WithWorkers sets the number of workers, which bounds how many skills run
// at once. It must be more than 0. Default: 4 x GOMAXPROCS.
func WithWorkers(n int) ExecutorOption { return func(c *executorConfig) { c.workers = n } }

// WithExecLogger sets the logger. Default: slog.Default().
func WithExecLogger(l *slog.Logger) ExecutorOption { return func(c *executorConfig) { c.logger = l } }

// jobQueue is what the workers need from a grid.TaskQueue.
type jobQueue interface {
	Dequeue(ctx context.Context) (*grid.QueuedTask, error)
	TryDequeue() (*grid.QueuedTask, bool)
	SettleTryDequeue(id grid.TaskID, done bool) (next *grid.QueuedTask, settled bool)
}

var _ jobQueue = (*grid.TaskQueue)(nil)

// Executor runs skills from a Registry on this node: synchronously with Run,
// or from a grid.TaskQueue with a bounded pool of workers (Start). It is
// safe for concurrent use.
type Executor struct {
	reg     *Registry
	self    peer.ID
	workers int
	log     *slog.Logger

	busy atomic.Int64

	mu      sync.Mutex
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// NewExecutor returns an executor for the skills in reg. self is this
// node's ID, reported as SkillResult.ExecutedBy. It starts nothing.
func NewExecutor(reg *Registry, self peer.ID, opts ...ExecutorOption) (*Executor, error) {
	cfg := executorConfig{workers: defaultWorkers(), logger: slog.Default()}
	for _, o := range opts {
		o(&cfg)
	}
	var errs []error
	if reg == nil {
		errs = append(errs, errors.New("registry is nil"))
	}
	if cfg.workers <= 0 {
		errs = append(errs, fmt.Errorf("workers is %d; it must be more than 0", cfg.workers))
	}
	if cfg.logger == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new executor: %w", err)
	}
	return &Executor{reg: reg, self: self, workers: cfg.workers, log: cfg.logger.With("subsystem", "executor")}, nil
}

// Capacity returns the number of workers.
func (e *Executor) Capacity() int { return e.workers }

// Busy returns how many workers are running a job now.
func (e *Executor) Busy() int { return int(e.busy.Load()) }

// Run runs t on this node and returns its result; it does not use the
// worker pool. It looks the skill up, checks the input against its schema,
// and runs it under ctx and, if t.CreatedAt is set, the deadline
// t.Deadline(). A panic in the skill is recovered and reported as a failure
// with CodeInternal. The result has TaskID, ExecutedBy, Duration (the
// skill's own run time), FinishedAt and, on failure, Code and Error set.
//
// Run waits for the skill to return: a skill that ignores ctx runs past the
// deadline, and its result is then whatever it returned.
func (e *Executor) Run(ctx context.Context, t *SkillTask) SkillResult {
	ent, err := e.reg.lookup(t.Skill, t.Version)
	if err != nil {
		return e.finish(SkillResult{TaskID: t.ID, ExecutedBy: e.self}, grid.CodeUnknownSkill, err)
	}
	if !t.CreatedAt.IsZero() && !ent.ctxFree {
		var cancel context.CancelFunc
		ctx, cancel = context.WithDeadline(ctx, t.Deadline())
		defer cancel()
	}
	return e.runEntry(ctx, t, ent)
}

// runEntry is Run once the skill is looked up and, unless it is context
// free, ctx carries the task's deadline.
func (e *Executor) runEntry(ctx context.Context, t *SkillTask, ent *entry) SkillResult {
	res := SkillResult{TaskID: t.ID, ExecutedBy: e.self}
	if err := ent.validate(t.Input); err != nil {
		return e.finish(res, grid.CodeInvalidInput, err)
	}
	hasDeadline := !t.CreatedAt.IsZero()
	start := time.Now()
	if err := ctx.Err(); err != nil {
		return e.finish(res, ctxCode(err), fmt.Errorf("run skill %q: %w", t.Skill, err))
	}
	if hasDeadline && !start.Before(t.Deadline()) {
		return e.finish(res, grid.CodeTimeout, fmt.Errorf("run skill %q: deadline passed before it started: %w", t.Skill, ErrTimeout))
	}
	out, panicked, err := execute(ctx, ent.skill, t.Input)
	// time.Since reads only the monotonic clock; time.Now reads two clocks,
	// and clock reads are most of Run's cost for a quick skill.
	res.Duration = time.Since(start)
	res.FinishedAt = start.Add(res.Duration)
	switch {
	case panicked != nil:
		e.logPanic(t, panicked)
		err = fmt.Errorf("skill %q panicked: %v", t.Skill, panicked.value)
		return e.finishAt(res, grid.CodeInternal, err)
	case err != nil:
		return e.finishAt(res, errCode(ctx, err), fmt.Errorf("run skill %q: %w", t.Skill, err))
	}
	if len(out) > wire.MaxTaskOutput {
		res.tooLarge = true
		return e.finishAt(res, grid.CodeInvalidInput, fmt.Errorf("skill %q returned %d bytes for this input, over the limit of %d bytes of one task output (wire.MaxTaskOutput): %w; split the work into smaller tasks",
			t.Skill, len(out), wire.MaxTaskOutput, ErrTooLarge))
	}
	res.Success = true
	res.Output = out
	return res
}

// panicInfo is a recovered panic and where it happened.
type panicInfo struct {
	value any
	stack []byte
}

// execute runs s, turning a panic into panicked.
func execute(ctx context.Context, s Skill, in SkillInput) (out []byte, panicked *panicInfo, err error) {
	defer func() {
		if v := recover(); v != nil {
			out, panicked, err = nil, &panicInfo{value: v, stack: debug.Stack()}, nil
		}
	}()
	out, err = s.Execute(ctx, in)
	return out, nil, err
}

// logPanic logs a skill's panic. A task from a peer logs at Debug: a peer
// that can make a skill panic must not be able to flood our logs.
func (e *Executor) logPanic(t *SkillTask, p *panicInfo) {
	level := slog.LevelError
	if t.Requester != "" && t.Requester != e.self {
		level = slog.LevelDebug
	}
	e.log.Log(context.Background(), level, "skill panicked", "skill", t.Skill, "task", t.ID.Short(),
		"requester", t.Requester, "panic", fmt.Sprint(p.value), "stack", string(p.stack))
}

// errCode classifies the error of a skill that ran under ctx.
func errCode(ctx context.Context, err error) grid.ErrorCode {
	switch {
	case errors.Is(err, ErrInvalidInput):
		return grid.CodeInvalidInput
	case errors.Is(err, context.DeadlineExceeded), errors.Is(err, ErrTimeout):
		return grid.CodeTimeout
	case errors.Is(err, context.Canceled), errors.Is(err, ErrCanceled):
		return grid.CodeCanceled
	case ctx.Err() != nil:
		return ctxCode(ctx.Err())
	}
	return grid.CodeExecutionFailed
}

func ctxCode(err error) grid.ErrorCode {
	if errors.Is(err, context.DeadlineExceeded) {
		return grid.CodeTimeout
	}
	return grid.CodeCanceled
}

// finish fails res before the skill ran.
func (e *Executor) finish(res SkillResult, code grid.ErrorCode, err error) SkillResult {
	res.FinishedAt = time.Now()
	res.notRun = true
	return e.finishAt(res, code, err)
}

func (e *Executor) finishAt(res SkillResult, code grid.ErrorCode, err error) SkillResult {
	res.Success = false
	res.Code = code
	res.Error = err.Error()
	return res
}

// Start starts the worker pool: Capacity workers, each taking tasks from q
// with Dequeue and running them one at a time. Each task's Payload must be
// a *Job: the worker runs job.Task as Run does, unless the job was canceled
// before it started (then the result is a CodeCanceled failure and the
// skill does not run). It then settles the task on q, Complete for a
// success and Fail without retry for anything else, and hands the result to
// job.Done, if set. A payload that is not a *Job is logged and Failed
// without retry.
//
// A worker settles a task and takes its next one in one call
// (SettleTryDequeue) before it calls Done, so that a busy worker takes the
// queue's lock once per task for both.
//
// Workers stop when ctx is done, when q is closed, or at Close. Start may
// be called once.
func (e *Executor) Start(ctx context.Context, q *grid.TaskQueue) error {
	if q == nil {
		return errors.New("start executor: queue is nil")
	}
	return e.start(ctx, q)
}

func (e *Executor) start(ctx context.Context, q jobQueue) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	switch {
	case e.closed:
		return fmt.Errorf("start executor: %w", grid.ErrClosed)
	case e.started:
		return errors.New("start executor: already started")
	}
	e.started = true
	ctx, e.cancel = context.WithCancel(ctx)
	e.wg.Add(e.workers)
	for range e.workers {
		// Each worker has a context of its own, so that the contexts of its
		// jobs hang off it rather than off one parent that every worker
		// locks for each job it starts and ends.
		wctx, cancel := context.WithCancel(ctx)
		go e.worker(wctx, cancel, q)
	}
	return nil
}

// Close stops the workers and waits for them. A worker that is running a
// job when Close is called has that job's context canceled and waits for
// the skill to return, then hands its result (normally a CodeCanceled
// failure) to the job's Done, so every job taken from the queue gets
// exactly one Done. Close does not close the queue and does not wait for
// Done callbacks' own background work. It is idempotent.
func (e *Executor) Close() error {
	e.mu.Lock()
	e.closed = true
	cancel := e.cancel
	e.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	e.wg.Wait()
	return nil
}

func (e *Executor) worker(ctx context.Context, cancel context.CancelFunc, q jobQueue) {
	defer e.wg.Done()
	defer cancel()
	var next *grid.QueuedTask // taken when the previous task was settled
	for {
		qt := next
		next = nil
		if qt == nil {
			// Nothing was ready: before blocking, let the goroutines that
			// are ready to run (often the submitters this worker has just
			// woken) go first, and look again. Under load they queue more
			// tasks meanwhile, and the worker takes them without parking,
			// which costs far more than a yield: a blocking Dequeue, a
			// hand-over through a channel and a wake-up per task.
			runtime.Gosched()
			qt, _ = q.TryDequeue()
		}
		if qt == nil {
			var err error
			if qt, err = q.Dequeue(ctx); err != nil {
				if ctx.Err() == nil && !errors.Is(err, grid.ErrClosed) {
					e.log.Error("dequeue failed; worker stops", "err", err)
				}
				return
			}
		}
		job, ok := qt.Payload.(*Job)
		if !ok || job == nil || job.Task == nil {
			e.log.Error("queued task is not a *Job with a Task; failing it", "task", qt.ID.Short(), "payload", fmt.Sprintf("%T", qt.Payload))
			next, _ = q.SettleTryDequeue(qt.ID, false)
			continue
		}
		e.busy.Add(1)
		res := e.runJob(ctx, job)
		next, _ = q.SettleTryDequeue(qt.ID, res.Success)
		if job.Done != nil {
			job.Done(qt, res)
		}
		e.busy.Add(-1)
	}
}

// runJob runs one job under the worker's ctx and returns its result. A
// skill that takes no context (see contextFree) runs without one of its
// own: the job's cancel flag and ctx are checked before it starts. Any
// other gets one that ends at the task's deadline or when the job is
// canceled.
func (e *Executor) runJob(ctx context.Context, job *Job) SkillResult {
	t := job.Task
	ent, err := e.reg.lookup(t.Skill, t.Version)
	var cancel context.CancelFunc
	if err == nil && !ent.ctxFree {
		if !t.CreatedAt.IsZero() {
			ctx, cancel = context.WithDeadline(ctx, t.Deadline())
		} else {
			ctx, cancel = context.WithCancel(ctx)
		}
		defer cancel()
	}
	res := SkillResult{TaskID: t.ID, ExecutedBy: e.self}
	if cancel != nil {
		ctx = withProgress(ctx, job)
	}
	switch {
	case !job.begin(cancel):
		return e.finish(res, grid.CodeCanceled, fmt.Errorf("run skill %q: canceled before it started: %w", t.Skill, ErrCanceled))
	case err != nil:
		return e.finish(res, grid.CodeUnknownSkill, err)
	}
	return e.runEntry(ctx, t, ent)
}
