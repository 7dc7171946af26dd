package command

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"syscall"

	"golang.org/x/sys/unix"
)

// Fds of the shim, set up by start.
const (
	specFD   = 3 // the shimSpec as JSON; the shim reads it to EOF
	statusFD = 4 // close-on-exec: EOF alone means the program started
)

// maxShimSpec bounds the spec the shim reads.
const maxShimSpec = 1 << 20

// shimSpec is what the shim needs to confine and start the program.
type shimSpec struct {
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

// shimStatus is what the shim writes on statusFD when it fails.
type shimStatus struct {
	Error string `json:"error"`
}

// ShimMain is the hidden ShimArg command: it reads a spec on fd 3,
// confines itself as the spec says and executes the program, so it
// returns only on failure, after writing why on fd 4. It returns the exit
// code (126 when the program could not be executed, 125 for any other
// failure). A daemon calls it first thing in main when os.Args[1] is
// ShimArg, before it installs signal handlers or starts goroutines:
//
//	if len(os.Args) > 1 && os.Args[1] == command.ShimArg {
//		os.Exit(command.ShimMain(os.Args[2:]))
//	}
//
// args is unused today.
func ShimMain(args []string) int {
	_ = args
	// Every step that is per thread (no_new_privs, the exec) runs on this
	// one; Landlock is applied to every thread.
	runtime.LockOSThread()
	status := os.NewFile(statusFD, "status")
	if status == nil {
		fmt.Fprintln(os.Stderr, "cortexd: "+ShimArg+" is internal: the daemon runs it to start a command skill")
		return 125
	}
	syscall.CloseOnExec(statusFD)
	code, err := shim()
	b, _ := json.Marshal(shimStatus{Error: err.Error()})
	_, _ = status.Write(b)
	return code
}

// shim confines itself and executes the program; it returns only on
// failure, with the exit code and why.
func shim() (int, error) {
	f := os.NewFile(specFD, "spec")
	if f == nil {
		return 125, errors.New("no spec on fd 3")
	}
	b, err := io.ReadAll(io.LimitReader(f, maxShimSpec))
	_ = f.Close()
	if err != nil {
		return 125, fmt.Errorf("read spec: %w", err)
	}
	var sp shimSpec
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
func setLimits(sp shimSpec) error {
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
