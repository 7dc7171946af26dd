package skill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/internal/eventhub"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrNotStarted is returned by SubmitTask before Start.
var ErrNotStarted = errors.New("coordinator not started")

// ErrTaskFinished is returned by Cancel for a task that has already
// finished.
var ErrTaskFinished = errors.New("task already finished")

// Deps are what a DelegationCoordinator is built from.
type Deps struct {
	// Self is this node's peer ID. Required.
	Self peer.ID
	// Registry holds the skills this node runs. Required.
	Registry *Registry
	// Executor runs local tasks. Required. The coordinator owns it: Start
	// starts it on Queue and Close closes it.
	Executor *Executor
	// Router orders the candidates of a task. Nil: the coordinator builds
	// one from Registry, Directory, Trust, Metrics and LocalLoad with
	// default weights.
	Router *Router
	// Directory lists remote providers; used only to build the Router when
	// Router is nil. Nil: only this node is considered.
	Directory Directory
	// Queue holds local tasks. The coordinator owns it: Start starts it and
	// Close closes it. Nil: the coordinator builds one with the options of
	// WithQueueOptions and its own expiry handler. A queue built by the
	// caller should have grid.WithExpiryHandler calling QueueExpired, so
	// that a queued task past its deadline fails at once rather than at the
	// coordinator's next sweep.
	Queue *grid.TaskQueue
	// Metrics records every attempt's outcome. Nil: a new tracker.
	Metrics *grid.MetricsTracker
	// Trust records every attempt's outcome and decides which peers may
	// send tasks here. Required. The caller owns its lifecycle.
	Trust *reputation.Graph
	// Remote sends attempts to peers. Nil: tasks run only on this node, and
	// remote candidates are never chosen.
	Remote grid.Delegator
}

// Defaults of a DelegationCoordinator.
const (
	DefaultRetryBase       = 100 * time.Millisecond
	DefaultRetryMax        = 10 * time.Second
	DefaultResultRetention = 10 * time.Minute
	DefaultMaxTasks        = 100_000
	// DefaultAcceptThreshold is the trust a peer needs for this node to run
	// its tasks: only peers that trust has driven near zero are refused.
	DefaultAcceptThreshold = 0.1
	DefaultSweepInterval   = time.Second
)

// CoordinatorOption configures a DelegationCoordinator.
type CoordinatorOption func(*coordinatorConfig)

type coordinatorConfig struct {
	retryBase, retryMax time.Duration
	retention           time.Duration
	maxTasks            int
	acceptThreshold     float64
	acceptSet           bool             // WithAcceptThreshold was given
	admission           *AdmissionPolicy // nil: built from acceptThreshold (see WithAdmission)
	recent              recentConfig     // see WithRecentResults
	sweepInterval       time.Duration
	breaker             breakerConfig
	queueOpts           []grid.QueueOption
	logger              *slog.Logger
	store               *store.Store    // nil: in memory only (see WithStore)
	spot                SpotCheckConfig // see WithSpotChecks
	ranking             int             // see WithRankingSize
}

func defaultCoordinatorConfig() coordinatorConfig {
	return coordinatorConfig{
		retryBase: DefaultRetryBase, retryMax: DefaultRetryMax,
		retention: DefaultResultRetention, maxTasks: DefaultMaxTasks,
		acceptThreshold: DefaultAcceptThreshold, recent: defaultRecentConfig(),
		sweepInterval: DefaultSweepInterval, logger: slog.Default(),
		breaker: defaultBreakerConfig(), ranking: DefaultRankingSize,
	}
}

// DefaultRankingSize is how many candidates an Event's Ranking holds
// unless WithRankingSize says otherwise.
const DefaultRankingSize = 8

// WithRankingSize sets how many of the candidates the router ranked for an
// attempt the attempt's Event carries (Event.Ranking), best first: 0 none.
// Rankings are made only while someone subscribes to the events, and a
// record keeps only its current attempt's, until the task ends. Default 8.
func WithRankingSize(n int) CoordinatorOption {
	return func(c *coordinatorConfig) { c.ranking = max(n, 0) }
}

