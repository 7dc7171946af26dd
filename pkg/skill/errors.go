package skill

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
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
	// ErrInvalidInput: the input does not match the skill's schema, or
	// the task is not valid.
	ErrInvalidInput = errors.New("invalid input")
	// ErrTooLarge: a task's input or output is larger than one task
	// message can carry (wire.MaxTaskInput, wire.MaxTaskOutput). An error
	// that wraps it also wraps ErrInvalidInput: no retry can fix it, and
	// it counts against no node.
	ErrTooLarge = errors.New("too large")
	// ErrCanceled: the task was canceled.
	ErrCanceled = errors.New("task canceled")
	// ErrTaskNotFound: no task with that ID is known.
	ErrTaskNotFound = errors.New("task not found")
	// ErrDependencyFailed: a chained task or workflow step was not run
	// because a task it takes its input from did not succeed.
	ErrDependencyFailed = errors.New("dependency failed")
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
	// Blocked lists, for AllBelowTrust and AllCircuitOpen, the providers
	// that were left out and why (at most maxBlockedListed, the ones that
	// come back first first), so that the error can say which node to look
	// at and when it is tried again. It may be empty.
	Blocked []BlockedProvider
}

// BlockedProvider is a provider the router left out.
type BlockedProvider struct {
	Peer  peer.ID
	Trust float64
	// Circuit is the state of its circuit breaker, Failures the failed
	// attempts that opened it, and ProbeAt when it lets an attempt through
	// again (zero if it is not open).
	Circuit  CircuitState
	Failures int
	ProbeAt  time.Time
}

// maxBlockedListed bounds NoCapableNodeError.Blocked.
const maxBlockedListed = 3

func (e *NoCapableNodeError) Error() string {
	msg := fmt.Sprintf("no capable node for %q: %s", e.Skill, e.Reason)
	if e.Reason == AllBelowTrust {
		msg = fmt.Sprintf("no capable node for %q: %s (%d providers, min trust %.2f)", e.Skill, e.Reason, e.Checked, e.MinTrust)
	}
	if h := e.Hint(); h != "" {
		msg += ": " + h
	}
	return msg
}

// Hint says, for the providers in Blocked, why each was left out and how
// the task can get to it: when its breaker lets a probe through, or what
// trust it has against the one asked for. It is "" if Blocked is empty.
func (e *NoCapableNodeError) Hint() string {
	var b strings.Builder
	for i, bp := range e.Blocked {
		if i > 0 {
			b.WriteString("; ")
		}
		switch {
		case bp.Circuit == CircuitOpen:
			fmt.Fprintf(&b, "node %s: circuit open after %d failed or unanswered attempts until %s; it is probed again then",
				bp.Peer, bp.Failures, bp.ProbeAt.UTC().Format(time.TimeOnly))
		case bp.Circuit == CircuitHalfOpen:
			fmt.Fprintf(&b, "node %s: circuit half-open after %d failed or unanswered attempts; a probe attempt is on it now", bp.Peer, bp.Failures)
		default:
			fmt.Fprintf(&b, "node %s: trust %.2f is below %.2f (a node's failed work lowers it; lower the task's min trust to use it anyway)",
				bp.Peer, bp.Trust, e.MinTrust)
		}
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrNoCapableNode) true.
func (e *NoCapableNodeError) Unwrap() error { return ErrNoCapableNode }
