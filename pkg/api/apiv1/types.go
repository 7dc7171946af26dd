package apiv1

import (
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Task states, as Task.State reports them.
const (
	StateQueued    = "queued"    // waiting in this node's queue for a worker
	StateRunning   = "running"   // a worker of this node runs it
	StateDelegated = "delegated" // sent to a peer (Task.Node), waiting for its result
	StateRetrying  = "retrying"  // an attempt failed; the next waits out its backoff
	StateSucceeded = "succeeded" // finished with a result
	StateFailed    = "failed"    // finished without one
	StateCanceled  = "canceled"
	StateTimedOut  = "timed_out"
	// StateWaiting: a chained task (input_from) or workflow step waiting for
	// the task it takes its input from; not submitted yet.
	StateWaiting = "waiting"
	// StateDependencyFailed: a chained task or workflow step never
	// submitted because a task it takes its input from did not succeed.
	StateDependencyFailed = "dependency_failed"
)

// States lists every state, live ones first.
var States = []string{StateQueued, StateRunning, StateDelegated, StateRetrying, StateWaiting, StateSucceeded, StateFailed, StateCanceled, StateTimedOut, StateDependencyFailed}

// Terminal reports whether a task in state s will not change any more.
func Terminal(s string) bool {
	switch s {
	case StateSucceeded, StateFailed, StateCanceled, StateTimedOut, StateDependencyFailed:
		return true
	}
	return false
}

// SubmitRequest is the body of POST /v1/tasks. Exactly one of Input and
// InputBase64 may be set; neither means the JSON input null.
type SubmitRequest struct {
	Skill       string          `json:"skill"`
	Version     string          `json:"version,omitempty"`
	Input       json.RawMessage `json:"input,omitempty"`       // a JSON value, passed to the skill as JSON
	InputBase64 []byte          `json:"input_base64,omitzero"` // raw bytes, base64 in JSON; empty but not nil: no bytes
	Priority    *Priority       `json:"priority,omitempty"`    // 0-255 or a level name; default normal (96)
	Timeout     Duration        `json:"timeout,omitempty"`     // "60s"; default: the node's queue.default_timeout
	MinTrust    *float64        `json:"min_trust,omitempty"`   // default: the node's trust.min_trust_default
	MaxRetries  *int            `json:"max_retries,omitempty"` // default: the node's queue.max_retries
	Retry       *RetryPolicy    `json:"retry,omitempty"`       // default: max_retries, the node's backoff, every retryable code
	NoCache     bool            `json:"no_cache,omitempty"`    // run it even if the node's result cache holds its answer
	// InputFrom is the ID of a task whose output is this one's input: the
	// task waits (state waiting) until that one succeeds, and ends
	// dependency_failed if it does not. Input and InputBase64 must be left out.
	InputFrom string `json:"input_from,omitempty"`
}

// RetryPolicy is how a task's failed attempts are retried, the "retry" of
// a SubmitRequest. Each field left out (zero) keeps the node's default.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts, the first one included, 1 to
	// MaxAttempts; 0: max_retries + 1. It overrides max_retries.
	MaxAttempts int `json:"max_attempts,omitempty"`
	// BaseBackoff is the wait before the first retry, doubling per retry up
	// to MaxBackoff, each wait drawn from ±50% around it; at most MaxTimeout.
	BaseBackoff Duration `json:"base_backoff,omitempty"`
	// MaxBackoff caps the wait; if set, not below BaseBackoff.
	MaxBackoff Duration `json:"max_backoff,omitempty"`
	// RetryOn lists the error codes (of RetryCodes) whose failed attempts
	// are retried; a failure with another code fails the task at once.
	// Left out: all of them. Refused input (invalid_input) is never
	// retried, whatever it says.
	RetryOn []string `json:"retry_on,omitempty"`
}

// MaxAttempts is the most RetryPolicy.MaxAttempts may be.
const MaxAttempts = 101

// RetryCodes are the error codes RetryPolicy.RetryOn may list.
var RetryCodes = []string{CodeExecution, CodeTimeout, CodeCanceled, CodeUnknownSkill, CodeInternal}

