package skill

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// incoming is a task that a peer sent and this node admitted. It is keyed
// in the incoming table, and in the queue, by its ID XOR the coordinator's
// salt, so that a peer cannot collide with this node's own task IDs.
type incoming struct {
	from     peer.ID
	id       TaskID // the ID the peer uses
	deadline time.Time
	reply    grid.Replier     // guarded by the shard lock
	rt       *grid.RemoteTask // the request reply answers; guarded by the shard lock

	task SkillTask
	job  Job
	qt   grid.QueuedTask

	// cache is set, before the entry is in the table, for a request that
	// waits for a shared run (see execRun), or for an identical local task
	// running here (fl), rather than running on its own; run, fl and left
	// are guarded by cache.mu.
	cache *ResultCache
	run   *execRun
	fl    *flight
	left  bool // it left run or fl
}

const numInShards = 16

type inShard struct {
	mu sync.Mutex
	m  map[TaskID]*incoming
	_  [48]byte
}

type incomingTable struct{ shards [numInShards]inShard }

func newIncomingTable() *incomingTable {
	t := &incomingTable{}
	for i := range t.shards {
		t.shards[i].m = make(map[TaskID]*incoming)
	}
	return t
}

func (t *incomingTable) shard(qid TaskID) *inShard { return &t.shards[qid[0]&(numInShards-1)] }

// take removes the entry qid if its job is job (any job if job is nil) and
// returns it with the reply to call. Whoever takes an entry replies.
func (t *incomingTable) take(qid TaskID, job *Job) (*incoming, grid.Replier) {
	s := t.shard(qid)
	s.mu.Lock()
	defer s.mu.Unlock()
	in := s.m[qid]
	if in == nil || (job != nil && &in.job != job) {
		return nil, nil
	}
	delete(s.m, qid)
	return in, in.reply
}

func saltID(id, salt TaskID) TaskID {
	for i := range id {
		id[i] ^= salt[i]
	}
	return id
}

func reject(reason grid.RejectReason, retryAfter time.Duration, format string, args ...any) error {
	return &grid.RejectError{Reason: reason, RetryAfter: retryAfter, Message: fmt.Sprintf(format, args...)}
}

// HandleTask admits or rejects a task that peer from sends (see
// grid.TaskHandler). The orchestrator has already held from to the limits
// of its admission class (see WithAdmission and grid.PeerPolicy). It
// checks, in this order, cheapest and most protective first: that the
// coordinator runs (else RejectShuttingDown), the request's shape
// (RejectMalformed), the admission policy (RejectTrustTooLow, for a peer
// below the accept threshold, with a message saying how to get back in),
// whether the request repeats one already answered (see below), that the
// skill is registered (RejectUnknownSkill), the input
// (RejectInvalidInput), the deadline (RejectDeadlinePassed), whether the
// task ID is running here already (see below) and room in the queue
// (RejectQueueFull, with RetryAfter). An admitted task runs through the
// same queue and executor as local tasks, under the peer's deadline, and
// reply is called once with its result, or with a CodeTimeout or
// CodeCanceled failure if it expires, is canceled by from, or this node
// closes.
//
// Repeated task IDs. A task is named by its ID and the peer that sent it;
// each request for it carries an attempt number, which the requester
// raises when it tries the task again. The rule, which docs/protocol.md
// states for implementers:
//
//   - The ID is running here for the same peer: a request with the same or
//     an older attempt is rejected with RejectDuplicate and the running
//     task goes on; a newer attempt takes over the running task's reply
//     (the earlier request gets a CodeCanceled "superseded" result), so
//     the work does not run twice.
//   - The ID is running here for another peer: RejectDuplicate.
//   - The result of the ID was sent to the peer already and is still
//     recorded (in the store if the coordinator has one, else in memory
//     for DefaultRecentResultTTL, see WithRecentResults): a request is
//     answered with that same result at once, without running the work
//     again, if the result was a success or the request's attempt is not
//     newer than the one answered. A newer attempt after a failure is a
//     retry: the record is dropped and the task runs again. A result that
//     was too large to keep answers a repeat of its attempt with
//     RejectDuplicate, and a newer attempt runs again.
//   - A canceled task (by the requester, a lost connection or Close) is
//     not recorded: asking again runs it again.
//   - Otherwise (never seen, or the record expired) the task runs.
//
// Identical work. With a result cache (UseResultCache), a request for a
// deterministic skill without no_cache is matched by its cache key too,
// across requesters: a result this node computed itself answers it at
// once (Cached), and while this node runs the same work (an execRun for
// an earlier request, or a local task queued or running here) it waits
// for that run instead of taking a queue place; see execRun and
// docs/protocol.md, "Identical work".
func (c *DelegationCoordinator) HandleTask(from peer.ID, rt *grid.RemoteTask, reply grid.Replier) error {
	err := c.admit(from, rt, reply)
	if err != nil && c.log.Enabled(context.Background(), slog.LevelDebug) {
		c.log.Debug("rejected a task from a peer", "peer", from, "err", err)
	}
	return err
}

