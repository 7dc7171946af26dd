package command

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/cortexgrid/cortexd/pkg/command/shim"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire"
)

// Defaults for a Spec's zero fields and Options.
const (
	DefaultTimeout   = 60 * time.Second
	DefaultMaxOutput = wire.MaxTaskOutput
	DefaultKillGrace = 2 * time.Second
)

// ShimArg is the hidden first argument that makes the daemon's binary run
// ShimMain instead of its command line.
const ShimArg = shim.Arg

// ShimMain is the hidden ShimArg command: it reads a task's spec on fd 3,
// confines itself and executes the program (see shim.Main). A daemon calls
// it first thing in main, before it installs signal handlers or starts
// goroutines:
//
//	if len(os.Args) > 1 && os.Args[1] == command.ShimArg {
//		os.Exit(command.ShimMain(os.Args[2:]))
//	}
func ShimMain(args []string) int { return shim.Main(args) }

// Spec is one command skill, as the operator configures it. The zero value
// of every optional field means "not set": no limit, no rule.
type Spec struct {
	// Name is the skill's ID and Version its version.
	Name        reputation.SkillID
	Version     string
	Description string
	// Argv is the program and its arguments. A program name without a
	// slash is looked up in the daemon's PATH once, by New.
	Argv []string
	// SchemaFile, if set, is a JSON Schema (draft 2020-12) file for the
	// input: New reads it, the executor checks JSON inputs against it, and
	// the skill then refuses raw inputs.
	SchemaFile string
	// Timeout bounds one run; a task's own deadline may end it sooner.
	// Zero: DefaultTimeout.
	Timeout time.Duration
	// MaxOutput bounds the bytes read from stdout: a program that writes
	// more is killed and the task fails. Zero: DefaultMaxOutput, which is
	// also the most allowed (wire.MaxTaskOutput).
	MaxOutput int64
	// Env lists the names of the daemon's environment variables the
	// program gets, with the values the daemon had when New ran. Every
	// other variable is left out.
	Env []string
	// Dir is the program's working directory. Empty: a fresh directory
	// under Options.TempDir for each task, removed after it (and, when
	// FS rules apply, read-write for the program).
	Dir string
	// Limits are the program's resource limits.
	Limits Limits
	// FS, if it lists any path, confines the program's filesystem access
	// with Landlock: it may read (and execute) only beneath FS.ReadOnly,
	// and read and write only beneath FS.ReadWrite and its fresh working
	// dir. The program itself and its shared libraries must be readable:
	// list e.g. /usr, /bin, /lib and /lib64.
	FS FSRules
	// DenyNetwork forbids TCP connect and bind (Landlock ABI 4, Linux
	// 6.7+), UDP (ABI 10), and connecting to abstract Unix sockets made
	// outside the task (ABI 6). It does not cover Multipath TCP sockets,
	// or pathname Unix sockets unless FS rules apply.
	DenyNetwork bool
}

// Limits are per-process resource limits (setrlimit) set on the program;
// every process it forks starts with the same limits. Zero: no limit.
type Limits struct {
	// Memory is the address space in bytes (RLIMIT_AS): mapped memory,
	// not resident memory; runtimes that reserve large areas up front
	// (Go, Java, V8) need room above their real use.
	Memory int64
	// CPUTime is the CPU time of each process, rounded up to whole
	// seconds (RLIMIT_CPU): SIGXCPU at the limit, SIGKILL a second later.
	CPUTime time.Duration
	// OpenFiles is the number of file descriptors (RLIMIT_NOFILE).
	OpenFiles int
	// Processes is RLIMIT_NPROC: the number of processes (threads
	// included) the daemon's user may have in all, counted across every
	// process of that user, the daemon's own threads among them. Linux
	// does not apply it to root.
	Processes int
}

// FSRules are the paths a program may use when Landlock applies. Each
// must be absolute and exist when New runs; a directory covers
// everything beneath it.
type FSRules struct {
	ReadOnly  []string
	ReadWrite []string
}