// CheckRetryCode returns nil if name may be listed in RetryPolicy.RetryOn,
// or an error that says why not.
func CheckRetryCode(name string) error {
	if slices.Contains(RetryCodes, name) {
		return nil
	}
	if name == CodeInvalidInput {
		return fmt.Errorf("%s is never retried: the same input fails again; want %s", name, strings.Join(RetryCodes, ", "))
	}
	return fmt.Errorf("unknown error code %.40q: want %s", name, strings.Join(RetryCodes, ", "))
}

// Task is a task's status, and its result once it has one.
type Task struct {
	ID         string     `json:"id"`
	Skill      string     `json:"skill"`
	Version    string     `json:"version,omitempty"`
	State      string     `json:"state"`
	Priority   uint8      `json:"priority"`
	Level      string     `json:"level"`
	Attempts   int        `json:"attempts"`
	Node       string     `json:"node,omitempty"`  // node of the current or last attempt
	Tried      []string   `json:"tried,omitempty"` // node of each attempt, in order
	CreatedAt  time.Time  `json:"created_at"`
	Deadline   time.Time  `json:"deadline"`
	FinishedAt *time.Time `json:"finished_at,omitempty"`
	Error      *Error     `json:"error,omitempty"`  // why it failed, once terminal and not succeeded
	Result     *Result    `json:"result,omitempty"` // once terminal
	// Progress is what the skill last reported of the current (or last)
	// attempt; absent if it reported nothing.
	Progress *Progress `json:"progress,omitempty"`
}

// Progress is how far a task's skill says it is.
type Progress struct {
	Fraction  float64   `json:"fraction"`          // 0 to 1
	Message   string    `json:"message,omitempty"` // at most 200 bytes
	UpdatedAt time.Time `json:"updated_at"`
}

// Result is the outcome of a finished task.
type Result struct {
	Success      bool            `json:"success"`
	Output       json.RawMessage `json:"output,omitempty"`        // the output, if it is JSON
	OutputBase64 []byte          `json:"output_base64,omitempty"` // the output, if it is not JSON
	DurationMS   float64         `json:"duration_ms"`             // execution time on the node that ran it
	ExecutedBy   string          `json:"executed_by,omitempty"`
	Attempts     int             `json:"attempts"`
	// Cached: the output came from the result cache or an identical
	// task's run; executed_by is the node that ran that first one.
	Cached bool `json:"cached,omitempty"`
}

// OutputBytes returns the output as bytes, whichever field holds it.
func (r *Result) OutputBytes() []byte {
	if r.Output != nil {
		return r.Output
	}
	return r.OutputBase64
}

// TaskList is the body of GET /v1/tasks. Next, if not empty, is the value
// of the after parameter that fetches the next page.
type TaskList struct {
	Tasks []Task `json:"tasks"`
	Next  string `json:"next,omitempty"`
}

// Identity is the body of GET /v1/id.
type Identity struct {
	ID        string   `json:"id"`
	Addrs     []string `json:"addrs"`     // multiaddrs ending in /p2p/<id>
	Version   string   `json:"version"`   // cortexd version
	Protocols []string `json:"protocols"` // protocols this node speaks
	NAT       *NAT     `json:"nat,omitempty"`
}

// NAT is what a node knows of its own reachability (GET /v1/id).
type NAT struct {
	// Reachability is public, private or unknown, as AutoNAT (or
	// nat.reachability) has it.
	Reachability string `json:"reachability"`
	// RelayService says whether the node relays for peers behind NAT now.
	RelayService bool `json:"relay_service"`
	// Relays are the relays the node holds a reservation on, and
	// RelayAddrs its /p2p-circuit addresses through them.
	Relays     []string `json:"relays"`
	RelayAddrs []string `json:"relay_addrs"`
	// ReachableAddrs and UnreachableAddrs are the addresses AutoNAT v2
	// confirmed to be dialable from outside, or not.
	ReachableAddrs   []string `json:"reachable_addrs,omitempty"`
	UnreachableAddrs []string `json:"unreachable_addrs,omitempty"`
	// DirectPeers counts the connected peers with a direct connection
	// (hole punching's included); RelayedPeers are those connected only
	// through a relay (limited: see relay_limit_* of the relay).
	DirectPeers  int      `json:"direct_peers"`
	RelayedPeers []string `json:"relayed_peers"`
}

// Values of Peer.Provider.
const (
	ProviderVerified  = "verified"
	ProviderCandidate = "candidate"
	ProviderRefused   = "refused"
)

