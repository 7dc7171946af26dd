package shim

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"

	"github.com/landlock-lsm/go-landlock/landlock"
	llsys "github.com/landlock-lsm/go-landlock/landlock/syscall"
	"golang.org/x/sys/unix"
)

// Fds of the shim, as its parent sets them up.
const (
	SpecFD   = 3 // the Spec as JSON; the shim reads it to EOF
	StatusFD = 4 // close-on-exec: EOF alone means the program started
)

// maxSpec bounds the spec the shim reads.
const maxSpec = 1 << 20

// Spec is what the shim needs to confine and start the program.
type Spec struct {
	Argv        []string `json:"argv"`
	Env         []string `json:"env"`
	Memory      int64    `json:"memory,omitempty"`
	CPUSeconds  uint64   `json:"cpu_seconds,omitempty"`
	OpenFiles   uint64   `json:"open_files,omitempty"`
	Processes   uint64   `json:"processes,omitempty"`
	Landlock    bool     `json:"landlock"` // apply Landlock at all
	FS          bool     `json:"fs"`       // restrict the filesystem
	ReadOnly    []string `json:"read_only,omitempty"`
	ReadWrite   []string `json:"read_write,omitempty"`
	DenyNetwork bool     `json:"deny_network,omitempty"`
}

// Status is what the shim writes on StatusFD when it fails.
type Status struct {
	Error string `json:"error"`
}

// Main is the hidden Arg command: it reads a spec on fd 3,
// confines itself as the spec says and executes the program, so it
// returns only on failure, after writing why on fd 4. It returns the exit
// code (126 when the program could not be executed, 125 for any other
// failure). A daemon calls it first thing in main when os.Args[1] is
// Arg, before it installs signal handlers or starts goroutines:
//
//	if len(os.Args) > 1 && os.Args[1] == shim.Arg {
//		os.Exit(shim.Main(os.Args[2:]))
//	}
//
// args is unused today.
func Main(args []string) int {
	_ = args
	// Every step that is per thread (no_new_privs, the exec) runs on this
	// one; Landlock is applied to every thread.
	runtime.LockOSThread()
	status := os.NewFile(StatusFD, "status")
	if status == nil {
		fmt.Fprintln(os.Stderr, "cortexd: "+Arg+" is internal: the daemon runs it to start a command skill")
		return 125
	}
	syscall.CloseOnExec(StatusFD)
	code, err := shim()
	b, _ := json.Marshal(Status{Error: err.Error()})
	_, _ = status.Write(b)
	return code
}

// shim confines itself and executes the program; it returns only on
// failure, with the exit code and why.
func shim() (int, error) {
	f := os.NewFile(SpecFD, "spec")
	if f == nil {
		return 125, errors.New("no spec on fd 3")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSpec))
	_ = f.Close()
	if err != nil {
		return 125, fmt.Errorf("read spec: %w", err)
	}
	var sp Spec
	if err := json.Unmarshal(b, &sp); err != nil {
		return 125, fmt.Errorf("decode spec: %w", err)
	}
	if len(sp.Argv) == 0 {
		return 125, errors.New("spec has no argv")
	}
	if sp.Landlock {
		if err := restrictLandlock(sp); err != nil {
			return 125, fmt.Errorf("apply Landlock rules: %w", err)
		}
	}
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return 125, fmt.Errorf("set no_new_privs: %w", err)
	}
	// Limits last: below them the Go runtime itself may fail to map
	// memory or start a thread.
	if err := setLimits(sp); err != nil {
		return 125, err
	}
	err = syscall.Exec(sp.Argv[0], sp.Argv, sp.Env)
	hint := ""
	if errors.Is(err, syscall.EACCES) && sp.FS {
		hint = " (with fs rules, the program and its libraries must be beneath fs.read_only, e.g. /usr, /bin, /lib, /lib64)"
	}
	return 126, fmt.Errorf("exec %s: %w%s", sp.Argv[0], err, hint)
}

// setLimits sets the spec's rlimits (soft and hard) and a core size of 0.
func setLimits(sp Spec) error {
	set := func(name string, res int, cur, max uint64) error {
		if err := syscall.Setrlimit(res, &syscall.Rlimit{Cur: cur, Max: max}); err != nil {
			return fmt.Errorf("set %s to %d: %w", name, cur, err)
		}
		return nil
	}
	if err := set("core size", unix.RLIMIT_CORE, 0, 0); err != nil {
		return err
	}
	if sp.OpenFiles > 0 {
		if err := set("limits.open_files", unix.RLIMIT_NOFILE, sp.OpenFiles, sp.OpenFiles); err != nil {
			return err
		}
	}
	if sp.CPUSeconds > 0 {
		if err := set("limits.cpu_time", unix.RLIMIT_CPU, sp.CPUSeconds, sp.CPUSeconds+1); err != nil {
			return err
		}
	}
	if sp.Memory > 0 {
		if err := set("limits.memory", unix.RLIMIT_AS, uint64(sp.Memory), uint64(sp.Memory)); err != nil {
			return err
		}
	}
	if sp.Processes > 0 {
		if err := set("limits.processes", unix.RLIMIT_NPROC, sp.Processes, sp.Processes); err != nil {
			return err
		}
	}
	return nil
}

// restrictLandlock confines the shim (and so the program) as sp says, as
// far as the kernel can (best effort). It runs in the shim.
func restrictLandlock(sp Spec) error {
	cfg := landlock.Config{Scoped: landlock.V11.Scoped &^ scopeAbstractUnix}
	var rules []landlock.Rule
	if sp.FS {
		cfg.HandledAccessFS = landlock.V11.HandledAccessFS
		for _, p := range sp.ReadOnly {
			r, err := pathRule(p, false)
			if err != nil {
				return err
			}
			rules = append(rules, r)
		}
		for _, p := range sp.ReadWrite {
			r, err := pathRule(p, true)
			if err != nil {
				return err
			}
			rules = append(rules, r)
		}
	}
	if sp.DenyNetwork {
		cfg.HandledAccessNet = landlock.V11.HandledAccessNet
		cfg.Scoped = landlock.V11.Scoped
	}
	return cfg.BestEffort().Restrict(rules...)
}

// scopeAbstractUnix is the abstract Unix socket scope, which only
// DenyNetwork sets.
const scopeAbstractUnix = landlock.ScopedSet(llsys.ScopeAbstractUnixSocket)

// pathRule allows p, a directory or a file, read-only or read-write.
func pathRule(p string, rw bool) (landlock.Rule, error) {
	fi, err := os.Stat(p)
	if err != nil {
		return nil, err
	}
	switch {
	case fi.IsDir() && rw:
		return landlock.RWDirs(p).WithRefer(), nil
	case fi.IsDir():
		return landlock.RODirs(p), nil
	case rw:
		return landlock.RWFiles(p), nil
	}
	return landlock.ROFiles(p), nil
}
