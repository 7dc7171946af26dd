package command

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"

	"github.com/cortexgrid/cortexd/internal/progressline"
	"github.com/cortexgrid/cortexd/pkg/command/shim"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"golang.org/x/sys/unix"
)

// run runs the program once on input: it starts the shim as the leader
// of a new process group, waits for the leader to exit (SIGTERM then
// SIGKILL to the group when ctx or Spec.Timeout ends first), kills what
// is left of the group, reaps the leader and only then looks at the
// outcome.
func (s *Skill) run(parent context.Context, input []byte) ([]byte, error) {
	if err := parent.Err(); err != nil {
		return nil, fmt.Errorf("command skill %q not started: %w", s.spec.Name, err)
	}
	ctx, cancel := context.WithTimeout(parent, s.spec.Timeout)
	defer cancel()
	dir, tmp := s.spec.Dir, false
	if dir == "" {
		d, err := os.MkdirTemp(s.tmp, "cortexd-cmd-*")
		if err != nil {
			return nil, fmt.Errorf("command skill %q: make its working dir: %w", s.spec.Name, err)
		}
		defer os.RemoveAll(d)
		dir, tmp = d, true
	}
	p, err := s.start(dir, input, s.shimSpec(dir, tmp))
	if err != nil {
		return nil, fmt.Errorf("command skill %q: %w: %w", s.spec.Name, ErrStart, err)
	}
	stopKiller := context.AfterFunc(ctx, func() { p.group.terminate(s.grace) })

	var out outReader
	var stderr tailWriter
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); out.read(p.stdout, s.spec.MaxOutput, p.group.kill) }()
	// Progress lines (internal/progressline) are reports, not stderr.
	errw := progressline.NewWriter(&stderr, func(f float64, msg string) { skill.ReportProgress(parent, f, msg) })
	go func() { defer wg.Done(); _, _ = io.Copy(errw, p.stderr); _ = errw.Flush() }()

	status, _ := io.ReadAll(io.LimitReader(p.status, 64<<10)) // EOF at the exec
	_ = p.status.Close()
	waitExited(p.cmd.Process.Pid)
	p.group.kill() // no process of the group outlives its leader
	stopKiller()
	p.group.reaped()
	waitErr := p.cmd.Wait()
	// The group is gone, so the pipes are at EOF, unless a process that
	// left the group holds them: then stop reading after the grace.
	escaped := !waitTimeout(&wg, s.grace)
	_ = p.stdout.Close()
	_ = p.stderr.Close()
	wg.Wait()
	return s.outcome(parent, ctx, outcome{status: status, waitErr: waitErr, out: &out, stderr: &stderr, escaped: escaped})
}

// proc is one started shim and the parent's ends of its pipes.
type proc struct {
	cmd                    *exec.Cmd
	group                  *group
	stdout, stderr, status *os.File
}

// start starts the shim in dir with input on stdin and hands it sp.
func (s *Skill) start(dir string, input []byte, sp shim.Spec) (*proc, error) {
	b, err := json.Marshal(sp)
	if err != nil {
		return nil, err
	}
	var pipes [4][2]*os.File // spec, status, stdout, stderr: read, write
	closeAll := func() {
		for _, pp := range pipes {
			for _, f := range pp {
				if f != nil {
					_ = f.Close()
				}
			}
		}
	}
	for i := range pipes {
		if pipes[i][0], pipes[i][1], err = os.Pipe(); err != nil {
			closeAll()
			return nil, fmt.Errorf("make pipes: %w", err)
		}
	}
	cmd := &exec.Cmd{
		Path:       s.shim,
		Args:       append([]string{s.shim}, s.shimArgs...),
		Env:        []string{},
		Dir:        dir,
		Stdin:      bytes.NewReader(input),
		Stdout:     pipes[2][1],
		Stderr:     pipes[3][1],
		ExtraFiles: []*os.File{pipes[0][0], pipes[1][1]}, // fds 3 and 4
		SysProcAttr: &syscall.SysProcAttr{
			Setpgid:   true,
			Pdeathsig: syscall.SIGKILL,
		},
		// Bounds how long Wait waits for the stdin copy once the leader is
		// gone (a process outside the group may hold stdin).
		WaitDelay: s.grace,
	}
	if err := cmd.Start(); err != nil {
		closeAll()
		return nil, fmt.Errorf("start the shim %s: %w", s.shim, err)
	}
	for _, f := range []*os.File{pipes[0][0], pipes[1][1], pipes[2][1], pipes[3][1]} {
		_ = f.Close()
	}
	p := &proc{cmd: cmd, group: &group{pgid: cmd.Process.Pid}, status: pipes[1][0], stdout: pipes[2][0], stderr: pipes[3][0]}
	// The shim reads its spec first thing; if it died, the write fails
	// and the outcome says why.
	_, _ = pipes[0][1].Write(b)
	_ = pipes[0][1].Close()
	return p, nil
}

// group signals a process group until its leader is reaped: after that
// its ID may name another group. It is safe for concurrent use.
type group struct {
	mu    sync.Mutex
	pgid  int
	done  bool
	timer *time.Timer
}

func (g *group) signal(sig syscall.Signal) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done {
		_ = syscall.Kill(-g.pgid, sig)
	}
}

