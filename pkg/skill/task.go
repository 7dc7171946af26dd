package skill

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// TaskID identifies a task; see grid.TaskID.
type TaskID = grid.TaskID

// Defaults for a new SkillTask.
const (
	DefaultPriority   uint8         = 96 // Normal
	DefaultTimeout    time.Duration = 300 * time.Second
	DefaultMinTrust   float64       = 0.3
	DefaultMaxRetries int           = 3
)

// SkillInput is a task's input: JSON, or raw bytes that a skill reads as it
// documents.
type SkillInput struct {
	Kind grid.InputKind
	Data []byte
}

// JSONInput marshals v as a JSON input. A json.RawMessage or []byte holding
// JSON is taken as is.
func JSONInput(v any) (SkillInput, error) {
	switch b := v.(type) {
	case json.RawMessage:
		return SkillInput{Kind: grid.InputJSON, Data: b}, nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return SkillInput{}, fmt.Errorf("encode input as JSON: %w", err)
	}
	return SkillInput{Kind: grid.InputJSON, Data: b}, nil
}

// RawInput wraps bytes as a raw input.
func RawInput(b []byte) SkillInput { return SkillInput{Kind: grid.InputRaw, Data: b} }

// SkillTask is a request to run one skill on one input. Build it with
// NewSkillTask and the With methods; the coordinator fills ID and CreatedAt
// on submission if they are zero.
type SkillTask struct {
	ID         TaskID
	Skill      reputation.SkillID
	Version    string // empty: any version
	Input      SkillInput
	Requester  peer.ID
	Priority   uint8
	Timeout    time.Duration
	MinTrust   float64
	MaxRetries int
	// Retry refines how failed attempts are retried; its zero value keeps
	// MaxRetries and the coordinator's defaults.
	Retry     RetryPolicy
	CreatedAt time.Time
	// NoCache makes the task run even if the result cache holds its
	// answer, and keeps it out of in-flight deduplication.
	NoCache bool
}

// NewSkillTask returns a task with the default priority (96, Normal),
// timeout (300 s), minimum trust (0.3) and retries (3).
func NewSkillTask(skill reputation.SkillID, input SkillInput, requester peer.ID) *SkillTask {
	return &SkillTask{
		Skill:      skill,
		Input:      input,
		Requester:  requester,
		Priority:   DefaultPriority,
		Timeout:    DefaultTimeout,
		MinTrust:   DefaultMinTrust,
		MaxRetries: DefaultMaxRetries,
	}
}

// WithPriority sets the 0-255 priority (0-63 Low, 64-127 Normal, 128-191
// High, 192-255 Critical).
func (t *SkillTask) WithPriority(p uint8) *SkillTask { t.Priority = p; return t }

// WithTimeout sets the time from submission after which the task fails with
// ErrTimeout.
func (t *SkillTask) WithTimeout(d time.Duration) *SkillTask { t.Timeout = d; return t }

// WithMinTrust sets the trust in [0, 1] a node needs to be given the task.
func (t *SkillTask) WithMinTrust(v float64) *SkillTask { t.MinTrust = v; return t }

// WithMaxRetries sets how many more attempts follow a failed one.
func (t *SkillTask) WithMaxRetries(n int) *SkillTask { t.MaxRetries = n; return t }

// WithVersion requires an exact skill version.
func (t *SkillTask) WithVersion(v string) *SkillTask { t.Version = v; return t }

// Level returns the task's priority level.
func (t *SkillTask) Level() grid.Level { return grid.LevelOf(t.Priority) }

// Deadline returns CreatedAt + Timeout.
func (t *SkillTask) Deadline() time.Time { return t.CreatedAt.Add(t.Timeout) }

// SkillResult is the outcome of a task.
type SkillResult struct {
	TaskID     TaskID
	Success    bool
	Output     []byte
	Error      string         // empty on success
	Code       grid.ErrorCode // CodeNone on success
	Duration   time.Duration  // execution time on the node that ran it
	ExecutedBy peer.ID
	Attempts   int
	FinishedAt time.Time
	// Cached says that the output came from the result cache or from an
	// identical task's execution, not from running this task: ExecutedBy
	// is then the node that ran that first one.
	Cached bool

	// Set by the Executor, for the coordinator's accounting.
	notRun   bool // failed before the skill ran (queued past the deadline, canceled, ...)
	tooLarge bool // the skill's output was over wire.MaxTaskOutput
}