// Peer is one entry of GET /v1/peers.
type Peer struct {
	ID        string   `json:"id"`
	Addrs     []string `json:"addrs"`
	Connected bool     `json:"connected"`
	Relayed   bool     `json:"relayed,omitempty"` // connected through a relay only (limited: 2 min, 128 KiB per circuit)
	Verified  bool     `json:"verified"`          // identify showed it speaks the task protocol
	// Provider is whether the router may send it tasks of the skills it
	// announces: ProviderVerified, ProviderCandidate (announced, not yet
	// verified: the task stream's negotiation checks it) or ProviderRefused
	// (it does not speak the task protocol: left out for a while); empty
	// for a peer that announces no skill.
	Provider string    `json:"provider,omitempty"`
	Trust    float64   `json:"trust"`
	Skills   []string  `json:"skills"` // "id@version"
	Load     Load      `json:"load"`
	LastSeen time.Time `json:"last_seen,omitzero"`
	// Access is AccessAllowed, or AccessDenied for a peer on the deny list
	// (listed even if the node has never seen it), or AccessNotAllowed for
	// a peer missing from the node's allow list.
	Access string `json:"access"`
	// Circuit is the state of the node's circuit breaker for the peer:
	// "closed" (tasks go to it), "open" (it failed too often: no task goes
	// to it for a while) or "half_open" (one probe task may go to it).
	// CircuitFailures counts its consecutive failed or timed-out attempts.
	Circuit         string `json:"circuit"`
	CircuitFailures int    `json:"circuit_failures,omitempty"`
	// Admission is how much the peer may use on this node and what it uses
	// now; nil when the node does not report it.
	Admission *PeerAdmission `json:"admission,omitempty"`
	// Outstanding is how many of this node's tasks are in flight to the
	// peer now, as this node counts them: the live figure to read next to
	// Load, which is only what the peer last announced. Nil when the node
	// does not report it.
	Outstanding *int `json:"outstanding,omitempty"`
	// AnnouncedAgo is how long before this answer the peer's last
	// announcement (its Load and Skills) arrived; left out if none did.
	AnnouncedAgo Duration `json:"announced_ago,omitempty"`
	// Seen is what this node observed itself of the tasks it sent the
	// peer; nil if it has sent it none.
	Seen *PeerSeen `json:"seen,omitempty"`
}

// PeerSeen is what a node observed of the tasks it sent one peer.
type PeerSeen struct {
	Completed uint64 `json:"completed"`
	Failed    uint64 `json:"failed"`
	TimedOut  uint64 `json:"timed_out"`
	// RecentLatencyMS is a moving average (each new task weighing 0.2) of
	// the time from sending a task to its result; 0 until one completed.
	RecentLatencyMS float64 `json:"recent_latency_ms"`
	// LastOutcome is when the last of them completed, failed or timed out.
	LastOutcome time.Time `json:"last_outcome,omitzero"`
}

// PeerAdmission is a peer's admission class on this node, the limits that
// come with it, and what the peer holds here now.
type PeerAdmission struct {
	// Class is ClassTrusted, ClassKnown, ClassStranger or ClassRefused.
	Class  string     `json:"class"`
	Limits PeerLimits `json:"limits"`
	// Usage is what the peer holds here now; nil when the node does not
	// report it.
	Usage *PeerUsage `json:"usage,omitempty"`
}

// Admission classes of PeerAdmission.
const (
	ClassTrusted  = "trusted"  // listed by the operator: known limits whatever its trust
	ClassKnown    = "known"    // has earned trust here: the known limits
	ClassStranger = "stranger" // not yet: the small stranger limits
	ClassRefused  = "refused"  // trust below the accept threshold: tasks refused
)

// PeerLimits is what one peer may hold on this node at once.
type PeerLimits struct {
	RatePerSec float64 `json:"rate_per_s"` // task requests per second; 0: unlimited
	Burst      int     `json:"burst"`
	MaxTasks   int     `json:"max_tasks"` // tasks running or queued here
	MaxBytes   int64   `json:"max_bytes"` // their input plus output not yet sent
}

// PeerUsage is what one peer holds on this node now.
type PeerUsage struct {
	Tasks int   `json:"tasks"`
	Bytes int64 `json:"bytes"`
}

