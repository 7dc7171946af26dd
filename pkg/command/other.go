//go:build !linux

package command

import (
	"context"
	"fmt"
	"runtime"

	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Skill is a command skill; on this system New never returns one.
type Skill struct{}

var _ skill.Skill = (*Skill)(nil)

// Confinement says what Landlock enforces; there is no Landlock here.
type Confinement struct {
	LandlockABI                              int
	Filesystem, Network, NetworkUDP, Signals bool
}

func (Confinement) String() string { return "no Landlock on this system" }

// New returns ErrUnsupported: command skills need Linux.
func New(spec Spec, _ Options) (*Skill, error) {
	return nil, fmt.Errorf("command skill %q: %w (%s); they need Linux", spec.Name, ErrUnsupported, runtime.GOOS)
}

// Descriptor is empty.
func (*Skill) Descriptor() skill.Descriptor { return skill.Descriptor{} }

// Execute returns ErrUnsupported.
func (*Skill) Execute(context.Context, skill.SkillInput) ([]byte, error) { return nil, ErrUnsupported }

// Confinement is empty.
func (*Skill) Confinement() Confinement { return Confinement{} }
