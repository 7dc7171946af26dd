package command

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/command/shim"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Skill runs one command skill: register it with skill.Registry.Register.
// It is safe for concurrent use; each Execute starts a process group of
// its own on the calling worker's goroutine, so the executor's worker
// count bounds how many run at once.
//
// Errors reach the grid with these codes (see skill.Executor): a raw
// input to a skill with a schema is invalid_input; a non-zero exit, a
// signal, output over Spec.MaxOutput or a failed start is
// execution_failed, with the end of stderr in the message; the deadline
// (the task's or Spec.Timeout) is timeout; a cancel is canceled. A stderr
// line "cortex:progress F message" (F in [0, 1]) is a progress report
// (skill.ReportProgress), not stderr; see internal/progressline.
type Skill struct {
	spec     Spec
	shim     string
	shimArgs []string // after the shim's name: Options.ShimArgs, ShimArg
	grace    time.Duration
	tmp      string
	env      []string
	desc     skill.Descriptor
	confin   Confinement
}

var _ skill.Skill = (*Skill)(nil)

// New checks spec (every problem in one error that wraps ErrInvalidSpec
// and names the field), reads its schema file, resolves its program in
// PATH, copies the allowed environment variables and probes the kernel's
// Landlock support. It starts nothing.
func New(spec Spec, opts Options) (*Skill, error) {
	spec = spec.withDefaults()
	if err := spec.validate(); err != nil {
		return nil, err
	}
	s := &Skill{spec: spec, shim: opts.Shim, grace: opts.KillGrace, tmp: opts.TempDir,
		shimArgs: append(append([]string(nil), opts.ShimArgs...), ShimArg)}
	if s.shim == "" {
		exe, err := os.Executable()
		if err != nil {
			return nil, fmt.Errorf("command skill %q: find the shim (this binary): %w", spec.Name, err)
		}
		s.shim = exe
	}
	if s.grace <= 0 {
		s.grace = DefaultKillGrace
	}
	if s.tmp == "" {
		s.tmp = os.TempDir()
	}
	argv0 := spec.Argv[0]
	if !strings.Contains(argv0, "/") {
		p, err := exec.LookPath(argv0)
		if err != nil {
			return nil, fmt.Errorf("%w %q: argv[0]: %w", ErrInvalidSpec, spec.Name, err)
		}
		argv0 = p
	}
	s.spec.Argv = append([]string{argv0}, spec.Argv[1:]...)
	for _, n := range spec.Env {
		if v, ok := os.LookupEnv(n); ok {
			s.env = append(s.env, n+"="+v)
		}
	}
	desc := spec.Description
	if desc == "" {
		desc = "command " + filepath.Base(argv0)
	}
	s.desc = skill.Descriptor{ID: spec.Name, Version: spec.Version, Description: desc}
	if spec.SchemaFile != "" {
		b, err := os.ReadFile(spec.SchemaFile)
		if err != nil {
			return nil, fmt.Errorf("%w %q: schema_file: %w", ErrInvalidSpec, spec.Name, err)
		}
		if !json.Valid(b) {
			return nil, fmt.Errorf("%w %q: schema_file %s is not JSON", ErrInvalidSpec, spec.Name, spec.SchemaFile)
		}
		s.desc.InputSchema = b
	}
	s.confin = confinement(spec, landlockABI())
	return s, nil
}

// Descriptor returns the skill's name, version, description and schema.
func (s *Skill) Descriptor() skill.Descriptor { return s.desc }

// Confinement says what Landlock enforces for this skill on this kernel;
// log it when the skill is registered.
func (s *Skill) Confinement() Confinement { return s.confin }

// Spec returns the skill's spec, with defaults and argv[0] resolved.
func (s *Skill) Spec() Spec { return s.spec }

// Execute runs the program with the input's bytes on stdin and returns
// its stdout. It returns once every process of the program's group is
// gone (see the package doc for the one exception, ErrEscaped).
func (s *Skill) Execute(ctx context.Context, in skill.SkillInput) ([]byte, error) {
	if len(s.desc.InputSchema) > 0 && in.Kind == grid.InputRaw {
		return nil, fmt.Errorf("%w for skill %q: it takes JSON input that matches its schema, not raw bytes", skill.ErrInvalidInput, s.spec.Name)
	}
	return s.run(ctx, in.Data)
}

// shimSpec is the spec the shim gets for one run in dir, tmp if dir is
// the task's fresh working dir.
func (s *Skill) shimSpec(dir string, tmp bool) shim.Spec {
	l := s.spec.Limits
	sp := shim.Spec{
		Argv:        s.spec.Argv,
		Env:         s.env,
		Memory:      l.Memory,
		OpenFiles:   uint64(l.OpenFiles),
		Processes:   uint64(l.Processes),
		Landlock:    s.confin.LandlockABI > 0,
		FS:          s.confin.Filesystem,
		ReadOnly:    s.spec.FS.ReadOnly,
		ReadWrite:   s.spec.FS.ReadWrite,
		DenyNetwork: s.spec.DenyNetwork,
	}
	if l.CPUTime > 0 {
		sp.CPUSeconds = uint64((l.CPUTime + time.Second - 1) / time.Second)
	}
	if tmp && sp.FS {
		sp.ReadWrite = append(append([]string(nil), sp.ReadWrite...), dir)
	}
	return sp
}