// Access values of Peer and PeerAccess.
const (
	AccessAllowed    = "allowed"     // may connect
	AccessDenied     = "denied"      // on the deny list
	AccessNotAllowed = "not_allowed" // the node has an allow list and the peer is not on it
)

// PeerAccess is the answer of POST /v1/peers/{peer}/deny and
// /v1/peers/{peer}/allow: the peer's access afterwards. The change lasts
// until the daemon stops; network.allow_peers and network.deny_peers in
// the config are not rewritten.
type PeerAccess struct {
	Peer   string `json:"peer"`
	Access string `json:"access"`
	// AllowList is true when the node has an allow list: then only peers
	// on it (and not denied) may connect.
	AllowList bool `json:"allow_list"`
}

// Load is what a node reported about how busy it is.
type Load struct {
	Queued      [4]int  `json:"queued"` // per level: low, normal, high, critical
	InFlight    int     `json:"in_flight"`
	Capacity    int     `json:"capacity"`
	Utilization float64 `json:"utilization"`
}

// Skill is one entry of GET /v1/skills: a skill offered here, by peers or
// both.
type Skill struct {
	ID          string          `json:"id"`
	Version     string          `json:"version,omitempty"`
	Description string          `json:"description,omitempty"`
	Local       bool            `json:"local"`
	Providers   []string        `json:"providers"` // peer IDs offering it, this node's included when Local
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
	// Kind is how this node implements the skill: SkillBuiltin,
	// SkillWasm or SkillCommand; empty for a skill only peers offer.
	Kind string `json:"kind,omitempty"`
	// Module is the sha256 of a wasm skill's module, 64 hex digits.
	Module string `json:"module,omitempty"`
	// Limits are what each run of a local wasm skill gets: the manifest's,
	// defaulted and capped by this node's wasm config.
	Limits *SkillLimits `json:"limits,omitempty"`
	// Deterministic is a local wasm skill's manifest setting: fake clock
	// and seeded random source when true.
	Deterministic bool `json:"deterministic,omitempty"`
}

// Kinds of skill (Skill.Kind).
const (
	SkillBuiltin = "builtin"
	SkillWasm    = "wasm"
	SkillCommand = "command"
)

// SkillLimits are a wasm skill's limits, sizes with units ("64MiB") and
// the timeout as a Go duration ("30s").
type SkillLimits struct {
	Memory  string `json:"memory"`
	Timeout string `json:"timeout"`
	Input   string `json:"input"`
	Output  string `json:"output"`
}

// WasmMediaType is the Content-Type of POST /v1/skills: the body is the
// module's bytes, the manifest's fields are the query (SkillParams).
const WasmMediaType = "application/wasm"

// Query parameters of POST /v1/skills. Name and version are required; the
// limits are sizes ("64MiB", "1048576") and a duration ("30s"), left out
// for the node's defaults; input_schema is JSON; deterministic is true or
// false (default false).
const (
	ParamName          = "name"
	ParamDescription   = "description"
	ParamInputSchema   = "input_schema"
	ParamMemory        = "memory"
	ParamInput         = "input"
	ParamOutput        = "output"
	ParamDeterministic = "deterministic"
)

// SkillParams are the parameters POST /v1/skills takes (ParamVersion and
// ParamTimeout are shared with a raw submission).
var SkillParams = []string{ParamName, ParamVersion, ParamDescription, ParamInputSchema,
	ParamMemory, ParamTimeout, ParamInput, ParamOutput, ParamDeterministic}

// RemovedSkills is the answer of DELETE /v1/skills/{name}: what was
// unregistered and deleted (one entry per stored version).
type RemovedSkills struct {
	Removed []Skill `json:"removed"`
}

// TrustEntry is one entry of GET /v1/trust, or the body of GET
// /v1/trust/{peer}.
type TrustEntry struct {
	Peer         string             `json:"peer"`
	Trust        float64            `json:"trust"`  // in [0, 1]: what routing and admission use
	Global       float64            `json:"global"` // the peer's share of the EigenTrust vector
	PreTrusted   bool               `json:"pre_trusted"`
	Successes    uint64             `json:"successes"`
	Failures     uint64             `json:"failures"`
	Timeouts     uint64             `json:"timeouts"`
	WrongResults uint64             `json:"wrong_results"`
	LastOutcome  time.Time          `json:"last_outcome,omitzero"`
	Ratings      map[string]float64 `json:"ratings,omitempty"` // per skill, in [-1, 1]
	// Satisfaction and Unsatisfaction are this node's own evidence about
	// the peer, decayed to now (a wrong result weighs 4).
	Satisfaction   float64 `json:"satisfaction"`
	Unsatisfaction float64 `json:"unsatisfaction"`
	// Opinions are what other peers shared about this one, the weightiest
	// first. Only GET /v1/trust/{peer} fills them.
	Opinions []TrustOpinion `json:"opinions,omitempty"`
}

