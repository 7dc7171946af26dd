package wasm

import (
	"context"
	"errors"
	"fmt"

	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Skill runs a Program as a skill of the executor: register it with
// skill.Registry.Register. It is safe for concurrent use; each Execute is a
// fresh instance on the calling worker's goroutine, so the executor's
// worker count bounds how many run at once.
//
// Errors reach the grid with these codes (see skill.Executor): input over
// the limit is invalid_input; a non-zero exit, a trap or output over the
// limit is execution_failed, with the end of stderr in the message; the
// deadline is timeout; a cancel is canceled.
type Skill struct {
	p    *Program
	desc skill.Descriptor
}

var _ skill.Skill = (*Skill)(nil)

// NewSkill returns the skill that runs p.
func NewSkill(p *Program) *Skill {
	m := p.Manifest()
	desc := m.Description
	if desc == "" {
		desc = fmt.Sprintf("wasm module %s", m.Module.Short())
	}
	return &Skill{p: p, desc: skill.Descriptor{ID: m.Name, Version: m.Version, Description: desc, InputSchema: m.InputSchema, Deterministic: m.Deterministic}}
}

// Descriptor returns the manifest's name, version, description and input
// schema.
func (s *Skill) Descriptor() skill.Descriptor { return s.desc }

// Module returns the ID of the module the skill runs, for announcements.
func (s *Skill) Module() ModuleID { return s.p.Manifest().Module }

// ModuleSHA256 returns the sha256 of the module the skill runs: it makes
// a *Skill a skill.ModuleSkill, which the grid checks a task's module hash
// against and announces.
func (s *Skill) ModuleSHA256() [32]byte { return s.p.Manifest().Module }

var _ skill.ModuleSkill = (*Skill)(nil)

// Program returns the program the skill runs.
func (s *Skill) Program() *Program { return s.p }

// Execute runs the module with the input's bytes (JSON or raw, as given)
// on stdin and returns its stdout.
func (s *Skill) Execute(ctx context.Context, in skill.SkillInput) ([]byte, error) {
	out, err := s.p.Run(ctx, in.Data)
	if errors.Is(err, ErrInputTooLarge) {
		return nil, fmt.Errorf("%w: %w", skill.ErrInvalidInput, err)
	}
	return out, err
}