// empty reports whether no path is listed.
func (f FSRules) empty() bool { return len(f.ReadOnly) == 0 && len(f.ReadWrite) == 0 }

// Options are the node-wide settings of command skills.
type Options struct {
	// Shim is the binary that runs ShimMain (or shim.Main) when its first
	// argument is ShimArg. Empty: os.Executable(), the daemon itself. A
	// binary of package shim alone starts faster (see package shim).
	Shim string
	// ShimArgs come before ShimArg on the shim's command line. A test
	// binary that runs ShimMain from a test function, rather than from
	// TestMain, selects it with them: []string{"-test.run=^TestShim$"}.
	ShimArgs []string
	// KillGrace is how long the program's process group has between
	// SIGTERM and SIGKILL on a deadline or cancel. Zero: DefaultKillGrace.
	KillGrace time.Duration
	// TempDir is where the per-task working dirs are made. Empty:
	// os.TempDir().
	TempDir string
}

var envName = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// withDefaults returns s with its zero fields defaulted.
func (s Spec) withDefaults() Spec {
	if s.Timeout == 0 {
		s.Timeout = DefaultTimeout
	}
	if s.MaxOutput == 0 {
		s.MaxOutput = DefaultMaxOutput
	}
	return s
}

// validate joins every problem of s (defaulted) into one error that wraps
// ErrInvalidSpec; each names the field. It stats the paths it names.
func (s Spec) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if err := s.Name.Validate(); err != nil {
		bad("name: %v", err)
	}
	if s.Version == "" {
		bad("version is empty; set it, e.g. \"1.0.0\"")
	}
	if len(s.Argv) == 0 || s.Argv[0] == "" {
		bad("argv is empty; give the program and its arguments, e.g. [\"/usr/bin/jq\", \".\"]")
	}
	if s.Timeout < 0 {
		bad("timeout is %s; it must be more than 0", s.Timeout)
	}
	if s.MaxOutput < 0 || s.MaxOutput > wire.MaxTaskOutput {
		bad("max_output is %d bytes; it must be from 1 to %d (one task output, wire.MaxTaskOutput)", s.MaxOutput, wire.MaxTaskOutput)
	}
	for i, n := range s.Env {
		if !envName.MatchString(n) {
			bad("env[%d] %q is not a variable name (letters, digits and _, not starting with a digit)", i, n)
		}
	}
	if s.Dir != "" {
		if fi, err := os.Stat(s.Dir); err != nil {
			bad("dir: %v", err)
		} else if !fi.IsDir() {
			bad("dir %s is not a directory", s.Dir)
		}
	}
	l := s.Limits
	if l.Memory < 0 || l.CPUTime < 0 || l.OpenFiles < 0 || l.Processes < 0 {
		bad("limits: a limit is negative (memory %d, cpu_time %s, open_files %d, processes %d); use 0 for none", l.Memory, l.CPUTime, l.OpenFiles, l.Processes)
	}
	if l.Memory > 0 && l.Memory < minMemory {
		bad("limits.memory is %d bytes; below %d (4 MiB) no program starts", l.Memory, minMemory)
	}
	if l.OpenFiles > 0 && l.OpenFiles < 4 {
		bad("limits.open_files is %d; a program needs at least 4 (stdin, stdout, stderr and one)", l.OpenFiles)
	}
	for _, list := range []struct {
		key   string
		paths []string
	}{{"fs.read_only", s.FS.ReadOnly}, {"fs.read_write", s.FS.ReadWrite}} {
		for i, p := range list.paths {
			if !filepath.IsAbs(p) {
				bad("%s[%d] %q is not an absolute path", list.key, i, p)
				continue
			}
			if _, err := os.Stat(p); err != nil {
				bad("%s[%d]: %v", list.key, i, err)
			}
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w %q: %w", ErrInvalidSpec, s.Name, err)
	}
	return nil
}

// minMemory is the lowest Limits.Memory accepted.
const minMemory = 4 << 20