// TrustOpinion is one other peer's opinion of a peer, as this node holds
// it: From gives Share of its local trust to the peer; the opinion weighs
// From's global trust (FromGlobal) times its Freshness (halving every
// decay half-life since it arrived).
type TrustOpinion struct {
	From       string    `json:"from"`
	Share      float64   `json:"share"`
	FromGlobal float64   `json:"from_global"`
	Freshness  float64   `json:"freshness"`
	Received   time.Time `json:"received"`
}

// Metrics is the body of GET /v1/metrics.
type Metrics struct {
	Tasks   TaskMetrics            `json:"tasks"`
	Queue   QueueStats             `json:"queue"`
	PerNode map[string]TaskMetrics `json:"per_node"`
	Peers   int                    `json:"peers"`
}

// TaskMetrics are task counts and execution times.
type TaskMetrics struct {
	Submitted   uint64  `json:"submitted"`
	Completed   uint64  `json:"completed"`
	Failed      uint64  `json:"failed"`
	TimedOut    uint64  `json:"timed_out"`
	Unavailable uint64  `json:"unavailable"` // attempts the node never answered (down, unreachable): not in the rates
	Rejected    uint64  `json:"rejected"`    // attempts it refused or gave back unrun: not in the rates
	Retried     uint64  `json:"retried"`     // attempts that retried a failed one
	SuccessRate float64 `json:"success_rate"`
	FailureRate float64 `json:"failure_rate"`
	MinMS       float64 `json:"min_ms"`
	MaxMS       float64 `json:"max_ms"`
	AvgMS       float64 `json:"avg_ms"`
	P50MS       float64 `json:"p50_ms"`
	P95MS       float64 `json:"p95_ms"`
	P99MS       float64 `json:"p99_ms"`
}

// QueueStats describe the local queue.
type QueueStats struct {
	Depth     map[string]int `json:"depth"` // ready tasks per level name
	InFlight  int            `json:"in_flight"`
	Enqueued  uint64         `json:"enqueued"`
	Completed uint64         `json:"completed"`
	Failed    uint64         `json:"failed"`
	Retried   uint64         `json:"retried"`
	TimedOut  uint64         `json:"timed_out"`
	Rejected  uint64         `json:"rejected"`
}

// Event is one server-sent event of GET /v1/events. Type is "task",
// "progress" (Task carries the new Progress; its state is unchanged),
// "peer", "spot_check" or "workflow"; the SSE event name is the same.
type Event struct {
	Type string     `json:"type"`
	Time time.Time  `json:"time"`
	Task *Task      `json:"task,omitempty"`
	Peer *PeerEvent `json:"peer,omitempty"`
	// SpotCheck is set for Type "spot_check": a peer's output for a
	// deterministic skill was run again and compared.
	SpotCheck *SpotCheck `json:"spot_check,omitempty"`
	// Workflow is set for Type "workflow".
	Workflow *WorkflowEvent `json:"workflow,omitempty"`
}

// SpotCheck is the end of one spot check: the task whose answer First
// gave was run again on Checkers; Result is "match", "wrong_result" (Wrong
// disagreed with this node's run or with the majority) or "inconclusive".
type SpotCheck struct {
	TaskID   string   `json:"task_id"`
	Skill    string   `json:"skill"`
	First    string   `json:"first"`
	Checkers []string `json:"checkers"`
	Result   string   `json:"result"`
	Wrong    string   `json:"wrong,omitempty"`
	Reason   string   `json:"reason,omitempty"`
}

// PeerEvent says what happened to a peer: "joined", "left" or
// "capabilities".
type PeerEvent struct {
	ID   string `json:"id"`
	Kind string `json:"kind"`
}

// ErrorBody is the body of every 4xx and 5xx answer.
type ErrorBody struct {
	Error Error `json:"error"`
}

