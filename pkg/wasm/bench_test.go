package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/imports/wasi_snapshot_preview1"
	"github.com/tetratelabs/wazero/sys"
)

// Benchmarks. Run them on a quiet machine, e.g.
//
//	go test -run '^$' -bench 'PerTask' -benchmem ./pkg/wasm/
//	go test -run '^$' -bench 'CloseOnContextDone' ./pkg/wasm/
//	go test -run '^$' -bench 'Compile' -benchtime 5x ./pkg/wasm/
//
// Each reports its baseline in the same run.

var benchInput = []byte(`{"text":"hello, grid"}`)

// sinkOut keeps results alive.
var sinkOut []byte

// BenchmarkPerTask is the cost of one task: a Go function (the floor of
// any skill), the built-in echo through the executor, the hand-written
// echo module (the wasm floor: instantiate, WASI, run, close) directly and
// through the executor, and the Go-built guest (its runtime's start-up
// dominates). The parallel variants give tasks/s on all cores.
func BenchmarkPerTask(b *testing.B) {
	ctx := context.Background()
	e := newEngine(b, Options{})
	echo := echoModule()
	pEcho := compile(b, e, manifestFor("echo.wasm", echo), echo)
	reg := skill.NewRegistry()
	for _, s := range skill.Builtins(skill.BuiltinOptions{}) {
		if err := reg.Register(s); err != nil {
			b.Fatal(err)
		}
	}
	if err := reg.Register(NewSkill(pEcho)); err != nil {
		b.Fatal(err)
	}
	ex, err := skill.NewExecutor(reg, "")
	if err != nil {
		b.Fatal(err)
	}
	in := skill.RawInput(benchInput)
	viaExecutor := func(id string) func(b *testing.B) {
		return func(b *testing.B) {
			task := skill.NewSkillTask(skillID(id), in, "")
			for b.Loop() {
				res := ex.Run(ctx, task)
				if !res.Success {
					b.Fatal(res.Error)
				}
				sinkOut = res.Output
			}
			reportRate(b)
		}
	}
	direct := func(p *Program) func(b *testing.B) {
		return func(b *testing.B) {
			for b.Loop() {
				out, err := p.Run(ctx, benchInput)
				if err != nil {
					b.Fatal(err)
				}
				sinkOut = out
			}
			reportRate(b)
		}
	}
	parallel := func(p *Program) func(b *testing.B) {
		return func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := p.Run(ctx, benchInput); err != nil {
						b.Error(err)
						return
					}
				}
			})
			reportRate(b)
		}
	}
	b.Run("baseline=go-func", func(b *testing.B) {
		f := func(in []byte) []byte { return bytes.Clone(in) }
		for b.Loop() {
			sinkOut = f(benchInput)
		}
		reportRate(b)
	})
	b.Run("baseline=builtin-echo/executor", viaExecutor("echo"))
	b.Run("wasm-minimal/direct", direct(pEcho))
	b.Run("wasm-minimal/executor", viaExecutor("echo.wasm"))
	b.Run("wasm-minimal/parallel", parallel(pEcho))
	if b.Failed() {
		return
	}
	goMod := guestModule(b)
	pGo := compile(b, e, manifestFor("text.upper", goMod), goMod)
	b.Run("wasm-go/direct", direct(pGo))
	b.Run("wasm-go/parallel", parallel(pGo))
}

func reportRate(b *testing.B) {
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "tasks/s")
}

// BenchmarkCloseOnContextDone runs CPU-bound modules with wazero's
// WithCloseOnContextDone off (the baseline) and on (what Engine uses): a
// hand-written tight counting loop (100M iterations of load, sub, store,
// compare, branch: the worst case of wazero issue 2466), and the Go-built
// guest chaining 100k sha256s (Go code with calls and inner loops).
func BenchmarkCloseOnContextDone(b *testing.B) {
	b.Run("tight-loop", func(b *testing.B) { benchCloseOnDone(b, countModule(100_000_000), nil, 100e6) })
	b.Run("go-sha256-chain", func(b *testing.B) { benchCloseOnDone(b, guestModule(b), []string{"guest", "busy"}, 0) })
}

func benchCloseOnDone(b *testing.B, mod []byte, args []string, iterations float64) {
	ctx := context.Background()
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("close-on-done=%v", on), func(b *testing.B) {
			rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(on))
			defer rt.Close(ctx)
			wasi_snapshot_preview1.MustInstantiate(ctx, rt)
			cm, err := rt.CompileModule(ctx, mod)
			if err != nil {
				b.Fatal(err)
			}
			cfg := wazero.NewModuleConfig().WithName("").WithArgs(args...)
			for b.Loop() {
				m, err := rt.InstantiateModule(ctx, cm, cfg)
				if err != nil && !errors.Is(err, sys.NewExitError(0)) {
					b.Fatal(err)
				}
				if m != nil {
					_ = m.Close(ctx)
				}
			}
			if iterations > 0 {
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/iterations, "ns/iteration")
			}
		})
	}
}

// BenchmarkCompile compares compiling the Go-built guest with an empty
// cache directory (cold) against a new engine on a directory that already
// holds it (a restarted node). Each op includes NewEngine and Close.
func BenchmarkCompile(b *testing.B) {
	ctx := context.Background()
	mod := guestModule(b)
	m := manifestFor("text.upper", mod)
	once := func(b *testing.B, dir string) {
		e, err := NewEngine(dir, Options{})
		if err != nil {
			b.Fatal(err)
		}
		p, err := e.Compile(ctx, m, mod)
		if err != nil {
			b.Fatal(err)
		}
		_ = p.Close(ctx)
		_ = e.Close(ctx)
	}
	b.Run("cold", func(b *testing.B) {
		for b.Loop() {
			b.StopTimer()
			dir := b.TempDir()
			b.StartTimer()
			once(b, dir)
		}
	})
	b.Run("cache-hit-after-restart", func(b *testing.B) {
		dir := b.TempDir()
		once(b, dir)
		for b.Loop() {
			once(b, dir)
		}
	})
}

// BenchmarkReactor answers whether a reactor ABI (one instance kept alive,
// an export called per task) is worth it for Go-built modules: a fresh
// instance of the Go command per task (what Run does) against one call
// into a kept-alive Go reactor doing the same work, both under the
// Engine's runtime settings. The reactor reuses its heap and globals from
// task to task.
func BenchmarkReactor(b *testing.B) {
	ctx := context.Background()
	e := newEngine(b, Options{})
	cmd := guestModule(b)
	p := compile(b, e, manifestFor("text.upper", cmd), cmd)
	b.Run("baseline=fresh-command-instance", func(b *testing.B) {
		for b.Loop() {
			if _, err := p.Run(ctx, []byte("hello, grid")); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("reactor-call", func(b *testing.B) {
		rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().WithCloseOnContextDone(true).
			WithCompilationCache(e.cache))
		defer rt.Close(ctx)
		wasi_snapshot_preview1.MustInstantiate(ctx, rt)
		mod, err := rt.InstantiateWithConfig(ctx, reactorModule(b), wazero.NewModuleConfig().WithName("").
			WithStartFunctions("_initialize"))
		if err != nil {
			b.Fatal(err)
		}
		run := mod.ExportedFunction("run")
		for b.Loop() {
			if _, err := run.Call(ctx, 1); err != nil {
				b.Fatal(err)
			}
		}
	})
}