func (c *coordinatorConfig) validate() error {
	var errs []error
	if c.retryBase <= 0 || c.retryMax < c.retryBase {
		errs = append(errs, fmt.Errorf("retry backoff base %v, max %v: want 0 < base <= max", c.retryBase, c.retryMax))
	}
	if c.retention <= 0 {
		errs = append(errs, fmt.Errorf("result retention is %v; it must be more than 0", c.retention))
	}
	if c.maxTasks <= 0 {
		errs = append(errs, fmt.Errorf("max tasks is %d; it must be more than 0", c.maxTasks))
	}
	if c.acceptThreshold < 0 || c.acceptThreshold > 1 || math.IsNaN(c.acceptThreshold) {
		errs = append(errs, fmt.Errorf("accept threshold is %v; it must be in [0, 1]", c.acceptThreshold))
	}
	if c.acceptSet && c.admission != nil {
		errs = append(errs, errors.New("both an accept threshold and an admission policy are set: set the threshold in the policy's AdmissionConfig"))
	}
	errs = append(errs, c.recent.validate())
	if c.sweepInterval <= 0 {
		errs = append(errs, fmt.Errorf("sweep interval is %v; it must be more than 0", c.sweepInterval))
	}
	if c.logger == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	errs = append(errs, c.breaker.validate(), c.spot.validate())
	return errors.Join(errs...)
}

// WithRetryBackoff sets the backoff between a failed attempt and the next:
// base, doubling per retry up to max, each delay drawn from ±50% around it
// (cenkalti/backoff/v5's ExponentialBackOff). Defaults: 100 ms and 10 s.
func WithRetryBackoff(base, max time.Duration) CoordinatorOption {
	return func(c *coordinatorConfig) { c.retryBase, c.retryMax = base, max }
}

// WithResultRetention sets how long a finished task's status and result
// stay readable. Default: 10 minutes.
func WithResultRetention(d time.Duration) CoordinatorOption {
	return func(c *coordinatorConfig) { c.retention = d }
}

// WithMaxTasks bounds the tasks the coordinator tracks, finished or not,
// and so the memory their results hold. At the bound, the finished tasks
// submitted longest ago are dropped before their retention ends (a caller
// that needs a result should Wait for it or read it soon: at 500k tasks/s
// the default keeps a result for about 0.2 s). Unfinished tasks are never
// dropped; when they alone fill the bound, SubmitTask fails with
// ErrQueueFull. The bound is kept per shard of the task table, so it holds
// to within the imbalance between shards. Default: 100,000.
func WithMaxTasks(n int) CoordinatorOption { return func(c *coordinatorConfig) { c.maxTasks = n } }

// WithAcceptThreshold sets the trust in [0, 1] that a peer needs for
// HandleTask to admit its tasks, in the admission policy the coordinator
// builds when WithAdmission is not given. Default: 0.1. Setting both is
// an error.
func WithAcceptThreshold(trust float64) CoordinatorOption {
	return func(c *coordinatorConfig) { c.acceptThreshold, c.acceptSet = trust, true }
}

// WithAdmission sets the policy whose Check HandleTask applies to every
// request: a peer it refuses gets grid.RejectTrustTooLow. The same policy
// should be the orchestrator's grid.PeerPolicy, which enforces each
// class's rate, task and byte limits before a task reaches HandleTask:
// the coordinator keeps no rate limiter of its own. Default: a policy from
// DefaultAdmissionConfig with WithAcceptThreshold's threshold.
func WithAdmission(p *AdmissionPolicy) CoordinatorOption {
	return func(c *coordinatorConfig) { c.admission = p }
}

// WithSweepInterval sets how often the coordinator drops expired results
// and fails tasks whose deadline passed unnoticed. Default: 1 s.
func WithSweepInterval(d time.Duration) CoordinatorOption {
	return func(c *coordinatorConfig) { c.sweepInterval = d }
}

// WithQueueOptions sets the options of the queue the coordinator builds
// when Deps.Queue is nil.
func WithQueueOptions(opts ...grid.QueueOption) CoordinatorOption {
	return func(c *coordinatorConfig) { c.queueOpts = append(c.queueOpts, opts...) }
}

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) CoordinatorOption { return func(c *coordinatorConfig) { c.logger = l } }