// Error is a machine-readable code and a message for people.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
	// Reason, in a failed task's error, is the cause alone, without the
	// chain of what was being done: for invalid_input, what the node that
	// checked the input (Task.Node) found wrong with it.
	Reason string `json:"reason,omitempty"`
}

// Error codes.
const (
	CodeInvalidRequest   = "invalid_request" // malformed JSON, bad parameter
	CodeInvalidInput     = "invalid_input"   // input does not satisfy the skill's schema
	CodeUnknownSkill     = "unknown_skill"
	CodeNotFound         = "not_found" // no such task, peer or endpoint
	CodeMethodNotAllowed = "method_not_allowed"
	CodeQueueFull        = "queue_full"
	CodeNoCapableNode    = "no_capable_node"
	CodeDelegation       = "delegation_failed"
	CodeTimeout          = "timeout"
	CodeCanceled         = "canceled"
	CodeFinished         = "already_finished" // cancel of a finished task
	CodeExecution        = "execution_failed"
	CodeTooLarge         = "body_too_large"
	CodeInputTooLarge    = "input_too_large" // a task input over MaxInputBytes
	CodeUnauthorized     = "unauthorized"
	CodeForbiddenOrigin  = "forbidden_origin"       // a web page's request (Origin is not the API's own)
	CodeForbiddenHost    = "forbidden_host"         // no token and a Host that is not loopback (DNS rebinding)
	CodeUnsupportedType  = "unsupported_media_type" // a body that is not JSON (or raw bytes where they are taken)
	CodeShuttingDown     = "shutting_down"          // draining or not started
	CodeInternal         = "internal"
	CodeSkillExists      = "skill_exists"        // skill add: the name is taken
	CodeNotRemovable     = "skill_not_removable" // skill rm of a built-in or command skill
	CodeInvalidModule    = "invalid_module"      // skill add: not wasm, or does not compile
	CodeModuleTooLarge   = "module_too_large"    // skill add: over wasm.max_module
)

// CodeInfo documents one error code: the HTTP status of an answer that
// carries it, and what it means. Status is 0 for a code that only a failed
// task's error carries (Task.Error), never an answer.
type CodeInfo struct {
	Code    string
	Status  int
	Meaning string
}

// Codes lists every error code the API answers with or puts in a failed
// task's error. A failed task's error may also carry invalid_request,
// unknown_skill, no_capable_node, delegation_failed, timeout, canceled,
// shutting_down and internal, with the meanings here.
var Codes = []CodeInfo{
	{CodeInvalidRequest, 400, "the request is malformed: bad JSON, an unknown field or parameter, a value out of range; the message names it"},
	{CodeInvalidInput, 400, "the input does not satisfy the skill's input schema; the message (and a task's error reason) says how"},
	{CodeUnauthorized, 401, "no bearer token where one is required, a wrong one, or a malformed Authorization header"},
	{CodeForbiddenOrigin, 403, "a request from a web page (its Origin is not the API's own)"},
	{CodeForbiddenHost, 403, "a request without a token whose Host is not loopback (DNS rebinding)"},
	{CodeUnknownSkill, 404, "no node on the grid offers the skill"},
	{CodeNotFound, 404, "no such task, peer, installed wasm skill or endpoint"},
	{CodeMethodNotAllowed, 405, "the endpoint does not take this method; Allow lists those it takes"},
	{CodeFinished, 409, "cancel of a task that has already finished"},
	{CodeCanceled, 409, "the task was canceled"},
	{CodeSkillExists, 409, "a skill of that name is built in or registered here; remove it first, or pick another name"},
	{CodeNotRemovable, 409, "the skill is built in or a command skill, set in the config; only wasm skills are added and removed here"},
	{CodeTooLarge, 413, "the request body is larger than api.max_body_bytes"},
	{CodeInputTooLarge, 413, "the task input is larger than the most one task may carry (MaxInputBytes)"},
	{CodeModuleTooLarge, 413, "the wasm module is larger than wasm.max_module"},
	{CodeUnsupportedType, 415, "the body is not sent as application/json (or, to POST /v1/tasks, application/octet-stream; to POST /v1/skills, application/wasm)"},
	{CodeInvalidModule, 422, "the module is not WebAssembly, does not compile, or is not a WASI command this node can run; the message says which"},
	{CodeQueueFull, 429, "the queue level of the task's priority is full; retry after Retry-After"},
	{CodeTooManyWorkflows, 429, "workflow.max_workflows workflows are running (or too many chained tasks wait); retry once one has finished"},
	{CodeInternal, 500, "a fault of this node; its log has the cause"},
	{CodeDelegation, 502, "every attempt failed and no retry is left; the message has the last failure"},
	{CodeNoCapableNode, 503, "nodes offer the skill, but none may run it now (trust, reachability)"},
	{CodeShuttingDown, 503, "the daemon is draining or not started yet"},
	{CodeTimeout, 504, "the task did not finish by its deadline"},
	{CodeExecution, 0, "the skill ran and failed; the message is the skill's"},
	{CodeDependencyFailed, 0, "a chained task or workflow step was never submitted: a task it takes its input from did not succeed; the message names it"},
}

