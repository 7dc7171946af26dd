package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
)

// wasmMagic starts every WebAssembly binary: "\0asm", then version 1.
var wasmMagic = []byte{0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00}

// exitCodeClosed is the exit code Close gives modules it stops, so that
// Run tells them from a module that exited 0.
const exitCodeClosed = 0xdfffffff

// wasiModule is the only import namespace a module may use.
const wasiModule = wasi_snapshot_preview1.ModuleName

// Engine compiles and runs wasm modules with wazero (pure Go; it uses
// wazero's compiler where the platform has one, else its interpreter).
// Compiled code is cached in memory and, given a cache directory, on disk,
// so that a restarted node does not compile a module again.
//
// An Engine keeps one wazero runtime per distinct memory limit (the limit
// is a runtime setting in wazero); they share one compilation cache, so a
// module is compiled once whatever its limit. It is safe for concurrent use.
type Engine struct {
	opts  Options
	log   *slog.Logger
	cache wazero.CompilationCache

	compileMu sync.Mutex // one compile at a time: wazero compiles a racing duplicate twice

	mu       sync.Mutex
	closed   bool
	runtimes map[uint32]wazero.Runtime // by memory limit in pages
}

// NewEngine returns an engine with opts' caps and defaults. cacheDir is
// the directory of the on-disk compilation cache, created if missing;
// empty keeps compiled code in memory only. wazero names a subdirectory
// after its version, so an upgrade starts a fresh cache beside the old
// one (remove stale ones by hand). Only this node may write there.
func NewEngine(cacheDir string, opts Options) (*Engine, error) {
	o, err := opts.withDefaults()
	if err != nil {
		return nil, fmt.Errorf("new wasm engine: %w", err)
	}
	cache := wazero.NewCompilationCache()
	if cacheDir != "" {
		if cache, err = wazero.NewCompilationCacheWithDir(cacheDir); err != nil {
			return nil, fmt.Errorf("new wasm engine: compilation cache in %s: %w", cacheDir, err)
		}
	}
	return &Engine{opts: o, log: o.Logger.With("subsystem", "wasm"), cache: cache, runtimes: map[uint32]wazero.Runtime{}}, nil
}

// Options returns the engine's options with defaults filled in.
func (e *Engine) Options() Options { return e.opts }

// Limits returns the limits a module with manifest limits m runs with.
func (e *Engine) Limits(m Limits) Limits { return e.opts.effective(m) }

// runtime returns the runtime for a memory limit of pages, creating it.
func (e *Engine) runtime(ctx context.Context, pages uint32) (wazero.Runtime, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, ErrClosed
	}
	if rt, ok := e.runtimes[pages]; ok {
		return rt, nil
	}
	cfg := wazero.NewRuntimeConfig().
		WithCompilationCache(e.cache).
		WithMemoryLimitPages(pages).
		// A task's deadline must stop a module that loops without calling
		// the host; doc.go has the measured cost and why it is always on.
		WithCloseOnContextDone(true)
	rt := wazero.NewRuntimeWithConfig(ctx, cfg)
	if _, err := wasi_snapshot_preview1.Instantiate(ctx, rt); err != nil {
		_ = rt.Close(ctx)
		return nil, fmt.Errorf("instantiate WASI: %w", err)
	}
	e.runtimes[pages] = rt
	return rt, nil
}

// CheckModule checks module bytes without compiling them: the size cap,
// the wasm magic and, if want is set, that their sha256 is want. It
// returns their ID.
func (e *Engine) CheckModule(module []byte, want ModuleID) (ModuleID, error) {
	return checkModule(module, want, e.opts.MaxModule)
}

func checkModule(module []byte, want ModuleID, maxSize Size) (ModuleID, error) {
	if Size(len(module)) > maxSize {
		return ModuleID{}, fmt.Errorf("module is %d bytes (%s), over this node's limit of %s (wasm max_module): %w",
			len(module), Size(len(module)), maxSize, ErrModuleTooLarge)
	}
	if !bytes.HasPrefix(module, wasmMagic) {
		return ModuleID{}, fmt.Errorf("module does not start with the wasm magic \\0asm and version 1 (first bytes %q); give the .wasm file a compiler wrote, e.g. GOOS=wasip1 GOARCH=wasm go build: %w",
			module[:min(len(module), 8)], ErrNotWasm)
	}
	id := ModuleIDOf(module)
	if !want.IsZero() && id != want {
		return id, fmt.Errorf("module sha256 is %s, expected %s: %w", id, want, ErrHashMismatch)
	}
	return id, nil
}

