package grid

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrClosed is returned by anything in this package used after Close.
var ErrClosed = errors.New("closed")

// ErrQueueFull is returned when a priority level has no room. The error
// returned by TaskQueue.Enqueue is a *QueueFullError that wraps it.
var ErrQueueFull = errors.New("queue full")

// QueueFullError says which level was full.
type QueueFullError struct {
	Level Level
	Max   int
}

func (e *QueueFullError) Error() string {
	return fmt.Sprintf("queue full: %s priority level holds its maximum of %d tasks", e.Level, e.Max)
}

// Unwrap makes errors.Is(err, ErrQueueFull) true.
func (e *QueueFullError) Unwrap() error { return ErrQueueFull }

// InputKind says how a task's input bytes are to be read.
type InputKind uint8

// Input kinds.
const (
	InputJSON InputKind = iota + 1
	InputRaw
)

// RemoteTask is one attempt of a task sent to, or received from, a peer.
type RemoteTask struct {
	ID        TaskID
	Skill     string
	Version   string // empty: any version
	Input     []byte
	InputKind InputKind
	Priority  uint8
	Deadline  time.Time
	MinTrust  float64
	Attempt   int
	Requester peer.ID
	// ModuleSHA256 is, for a wasm skill, the sha256 of the module the
	// requester means; zero for other skills or when it is not known.
	ModuleSHA256 [32]byte
	// NoCache asks the executor to run the skill rather than answer from
	// its result cache.
	NoCache bool

	// in is the delivery a task received from a peer came with, for
	// ReportProgress; nil on a task this node delegates.
	in *inTask
}

// ErrorCode classifies a failed RemoteResult. Values match the wire enum.
type ErrorCode int32

// Error codes.
const (
	CodeNone ErrorCode = iota
	CodeExecutionFailed
	CodeTimeout
	CodeCanceled
	CodeInvalidInput
	CodeUnknownSkill
	CodeInternal
)

var codeNames = [...]string{"none", "execution_failed", "timeout", "canceled", "invalid_input", "unknown_skill", "internal"}

// String returns the code's name as the API spells it, e.g. "execution_failed".
func (c ErrorCode) String() string {
	if c >= 0 && int(c) < len(codeNames) {
		return codeNames[c]
	}
	return fmt.Sprintf("code(%d)", int32(c))
}

// ParseErrorCode returns the code String names, and false for an unknown
// name or "none".
func ParseErrorCode(name string) (ErrorCode, bool) {
	for i, n := range codeNames {
		if n == name && i > 0 {
			return ErrorCode(i), true
		}
	}
	return CodeNone, false
}

// RemoteResult is the outcome of a RemoteTask.
type RemoteResult struct {
	ID           TaskID
	Success      bool
	Output       []byte
	ErrorCode    ErrorCode
	ErrorMessage string
	ExecTime     time.Duration
	Executor     peer.ID
	Cached       bool // the executor answered from its result cache
}

// RejectReason says why a peer did not admit a task. Values match the wire enum.
type RejectReason int32

// Reject reasons.
const (
	RejectUnspecified RejectReason = iota
	RejectQueueFull
	RejectUnknownSkill
	RejectInvalidInput
	RejectTrustTooLow
	RejectRateLimited
	RejectShuttingDown
	RejectMalformed
	RejectDeadlinePassed // the deadline was past when the request arrived
	RejectDuplicate      // the same task ID and attempt is already running there
	RejectTooLarge       // the input exceeds the executor's per-task cap
	RejectOverBudget     // the sender's or the executor's byte budget is spent for now
)

var rejectNames = [...]string{"unspecified", "queue full", "unknown skill", "invalid input", "trust too low", "rate limited", "shutting down", "malformed request", "deadline passed", "duplicate task", "input too large", "over budget"}

func (r RejectReason) String() string {
	if r >= 0 && int(r) < len(rejectNames) {
		return rejectNames[r]
	}
	return fmt.Sprintf("reject(%d)", int32(r))
}

// ErrInvalidResult is wrapped by Delegate's error when the peer answered
// with a result this node cannot accept: malformed, for another attempt
// than the one asked, or failing the skill's output checks. Unlike a lost
// peer it is a fault of the peer's own making, and the skill layer records
// it as a wrong result against that peer.
var ErrInvalidResult = errors.New("invalid result from peer")