// DelegationCoordinator runs each submitted task on the best node for it,
// this one or a peer, and keeps its status and result. It is safe for
// concurrent use.
//
// Flow. SubmitTask fills the task's ID, CreatedAt and Requester if unset,
// validates the input when this node has the skill, asks the Router for
// the best candidate and starts the first attempt there. A local attempt
// is a Job in the Queue; an Executor worker runs it and hands the result
// to the coordinator, with no goroutine of its own per task. A remote
// attempt is one goroutine calling Deps.Remote.Delegate, under the task's
// deadline.
//
// Retries. A failed attempt is retried while the task's attempts are
// fewer than its Retry.MaxAttempts (MaxRetries + 1 when that is 0), its
// Retry.RetryOn lists the failure's code (or is empty), and the deadline
// allows: after a backoff (cenkalti/backoff/v5; the task's
// Retry.BaseBackoff and MaxBackoff, else WithRetryBackoff's), on the best
// candidate not tried yet for this task;
// when every candidate has been tried, on the best other than the last
// one; when that is the only one, on it again. A peer that rejected the
// attempt (queue full, rate limited, over its budget for this node,
// shutting down, ...) is left at once for a candidate not tried yet,
// without blame in trust; once every candidate has been tried, the next
// one waits out the backoff and the rejecting node's retry-after. A
// refusal is not a failure: rejected attempts do not count against
// MaxAttempts, and the deadline bounds how long a task keeps asking. A
// node that refuses the task as too large for what it lets this node hold
// is not asked again for it; when every node left has refused it so, the
// task fails with ErrInvalidInput and ErrTooLarge. Input that a node
// refuses as invalid fails the task with ErrInvalidInput without a retry,
// as does a request that does not fit in a task message. When failed
// attempts reach MaxAttempts, or the policy does not retry the failure's
// code, the task fails with ErrDelegationFailed.
//
// Circuit breakers. Each peer has a circuit breaker (WithCircuitBreaker),
// fed from the accounting below: consecutive attempts that the peer did
// not answer (it was unreachable, went away, sent no ack, lost the lease)
// or that failed, timed out or came back wrong open it (rejections,
// refused input, limits, cancellations and a lost skill do not count),
// and while it is open the router leaves the peer out; after the open
// period one probe attempt at a time may go to it, whose success closes
// the breaker and whose failure opens it again. The breaker, not trust,
// is what handles a peer that is down: a peer that restarts is used again
// once a probe reaches it. This node has no breaker. Breakers reports
// their state.
//
// Waiting for a provider. With no peer usable, a task for a skill this
// node has runs here. A task for a skill only peers offer is refused at
// submission with ErrUnknownSkill if the Directory lists no provider at
// all, unless the Directory is still filling (a *grid.Node in its first
// announce interval: the task waits as below); if providers are listed
// but none is usable now (every one's breaker is open) or, after a failed
// attempt, the Directory no longer lists any, the task waits in StateRetrying without using an attempt,
// looking again after each backoff, and runs as soon as a provider is
// usable. If none is by its deadline it fails with an error wrapping both
// ErrTimeout and the *NoCapableNodeError that says why (errors.As gives
// its Reason, such as AllCircuitOpen).
//
// Deadline. A task fails with ErrTimeout at CreatedAt + Timeout: through
// the queue's expiry handler or the executor's deadline for a local
// attempt, the Delegate context for a remote one, and a sweep (see
// WithSweepInterval) as a backstop.
//
// Accounting. Each attempt is counted in Metrics against the node that ran
// it (this node under Self): RecordSubmitted when it starts, then at most
// one of RecordCompleted, RecordFailed (a failure the node reported, or a
// wrong result), RecordTimedOut (work not finished by the deadline),
// RecordUnavailable (the node did not answer) or RecordRejected (it
// refused the attempt). The time recorded is the skill's run time for a
// local attempt and the round trip as this node saw it for a remote one.
// For a peer, Trust.Record gets only what the peer's own answer shows:
// OutcomeSuccess, OutcomeFailure (it reported a failure), OutcomeTimeout
// (it took the task and did not finish it in time) or OutcomeWrongResult
// (a result that is malformed or that fails the skill's OutputChecker,
// which every built-in implements), weighing four failures. A peer that did not
// answer is left to its breaker: an availability problem is not evidence
// about honesty, and must not drop the peer below the trust that routing
// and admission require. The user's mistakes (invalid input, a cancel, a
// deadline that passed while the task waited in this node's queue) and
// limits no node could meet (an input over wire.MaxTaskInput, refused at
// submission; an output over wire.MaxTaskOutput) count against no node,
// in metrics or in trust, and are not retried. (The graph keeps no
// record of this node.)
//
// Results. A finished task keeps its status and result for the retention
// (WithResultRetention), within WithMaxTasks. Each task finishes once: a
// result that arrives after that (from an attempt that was canceled or
// timed out, or twice from a peer) is dropped.
//
// Incoming tasks. HandleTask admits tasks that peers send and runs them
// through the same Queue and Executor; see HandleTask.
//
// Lifecycle. NewCoordinator starts nothing. Start starts the Queue, the
// Executor and the sweeper; Close stops them in reverse order and cancels
// what is unfinished.
type DelegationCoordinator struct {
	cache   atomic.Pointer[ResultCache] // see UseResultCache; nil: no result cache
	self    peer.ID
	reg     *Registry
	exec    *Executor
	router  *Router
	q       *grid.TaskQueue
	metrics *grid.MetricsTracker
	trust   *reputation.Graph
	remote  grid.Delegator
	cfg     coordinatorConfig
	log     *slog.Logger

	// breakers are the per-peer circuit breakers; nil if disabled.
	breakers *breakerSet
	// spot runs the spot checks of peers' outputs (WithSpotChecks).
	spot *spotChecker

	// localDone and incomingDone are the Done funcs of local jobs, made
	// once so that a job costs no closure.
	localDone, incomingDone func(*grid.QueuedTask, SkillResult)
	// localProgress and incomingProgress are the progress reporters of
	// those jobs, made once likewise.
	localProgress, incomingProgress func(*Job, float64, string)

	tasks   *taskTable
	in      *incomingTable
	salt    TaskID // XORed into incoming task IDs for the queue
	events  *eventhub.Hub[Event]
	running atomic.Bool // between Start and Close
	closing atomic.Bool // set first thing in Close

	// waiters recycles the resultWaiters of Wait calls.
	waiters sync.Pool

	// refused holds, for each task that had an attempt rejected, its
	// *refusals; every access is under the task's shard lock, and the
	// entry goes when the task finishes.
	refused sync.Map

	// admission decides which peers may send tasks (see WithAdmission);
	// recent answers requests repeated after their result was sent.
	admission *AdmissionPolicy
	recent    *recentResults

	mu      sync.Mutex // guards the lifecycle and the subscriber list's writes
	started bool
	closed  bool
	ctx     context.Context // parent of remote attempts; canceled by Close
	cancel  context.CancelFunc
	wg      sync.WaitGroup // remote attempts, retry timers, sweeper, subscribers
}

