package skill

import (
	"context"
	crand "crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/libp2p/go-libp2p/core/peer"
)

// SubmitTask starts t and returns its ID at once. It fills t.ID (if zero),
// t.CreatedAt (if zero) and t.Requester (if empty, with this node); t must
// not be changed afterwards. It returns an error wrapping ErrInvalidInput
// if the task or, when this node has the skill, its input is not valid;
// ErrUnknownSkill (together with a *NoCapableNodeError) if no node offers
// the skill (but while the Directory is still filling, a *grid.Node just
// started, the task is accepted and waits for a provider, failing with
// ErrUnknownSkill if there is still none once it has filled); a *NoCapableNodeError if none may take it (but a task whose
// providers are only unusable for now, their circuit breakers open, is
// accepted and waits for one: see DelegationCoordinator); ErrQueueFull if
// the local queue level is full (and no peer may take the task instead) or
// the coordinator tracks WithMaxTasks unfinished tasks; ErrNotStarted
// before Start and ErrClosed after Close.
func (c *DelegationCoordinator) SubmitTask(ctx context.Context, t *SkillTask) (TaskID, error) {
	if t == nil {
		return TaskID{}, fmt.Errorf("submit task: task is nil: %w", ErrInvalidInput)
	}
	if !c.running.Load() {
		if c.closing.Load() {
			return TaskID{}, fmt.Errorf("submit task: %w", ErrClosed)
		}
		return TaskID{}, fmt.Errorf("submit task: %w", ErrNotStarted)
	}
	if err := ctx.Err(); err != nil {
		return TaskID{}, fmt.Errorf("submit task: %w", err)
	}
	if err := checkTask(t); err != nil {
		return TaskID{}, fmt.Errorf("submit task: %w", err)
	}
	now := time.Now()
	chosenID := !t.ID.IsZero()
	if !chosenID {
		t.ID = newTaskID(now)
	}
	if t.CreatedAt.IsZero() {
		t.CreatedAt = now
	}
	if t.Requester == "" {
		t.Requester = c.self
	}
	e := c.reg.find(t.Skill, t.Version) // nil: not here, no error built
	local := e != nil
	if local {
		if err := e.validate(t.Input); err != nil {
			return TaskID{}, fmt.Errorf("submit task: %w", err)
		}
		if rc := c.resultCache(); rc != nil && e.desc.Deterministic && !t.NoCache {
			id, fl, done, err := c.submitCacheable(ctx, rc, e, t, now, chosenID)
			if done {
				return id, err
			}
			id, err = c.submitNew(ctx, t, local, now, chosenID)
			c.startFlight(rc, fl, err)
			return id, err
		}
	}
	return c.submitNew(ctx, t, local, now, chosenID)
}

// submitNew is SubmitTask once t is checked: it picks a node for t and
// starts it there.
func (c *DelegationCoordinator) submitNew(ctx context.Context, t *SkillTask, local bool, now time.Time, chosenID bool) (TaskID, error) {
	cand, err := c.pick(t, local, nil)
	if err != nil {
		var nc *NoCapableNodeError
		if !local && errors.As(err, &nc) && nc.Reason == NoProvider {
			if c.remote != nil && c.router.warming() {
				// This node just started: its table is still filling.
				return c.submitWaiting(ctx, t, err, now, chosenID)
			}
			return TaskID{}, fmt.Errorf("submit task: %w: %w", ErrUnknownSkill, err)
		}
		if c.remote != nil && waitable(err) {
			return c.submitWaiting(ctx, t, err, now, chosenID) // providers known, none usable now
		}
		return TaskID{}, fmt.Errorf("submit task: %w", err)
	}
	if c.cfg.store != nil && cand.Local {
		return c.submitLocalStored(t, cand, now, chosenID)
	}
	if c.cfg.store != nil {
		if err := c.acceptStored(ctx, t, cand.Local); err != nil {
			return TaskID{}, fmt.Errorf("submit task %s: %w", t.ID.Short(), err)
		}
	}
	err = c.submitTo(t, cand, now, chosenID, cand.Local && c.remote != nil)
	if err != nil {
		if c.cfg.store != nil {
			c.failStored(t, err)
		}
		return TaskID{}, fmt.Errorf("submit task %s: %w", t.ID.Short(), err)
	}
	return t.ID, nil
}