// ErrRejected is wrapped by every *RejectError.
var ErrRejected = errors.New("task rejected")

// RejectError is returned when a node refuses a task: by a TaskHandler to
// have the orchestrator send a rejecting TaskAck, and by Delegate when the
// remote node sent one.
type RejectError struct {
	Reason     RejectReason
	Message    string
	RetryAfter time.Duration
}

func (e *RejectError) Error() string {
	if e.Message == "" {
		return "task rejected: " + e.Reason.String()
	}
	return "task rejected: " + e.Reason.String() + ": " + e.Message
}

// Unwrap makes errors.Is(err, ErrRejected) true.
func (e *RejectError) Unwrap() error { return ErrRejected }

// TaskHandler runs tasks that peers send to this node. The skill layer
// implements it; the orchestrator calls it. HandleTask is its only way in:
// a type that embeds a handler and overrides HandleTask is the handler the
// orchestrator calls.
type TaskHandler interface {
	// HandleTask admits or rejects t at once. It returns nil if admitted, in
	// which case reply.Reply is called exactly once, later, from any
	// goroutine, with the result. It returns a *RejectError if not
	// admitted, and then never calls reply. It must not block on the task's
	// execution. The orchestrator's reply costs no allocation (a func would
	// be a method value made per task); ReplyFunc makes a func one.
	HandleTask(from peer.ID, t *RemoteTask, reply Replier) error
	// CancelTask stops a task that from sent earlier, if it is still known.
	CancelTask(from peer.ID, id TaskID)
}

// Replier answers one admitted task: Reply is called once with its result.
type Replier interface {
	Reply(*RemoteResult)
}

// ReplyFunc is a reply func as a Replier.
type ReplyFunc func(*RemoteResult)

// Reply calls f.
func (f ReplyFunc) Reply(r *RemoteResult) { f(r) }

// Delegator sends one attempt of a task to a peer and waits for its result.
// The orchestrator implements it; the skill layer's coordinator uses it.
type Delegator interface {
	// Delegate returns the peer's result, a *RejectError if the peer did not
	// admit the task, or another error if the peer could not be reached or
	// went away. Canceling ctx sends a TaskCancel to the peer.
	Delegate(ctx context.Context, p peer.ID, t *RemoteTask) (*RemoteResult, error)
}

// HookContext is a context that calls one hook when it is canceled, in
// place of a context.AfterFunc watch: no goroutine, timer or allocation per
// watch that never fires. The hook ends the call, done included, so the
// context must not call it while holding a lock that done may take (it may
// start a goroutine for it, as AfterFunc does). DelegateAsync uses the hook of a ctx that is one,
// and then keeps ctx's deadline with the call's own timer: a HookContext
// need not end by itself when its deadline passes (its Err must then say
// context.DeadlineExceeded), and does not call the hook for it.
type HookContext interface {
	context.Context
	// SetCancelHook arranges for h.ContextCanceled to be called once, when
	// the context is canceled, never within SetCancelHook or
	// StopCancelHook. It returns false,
	// and keeps nothing, if the context has ended already or holds a hook.
	SetCancelHook(h CancelHook) bool
	// StopCancelHook removes h if it is the context's hook and has not been
	// called; it reports whether it did.
	StopCancelHook(h CancelHook) bool
}

// CancelHook is what a HookContext calls when it is canceled. It must not
// block for long.
type CancelHook interface {
	ContextCanceled()
}

// Load is what a node reports about how busy it is.
type Load struct {
	QueueDepth [NumLevels]int
	InFlight   int
	Capacity   int // worker slots
}

// Utilization returns (queued + in-flight) / capacity, 0 when capacity is unknown.
func (l Load) Utilization() float64 {
	if l.Capacity <= 0 {
		return 0
	}
	n := l.InFlight
	for _, d := range l.QueueDepth {
		n += d
	}
	return float64(n) / float64(l.Capacity)
}

// Provider is a peer that offers a skill, as the capability table knows it.
type Provider struct {
	Peer      peer.ID
	Version   string
	Load      Load
	LastSeen  time.Time
	Connected bool // a live connection exists now
	// Verified: identify showed it speaks the task protocol. Otherwise it
	// is a candidate: its signed announcement claims the skill, and the
	// task stream's negotiation is the check (see Node.Providers).
	Verified bool
}
