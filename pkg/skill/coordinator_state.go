package skill

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/cenkalti/backoff/v5"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TaskState is where a task submitted to a DelegationCoordinator stands.
type TaskState uint8

// Task states. Queued, Running, Delegated and Retrying are live; the rest
// are terminal: a task reaches exactly one of them, once.
const (
	// StateQueued: waiting in this node's queue for a worker.
	StateQueued TaskState = iota + 1
	// StateRunning: a worker of this node runs it.
	StateRunning
	// StateDelegated: sent to a peer (TaskStatus.Peer), waiting for its result.
	StateDelegated
	// StateRetrying: an attempt failed; the next one waits out its backoff.
	StateRetrying
	// StateSucceeded: finished with a result.
	StateSucceeded
	// StateFailed: finished without one (every attempt failed, or the input
	// was refused).
	StateFailed
	// StateCanceled: canceled by Cancel, or by Close.
	StateCanceled
	// StateTimedOut: its deadline passed first.
	StateTimedOut
	// StateDependencyFailed: a chained task or workflow step (pkg/workflow)
	// that was never submitted because the task it takes its input from did
	// not succeed. Terminal. The coordinator never sets it.
	StateDependencyFailed
	// StateWaiting: a chained task or workflow step (pkg/workflow) waiting
	// for the tasks it takes its input from; not submitted yet. Live. The
	// coordinator never sets it.
	StateWaiting
)

var stateNames = [...]string{"", "queued", "running", "delegated", "retrying", "succeeded", "failed", "canceled", "timed_out", "dependency_failed", "waiting"}