// idSources hold ChaCha8 generators seeded from crypto/rand, for task IDs.
var idSources = sync.Pool{New: func() any {
	var seed [32]byte
	_, _ = crand.Read(seed[:]) // crypto/rand.Read never fails on supported platforms
	return rand.NewChaCha8(seed)
}}

// newTaskID returns a task ID that begins with now in nanoseconds
// (big-endian), so the store's B+tree appends instead of writing pages at
// random: with the store on, a random ID made every commit rewrite scattered
// leaf pages, and local throughput was a third of what it is now. The other
// 24 bytes are random, from a ChaCha8 generator seeded from crypto/rand: a
// cryptographically strong generator that erases its past keys as it goes,
// at about a third of the cost of reading crypto/rand for each.
func newTaskID(now time.Time) TaskID {
	var id TaskID
	g := idSources.Get().(*rand.ChaCha8)
	_, _ = g.Read(id[8:]) // never fails
	idSources.Put(g)
	binary.BigEndian.PutUint64(id[:8], uint64(now.UnixNano()))
	return id
}

// checkTask checks the fields of a task that the coordinator relies on. A
// zero Timeout becomes DefaultTimeout.
func checkTask(t *SkillTask) error {
	var errs []error
	if t.Skill == "" {
		errs = append(errs, errors.New("skill is empty"))
	}
	if t.Timeout < 0 {
		errs = append(errs, fmt.Errorf("timeout is %v; it must be positive", t.Timeout))
	}
	if t.MinTrust < 0 || t.MinTrust > 1 || math.IsNaN(t.MinTrust) {
		errs = append(errs, fmt.Errorf("minimum trust is %v; it must be in [0, 1]", t.MinTrust))
	}
	if t.MaxRetries < 0 {
		errs = append(errs, fmt.Errorf("max retries is %d; it must be 0 or more", t.MaxRetries))
	}
	if err := t.Retry.validate(); err != nil {
		errs = append(errs, err)
	}
	if n := len(t.Input.Data); n > wire.MaxTaskInput {
		// Checked whatever node is chosen: a retry may send it anywhere,
		// and a frame that cannot carry it must not count against a peer.
		return fmt.Errorf("%w: %w: input of %d bytes is over the limit of %d bytes for one task (wire.MaxTaskInput); split it into smaller tasks",
			ErrInvalidInput, ErrTooLarge, n, wire.MaxTaskInput)
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: task: %w", ErrInvalidInput, errors.Join(errs...))
	}
	if t.Timeout == 0 {
		t.Timeout = DefaultTimeout
	}
	return nil
}

// pick returns the best candidate for t. local says whether this node has
// the skill. Without a Delegator only this node is considered.
func (c *DelegationCoordinator) pick(t *SkillTask, local bool, exclude []peer.ID) (Candidate, error) {
	if c.remote != nil {
		return c.pickRemote(t, local, exclude)
	}
	if local && !slices.Contains(exclude, c.self) {
		return Candidate{Peer: c.self, Local: true, Connected: true, Trust: 1}, nil
	}
	e := &NoCapableNodeError{Skill: string(t.Skill), Reason: NoProvider, MinTrust: t.MinTrust}
	if local {
		e.Reason, e.Checked = AllUnreachable, 1
	}
	return Candidate{}, e
}