// admit is HandleTask without the logging.
func (c *DelegationCoordinator) admit(from peer.ID, rt *grid.RemoteTask, reply grid.Replier) error {
	if !c.running.Load() {
		return reject(grid.RejectShuttingDown, 0, "node is not running")
	}
	if rt == nil || reply == nil || rt.ID.IsZero() || from == "" {
		return reject(grid.RejectMalformed, 0, "request needs a task ID, a sender and a reply")
	}
	if err := c.admission.Check(from); err != nil {
		return err
	}
	if done, err := c.answerRepeat(from, rt, reply); done || err != nil {
		return err
	}
	e, err := c.reg.lookup(reputation.SkillID(rt.Skill), rt.Version)
	if err != nil {
		return reject(grid.RejectUnknownSkill, 0, "%v", err)
	}
	if err := checkModule(e.skill, rt); err != nil {
		return err
	}
	in := SkillInput{Kind: rt.InputKind, Data: rt.Input}
	if err := e.validate(in); err != nil {
		return reject(grid.RejectInvalidInput, 0, "%v", err)
	}
	now := time.Now()
	deadline := rt.Deadline
	if deadline.IsZero() {
		deadline = now.Add(DefaultTimeout)
	}
	if !deadline.After(now) {
		return reject(grid.RejectDeadlinePassed, 0, "deadline %s passed %s ago", deadline.UTC().Format(time.RFC3339Nano), now.Sub(deadline).Round(time.Millisecond))
	}
	rc := c.resultCache()
	var key CacheKey
	if cacheableIncoming(rc, e, rt) {
		key = keyOf(e.skill, &e.desc, in) // the input's sha256, outside the locks
	} else {
		rc = nil
	}
	qid := saltID(rt.ID, c.salt)
	inc := &incoming{from: from, id: rt.ID, deadline: deadline, reply: reply, rt: rt}
	inc.task = SkillTask{
		ID: rt.ID, Skill: reputation.SkillID(rt.Skill), Version: rt.Version, Input: in, Requester: from,
		Priority: rt.Priority, Timeout: deadline.Sub(now), MinTrust: rt.MinTrust, CreatedAt: now,
	}
	inc.job = Job{Task: &inc.task, Done: c.incomingDone, inc: inc, progress: c.incomingProgress}
	inc.qt = grid.QueuedTask{ID: qid, Priority: rt.Priority, Payload: &inc.job, CreatedAt: now, Deadline: deadline}

	s := c.in.shard(qid)
	s.mu.Lock()
	if old := s.m[qid]; old != nil {
		switch {
		case old.from != from:
			s.mu.Unlock()
			return reject(grid.RejectDuplicate, 0, "task ID %s is in use here by another requester", rt.ID.Short())
		case rt.Attempt <= old.rt.Attempt:
			running := old.rt.Attempt
			s.mu.Unlock()
			return reject(grid.RejectDuplicate, 0, "task %s attempt %d is running here already (attempt %d): wait for its result, or send a newer attempt", rt.ID.Short(), rt.Attempt, running)
		}
		prev := old.reply
		old.reply, old.rt = reply, rt
		s.mu.Unlock()
		prev.Reply(&grid.RemoteResult{ID: rt.ID, ErrorCode: grid.CodeCanceled, ErrorMessage: "superseded by a newer attempt of the same task", Executor: c.self})
		return nil
	}
	if c.closing.Load() {
		s.mu.Unlock()
		return reject(grid.RejectShuttingDown, 0, "node is shutting down")
	}
	if rc != nil {
		run, answered, err := c.admitCacheable(rc, s, key, inc, qid, now) // unlocks s
		if answered || err != nil {
			return err
		}
		if c.cfg.store != nil {
			c.storeAdmitted(inc, rt.Attempt)
		}
		if run == nil {
			return nil // it waits for the identical run going on
		}
		if err := c.enqueueRun(run, inc); err != nil {
			return c.enqueueRejection(err)
		}
		return nil
	}
	s.m[qid] = inc
	s.mu.Unlock()
	if c.cfg.store != nil {
		c.storeAdmitted(inc, rt.Attempt)
	}
	if err := c.q.Enqueue(&inc.qt); err != nil {
		c.in.take(qid, &inc.job)
		return c.enqueueRejection(err)
	}
	return nil
}

