package skill

import (
	"errors"
	"fmt"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// Errors callers branch on with errors.Is.
var (
	// ErrQueueFull: the local queue level for the task's priority is full.
	// It is grid.ErrQueueFull, so either name matches.
	ErrQueueFull = grid.ErrQueueFull
	// ErrNoCapableNode: no node may run the task; see *NoCapableNodeError.
	ErrNoCapableNode = errors.New("no capable node")
	// ErrDelegationFailed: every attempt failed.
	ErrDelegationFailed = errors.New("delegation failed")
	// ErrTimeout: the task's deadline passed.
	ErrTimeout = errors.New("task timed out")
	// ErrUnknownSkill: no skill with that ID (and version) is known.
	ErrUnknownSkill = errors.New("unknown skill")
	// ErrInvalidInput: the input does not match the skill's schema.
	ErrInvalidInput = errors.New("invalid input")
	// ErrCanceled: the task was canceled.
	ErrCanceled = errors.New("task canceled")
	// ErrTaskNotFound: no task with that ID is known.
	ErrTaskNotFound = errors.New("task not found")
	// ErrClosed: the coordinator is closed.
	ErrClosed = errors.New("coordinator closed")
)

// NoCapableReason says why no node could take a task.
type NoCapableReason int

// Reasons for ErrNoCapableNode.
const (
	NoProvider     NoCapableReason = iota + 1 // no node offers the skill
	AllBelowTrust                             // providers exist, none meets the minimum trust
	AllUnreachable                            // providers that meet it cannot be reached
	AllCircuitOpen                            // the circuit breaker of every trusted provider is open
)

func (r NoCapableReason) String() string {
	switch r {
	case NoProvider:
		return "no node offers the skill"
	case AllBelowTrust:
		return "every provider is below the minimum trust"
	case AllUnreachable:
		return "every trusted provider is unreachable"
	case AllCircuitOpen:
		return "the circuit breaker of every trusted provider is open (recent failures)"
	}
	return "unknown reason"
}

// NoCapableNodeError is the error behind ErrNoCapableNode.
type NoCapableNodeError struct {
	Skill    string
	Reason   NoCapableReason
	MinTrust float64
	Checked  int // providers considered
}

func (e *NoCapableNodeError) Error() string {
	if e.Reason == AllBelowTrust {
		return fmt.Sprintf("no capable node for %q: %s (%d providers, min trust %.2f)", e.Skill, e.Reason, e.Checked, e.MinTrust)
	}
	return fmt.Sprintf("no capable node for %q: %s", e.Skill, e.Reason)
}

// Unwrap makes errors.Is(err, ErrNoCapableNode) true.
func (e *NoCapableNodeError) Unwrap() error { return ErrNoCapableNode }
