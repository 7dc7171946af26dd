package wasm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"sort"
	"sync"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/sys"

	"github.com/cortexgrid/cortexd/internal/progressline"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Program is a compiled module with its manifest and effective limits.
// Each Run instantiates it afresh, so nothing a run leaves in memory
// reaches the next. It is safe for concurrent use.
type Program struct {
	e      *Engine
	rt     wazero.Runtime
	cm     wazero.CompiledModule
	man    Manifest
	limits Limits
	base   wazero.ModuleConfig // everything but stdio and, if real, sleep

	mu     sync.RWMutex
	closed bool
}

func newProgram(e *Engine, rt wazero.Runtime, cm wazero.CompiledModule, m Manifest, lim Limits) *Program {
	// An anonymous instance: many may run at once in one runtime.
	cfg := wazero.NewModuleConfig().WithName("").WithArgs(append([]string{string(m.Name)}, m.Args...)...)
	keys := make([]string, 0, len(m.Env))
	for k := range m.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		cfg = cfg.WithEnv(k, m.Env[k])
	}
	if !m.Deterministic {
		cfg = cfg.WithSysWalltime().WithSysNanotime().WithRandSource(rand.Reader)
	}
	return &Program{e: e, rt: rt, cm: cm, man: m, limits: lim, base: cfg}
}

// Manifest returns the program's manifest.
func (p *Program) Manifest() Manifest { return p.man }

// Limits returns the limits each run has: the manifest's, defaulted and
// clamped by the engine's options.
func (p *Program) Limits() Limits { return p.limits }

// deterministicSeed seeds the random source of every run of a
// deterministic module, so that each run (on any node) reads the same
// bytes. wazero's own default is deterministic too, but seeding it costs
// about 10us per instance, a quarter of the floor of a small module; a
// ChaCha8 costs next to nothing to set up.
var deterministicSeed = sha256.Sum256([]byte("cortexd wasm deterministic random source v1"))

// errOutputCap is the cause of the cancellation that stops a module which
// wrote past its output limit.
var errOutputCap = errors.New("output limit reached")

// Run runs the module once: input on stdin, the output is what it wrote
// to stdout. It returns when the module exits, traps, or is stopped at
// the earlier of ctx's deadline and the program's timeout. Errors:
//   - ErrInputTooLarge: input is over the input limit (the module does not run);
//   - *RunError (ErrFailed): a non-zero exit or a trap, with the end of stderr;
//   - ErrOutputTooLarge: the module wrote past its output limit and was stopped;
//   - context.DeadlineExceeded or context.Canceled: stopped by ctx or the timeout;
//   - ErrClosed: the program or its engine is closed.
func (p *Program) Run(ctx context.Context, input []byte) ([]byte, error) {
	name := p.man.Name
	if Size(len(input)) > p.limits.Input {
		return nil, fmt.Errorf("wasm skill %q: input is %d bytes, over its limit of %s: %w", name, len(input), p.limits.Input, ErrInputTooLarge)
	}
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.closed {
		return nil, fmt.Errorf("run wasm skill %q: %w", name, ErrClosed)
	}
	parent := ctx
	ctx, cancelTimeout := context.WithTimeout(ctx, time.Duration(p.limits.Timeout))
	defer cancelTimeout()
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	stdout := &capWriter{max: int(p.limits.Output), stop: cancel}
	var stderr tailWriter
	// Progress lines (internal/progressline) are reports, not stderr.
	errw := progressline.NewWriter(&stderr, func(f float64, msg string) { skill.ReportProgress(parent, f, msg) })
	cfg := p.base.WithStdin(bytes.NewReader(input)).WithStdout(stdout).WithStderr(errw)
	if p.man.Deterministic {
		cfg = cfg.WithRandSource(mrand.NewChaCha8(deterministicSeed))
	} else {
		cfg = cfg.WithNanosleep(ctxSleep(ctx))
	}
	mod, err := p.rt.InstantiateModule(ctx, p.cm, cfg)
	if mod != nil {
		// A module that returns from _start without proc_exit stays open.
		_ = mod.Close(context.Background())
	}
	_ = errw.Flush()
	return p.outcome(parent, ctx, err, stdout, &stderr)
}