// MaxInputBytes is the largest task input, in bytes: what one frame of the
// task protocol carries beside the rest of a request (wire.MaxTaskInput,
// 16 MiB less 4 KiB). Larger inputs are refused with 413 input_too_large.
const MaxInputBytes = 16<<20 - 4<<10

// Query parameters of POST /v1/tasks with a raw body (Content-Type
// application/octet-stream): the body is the input, these are the other
// fields of a SubmitRequest, with the retry policy's fields flattened.
const (
	ParamSkill       = "skill"
	ParamVersion     = "version"
	ParamPriority    = "priority"
	ParamTimeout     = "timeout"
	ParamMinTrust    = "min_trust"
	ParamMaxRetries  = "max_retries"
	ParamMaxAttempts = "max_attempts"
	ParamBaseBackoff = "base_backoff"
	ParamMaxBackoff  = "max_backoff"
	ParamRetryOn     = "retry_on" // comma-separated
	ParamNoCache     = "no_cache" // true or false
)

// SubmitParams lists the query parameters of a raw submission.
var SubmitParams = []string{ParamSkill, ParamVersion, ParamPriority, ParamTimeout, ParamMinTrust, ParamMaxRetries,
	ParamMaxAttempts, ParamBaseBackoff, ParamMaxBackoff, ParamRetryOn, ParamNoCache}

// Query returns r's fields other than the input as the query parameters of
// a raw submission.
func (r *SubmitRequest) Query() url.Values {
	q := url.Values{ParamSkill: {r.Skill}}
	set := func(k, v string) {
		if v != "" {
			q.Set(k, v)
		}
	}
	set(ParamVersion, r.Version)
	if r.Priority != nil {
		set(ParamPriority, strconv.Itoa(int(*r.Priority)))
	}
	if r.Timeout != 0 {
		set(ParamTimeout, time.Duration(r.Timeout).String())
	}
	if r.MinTrust != nil {
		set(ParamMinTrust, strconv.FormatFloat(*r.MinTrust, 'f', -1, 64))
	}
	if r.MaxRetries != nil {
		set(ParamMaxRetries, strconv.Itoa(*r.MaxRetries))
	}
	if r.NoCache {
		set(ParamNoCache, "true")
	}
	if p := r.Retry; p != nil {
		if p.MaxAttempts != 0 {
			set(ParamMaxAttempts, strconv.Itoa(p.MaxAttempts))
		}
		if p.BaseBackoff != 0 {
			set(ParamBaseBackoff, time.Duration(p.BaseBackoff).String())
		}
		if p.MaxBackoff != 0 {
			set(ParamMaxBackoff, time.Duration(p.MaxBackoff).String())
		}
		set(ParamRetryOn, strings.Join(p.RetryOn, ","))
	}
	return q
}

// Priority is a 0-255 task priority. In JSON it is a number or one of the
// level names low (32), normal (96), high (160) and critical (224).
type Priority uint8

// Level names and the priority each stands for.
var levelPriorities = map[string]Priority{"low": 32, "normal": 96, "high": 160, "critical": 224}

// ParsePriority parses a number 0-255 or a level name.
func ParsePriority(s string) (Priority, error) {
	s = strings.ToLower(strings.TrimSpace(s))
	if p, ok := levelPriorities[s]; ok {
		return p, nil
	}
	n, err := strconv.ParseUint(s, 10, 8)
	if err != nil {
		return 0, fmt.Errorf("priority %.40q: want 0-255 or a level name (%s)", s, strings.Join(PriorityNames, ", "))
	}
	return Priority(n), nil
}

