package skill

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// WithStore makes the coordinator keep its tasks in s (issue 5's
// persistent state): SubmitTask returns only once the task is on disk,
// every state change is written behind, a terminal result is on disk
// before Wait returns it or its event is published, Start resumes the
// tasks a previous run left unfinished, and a finished task stays readable
// through GetResult, Status, Wait and List after it leaves memory. On the
// executing side a peer's task is recorded on admission and with its
// result, and a repeated request for a finished task is answered from the
// store instead of running it again. The caller owns s: it opens and
// starts it before Start and closes it after Close. Nil (the default):
// tasks live in memory only.
func WithStore(s *store.Store) CoordinatorOption {
	return func(c *coordinatorConfig) { c.store = s }
}

// restartedMessage is the failure a peer's task gets when this node
// restarted while running it: the requester retries it.
const restartedMessage = "executor restarted"

// acceptStored records t in the store before its first attempt starts.
// When that attempt is local the record says so already (attempt 1,
// queued here), and storeBeginLocked writes nothing for it: a local task
// costs two writes, Accept and its result.
func (c *DelegationCoordinator) acceptStored(ctx context.Context, t *SkillTask, local bool) error {
	if err := c.cfg.store.Accept(context.WithoutCancel(ctx), c.taskRecord(t, local)); err != nil {
		if errors.Is(err, store.ErrExists) {
			return fmt.Errorf("task ID is in use: %w", grid.ErrDuplicateTask)
		}
		return fmt.Errorf("record task: %w", err)
	}
	return nil
}

// submitLocalStored is submitNew for a task that starts here, with a
// store: its acceptance and its run overlap. The record is queued, the
// task starts at once, and SubmitTask returns once the record is on disk,
// as with acceptStored. A task that finishes before the writer takes its
// record has its result committed in the same transaction: one fsync per
// task rather than two. Running before the record is on disk is safe: the
// caller has no answer yet, and if the record cannot be written the task
// is canceled and SubmitTask fails. An ID the caller chose (chosenID) is
// looked up in the store first, where a finished task of that ID that
// memory has let go (or one from before a restart) is: such a task must
// not run again. The store's refusal of a second record of an ID is the
// last check, for a clash that neither lookup saw.
func (c *DelegationCoordinator) submitLocalStored(t *SkillTask, cand Candidate, now time.Time, chosenID bool) (TaskID, error) {
	if chosenID {
		if _, err := c.cfg.store.Get(t.ID); err == nil {
			return TaskID{}, fmt.Errorf("submit task %s: task ID is in use: %w", t.ID.Short(), grid.ErrDuplicateTask)
		} else if !errors.Is(err, store.ErrNotFound) {
			return TaskID{}, fmt.Errorf("submit task %s: look up its ID: %w", t.ID.Short(), err)
		}
	}
	rec := c.taskRecord(t, true)
	accepted := make(chan error, 1)
	c.cfg.store.AcceptAsync(rec, func(err error) { accepted <- err })
	err := c.submitTo(t, cand, now, chosenID, c.remote != nil)
	aerr := <-accepted
	switch {
	case aerr != nil:
		if err == nil {
			c.cancelUnrecorded(t.ID)
		}
		if errors.Is(aerr, store.ErrExists) {
			aerr = fmt.Errorf("task ID is in use: %w", grid.ErrDuplicateTask)
		}
		return TaskID{}, fmt.Errorf("submit task %s: record task: %w", t.ID.Short(), aerr)
	case err != nil:
		c.failStored(t, err)
		return TaskID{}, fmt.Errorf("submit task %s: %w", t.ID.Short(), err)
	}
	return t.ID, nil
}

// cancelUnrecorded ends task id, started before its record could not be
// written: it is canceled, and its end is not written (there is no record
// to write it to).
func (c *DelegationCoordinator) cancelUnrecorded(id TaskID) {
	s := c.tasks.shard(id)
	s.mu.Lock()
	if r := s.get(id); r != nil {
		r.unrecorded = true
	}
	s.mu.Unlock()
	_ = c.Cancel(id)
}