// submitTo makes the record of t and starts its first attempt on cand.
// checkDup says that the caller chose t's ID, which must then be checked
// for a clash with a known task. fallback says that, if cand is this node
// and its queue level is full, a peer may take the task instead: the
// record then moves on to that peer without a terminal event, which would
// tell subscribers (and the API's latency histogram) of a failure that did
// not happen.
func (c *DelegationCoordinator) submitTo(t *SkillTask, cand Candidate, now time.Time, checkDup, fallback bool) error {
	s := c.tasks.shard(t.ID)
	r := &record{task: t, updated: now.UnixNano()}
	s.mu.Lock()
	switch {
	case c.closing.Load():
		s.mu.Unlock()
		return ErrClosed
	case checkDup && s.get(t.ID) != nil:
		s.mu.Unlock()
		return fmt.Errorf("task ID is in use: %w", grid.ErrDuplicateTask)
	case !c.tasks.add(s, r):
		s.mu.Unlock()
		return fmt.Errorf("%d tasks are unfinished, the most this node tracks: %w", c.cfg.maxTasks, ErrQueueFull)
	}
	a := c.beginLocked(r, cand, now)
	// The event goes out under the lock, before the attempt can end.
	c.publishUnlock(s, r, now)
	if a.qt == nil {
		c.launch(r, a)
		return nil
	}
	if err := c.enqueue(a); err != nil {
		s.mu.Lock()
		if r.state.Terminal() {
			s.mu.Unlock() // canceled meanwhile (its ID was chosen, so known): keep that
			return err
		}
		s.remove(r)
		if fallback && errors.Is(err, ErrQueueFull) {
			s.mu.Unlock()
			if alt, aerr := c.pick(t, false, nil); aerr == nil {
				if err = c.submitTo(t, alt, now, checkDup, false); err == nil {
					return nil // subscribers saw it queued, then delegated
				}
			}
			s.mu.Lock()
		}
		// Subscribers saw it queued: tell them it is gone.
		r.state, r.err = StateFailed, err
		r.result = SkillResult{TaskID: t.ID, Code: codeRejected, Error: err.Error(), ExecutedBy: c.self, Attempts: 1, FinishedAt: now}
		c.publishUnlock(s, r, now)
		return err
	}
	return nil
}

// attempt is an attempt made ready by beginLocked, to be launched.
type attempt struct {
	n    int
	peer peer.ID
	qt   *grid.QueuedTask // local
	att  *remoteAttempt   // remote
}

// beginLocked records the start of a new attempt of r on cand. The shard
// lock must be held and c must not be closing. For a remote attempt it
// reserves a place on c.wg for its goroutine.
func (c *DelegationCoordinator) beginLocked(r *record, cand Candidate, now time.Time) attempt {
	if r.attempts > 0 {
		rs := r.retryState(&c.cfg)
		rs.prev = append(rs.prev, r.peer)
	}
	r.attempts++
	r.peer = cand.Peer
	r.prog = Progress{} // the last attempt's reports say nothing of this one
	r.updated = now.UnixNano()
	r.ranking = cand.ranked
	if r.ranking != nil {
		r.ranking.Attempt = int(r.attempts)
	}
	a := attempt{n: int(r.attempts), peer: cand.Peer}
	if cand.Local {
		job, qt := &r.job0, &r.qt0
		if r.attempts > 1 {
			job, qt = &Job{}, &grid.QueuedTask{}
		}
		job.Task, job.Done, job.rec, job.progress = r.task, c.localDone, r, c.localProgress
		*qt = grid.QueuedTask{ID: r.task.ID, Priority: r.task.Priority, Payload: job, CreatedAt: r.task.CreatedAt, Deadline: r.task.Deadline(),
			Retries: int(r.attempts) - 1}
		r.state, r.job, r.att = StateQueued, job, nil
		a.qt = qt
		if c.cfg.store != nil {
			c.storeBeginLocked(r)
		}
		return a
	}
	att := &r.att0
	if att.parent != nil { // the first remote attempt's is spent
		att = &remoteAttempt{}
	}
	att.init(c.ctx, r.task.Deadline(), &c.wg)
	a.att = att
	r.state, r.job, r.att = StateDelegated, nil, att
	c.wg.Add(1)
	if c.cfg.store != nil {
		c.storeBeginLocked(r)
	}
	return a
}