// enqueueRejection is the rejection of a request the queue refused with
// err.
func (c *DelegationCoordinator) enqueueRejection(err error) error {
	switch {
	case errors.Is(err, grid.ErrQueueFull):
		return reject(grid.RejectQueueFull, c.cfg.retryBase, "%v", err)
	case errors.Is(err, grid.ErrClosed):
		return reject(grid.RejectShuttingDown, 0, "node is shutting down")
	}
	return reject(grid.RejectUnspecified, 0, "%v", err)
}

// answerRepeat applies HandleTask's rule for a request whose result was
// sent already: it reports true if it answered the request through reply
// (before returning, which the orchestrator accepts, so that nothing
// outlives Close), or returns the rejection; false and nil let the task
// run.
func (c *DelegationCoordinator) answerRepeat(from peer.ID, rt *grid.RemoteTask, reply grid.Replier) (bool, error) {
	// The ring of recent answers is checked first, store or not: the
	// store's copy of a result is written behind, so a repeat that comes
	// within milliseconds of the answer finds it only here.
	sr, ok := c.recent.get(from, rt.ID, time.Now())
	switch {
	case !ok && c.cfg.store != nil:
		return c.answerStored(from, rt, reply), nil
	case !ok:
		return false, nil
	case repeatRuns(rt.Attempt, sr.attempt, sr.res.Success && sr.kept):
		c.recent.forget(from, rt.ID)
		return false, nil
	case !sr.kept:
		return false, reject(grid.RejectDuplicate, 0, "task %s attempt %d: %v", rt.ID.Short(), rt.Attempt, errResultNotKept)
	}
	res := sr.res
	reply.Reply(&res)
	if c.cfg.store != nil {
		// Queued behind the write of the result itself.
		c.cfg.store.MarkDeliveredAsync(from, rt.ID, nil)
	}
	return true, nil
}

// repeatRuns reports whether a request with attempt, for a task whose
// answer to attempt answered was sent already, runs the task again rather
// than getting that answer: only a newer attempt does, and only if the
// answer cannot serve it (a failure, or a success whose output was not
// kept).
func repeatRuns(attempt, answered int, servable bool) bool {
	return attempt > answered && !servable
}

// sent records res, the answer to in, in the ring of recent answers (the
// store, if there is one, records it too, written behind).
func (c *DelegationCoordinator) sent(in *incoming, res *grid.RemoteResult) {
	c.recent.add(in.from, in.id, in.rt.Attempt, res, time.Now())
}

// onIncomingDone is the Done of admitted peer tasks.
func (c *DelegationCoordinator) onIncomingDone(qt *grid.QueuedTask, res SkillResult) {
	job, _ := qt.Payload.(*Job)
	in, reply := c.in.take(qt.ID, job)
	if in == nil {
		return // canceled, expired or closed: answered already
	}
	c.answerIncoming(in, reply, res, false)
}

// CancelTask stops a task that from sent earlier, if it is still known
// (see grid.TaskHandler); from gets a CodeCanceled result for it.
func (c *DelegationCoordinator) CancelTask(from peer.ID, id grid.TaskID) {
	qid := saltID(id, c.salt)
	s := c.in.shard(qid)
	s.mu.Lock()
	in := s.m[qid]
	if in == nil || in.from != from {
		s.mu.Unlock()
		return
	}
	delete(s.m, qid)
	reply := in.reply
	s.mu.Unlock()
	c.stopIncoming(qid, in, reply, grid.CodeCanceled, "canceled by the requester")
}