var _ grid.TaskHandler = (*DelegationCoordinator)(nil)

// NewCoordinator returns a coordinator built from d. It checks d and the
// options, reporting every problem at once, and starts nothing.
func NewCoordinator(d Deps, opts ...CoordinatorOption) (*DelegationCoordinator, error) {
	cfg := defaultCoordinatorConfig()
	for _, o := range opts {
		o(&cfg)
	}
	errs := []error{cfg.validate()}
	if d.Self == "" {
		errs = append(errs, errors.New("self peer ID is empty"))
	}
	if d.Registry == nil {
		errs = append(errs, errors.New("registry is nil"))
	}
	if d.Executor == nil {
		errs = append(errs, errors.New("executor is nil"))
	}
	if d.Trust == nil {
		errs = append(errs, errors.New("trust graph is nil"))
	}
	if d.Queue != nil && len(cfg.queueOpts) > 0 {
		errs = append(errs, errors.New("queue options are set but Deps.Queue is given: set one or the other"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new coordinator: %w", err)
	}
	c := &DelegationCoordinator{
		self: d.Self, reg: d.Registry, exec: d.Executor, router: d.Router, q: d.Queue,
		metrics: d.Metrics, trust: d.Trust, remote: d.Remote, cfg: cfg, events: eventhub.New[Event](eventBuffer),
		log:   cfg.logger.With("subsystem", "coordinator"),
		tasks: newTaskTable(cfg.maxTasks), in: newIncomingTable(), salt: grid.NewTaskID(),
		breakers: newBreakerSet(cfg.breaker), admission: cfg.admission,
		recent: newRecentResults(cfg.recent), spot: newSpotChecker(cfg.spot),
	}
	if c.admission == nil {
		ac := DefaultAdmissionConfig()
		ac.AcceptThreshold = cfg.acceptThreshold
		ac.KnownTrust = max(ac.KnownTrust, cfg.acceptThreshold)
		a, err := NewAdmissionPolicy(d.Trust, ac)
		if err != nil {
			return nil, fmt.Errorf("new coordinator: %w", err)
		}
		c.admission = a
	}
	c.waiters.New = newResultWaiter
	c.localDone, c.incomingDone = c.onLocalDone, c.onIncomingDone
	c.localProgress, c.incomingProgress = c.onLocalProgress, c.onIncomingProgress
	if c.metrics == nil {
		c.metrics = grid.NewMetricsTracker()
	}
	if c.q == nil {
		q, err := grid.NewTaskQueue(append(cfg.queueOpts[:len(cfg.queueOpts):len(cfg.queueOpts)], grid.WithExpiryHandler(c.QueueExpired))...)
		if err != nil {
			return nil, fmt.Errorf("new coordinator: %w", err)
		}
		c.q = q
	}
	if c.router == nil {
		var ropts []RouterOption
		if c.breakers != nil {
			ropts = append(ropts, WithPeerGate(c.breakers))
		}
		r, err := NewRouter(d.Self, d.Registry, d.Directory, d.Trust, c.metrics, c.LocalLoad, ropts...)
		if err != nil {
			return nil, fmt.Errorf("new coordinator: %w", err)
		}
		c.router = r
	}
	return c, nil
}

// LocalLoad returns this node's load: queue depths, tasks in flight and
// worker slots. It is the Router's load function when the coordinator
// builds the Router, and what the network layer announces.
func (c *DelegationCoordinator) LocalLoad() grid.Load {
	st := c.q.Stats()
	return grid.Load{QueueDepth: st.Depth, InFlight: st.InFlight, Capacity: c.exec.Capacity()}
}

// Start starts the queue's sweeper, the executor's workers on the queue
// and the coordinator's sweeper. ctx carries values only: everything runs
// until Close. Start may be called once; on failure it stops what it
// started.
func (c *DelegationCoordinator) Start(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return fmt.Errorf("start coordinator: %w", ErrClosed)
	case c.started:
		return errors.New("start coordinator: already started")
	}
	c.ctx, c.cancel = context.WithCancel(context.WithoutCancel(ctx))
	if err := c.q.Start(c.ctx); err != nil {
		c.cancel()
		return fmt.Errorf("start coordinator: %w", err)
	}
	if err := c.exec.Start(c.ctx, c.q); err != nil {
		c.cancel()
		_ = c.q.Close()
		return fmt.Errorf("start coordinator: %w", err)
	}
	c.started = true
	if c.cfg.store != nil {
		if err := c.recoverStored(); err != nil {
			c.log.Error("cannot resume the tasks of the previous run", "err", err)
		}
	}
	c.wg.Add(1)
	go c.sweepLoop(c.ctx)
	c.running.Store(true)
	return nil
}

// Close stops accepting tasks, closes the executor (a running skill has its
// context canceled), then the queue, cancels remote attempts and retry
// waits, finishes every unfinished task as canceled with ErrClosed (so
// Wait returns), answers every admitted peer task with a canceled result,
// ends the subscriptions and waits for the goroutines it owns. It does not
// wait for subscriber callbacks that are still running, and does not close
// the trust graph. Close is idempotent.
func (c *DelegationCoordinator) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.closing.Store(true)
	c.running.Store(false)
	started := c.started
	c.mu.Unlock()

	if started {
		_ = c.exec.Close()
		_ = c.q.Close()
		c.cancel()
	}
	c.finishAll()
	c.in.cancelAll(c)
	c.events.Close()
	c.wg.Wait()
	return nil
}