// terminate sends SIGTERM to the group, and SIGKILL after grace.
func (g *group) terminate(grace time.Duration) {
	g.signal(syscall.SIGTERM)
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.done {
		g.timer = time.AfterFunc(grace, g.kill)
	}
}

func (g *group) kill() { g.signal(syscall.SIGKILL) }

// reaped stops all signalling: the leader is about to be reaped.
func (g *group) reaped() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.done = true
	if g.timer != nil {
		g.timer.Stop()
	}
}

// waitExited waits until pid has exited without reaping it, so that its
// process group ID stays reserved while the group is killed.
func waitExited(pid int) {
	for {
		var info unix.Siginfo
		err := unix.Waitid(unix.P_PID, pid, &info, unix.WEXITED|unix.WNOWAIT, nil)
		if !errors.Is(err, syscall.EINTR) {
			return
		}
	}
}

// waitTimeout waits for wg at most d; it reports whether wg is done.
func waitTimeout(wg *sync.WaitGroup, d time.Duration) bool {
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// outReader reads stdout up to a cap.
type outReader struct {
	buf  []byte
	over bool
	err  error
}

// read reads r to EOF, keeping at most max bytes; at the first byte past
// max it calls kill and stops.
func (o *outReader) read(r io.Reader, max int64, kill func()) {
	chunk := make([]byte, 32<<10)
	for {
		n, err := r.Read(chunk)
		if int64(len(o.buf)+n) > max {
			o.over = true
			kill()
			return
		}
		o.buf = append(o.buf, chunk[:n]...)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				o.err = err
			}
			return
		}
	}
}

// outcome is what run saw.
type outcome struct {
	status  []byte
	waitErr error
	out     *outReader
	stderr  *tailWriter
	escaped bool
}

// outcome turns what run saw into the result, most telling first.
func (s *Skill) outcome(parent, ctx context.Context, o outcome) ([]byte, error) {
	name := s.spec.Name
	tail := o.stderr.String()
	switch {
	case o.out.over:
		return nil, fmt.Errorf("command skill %q wrote more than %d bytes to stdout (max_output); its process group was killed%s: %w",
			name, s.spec.MaxOutput, stderrSuffix(tail), ErrOutputTooLarge)
	case parent.Err() != nil && errors.Is(parent.Err(), context.Canceled):
		return nil, fmt.Errorf("command skill %q stopped: task canceled; its process group was killed%s: %w", name, stderrSuffix(tail), parent.Err())
	case parent.Err() != nil:
		return nil, fmt.Errorf("command skill %q stopped at the task's deadline; its process group was killed%s: %w", name, stderrSuffix(tail), parent.Err())
	case ctx.Err() != nil:
		return nil, fmt.Errorf("command skill %q stopped after its timeout of %s; its process group was killed%s: %w", name, s.spec.Timeout, stderrSuffix(tail), ctx.Err())
	case len(o.status) > 0:
		var st shim.Status
		msg := string(o.status)
		if json.Unmarshal(o.status, &st) == nil && st.Error != "" {
			msg = st.Error
		}
		return nil, fmt.Errorf("command skill %q: %w: %s", name, ErrStart, printable([]byte(msg)))
	case o.waitErr != nil:
		return nil, s.exitError(o.waitErr, tail)
	case o.escaped:
		return nil, fmt.Errorf("command skill %q: a process it started left its process group (setsid or setpgid) and still held its stdout or stderr %s after the group was killed; it was not killed and may still run: %w",
			name, s.grace, ErrEscaped)
	case o.out.err != nil:
		return nil, fmt.Errorf("command skill %q: read stdout: %w", name, o.out.err)
	}
	return o.out.buf, nil
}

// exitError describes a program that exited badly.
func (s *Skill) exitError(waitErr error, tail string) error {
	var ee *exec.ExitError
	if !errors.As(waitErr, &ee) {
		return fmt.Errorf("command skill %q: wait: %w", s.spec.Name, waitErr)
	}
	e := &ExitError{Skill: s.spec.Name, ExitCode: ee.ExitCode(), Stderr: tail}
	if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.ExitCode = -1
		e.Signal = unix.SignalName(ws.Signal())
		e.Hint = s.signalHint(ws.Signal())
	}
	return e
}

// signalHint names the limit a signal likely comes from.
func (s *Skill) signalHint(sig syscall.Signal) string {
	l := s.spec.Limits
	switch {
	case sig == syscall.SIGXCPU && l.CPUTime > 0:
		return fmt.Sprintf("its CPU time limit, limits.cpu_time %s", l.CPUTime)
	case sig == syscall.SIGKILL && l.CPUTime > 0:
		return fmt.Sprintf("not by cortexd: its CPU time limit, limits.cpu_time %s, if it ignored SIGXCPU; else the kernel's out-of-memory killer or another process", l.CPUTime)
	case sig == syscall.SIGKILL:
		return "not by cortexd: the kernel's out-of-memory killer, or another process"
	case (sig == syscall.SIGSEGV || sig == syscall.SIGABRT || sig == syscall.SIGBUS) && l.Memory > 0:
		return fmt.Sprintf("perhaps out of memory under limits.memory %d bytes", l.Memory)
	}
	return ""
}