// taskRecord is the store's record of t, newly accepted; local says that
// its first attempt is here.
func (c *DelegationCoordinator) taskRecord(t *SkillTask, local bool) *store.TaskRecord {
	rec := &store.TaskRecord{
		ID: t.ID, Skill: string(t.Skill), Version: t.Version, InputKind: t.Input.Kind, Input: t.Input.Data,
		Priority: t.Priority, Timeout: t.Timeout, MinTrust: t.MinTrust, MaxRetries: t.MaxRetries,
		Requester: t.Requester, CreatedAt: t.CreatedAt, State: store.StateQueued,
	}
	if local {
		rec.Attempt, rec.Peer = 1, c.self
	}
	return rec
}

// failStored records that the submission of t failed with err, so that
// Recover does not run it.
func (c *DelegationCoordinator) failStored(t *SkillTask, err error) {
	tr := store.Transition{ID: t.ID, State: store.StateFailed, Error: err.Error(), Result: &store.Result{Code: codeRejected, Error: err.Error(), ExecutedBy: c.self}}
	if uerr := c.cfg.store.Update(context.Background(), tr); uerr != nil && !errors.Is(uerr, store.ErrFinished) {
		c.log.Warn("cannot record a failed submission", "task", t.ID.Short(), "err", uerr)
	}
}

// storeBeginLocked writes behind the start of r's current attempt. The
// shard lock must be held, so that changes are queued in order.
func (c *DelegationCoordinator) storeBeginLocked(r *record) {
	if r.attempts == 1 && r.peer == c.self {
		return // recorded by acceptStored
	}
	st := store.StateQueued
	if r.state == StateDelegated {
		st = store.StateDelegated
	}
	c.cfg.store.UpdateAsync(store.Transition{ID: r.task.ID, State: st, Attempt: int(r.attempts), Peer: r.peer, At: r.updatedAt()}, nil)
}

// storeRetryLocked writes behind that r waits for its next attempt. The
// shard lock must be held.
func (c *DelegationCoordinator) storeRetryLocked(r *record) {
	c.cfg.store.UpdateAsync(store.Transition{ID: r.task.ID, State: store.StateRetrying, Attempt: int(r.attempts), Peer: r.peer, At: r.updatedAt()}, nil)
}

// storeFinishLocked writes r's terminal state and holds its waiters and
// terminal event until it is on disk (see saved). A task canceled by Close
// is not written: it stays live on disk and the next Start resumes it.
// The shard lock must be held.
func (c *DelegationCoordinator) storeFinishLocked(r *record) {
	if (r.state == StateCanceled && c.closing.Load()) || r.unrecorded {
		return
	}
	res := &r.result
	tr := store.Transition{
		ID: r.task.ID, State: store.State(r.state), Attempt: int(r.attempts), Peer: r.peer, Error: res.Error,
		At: res.FinishedAt,
		Result: &store.Result{
			Success: res.Success, Output: res.Output, Code: res.Code, Error: res.Error,
			Duration: res.Duration, ExecutedBy: res.ExecutedBy, FinishedAt: res.FinishedAt,
		},
	}
	r.unsaved = true
	// The store calls back on its writer goroutine, or at once, on this
	// one and under the shard lock, if it cannot take the write (it is
	// closed). A callback that comes before UpdateAsync returns, from
	// either goroutine, leaves its error here and is handled below under
	// the lock already held, rather than by a goroutine of its own.
	var during atomic.Int32 // 0: in UpdateAsync, 1: returned, 2: called back before it returned
	var inlineErr error
	c.cfg.store.UpdateAsync(tr, func(err error) {
		inlineErr = err // read only if the swap below wins, which orders it
		if during.CompareAndSwap(0, 2) {
			return
		}
		c.saved(r, err)
	})
	if !during.CompareAndSwap(0, 1) {
		c.savedLocked(r, inlineErr)
	}
}