// String returns the state's name, such as "queued" or "timed_out".
func (s TaskState) String() string {
	if int(s) < len(stateNames) && s != 0 {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Terminal reports whether s is a final state.
func (s TaskState) Terminal() bool { return s >= StateSucceeded && s != StateWaiting }

// ParseTaskState parses a state name as String returns it.
func ParseTaskState(name string) (TaskState, error) {
	for i, n := range stateNames {
		if i > 0 && n == name {
			return TaskState(i), nil
		}
	}
	return 0, fmt.Errorf("unknown task state %q: want queued, running, delegated, retrying, waiting, succeeded, failed, canceled, timed_out or dependency_failed", name)
}

// MarshalText implements encoding.TextMarshaler.
func (s TaskState) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (s *TaskState) UnmarshalText(b []byte) error {
	v, err := ParseTaskState(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// TaskStatus is a copy of what the coordinator knows about a task.
type TaskStatus struct {
	ID       TaskID             `json:"id"`
	Skill    reputation.SkillID `json:"skill"`
	Version  string             `json:"version,omitempty"` // as the task asked; empty: any
	Priority uint8              `json:"priority"`
	State    TaskState          `json:"state"`
	// Peer is the node of the current attempt, or of the last one once the
	// task is finished; this node's ID for local attempts.
	Peer peer.ID `json:"peer,omitempty"`
	// Attempts is the number of attempts started so far.
	Attempts int `json:"attempts"`
	// Tried lists the node of each attempt, in order.
	Tried []peer.ID `json:"tried,omitempty"`
	// Error says why a finished task did not succeed; Err is that error,
	// for errors.Is (ErrDelegationFailed, ErrTimeout, ...).
	Error string `json:"error,omitempty"`
	Err   error  `json:"-"`
	// Result is the result once the task has finished (nil before). It is
	// shared: it must not be modified.
	Result     *SkillResult `json:"result,omitempty"`
	CreatedAt  time.Time    `json:"created_at"`
	UpdatedAt  time.Time    `json:"updated_at"`
	Deadline   time.Time    `json:"deadline"`
	FinishedAt time.Time    `json:"finished_at,omitzero"`
	// Progress is what the skill of the current (or last) attempt last
	// reported, nil if it reported nothing.
	Progress *Progress `json:"progress,omitempty"`
}

// Limits of ListFilter.Limit.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// ListFilter selects and pages the tasks that List returns. Tasks are
// listed newest first (by creation time, then ID).
type ListFilter struct {
	// States keeps only tasks in one of these states; empty keeps all.
	States []TaskState
	// After starts the page after the task with this ID (the last ID of the
	// previous page). If that task is no longer known, List returns nothing.
	After TaskID
	// Offset skips this many tasks (after After, if set).
	Offset int
	// Limit is the page size: DefaultListLimit if 0, at most MaxListLimit.
	Limit int
}

// record is the coordinator's state for one submitted task. Every field
// after task is guarded by the mutex of the record's shard. Once state is
// terminal, result and err never change again.
type record struct {
	task *SkillTask // its Deadline() is the task's

	state      TaskState
	attempts   int32
	updated    int64   // when state last changed, Unix ns
	peer       peer.ID // node of the current or last attempt
	result     SkillResult
	err        error         // nil on success
	waiters    *resultWaiter // blocked Wait calls, woken when terminal
	unsaved    bool          // terminal, but not yet on disk (with a store)
	unrecorded bool          // its record could not be written: its end is not written either

	// The current attempt: job for a local one, att for a remote one.
	job   *Job
	att   *remoteAttempt
	retry *retryState // from the second attempt on
	// ranking is what the router ranked for the current attempt, while
	// events are subscribed to (WithRankingSize); nil once r ends.
	ranking *Ranking

	gen *generation // the generation of the task table holding it

	prog      Progress // the current attempt's last report; zero if none
	progEvent int64    // when its last progress event went out, Unix ns
	fl        *flight  // the identical tasks waiting for this one, if it leads them

	// The first attempt's job and queue entry, or its remote context,
	// allocated with the record.
	job0 Job
	qt0  grid.QueuedTask
	att0 remoteAttempt
}

// retryState is what a record needs once an attempt has failed.
type retryState struct {
	prev  []peer.ID   // nodes of earlier attempts
	timer *time.Timer // while the next attempt waits out its backoff; pending on c.wg
	bo    backoff.ExponentialBackOff
	// waitErr, while the task waits for a usable provider, says why none
	// is (a *NoCapableNodeError); nil otherwise.
	waitErr error
	// last is why the attempt before this wait ended (a refusal, a
	// failure), named if the task times out while waiting.
	last error
}

func (r *record) retryState(c *coordinatorConfig) *retryState {
	if r.retry == nil {
		base, most := r.task.Retry.backoff(c.retryBase, c.retryMax)
		r.retry = &retryState{bo: backoff.ExponentialBackOff{
			InitialInterval: base, RandomizationFactor: 0.5, Multiplier: 2, MaxInterval: most,
		}}
	}
	return r.retry
}

// wakeWaiters wakes every blocked Wait of r and empties its list. The
// shard lock must be held.
func (r *record) wakeWaiters() {
	for w := r.waiters; w != nil; {
		next := w.next
		w.next = nil
		w.ch <- struct{}{}
		w = next
	}
	r.waiters = nil
}

// unlistWaiter takes w off r's list of waiters and reports whether it was
// there (if not, it has been woken). The shard lock must be held.
func (r *record) unlistWaiter(w *resultWaiter) bool {
	for p := &r.waiters; *p != nil; p = &(*p).next {
		if *p == w {
			*p, w.next = w.next, nil
			return true
		}
	}
	return false
}

func (r *record) updatedAt() time.Time { return time.Unix(0, r.updated) }

func (r *record) tried() []peer.ID {
	if r.attempts == 0 {
		return nil
	}
	var prev []peer.ID
	if r.retry != nil {
		prev = r.retry.prev
	}
	return append(slices.Clip(prev), r.peer)
}

func (r *record) status() TaskStatus {
	st := TaskStatus{
		ID: r.task.ID, Skill: r.task.Skill, Version: r.task.Version, Priority: r.task.Priority, State: r.state,
		Peer: r.peer, Attempts: int(r.attempts), Tried: r.tried(),
		CreatedAt: r.task.CreatedAt, UpdatedAt: r.updatedAt(), Deadline: r.task.Deadline(),
	}
	st.State = r.effectiveState()
	if !r.prog.UpdatedAt.IsZero() {
		p := r.prog
		st.Progress = &p
	}
	if r.state.Terminal() {
		st.FinishedAt = r.result.FinishedAt
		st.Result = &r.result
		if r.err != nil {
			st.Error, st.Err = r.err.Error(), r.err
		}
	}
	return st
}

// effectiveState is r.state, except that a local attempt that a worker has
// begun is StateRunning: the executor reports only the end of a job.
func (r *record) effectiveState() TaskState {
	if r.state == StateQueued && r.job != nil && r.job.Started() {
		return StateRunning
	}
	return r.state
}

// listKey is what List sorts by.
type listKey struct {
	created time.Time
	id      TaskID
	rec     *record
}

func compareListKeys(a, b listKey) int {
	if c := b.created.Compare(a.created); c != 0 {
		return c
	}
	return bytes.Compare(a.id[:], b.id[:])
}

// list implements DelegationCoordinator.List.
func (t *taskTable) list(f ListFilter) []TaskStatus {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	var keys []listKey
	for i := range t.shards {
		s := &t.shards[i]
		s.mu.Lock()
		s.each(func(r *record) {
			if len(f.States) == 0 || slices.Contains(f.States, r.effectiveState()) {
				keys = append(keys, listKey{created: r.task.CreatedAt, id: r.task.ID, rec: r})
			}
		})
		s.mu.Unlock()
	}
	slices.SortFunc(keys, compareListKeys)
	start := 0
	if !f.After.IsZero() {
		i := slices.IndexFunc(keys, func(k listKey) bool { return k.id == f.After })
		if i < 0 {
			// The cursor may have been filtered out by state: find its
			// position from the task itself.
			s := t.shard(f.After)
			s.mu.Lock()
			r := s.get(f.After)
			s.mu.Unlock()
			if r == nil {
				return nil
			}
			at := listKey{created: r.task.CreatedAt, id: f.After}
			i, _ = slices.BinarySearchFunc(keys, at, compareListKeys)
			i--
		}
		start = i + 1
	}
	start += max(f.Offset, 0)
	if start >= len(keys) {
		return []TaskStatus{}
	}
	keys = keys[start:min(start+limit, len(keys))]
	out := make([]TaskStatus, 0, len(keys))
	for _, k := range keys {
		s := t.shard(k.id)
		s.mu.Lock()
		out = append(out, k.rec.status())
		s.mu.Unlock()
	}
	return out
}
