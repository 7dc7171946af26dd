package wasm

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// ModuleID is a module's content address: the sha256 of its bytes. In
// JSON and file names it is 64 lowercase hex digits.
type ModuleID [sha256.Size]byte

// ModuleIDOf returns the ID of the module bytes b.
func ModuleIDOf(b []byte) ModuleID { return sha256.Sum256(b) }

// ParseModuleID parses 64 hex digits (either case).
func ParseModuleID(s string) (ModuleID, error) {
	var id ModuleID
	if len(s) != hex.EncodedLen(len(id)) {
		return id, fmt.Errorf("module hash %q is %d characters; a sha256 is 64 hex digits", s, len(s))
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("module hash %q is not hex: %v", s, err)
	}
	return id, nil
}

// String returns the 64 lowercase hex digits.
func (id ModuleID) String() string { return hex.EncodeToString(id[:]) }

// Short returns the first 12 hex digits, for logs.
func (id ModuleID) Short() string { return id.String()[:12] }

// IsZero reports whether id is unset.
func (id ModuleID) IsZero() bool { return id == ModuleID{} }

// MarshalText writes the hex digits.
func (id ModuleID) MarshalText() ([]byte, error) { return []byte(id.String()), nil }

// UnmarshalText reads 64 hex digits.
func (id *ModuleID) UnmarshalText(b []byte) error {
	v, err := ParseModuleID(string(b))
	if err != nil {
		return err
	}
	*id = v
	return nil
}

// Manifest describes a wasm skill: which module runs it and how. Example:
//
//	{"name": "text.upper", "version": "1.0.0",
//	 "module": "<sha256 of the .wasm, 64 hex digits>",
//	 "input_schema": {"type": "string"},
//	 "limits": {"memory": "64MiB", "timeout": "30s", "output": "1MiB"},
//	 "deterministic": true}
type Manifest struct {
	// Name is the skill's ID, e.g. "text.upper".
	Name reputation.SkillID `json:"name"`
	// Version follows the skill registry's rule: "1.0.0", "2", "1.2-rc.1".
	Version string `json:"version"`
	// Description is shown in skill lists; optional.
	Description string `json:"description,omitempty"`
	// Module is the sha256 of the module's bytes.
	Module ModuleID `json:"module"`
	// InputSchema is an optional JSON Schema (draft 2020-12) for JSON
	// inputs, checked by the registry before the module runs.
	InputSchema json.RawMessage `json:"input_schema,omitempty"`
	// Limits asks for memory, time and I/O; the node clamps each.
	Limits Limits `json:"limits,omitzero"`
	// Deterministic modules see wazero's fake clock (wall time from
	// 2022-01-01T00:00:00Z, ticking 1ms per reading), a seeded random source and a sleep
	// that returns at once, so that the same input gives the same output
	// on every node. A non-deterministic module gets the real clock,
	// crypto/rand and real sleeps.
	Deterministic bool `json:"deterministic"`
	// Args follow argv[0], which is always the skill name. None by
	// default.
	Args []string `json:"args,omitempty"`
	// Env is the module's whole environment. None by default.
	Env map[string]string `json:"env,omitempty"`
}

// Bounds on the free-form fields of a manifest.
const (
	MaxManifestBytes   = 256 << 10
	maxDescriptionLen  = 1 << 10
	maxArgs, maxEnv    = 64, 64
	maxArgOrEnvLen     = 4 << 10
	maxSchemaBytes     = 128 << 10
	manifestDocExample = `see the Manifest doc: {"name":"text.upper","version":"1.0.0","module":"<sha256>"}`
)