// outcome turns what InstantiateModule returned into Run's result.
func (p *Program) outcome(parent, ctx context.Context, err error, stdout *capWriter, stderr *tailWriter) ([]byte, error) {
	name := p.man.Name
	var exit *sys.ExitError
	errors.As(err, &exit)
	switch {
	case stdout.over:
		// First: a module may ignore the failed write and exit 0 before
		// the cancellation reaches it.
		return nil, fmt.Errorf("wasm skill %q wrote more than its output limit of %s to stdout; it was stopped: %w", name, p.limits.Output, ErrOutputTooLarge)
	case exit != nil && exit.ExitCode() == exitCodeClosed && p.e.isClosed():
		return nil, fmt.Errorf("run wasm skill %q: stopped by Close: %w", name, ErrClosed)
	case err == nil, exit != nil && exit.ExitCode() == 0:
		return stdout.buf.Bytes(), nil
	case ctx.Err() != nil:
		return nil, p.ctxError(parent, ctx, stderr)
	case p.e.isClosed():
		return nil, fmt.Errorf("run wasm skill %q: %w", name, ErrClosed)
	case exit != nil:
		return nil, &RunError{Skill: name, ExitCode: exit.ExitCode(), Stderr: stderr.String(), MemoryLimit: p.limits.Memory}
	}
	return nil, &RunError{Skill: name, Trap: trapText(err), Stderr: stderr.String(), MemoryLimit: p.limits.Memory}
}

// ctxError explains why ctx ended the run: the task's own deadline or
// cancellation (parent), or the program's timeout.
func (p *Program) ctxError(parent, ctx context.Context, stderr *tailWriter) error {
	tail := ""
	if s := stderr.String(); s != "" {
		tail = "; stderr: " + s
	}
	switch err := parent.Err(); {
	case errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("wasm skill %q stopped at the task's deadline%s: %w", p.man.Name, tail, err)
	case err != nil:
		return fmt.Errorf("wasm skill %q stopped: task canceled%s: %w", p.man.Name, tail, err)
	}
	return fmt.Errorf("wasm skill %q stopped after its timeout of %s%s: %w", p.man.Name, p.limits.Timeout, tail, ctx.Err())
}

// ctxSleep is a real sleep that ends early when ctx is done, so that a
// module sleeping in a host call cannot outlive its deadline.
func ctxSleep(ctx context.Context) func(ns int64) {
	return func(ns int64) {
		t := time.NewTimer(time.Duration(ns))
		defer t.Stop()
		select {
		case <-ctx.Done():
		case <-t.C:
		}
	}
}

// Close frees the compiled code after waiting for the runs in progress.
// Later runs fail with ErrClosed. It is idempotent.
func (p *Program) Close(ctx context.Context) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	return p.cm.Close(ctx)
}

// capWriter collects stdout up to max bytes. A write past max is refused
// whole (nothing of it is copied) and stops the module through stop, so
// that a module writing without end fails at once and costs no memory.
type capWriter struct {
	buf  bytes.Buffer
	max  int
	over bool
	stop context.CancelCauseFunc
}

func (w *capWriter) Write(b []byte) (int, error) {
	if w.over || len(b) > w.max-w.buf.Len() {
		w.over = true
		w.stop(errOutputCap)
		return 0, errOutputCap
	}
	return w.buf.Write(b)
}

// stderrHead is how many of the first bytes of stderr a RunError keeps
// besides the tail: Go's runtime, for one, prints "fatal error: out of
// memory" first and then kilobytes of goroutine traces.
const stderrHead = 512

// tailWriter keeps the first stderrHead and the last StderrTail bytes
// written to it. Its buffers are allocated on the first write: most runs
// write nothing to stderr.
type tailWriter struct {
	head []byte
	buf  []byte // ring of StderrTail bytes once allocated
	next int    // where the next byte goes in buf
	full bool   // the ring has wrapped
	n    int64  // bytes written in all
}

func (w *tailWriter) Write(b []byte) (int, error) {
	n := len(b)
	if w.buf == nil {
		w.buf = make([]byte, StderrTail)
		w.head = make([]byte, 0, stderrHead)
	}
	if room := stderrHead - len(w.head); room > 0 {
		w.head = append(w.head, b[:min(room, len(b))]...)
	}
	w.n += int64(n)
	if len(b) >= StderrTail {
		copy(w.buf, b[len(b)-StderrTail:])
		w.next, w.full = 0, true
		return n, nil
	}
	c := copy(w.buf[w.next:], b)
	if c < len(b) {
		copy(w.buf, b[c:])
		w.full = true
	}
	w.next = (w.next + len(b)) % StderrTail
	if w.next == 0 && len(b) > 0 {
		w.full = true
	}
	return n, nil
}

// tail returns the last StderrTail bytes (fewer if fewer were written).
func (w *tailWriter) tail() []byte {
	if !w.full {
		return w.buf[:w.next]
	}
	out := make([]byte, 0, StderrTail)
	out = append(out, w.buf[w.next:]...)
	return append(out, w.buf[:w.next]...)
}

// String returns the tail, made printable (see printable). If stderr was
// longer than the tail, the head comes first, then a line that says how
// much was skipped.
func (w *tailWriter) String() string {
	if w.buf == nil {
		return ""
	}
	skipped := w.n - int64(len(w.head)) - StderrTail
	if skipped <= 0 {
		return printable(w.tail())
	}
	return printable(w.head) + fmt.Sprintf("\n[... %d bytes ...]\n", skipped) + printable(w.tail())
}