// Compile checks module against m (size cap, wasm magic, sha256 equal to
// m.Module), compiles it (or loads it from the cache) and returns a
// program that runs it under the limits Limits(m.Limits) gives. The
// module must be a WASI preview1 command: it exports _start and memory,
// and imports nothing but wasi_snapshot_preview1 functions. A module
// whose declared memory is above the memory limit does not compile.
func (e *Engine) Compile(ctx context.Context, m Manifest, module []byte) (*Program, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	if _, err := checkModule(module, m.Module, e.opts.MaxModule); err != nil {
		return nil, fmt.Errorf("compile wasm skill %q: %w", m.Name, err)
	}
	lim := e.opts.effective(m.Limits)
	rt, err := e.runtime(ctx, lim.pages())
	if err != nil {
		return nil, fmt.Errorf("compile wasm skill %q: %w", m.Name, err)
	}
	e.compileMu.Lock()
	cm, err := rt.CompileModule(ctx, module)
	e.compileMu.Unlock()
	if err != nil {
		if e.isClosed() {
			return nil, fmt.Errorf("compile wasm skill %q: %w", m.Name, ErrClosed)
		}
		return nil, fmt.Errorf("compile wasm skill %q (module %s, memory limit %s): %v: %w", m.Name, m.Module.Short(), lim.Memory, err, ErrCompile)
	}
	if err := checkCommand(cm); err != nil {
		_ = cm.Close(ctx)
		return nil, fmt.Errorf("compile wasm skill %q (module %s): %w", m.Name, m.Module.Short(), err)
	}
	e.log.Debug("compiled wasm skill", "skill", m.Name, "version", m.Version, "module", m.Module.Short(),
		"memory", lim.Memory, "timeout", lim.Timeout)
	return newProgram(e, rt, cm, m, lim), nil
}

// checkCommand refuses modules this node cannot run as a WASI command.
func checkCommand(cm wazero.CompiledModule) error {
	var bad []string
	for _, f := range cm.ImportedFunctions() {
		if mod, name, _ := f.Import(); mod != wasiModule {
			bad = append(bad, mod+"."+name)
		}
	}
	for _, mem := range cm.ImportedMemories() {
		mod, name, _ := mem.Import()
		bad = append(bad, mod+"."+name+" (memory)")
	}
	if len(bad) > 0 {
		sort.Strings(bad)
		if len(bad) > 5 {
			bad = append(bad[:5], "...")
		}
		return fmt.Errorf("module imports %v; only %s functions are provided: %w", bad, wasiModule, ErrCompile)
	}
	if _, ok := cm.ExportedFunctions()["_start"]; !ok {
		return fmt.Errorf("module exports no _start: it must be a WASI command (Go: GOOS=wasip1 GOARCH=wasm go build; reactors and libraries are not supported): %w", ErrCompile)
	}
	if len(cm.ExportedMemories()) == 0 {
		return fmt.Errorf("module exports no memory, so WASI cannot pass it stdin or read its stdout: %w", ErrCompile)
	}
	return nil
}

func (e *Engine) isClosed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}

// Close closes every runtime, which stops modules that are running (their
// Run returns ErrClosed) and frees every program's compiled code, then
// the compilation cache; the files of the on-disk cache stay. Close the
// executor first, so that no task is cut short. Close is idempotent.
func (e *Engine) Close(ctx context.Context) error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	rts := e.runtimes
	e.runtimes = nil
	e.mu.Unlock()
	var errs []error
	for _, rt := range rts {
		errs = append(errs, rt.CloseWithExitCode(ctx, exitCodeClosed))
	}
	errs = append(errs, e.cache.Close(ctx))
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("close wasm engine: %w", err)
	}
	return nil
}