var _ grid.TaskAbandoner = (*DelegationCoordinator)(nil)

// connLostMessage is the failure of a peer's task stopped because the
// connection it came on was lost (see AbandonTask). Nobody receives it: it
// shows in logs, and it is never stored.
const connLostMessage = "requester connection lost"

// AbandonTask stops a task whose requester's connection was lost (see
// grid.TaskAbandoner): the work is dropped, and so is its record in the
// store, so that when from asks again for the same task ID, after
// reconnecting or restarting, the task runs again rather than being
// answered with a cancellation it never asked for. The task is left alone
// if it answers a newer request than t (from re-sent it meanwhile).
func (c *DelegationCoordinator) AbandonTask(from peer.ID, t *grid.RemoteTask) {
	if t == nil {
		return
	}
	qid := saltID(t.ID, c.salt)
	s := c.in.shard(qid)
	s.mu.Lock()
	in := s.m[qid]
	if in == nil || in.from != from || in.rt != t {
		s.mu.Unlock()
		return
	}
	delete(s.m, qid)
	reply := in.reply
	s.mu.Unlock()
	c.stopWork(qid, in)
	if c.cfg.store != nil {
		c.cfg.store.ForgetRemoteAsync(in.from, in.id, nil)
	}
	reply.Reply(&grid.RemoteResult{ID: in.id, ErrorCode: grid.CodeCanceled, ErrorMessage: connLostMessage, Executor: c.self})
}

// stopIncoming takes a taken entry out of the queue, stops its job and
// answers its requester.
func (c *DelegationCoordinator) stopIncoming(qid TaskID, in *incoming, reply grid.Replier, code grid.ErrorCode, msg string) {
	c.stopWork(qid, in)
	rr := &grid.RemoteResult{ID: in.id, ErrorCode: code, ErrorMessage: msg, Executor: c.self}
	if c.cfg.store != nil {
		c.storeAnswered(in, rr)
	}
	c.sent(in, rr)
	reply.Reply(rr)
}

// expire answers an admitted task whose queue entry expired.
func (t *incomingTable) expire(c *DelegationCoordinator, qid TaskID, job *Job) {
	if in, reply := t.take(qid, job); in != nil {
		c.stopIncoming(qid, in, reply, grid.CodeTimeout, "deadline passed on the executing node")
	}
}

// sweep answers admitted tasks whose deadline passed without the queue or
// the executor noticing (a backstop, as for local tasks).
func (t *incomingTable) sweep(c *DelegationCoordinator, now time.Time) {
	for i := range t.shards {
		s := &t.shards[i]
		var overdue []TaskID
		s.mu.Lock()
		for qid, in := range s.m {
			if !now.Before(in.deadline) {
				overdue = append(overdue, qid)
			}
		}
		s.mu.Unlock()
		for _, qid := range overdue {
			t.expire(c, qid, nil)
		}
	}
}

// cancelAll answers every admitted task with a CodeCanceled failure, at
// Close.
func (t *incomingTable) cancelAll(c *DelegationCoordinator) {
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		all := s.m
		s.m = make(map[TaskID]*incoming)
		s.mu.Unlock()
		for qid, in := range all {
			c.stopIncoming(qid, in, in.reply, grid.CodeCanceled, "node shutting down")
		}
	}
}

// ModuleSkill is a skill that runs a wasm module (*wasm.Skill is one):
// its module's sha256 is what a TaskRequest's module hash is checked
// against, and what the node announces.
type ModuleSkill interface {
	Skill
	ModuleSHA256() [32]byte
}

// ModuleOf returns the module hash of s if it is a ModuleSkill.
func ModuleOf(s Skill) ([32]byte, bool) {
	if m, ok := s.(ModuleSkill); ok {
		return m.ModuleSHA256(), true
	}
	return [32]byte{}, false
}