// finishAll ends every unfinished task as canceled by Close.
func (c *DelegationCoordinator) finishAll() {
	for i := range c.tasks.shards {
		s := &c.tasks.shards[i]
		s.mu.Lock()
		s.each(func(r *record) {
			if !r.state.Terminal() {
				c.abortLocked(s, r, StateCanceled, grid.CodeCanceled, c.canceledError(r))
				c.announceLocked(r, r.updatedAt())
			}
		})
		s.mu.Unlock()
	}
}

// Metrics returns a snapshot of the per-attempt metrics.
func (c *DelegationCoordinator) Metrics() grid.MetricsSnapshot { return c.metrics.Snapshot() }

// QueueStats returns the local queue's statistics.
func (c *DelegationCoordinator) QueueStats() grid.QueueStats { return c.q.Stats() }

// GetResult returns the result of a finished task. It returns false while
// the task runs and for a task that is unknown or no longer retained. The
// result must not be modified.
func (c *DelegationCoordinator) GetResult(id TaskID) (*SkillResult, bool) {
	s := c.tasks.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.get(id)
	if r == nil && c.cfg.store != nil {
		return c.resultFromStore(id)
	}
	if r == nil || !r.finished() {
		return nil, false
	}
	return &r.result, true
}

// Status returns what the coordinator knows about a task, or an error
// wrapping ErrTaskNotFound.
func (c *DelegationCoordinator) Status(id TaskID) (TaskStatus, error) {
	s := c.tasks.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.get(id)
	if r == nil {
		if st, ok := c.statusFromStore(id); ok {
			return st, nil
		}
		return TaskStatus{}, fmt.Errorf("status of task %s: %w", id.Short(), ErrTaskNotFound)
	}
	return r.status(), nil
}