// DecodeManifest reads a JSON manifest of at most MaxManifestBytes,
// refusing unknown fields (a misspelt "limits" must not be ignored), and
// validates it. Errors wrap ErrInvalidManifest.
func DecodeManifest(r io.Reader) (Manifest, error) {
	b, err := io.ReadAll(io.LimitReader(r, MaxManifestBytes+1))
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	if len(b) > MaxManifestBytes {
		return Manifest{}, fmt.Errorf("manifest is over %d bytes: %w", MaxManifestBytes, ErrInvalidManifest)
	}
	var m Manifest
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return Manifest{}, fmt.Errorf("manifest is not valid JSON (%s): %v: %w", manifestDocExample, err, ErrInvalidManifest)
	}
	if dec.More() {
		return Manifest{}, fmt.Errorf("manifest has data after its JSON object: %w", ErrInvalidManifest)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, err
	}
	return m, nil
}

// Validate checks every field and reports every problem in one error that
// wraps ErrInvalidManifest. The name must be a valid SkillID; the version
// and input schema must pass the skill registry's own checks (the same
// ones Register applies); the module hash must be set; limits must be in
// range (see Limits); args and env must be free of NUL bytes, env keys
// non-empty and without '='.
func (m Manifest) Validate() error {
	var errs []error
	if err := m.Name.Validate(); err != nil {
		errs = append(errs, fmt.Errorf("name: %w", err))
	}
	if err := registryCheck(m.Version, nil); err != nil {
		errs = append(errs, fmt.Errorf("version: %w", err))
	}
	if m.Module.IsZero() {
		errs = append(errs, errors.New(`module: the sha256 of the module is missing ("module": "<64 hex digits>")`))
	}
	if len(m.InputSchema) > maxSchemaBytes {
		errs = append(errs, fmt.Errorf("input_schema is %d bytes, more than %d", len(m.InputSchema), maxSchemaBytes))
	} else if err := registryCheck("1.0.0", m.InputSchema); err != nil {
		errs = append(errs, fmt.Errorf("input_schema: %w", err))
	}
	if len(m.Description) > maxDescriptionLen {
		errs = append(errs, fmt.Errorf("description is %d bytes, more than %d", len(m.Description), maxDescriptionLen))
	}
	if err := m.Limits.check("limits:"); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, checkArgsEnv(m.Args, m.Env)...)
	if err := errors.Join(errs...); err != nil {
		name := string(m.Name)
		if name == "" {
			name = "(no name)"
		}
		return fmt.Errorf("manifest of %q: %w: %w", name, ErrInvalidManifest, err)
	}
	return nil
}

func checkArgsEnv(args []string, env map[string]string) []error {
	var errs []error
	if len(args) > maxArgs {
		errs = append(errs, fmt.Errorf("args: %d arguments, more than %d", len(args), maxArgs))
	}
	for i, a := range args {
		if strings.IndexByte(a, 0) >= 0 || len(a) > maxArgOrEnvLen {
			errs = append(errs, fmt.Errorf("args[%d]: has a NUL byte or is over %d bytes", i, maxArgOrEnvLen))
		}
	}
	if len(env) > maxEnv {
		errs = append(errs, fmt.Errorf("env: %d variables, more than %d", len(env), maxEnv))
	}
	for k, v := range env {
		if k == "" || strings.ContainsAny(k, "=\x00") || strings.IndexByte(v, 0) >= 0 || len(k)+len(v) > maxArgOrEnvLen {
			errs = append(errs, fmt.Errorf("env %q: keys are non-empty without '=' or NUL, values without NUL, at most %d bytes together", k, maxArgOrEnvLen))
		}
	}
	return errs
}

// registryCheck runs the skill registry's own version and schema checks
// on a throwaway registry, so that a manifest accepted here is never
// refused by Register later and the rules live in one place.
func registryCheck(version string, schema json.RawMessage) error {
	d := skill.Descriptor{ID: "wasm.manifest.check", Version: version, InputSchema: schema}
	return skill.NewRegistry().Register(descOnly{d})
}

// descOnly is a skill that only describes itself.
type descOnly struct{ d skill.Descriptor }

func (s descOnly) Descriptor() skill.Descriptor { return s.d }

func (descOnly) Execute(context.Context, skill.SkillInput) ([]byte, error) {
	return nil, errors.New("not runnable")
}
