package store

import (
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// State is where a task stands, as the store records it. Its values and
// names are those of skill.TaskState, so the skill layer converts with a
// plain State(ts) and skill.TaskState(s); the store cannot import skill
// (skill imports it), so the list is repeated here and the names are what
// the store relies on: it never writes the number without the schema
// version that gives it its meaning.
type State uint8

// Task states. Queued, Running, Delegated and Retrying are live; the rest
// are terminal.
const (
	StateQueued State = iota + 1
	StateRunning
	StateDelegated
	StateRetrying
	StateSucceeded
	StateFailed
	StateCanceled
	StateTimedOut
	numStates = iota + 1
)

var stateNames = [numStates]string{"", "queued", "running", "delegated", "retrying", "succeeded", "failed", "canceled", "timed_out"}

// String returns the state's name, such as "queued" or "timed_out".
func (s State) String() string {
	if s != 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return fmt.Sprintf("state(%d)", uint8(s))
}

// Terminal reports whether s is a final state.
func (s State) Terminal() bool { return s >= StateSucceeded && s < numStates }

// Valid reports whether s is one of the named states.
func (s State) Valid() bool { return s != 0 && s < numStates }

// ParseState parses a state name as String returns it.
func ParseState(name string) (State, error) {
	for i, n := range stateNames {
		if i > 0 && n == name {
			return State(i), nil
		}
	}
	return 0, fmt.Errorf("unknown task state %q: want queued, running, delegated, retrying, succeeded, failed, canceled or timed_out", name)
}

// rank orders the states of one attempt: an update that does not move a
// task forward in (attempt, rank) is stale and ignored.
func (s State) rank() int {
	switch s {
	case StateQueued, StateDelegated:
		return 0
	case StateRunning:
		return 1
	case StateRetrying:
		return 2
	}
	return 3
}

// maxTried bounds TaskRecord.Tried, and so the size of a record that is
// retried without end.
const maxTried = 64

// TaskRecord is a task submitted to this node, as the store keeps it: what
// was asked (written once, by Accept) and where it stands (changed by
// Update). Values returned by the store are copies the caller owns.
type TaskRecord struct {
	// What was asked; Accept writes it, nothing changes it.
	ID         grid.TaskID
	Skill      string
	Version    string // empty: any version
	InputKind  grid.InputKind
	Input      []byte
	Priority   uint8
	Timeout    time.Duration
	MinTrust   float64
	MaxRetries int
	Requester  peer.ID
	CreatedAt  time.Time

	// Where it stands.
	State   State
	Attempt int     // attempts started so far
	Peer    peer.ID // node of the current or last attempt
	// Tried lists the node of each attempt, in order (at most the last 64).
	Tried     []peer.ID
	Error     string // why a finished task did not succeed
	UpdatedAt time.Time
	// Result is set once the task is terminal.
	Result *Result
}

// Deadline returns CreatedAt + Timeout.
func (r *TaskRecord) Deadline() time.Time { return r.CreatedAt.Add(r.Timeout) }

// Result is the outcome of a task (skill.SkillResult) or of a task run for
// a peer (grid.RemoteResult).
type Result struct {
	Success    bool
	Output     []byte
	Code       grid.ErrorCode // CodeNone on success
	Error      string         // empty on success
	Duration   time.Duration  // execution time on the node that ran it
	ExecutedBy peer.ID
	FinishedAt time.Time
}

// Transition is a change of a task's state, for Update.
type Transition struct {
	ID      grid.TaskID
	State   State
	Attempt int     // the attempt this change belongs to
	Peer    peer.ID // node of that attempt; empty keeps the recorded one
	Error   string
	At      time.Time // zero: now
	// Result goes with a terminal State (required for StateSucceeded).
	Result *Result
}

// Filter selects and pages the records List returns, newest first (by
// CreatedAt, then ID ascending: the order of skill's List).
type Filter struct {
	// States keeps only records in one of these states; empty keeps all.
	States []State
	// After starts after the record with this ID (the last of the previous
	// page). If it is not known, List returns nothing.
	After grid.TaskID
	// Limit is the page size: DefaultListLimit if 0, at most MaxListLimit.
	Limit int
}

// Limits of Filter.Limit.
const (
	DefaultListLimit = 100
	MaxListLimit     = 1000
)

// RemoteRecord is a task that a peer sent to this node (the executing
// side), kept so that its result can be delivered again and a repeated
// request answered from it. It holds no input: after a crash such a task
// is reported failed to its requester, which retries it (see
// RecoverRemote).
type RemoteRecord struct {
	From       peer.ID // the requester
	ID         grid.TaskID
	Skill      string
	Version    string
	Attempt    int
	Deadline   time.Time
	ReceivedAt time.Time

	State     State // StateQueued or StateRunning while live
	UpdatedAt time.Time
	// Result is set once the task is terminal; Delivered says whether the
	// requester is known to have it.
	Result    *Result
	Delivered bool
}