// saved is called once r's terminal state is on disk (or could not be
// written): it publishes the terminal event and wakes r's waiters.
func (c *DelegationCoordinator) saved(r *record, err error) {
	s := c.tasks.shard(r.task.ID)
	s.mu.Lock()
	c.savedLocked(r, err)
	c.announceLocked(r, r.updatedAt())
	s.mu.Unlock()
}

// savedLocked marks r's terminal state as on disk (or lost, with err). The
// shard lock must be held; the caller announces r.
func (c *DelegationCoordinator) savedLocked(r *record, err error) {
	if err != nil {
		c.log.Error("cannot record a finished task; its result is not durable", "task", r.task.ID.Short(), "err", err)
	}
	r.unsaved = false
}

// finished reports whether r is terminal and, with a store, on disk: what
// Wait and GetResult may report. The shard lock must be held.
func (r *record) finished() bool { return r.state.Terminal() && !r.unsaved }

// storedError is the error of a task finished before a restart, read back
// from the store.
type storedError struct {
	msg  string
	kind error
}

func (e *storedError) Error() string { return e.msg }
func (e *storedError) Unwrap() error { return e.kind }

func storedErr(rec *store.TaskRecord) error {
	var kind error
	switch TaskState(rec.State) {
	case StateSucceeded:
		return nil
	case StateCanceled:
		kind = ErrCanceled
	case StateTimedOut:
		kind = ErrTimeout
	default:
		kind = ErrDelegationFailed
		if rec.Result != nil && rec.Result.Code == grid.CodeInvalidInput {
			kind = ErrInvalidInput
		}
	}
	msg := rec.Error
	if msg == "" {
		msg = fmt.Sprintf("task %s: %v", rec.ID.Short(), kind)
	}
	return &storedError{msg: msg, kind: kind}
}

func storedResult(rec *store.TaskRecord) *SkillResult {
	res := &SkillResult{TaskID: rec.ID, Attempts: rec.Attempt, ExecutedBy: rec.Peer}
	if p := rec.Result; p != nil {
		res.Success, res.Output, res.Error, res.Code = p.Success, p.Output, p.Error, p.Code
		res.Duration, res.FinishedAt = p.Duration, p.FinishedAt
		if p.ExecutedBy != "" {
			res.ExecutedBy = p.ExecutedBy
		}
	}
	return res
}

func storedStatus(rec *store.TaskRecord) TaskStatus {
	st := TaskStatus{
		ID: rec.ID, Skill: reputation.SkillID(rec.Skill), Version: rec.Version, Priority: rec.Priority,
		State: TaskState(rec.State), Peer: rec.Peer, Attempts: rec.Attempt, Tried: rec.Tried,
		CreatedAt: rec.CreatedAt, UpdatedAt: rec.UpdatedAt, Deadline: rec.Deadline(),
	}
	if rec.State.Terminal() {
		st.Result = storedResult(rec)
		st.FinishedAt = st.Result.FinishedAt
		if err := storedErr(rec); err != nil {
			st.Error, st.Err = err.Error(), err
		}
	}
	return st
}

// storedTask returns the record of a finished task from the store.
func (c *DelegationCoordinator) storedTask(id TaskID) (*store.TaskRecord, bool) {
	if c.cfg.store == nil {
		return nil, false
	}
	rec, err := c.cfg.store.Get(id)
	if err != nil {
		if !errors.Is(err, store.ErrNotFound) {
			c.log.Warn("cannot read a task from the store", "task", id.Short(), "err", err)
		}
		return nil, false
	}
	return &rec, true
}

// resultFromStore is GetResult for a task no longer in memory.
func (c *DelegationCoordinator) resultFromStore(id TaskID) (*SkillResult, bool) {
	rec, ok := c.storedTask(id)
	if !ok || !rec.State.Terminal() {
		return nil, false
	}
	return storedResult(rec), true
}