// List returns the statuses of the tasks that f selects, newest first, one
// page at a time; see ListFilter. It is meant for the API, not for a hot
// path: it sorts every retained task.
func (c *DelegationCoordinator) List(f ListFilter) []TaskStatus {
	if c.cfg.store != nil {
		return c.listStored(f)
	}
	return c.tasks.list(f)
}

// Wait blocks until the task finishes or ctx is done. For a finished task
// it returns the result and nil if it succeeded, or the result and an
// error wrapping ErrDelegationFailed, ErrInvalidInput, ErrTimeout or
// ErrCanceled if not. It returns an error wrapping ErrTaskNotFound for an
// unknown task and one wrapping ctx.Err() if ctx ends first. The result
// must not be modified.
func (c *DelegationCoordinator) Wait(ctx context.Context, id TaskID) (*SkillResult, error) {
	s := c.tasks.shard(id)
	s.mu.Lock()
	r := s.get(id)
	if r == nil {
		s.mu.Unlock()
		if res, err, ok := c.waitFromStore(id); ok {
			return res, err
		}
		return nil, fmt.Errorf("wait for task %s: %w", id.Short(), ErrTaskNotFound)
	}
	if r.finished() {
		res, err := &r.result, r.err
		s.mu.Unlock()
		return res, err
	}
	if r.job != nil {
		// A local attempt: yield once before blocking, so that this node's
		// workers, which may be waiting for this processor, can run it; a
		// quick skill is often done by the time this goroutine runs again,
		// and parking and waking cost more than the yield.
		s.mu.Unlock()
		runtime.Gosched()
		s.mu.Lock()
		if r.finished() {
			res, err := &r.result, r.err
			s.mu.Unlock()
			return res, err
		}
	}
	w := c.waiters.Get().(*resultWaiter)
	w.next, r.waiters = r.waiters, w
	s.mu.Unlock()
	if ctx.Done() == nil { // a context that never ends: a plain receive is cheaper
		<-w.ch
		c.waiters.Put(w)
		return &r.result, r.err
	}
	select {
	case <-w.ch:
		// result and err are final once w is woken.
		c.waiters.Put(w)
		return &r.result, r.err
	case <-ctx.Done():
		s.mu.Lock()
		if !r.unlistWaiter(w) {
			<-w.ch // woken meanwhile, under the lock we now hold
		}
		s.mu.Unlock()
		c.waiters.Put(w)
		return nil, fmt.Errorf("wait for task %s: %w", id.Short(), ctx.Err())
	}
}

// resultWaiter is a blocked Wait. Whoever takes it off its record's list,
// under the shard lock, sends it one value; ch has room for it, so the
// send never blocks. resultWaiters are recycled through the coordinator's
// pool, which is per coordinator so that channels made in a synctest
// bubble stay in it.
type resultWaiter struct {
	ch   chan struct{}
	next *resultWaiter
}

func newResultWaiter() any { return &resultWaiter{ch: make(chan struct{}, 1)} }

// sweepLoop drops expired results, times out overdue tasks and forgets
// the expired records of results sent to peers, every sweep interval until
// ctx ends.
func (c *DelegationCoordinator) sweepLoop(ctx context.Context) {
	defer c.wg.Done()
	tick := time.NewTicker(c.cfg.sweepInterval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			now := time.Now()
			c.sweepTasks(now)
			c.in.sweep(c, now)
			c.recent.sweep(now)
		}
	}
}