// MaxWait is the longest timeout of GET /v1/tasks/{id}/wait.
const MaxWait = 10 * time.Minute

// MaxListLimit is the largest limit of GET /v1/tasks.
const MaxListLimit = 999

// MaxTimeout is the longest timeout a task may have: the task protocol
// refuses deadlines more than a day ahead.
const MaxTimeout = 24 * time.Hour

// TaskTrace is the body of GET /v1/tasks/{id}/trace: what this node's API
// saw of the task beyond its status: each attempt as it began and ended,
// and the start of the input of a task submitted through it. Recorded is
// false when the API holds no trace of the task (it began before the API
// started, or is older than the most recent tasks it keeps); Attempts is
// then empty.
type TaskTrace struct {
	Task     string        `json:"task"`
	Recorded bool          `json:"recorded"`
	Attempts []Attempt     `json:"attempts"`
	Input    *InputPreview `json:"input,omitempty"` // nil: not submitted through this API
}

// MaxInputPreview is the most of a task's input a TaskTrace keeps.
const MaxInputPreview = 16 << 10

// InputPreview is the start of a task's input, at most MaxInputPreview
// bytes of it.
type InputPreview struct {
	Size      int             `json:"size"`                // the whole input's, in bytes
	JSON      json.RawMessage `json:"json,omitempty"`      // the input, if it is JSON and whole
	Base64    []byte          `json:"base64,omitempty"`    // its first bytes otherwise
	Truncated bool            `json:"truncated,omitempty"` // Base64 holds only the start
}

// Attempt is one attempt of a task.
type Attempt struct {
	Number    int        `json:"number"` // 1 for the first
	Node      string     `json:"node"`   // where it ran (this node's ID for a local run)
	Local     bool       `json:"local"`
	StartedAt time.Time  `json:"started_at"`
	EndedAt   *time.Time `json:"ended_at,omitempty"`
	// Outcome is "running" while the attempt is live, "retried" when it
	// failed and another attempt followed, or the task's final state.
	Outcome string `json:"outcome"`
	Error   string `json:"error,omitempty"`
	// Candidates are the nodes the router ranked when the coordinator
	// chose this attempt's node, best first (at most 8), with the scores
	// the choice used; Considered counts every node it scored. Empty when
	// the coordinator recorded no ranking (the attempt went to this node
	// with no peer to weigh, or began before the API followed events).
	Candidates []Candidate `json:"candidates,omitempty"`
	Considered int         `json:"considered,omitempty"`
}

// Candidate is one node the router considered for an attempt.
type Candidate struct {
	Node      string     `json:"node"`
	Local     bool       `json:"local"`
	Connected bool       `json:"connected"`
	Chosen    bool       `json:"chosen"` // the attempt went to it
	Score     float64    `json:"score"`  // in [0, 1]: Parts weighted by routing's weights
	Trust     float64    `json:"trust"`
	Parts     ScoreParts `json:"parts"`
	Version   string     `json:"version,omitempty"`
}

// ScoreParts are the parts of a Candidate's score, each in [0, 1] before
// its weight (config routing.weights).
type ScoreParts struct {
	Trust   float64 `json:"trust"`
	Skill   float64 `json:"skill"`   // skill rating, from [-1, 1] to [0, 1]
	Success float64 `json:"success"` // recent success rate; 0.5 with no history
	Latency float64 `json:"latency"` // 1 / (1 + latency / reference); 0.5 with no history
	Load    float64 `json:"load"`    // 1 - utilization
}

// Series is the body of GET /v1/metrics/series: per interval of
// IntervalMS, oldest first, the tasks that finished and the latency
// (submission to end) percentiles of those that succeeded.
type Series struct {
	IntervalMS int64         `json:"interval_ms"`
	Points     []SeriesPoint `json:"points"`
}

// SeriesPoint is one interval of a Series.
type SeriesPoint struct {
	Start     time.Time `json:"start"`
	Finished  int       `json:"finished"`  // tasks that reached a final state
	Succeeded int       `json:"succeeded"` // of those, the ones that succeeded
	PerSec    float64   `json:"per_s"`     // Finished per second
	P50MS     float64   `json:"p50_ms"`
	P95MS     float64   `json:"p95_ms"`
	P99MS     float64   `json:"p99_ms"`
}