// statusFromStore is Status for a task no longer in memory.
func (c *DelegationCoordinator) statusFromStore(id TaskID) (TaskStatus, bool) {
	rec, ok := c.storedTask(id)
	if !ok {
		return TaskStatus{}, false
	}
	return storedStatus(rec), true
}

// waitFromStore is Wait for a task no longer in memory.
func (c *DelegationCoordinator) waitFromStore(id TaskID) (*SkillResult, error, bool) {
	rec, ok := c.storedTask(id)
	if !ok || !rec.State.Terminal() {
		return nil, nil, false
	}
	return storedResult(rec), storedErr(rec), true
}

// listStored is List with a store: the store gives the set and the order,
// memory the freshest state of the tasks it still holds (the store writes
// changes behind, and never writes StateRunning, which memory derives).
func (c *DelegationCoordinator) listStored(f ListFilter) []TaskStatus {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	skip := max(f.Offset, 0)
	sf := store.Filter{After: f.After, Limit: store.MaxListLimit}
	for _, st := range f.States {
		sf.States = append(sf.States, store.State(st))
		if st == StateRunning {
			sf.States = append(sf.States, store.StateQueued)
		}
	}
	out := make([]TaskStatus, 0, min(limit, 64))
	for {
		recs, err := c.cfg.store.List(sf)
		if err != nil {
			c.log.Warn("cannot list tasks from the store", "err", err)
			return c.tasks.list(f)
		}
		for i := range recs {
			rec := &recs[i]
			var ts TaskStatus
			s := c.tasks.shard(rec.ID)
			s.mu.Lock()
			if r := s.get(rec.ID); r != nil {
				ts = r.status()
			} else {
				ts = storedStatus(rec)
			}
			s.mu.Unlock()
			if len(f.States) > 0 && !slices.Contains(f.States, ts.State) {
				continue
			}
			if skip > 0 {
				skip--
				continue
			}
			out = append(out, ts)
			if len(out) == limit {
				return out
			}
		}
		if len(recs) < sf.Limit {
			return out
		}
		sf.After = recs[len(recs)-1].ID
	}
}

// recoverStored resumes the tasks the previous run left unfinished, and
// fails the peers' tasks it was running. It runs in Start, before tasks
// are accepted.
func (c *DelegationCoordinator) recoverStored() error {
	st := c.cfg.store
	remote, err := st.RecoverRemote()
	if err != nil {
		return fmt.Errorf("recover peers' tasks: %w", err)
	}
	for _, rr := range remote {
		res := store.Result{Code: grid.CodeInternal, Error: restartedMessage, ExecutedBy: c.self, FinishedAt: time.Now()}
		if err := st.FinishRemote(context.Background(), rr.From, rr.ID, res, false); err != nil {
			c.log.Warn("cannot fail a peer's task after a restart", "task", rr.ID.Short(), "peer", rr.From, "err", err)
		}
	}
	recs, err := st.Recover()
	if err != nil {
		return fmt.Errorf("recover tasks: %w", err)
	}
	if len(recs) > 0 || len(remote) > 0 {
		c.log.Info("resuming tasks after a restart", "tasks", len(recs), "peer_tasks_failed", len(remote))
	}
	for i := range recs {
		c.resume(&recs[i])
	}
	return nil
}