// checkModule refuses a task that names a module other than the one the
// local skill runs: the requester meant other code.
func checkModule(s Skill, rt *grid.RemoteTask) error {
	if rt.ModuleSHA256 == ([32]byte{}) {
		return nil
	}
	have, ok := ModuleOf(s)
	switch {
	case !ok:
		return reject(grid.RejectUnknownSkill, 0, "skill %q is not a wasm skill here, the task names module %x", rt.Skill, rt.ModuleSHA256)
	case have != rt.ModuleSHA256:
		return reject(grid.RejectUnknownSkill, 0, "skill %q runs module %x here, the task names module %x", rt.Skill, have, rt.ModuleSHA256)
	}
	return nil
}

// ModuleFetcher makes a wasm skill this node lacks runnable, for a task a
// peer sent: *modules.Fetcher implements it.
type ModuleFetcher interface {
	// CanFetch says, at once, why this node would not fetch a module for
	// a task from from (its fetch policy), or nil.
	CanFetch(from peer.ID) error
	// FetchModule fetches module (zero: the one from announces for skill),
	// verifies and compiles it and registers skill, returning once the
	// registry runs it or with why not. Concurrent calls for one module
	// share its fetch.
	FetchModule(ctx context.Context, from peer.ID, skill reputation.SkillID, version string, module [32]byte) error
}

// DefaultMaxPendingFetches bounds the tasks a FetchingHandler holds while
// their modules are fetched.
const DefaultMaxPendingFetches = 256

// FetchingHandler is the coordinator as the orchestrator's grid.TaskHandler
// on a node that fetches modules: a task for a skill the registry lacks,
// from a peer the ModuleFetcher would fetch from, is accepted at once
// (before its module is here: the fetch takes longer than an ack may
// wait), its module fetched, and then admitted by the coordinator as any
// other task. A fetch that fails, or an admission that fails after it,
// answers the task with a failed result (CodeUnknownSkill for the fetch;
// the rejection's message otherwise). Every other task goes straight to
// the coordinator. Register it as the orchestrator's handler in place of
// the coordinator. It is safe for concurrent use.
//
// Close stops the fetches it waits on and answers their tasks; close it
// before the coordinator.
type FetchingHandler struct {
	c   *DelegationCoordinator
	f   ModuleFetcher
	max int

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	pending map[pendingKey]*pendingFetch
}

var _ grid.ProgressSink = (*FetchingHandler)(nil)

// TaskProgress implements grid.ProgressSink for the coordinator's
// delegated tasks.
func (h *FetchingHandler) TaskProgress(id TaskID, attempt int, fraction float64, msg string) {
	h.c.TaskProgress(id, attempt, fraction, msg)
}

type pendingKey struct {
	from peer.ID
	id   grid.TaskID
}

type pendingFetch struct {
	rt     *grid.RemoteTask
	reply  grid.Replier
	cancel context.CancelFunc
}

var (
	_ grid.TaskHandler   = (*FetchingHandler)(nil)
	_ grid.TaskAbandoner = (*FetchingHandler)(nil)
)

// NewFetchingHandler returns c's task handler with fetching through f.
func NewFetchingHandler(c *DelegationCoordinator, f ModuleFetcher) *FetchingHandler {
	ctx, cancel := context.WithCancel(context.Background())
	return &FetchingHandler{c: c, f: f, max: DefaultMaxPendingFetches, ctx: ctx, cancel: cancel, pending: map[pendingKey]*pendingFetch{}}
}

