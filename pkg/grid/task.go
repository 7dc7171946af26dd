package grid

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// TaskID identifies a task across the grid. It is 32 random bytes chosen by
// the node the task was submitted to.
type TaskID [32]byte

// NewTaskID returns a random TaskID.
func NewTaskID() TaskID {
	var id TaskID
	_, _ = rand.Read(id[:]) // crypto/rand.Read never fails on supported platforms
	return id
}

// String returns the ID as 64 lowercase hex digits.
func (id TaskID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the last 12 hex digits, for logs. The last bytes, because
// the coordinator's IDs begin with its clock and the tail is the random part.
func (id TaskID) Short() string { return hex.EncodeToString(id[len(id)-6:]) }

// IsZero reports whether id is the zero ID.
func (id TaskID) IsZero() bool { return id == TaskID{} }

// MarshalText implements encoding.TextMarshaler.
func (id TaskID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (id *TaskID) UnmarshalText(b []byte) error {
	v, err := ParseTaskID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// ErrBadTaskID is returned by ParseTaskID and TaskIDFromBytes.
var ErrBadTaskID = errors.New("task ID must be 64 hex digits (32 bytes)")

// ParseTaskID parses 64 hex digits.
func ParseTaskID(s string) (TaskID, error) {
	var id TaskID
	if len(s) != 64 {
		return id, fmt.Errorf("parse task ID %q: %w", s, ErrBadTaskID)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("parse task ID %q: %w", s, ErrBadTaskID)
	}
	return id, nil
}

// TaskIDFromBytes copies a 32-byte slice into a TaskID.
func TaskIDFromBytes(b []byte) (TaskID, error) {
	var id TaskID
	if len(b) != len(id) {
		return id, fmt.Errorf("task ID is %d bytes: %w", len(b), ErrBadTaskID)
	}
	copy(id[:], b)
	return id, nil
}

// Level is a priority level. Higher levels are served first.
type Level uint8

// The four priority levels, lowest first, and the number of levels.
const (
	LevelLow Level = iota
	LevelNormal
	LevelHigh
	LevelCritical
	NumLevels = 4
)

// LevelOf maps a 0-255 priority to its level: 0-63 Low, 64-127 Normal,
// 128-191 High, 192-255 Critical.
func LevelOf(priority uint8) Level { return Level(priority >> 6) }

var levelNames = [NumLevels]string{"low", "normal", "high", "critical"}

// String returns "low", "normal", "high" or "critical".
func (l Level) String() string {
	if int(l) < NumLevels {
		return levelNames[l]
	}
	return fmt.Sprintf("level(%d)", uint8(l))
}

// ParseLevel parses a level name as String returns it.
func ParseLevel(s string) (Level, error) {
	for i, n := range levelNames {
		if n == s {
			return Level(i), nil
		}
	}
	return 0, fmt.Errorf("unknown priority level %q: want low, normal, high or critical", s)
}

// QueuedTask is one entry in a TaskQueue. The queue owns the entry from
// Enqueue until Complete, SettleTryDequeue, Remove or expiry; callers must
// not modify it while the queue owns it, except Payload's own contents.
type QueuedTask struct {
	ID         TaskID
	Priority   uint8   // 0-255; LevelOf(Priority) is its level
	Payload    any     // opaque to the queue
	TargetNode peer.ID // empty: run on this node
	Retries    int     // earlier attempts of the task (the coordinator's retries); Stats counts Retried
	CreatedAt  time.Time
	Deadline   time.Time // zero: CreatedAt + the queue's default timeout
}

// Level returns the task's priority level.
func (t *QueuedTask) Level() Level { return LevelOf(t.Priority) }