// resume puts a recovered task back in memory and starts its next
// attempt: on the same peer with the same ID if it was delegated (the peer
// answers from what it knows), else wherever the router says.
func (c *DelegationCoordinator) resume(rec *store.TaskRecord) {
	t := &SkillTask{
		ID: rec.ID, Skill: reputation.SkillID(rec.Skill), Version: rec.Version, Input: SkillInput{Kind: rec.InputKind, Data: rec.Input},
		Requester: rec.Requester, Priority: rec.Priority, Timeout: rec.Timeout, MinTrust: rec.MinTrust,
		MaxRetries: rec.MaxRetries, CreatedAt: rec.CreatedAt,
	}
	now := time.Now()
	r := &record{task: t, state: StateRetrying, attempts: int32(rec.Attempt), peer: rec.Peer, updated: now.UnixNano()}
	if n := len(rec.Tried); n > 1 {
		r.retryState(&c.cfg).prev = rec.Tried[:n-1]
	}
	s := c.tasks.shard(t.ID)
	s.mu.Lock()
	if s.get(t.ID) != nil || !c.tasks.add(s, r) {
		s.mu.Unlock()
		c.log.Warn("cannot resume a task: the task table is full", "task", t.ID.Short())
		return
	}
	if !now.Before(t.Deadline()) {
		c.finishLocked(s, r, StateTimedOut, failure(grid.CodeTimeout, r.peer), timeoutError(r, errors.New("deadline passed while the node was down")))
		c.publishUnlock(s, r, now)
		return
	}
	if rec.State == store.StateDelegated && c.remote != nil && rec.Peer != "" && rec.Peer != c.self {
		c.startRetryLocked(s, r, Candidate{Peer: rec.Peer}, now)
		return
	}
	s.mu.Unlock()
	c.retry(r, int(r.attempts), outcome{kind: kindRejected, code: codeRejected, err: errors.New("node restarted")}, nil)
}

// answerStored answers a repeated request for a task this node finished
// for from, from the store, and records that from has the result, by
// HandleTask's rule for repeated task IDs. It reports false if the store
// does not know the task as finished, or if the task is to run again: a
// task that ended canceled, or a newer attempt than the stored one of a
// task that failed; its record is then forgotten and the request handled
// as usual. (A requester asking again for a task it did not cancel wants
// its result, and the cancellation may not even be its own: a connection
// lost before AbandonTask existed, or through a handler that does not
// forward it.) The reply is called before HandleTask returns, which the
// orchestrator accepts, so that nothing outlives Close.
func (c *DelegationCoordinator) answerStored(from peer.ID, rt *grid.RemoteTask, reply grid.Replier) bool {
	id := rt.ID
	rr, err := c.cfg.store.Remote(from, id)
	if err != nil || !rr.State.Terminal() || rr.Result == nil {
		return false
	}
	if rr.State == store.StateCanceled || repeatRuns(rt.Attempt, rr.Attempt, rr.Result.Success) {
		if err := c.cfg.store.ForgetRemote(context.Background(), from, id); err != nil {
			c.log.Warn("cannot forget a finished peer task", "task", id.Short(), "peer", from, "err", err)
		}
		return false
	}
	res := rr.Result
	reply.Reply(&grid.RemoteResult{
		ID: id, Success: res.Success, Output: res.Output, ErrorCode: res.Code, ErrorMessage: res.Error,
		ExecTime: res.Duration, Executor: c.self,
	})
	if !rr.Delivered {
		c.cfg.store.MarkDeliveredAsync(from, id, nil)
	}
	return true
}

// storeAdmitted writes behind a peer's task admitted here.
func (c *DelegationCoordinator) storeAdmitted(in *incoming, attempt int) {
	c.cfg.store.AcceptRemoteAsync(&store.RemoteRecord{
		From: in.from, ID: in.id, Skill: string(in.task.Skill), Version: in.task.Version, Attempt: attempt,
		Deadline: in.deadline, ReceivedAt: in.task.CreatedAt, State: store.StateQueued,
	}, nil)
}

// storeAnswered writes behind the result sent for a peer's task. A task
// stopped by Close is not written: the next Start fails it as restarted.
func (c *DelegationCoordinator) storeAnswered(in *incoming, res *grid.RemoteResult) {
	if res.ErrorCode == grid.CodeCanceled && c.closing.Load() {
		return
	}
	c.cfg.store.FinishRemoteAsync(in.from, in.id, store.Result{
		Success: res.Success, Output: res.Output, Code: res.ErrorCode, Error: res.ErrorMessage,
		Duration: res.ExecTime, ExecutedBy: c.self, FinishedAt: time.Now(),
	}, false, nil)
}