// HandleTask implements grid.TaskHandler: a task that needs no fetch goes
// to the coordinator's.
func (h *FetchingHandler) HandleTask(from peer.ID, rt *grid.RemoteTask, reply grid.Replier) error {
	c := h.c
	if rt == nil || reply == nil || from == "" || !c.running.Load() || !rt.Deadline.After(time.Now()) ||
		c.reg.find(reputation.SkillID(rt.Skill), rt.Version) != nil {
		return c.HandleTask(from, rt, reply) // refuses a nil reply
	}
	if err := c.admission.Check(from); err != nil {
		return err
	}
	if err := h.f.CanFetch(from); err != nil {
		return reject(grid.RejectUnknownSkill, 0, "skill %q is not here: %v", rt.Skill, err)
	}
	key := pendingKey{from, rt.ID}
	h.mu.Lock()
	switch old := h.pending[key]; {
	case h.closed:
		h.mu.Unlock()
		return reject(grid.RejectShuttingDown, 0, "node is shutting down")
	case old != nil && rt.Attempt <= old.rt.Attempt:
		h.mu.Unlock()
		return reject(grid.RejectDuplicate, 0, "task %s attempt %d is waiting for its module here already (attempt %d)", rt.ID.Short(), rt.Attempt, old.rt.Attempt)
	case old != nil:
		prev := old.reply
		old.rt, old.reply = rt, reply
		h.mu.Unlock()
		prev.Reply(&grid.RemoteResult{ID: rt.ID, ErrorCode: grid.CodeCanceled, ErrorMessage: "superseded by a newer attempt of the same task", Executor: c.self})
		return nil
	case len(h.pending) >= h.max:
		n := len(h.pending)
		h.mu.Unlock()
		return reject(grid.RejectOverBudget, time.Second, "%d tasks are waiting for modules to be fetched here", n)
	}
	ctx, cancel := context.WithDeadline(h.ctx, rt.Deadline)
	h.pending[key] = &pendingFetch{rt: rt, reply: reply, cancel: cancel}
	h.wg.Add(1)
	h.mu.Unlock()
	go h.fetch(ctx, key, rt)
	return nil
}

// fetch waits for the module of the pending task key, then hands the task
// to the coordinator or answers it with the failure.
func (h *FetchingHandler) fetch(ctx context.Context, key pendingKey, rt *grid.RemoteTask) {
	defer h.wg.Done()
	err := h.f.FetchModule(ctx, key.from, reputation.SkillID(rt.Skill), rt.Version, rt.ModuleSHA256)
	expired := ctx.Err() != nil
	p := h.take(key, nil)
	if p == nil {
		return // canceled, and answered
	}
	p.cancel()
	fail := func(code grid.ErrorCode, format string, args ...any) {
		p.reply.Reply(&grid.RemoteResult{ID: rt.ID, ErrorCode: code, ErrorMessage: fmt.Sprintf(format, args...), Executor: h.c.self})
	}
	switch {
	case h.ctx.Err() != nil:
		fail(grid.CodeCanceled, "node shutting down")
	case err != nil && expired:
		fail(grid.CodeTimeout, "deadline passed while fetching the module of skill %q: %v", rt.Skill, err)
	case err != nil:
		fail(grid.CodeUnknownSkill, "skill %q could not be fetched: %v", rt.Skill, err)
	default:
		if err := h.c.HandleTask(key.from, p.rt, p.reply); err != nil {
			fail(grid.CodeInternal, "module of skill %q fetched, then: %v", rt.Skill, err)
		}
	}
}

// take removes the pending entry key (only if its request is rt, when rt
// is set) and returns it.
func (h *FetchingHandler) take(key pendingKey, rt *grid.RemoteTask) *pendingFetch {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.pending[key]
	if p == nil || (rt != nil && p.rt != rt) {
		return nil
	}
	delete(h.pending, key)
	return p
}

// CancelTask implements grid.TaskHandler.
func (h *FetchingHandler) CancelTask(from peer.ID, id grid.TaskID) {
	if p := h.take(pendingKey{from, id}, nil); p != nil {
		p.cancel()
		p.reply.Reply(&grid.RemoteResult{ID: id, ErrorCode: grid.CodeCanceled, ErrorMessage: "canceled by the requester", Executor: h.c.self})
		return
	}
	h.c.CancelTask(from, id)
}

// AbandonTask implements grid.TaskAbandoner.
func (h *FetchingHandler) AbandonTask(from peer.ID, t *grid.RemoteTask) {
	if t == nil {
		return
	}
	if p := h.take(pendingKey{from, t.ID}, t); p != nil {
		p.cancel()
		p.reply.Reply(&grid.RemoteResult{ID: t.ID, ErrorCode: grid.CodeCanceled, ErrorMessage: connLostMessage, Executor: h.c.self})
		return
	}
	h.c.AbandonTask(from, t)
}

// Close answers the tasks waiting for modules with CodeCanceled and waits
// for their goroutines. It does not close the coordinator or the
// fetcher. It is idempotent.
func (h *FetchingHandler) Close() error {
	h.mu.Lock()
	h.closed = true
	h.mu.Unlock()
	h.cancel()
	h.wg.Wait()
	return nil
}
