package skill

import (
	"context"
	"encoding/json"

	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// Descriptor describes a skill: what it is called, its version and the JSON
// Schema its input must satisfy.
type Descriptor struct {
	ID          reputation.SkillID `json:"id"`
	Version     string             `json:"version"`
	Description string             `json:"description"`
	// InputSchema is a JSON Schema (draft 2020-12) for JSON inputs. Empty:
	// any input is accepted. Raw inputs are checked by the skill itself.
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
	// Deterministic says that the same input always gives the same
	// output: such a skill's results may be cached and shared between
	// identical tasks (see ResultCache).
	Deterministic bool `json:"deterministic,omitempty"`
}

// Skill is something this node can run. Implementations must be safe for
// concurrent use; Execute must return promptly when ctx is done.
type Skill interface {
	Descriptor() Descriptor
	Execute(ctx context.Context, in SkillInput) ([]byte, error)
}