// enqueue puts a local attempt prepared by beginLocked in the queue.
func (c *DelegationCoordinator) enqueue(a attempt) error {
	if err := c.q.Enqueue(a.qt); err != nil {
		return fmt.Errorf("enqueue on this node: %w", err)
	}
	c.metrics.RecordSubmitted(c.self)
	if a.n > 1 {
		c.metrics.RecordRetried(c.self)
	}
	return nil
}

// launch starts a remote attempt prepared by beginLocked, without the lock.
func (c *DelegationCoordinator) launch(r *record, a attempt) {
	c.metrics.RecordSubmitted(a.peer)
	if a.n > 1 {
		c.metrics.RecordRetried(a.peer)
	}
	c.router.attemptStarted(a.peer) // ended by startRemote or runRemote
	if ad, ok := c.remote.(asyncDelegator); ok {
		c.startRemote(ad, a.att, r, a.n, a.peer)
		return
	}
	go c.runRemote(a.att, r, a.n, a.peer)
}

// asyncDelegator is a grid.Delegator that can also report an attempt's
// end through a callback, so that no goroutine waits per attempt (the
// orchestrator is one).
type asyncDelegator interface {
	DelegateAsync(ctx context.Context, p peer.ID, t *grid.RemoteTask, done func(*grid.RemoteResult, error))
}

var _ asyncDelegator = (*grid.Orchestrator)(nil)

// remoteTask returns attempt n of r as sent to peer p. A task for a wasm
// skill names its module, so that p runs exactly that code (or fetches
// it): this node's module if it has the skill, else the one the network
// announces for it (see Router.announcedModule).
func (c *DelegationCoordinator) remoteTask(r *record, n int, p peer.ID) grid.RemoteTask {
	return c.remoteTaskOf(r.task, n, p)
}

// remoteTaskOf is remoteTask for task t.
func (c *DelegationCoordinator) remoteTaskOf(t *SkillTask, n int, p peer.ID) grid.RemoteTask {
	rt := grid.RemoteTask{
		ID: t.ID, Skill: string(t.Skill), Version: t.Version, Input: t.Input.Data, InputKind: t.Input.Kind,
		Priority: t.Priority, Deadline: t.Deadline(), MinTrust: t.MinTrust, Attempt: n, Requester: t.Requester,
		NoCache: t.NoCache,
	}
	if e := c.reg.find(t.Skill, t.Version); e != nil {
		rt.ModuleSHA256, _ = ModuleOf(e.skill)
	} else {
		rt.ModuleSHA256 = c.router.announcedModule(t, p)
	}
	return rt
}

// startRemote starts one remote attempt through ad and settles it from
// ad's callback, which owns the attempt's place on c.wg.
func (c *DelegationCoordinator) startRemote(ad asyncDelegator, att *remoteAttempt, r *record, n int, p peer.ID) {
	start := time.Now()
	done := func(res *grid.RemoteResult, err error) {
		c.router.attemptEnded(p)
		c.settle(r, n, c.checkOutput(r, classifyRemote(att, r, p, res, err, time.Since(start))))
		att.cancel()
		c.wg.Done()
	}
	if o, ok := ad.(*grid.Orchestrator); ok {
		// Called on the concrete type, whose DelegateAsync keeps no
		// pointer to its task, rt stays on the stack.
		rt := c.remoteTask(r, n, p)
		o.DelegateAsync(att, p, &rt, done)
		return
	}
	rt := c.remoteTask(r, n, p)
	ad.DelegateAsync(att, p, &rt, done)
}

// runRemote runs one remote attempt through a Delegator that only blocks.
// It owns a place on c.wg.
func (c *DelegationCoordinator) runRemote(att *remoteAttempt, r *record, n int, p peer.ID) {
	defer c.wg.Done()
	defer att.cancel()
	start := time.Now()
	rt := c.remoteTask(r, n, p)
	res, err := c.remote.Delegate(att, p, &rt)
	c.router.attemptEnded(p)
	c.settle(r, n, c.checkOutput(r, classifyRemote(att, r, p, res, err, time.Since(start))))
}
