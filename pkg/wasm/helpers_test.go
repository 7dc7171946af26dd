package wasm

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
)

// testDir holds what the whole test binary shares: the Go-built guest
// module and a compilation cache, so the guest compiles once per run.
var testDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "cortexd-wasm-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

func sharedCacheDir() string { return filepath.Join(testDir, "cache") }

// goBuild is one wasip1 module built from Go source under testdata, once
// per test binary.
type goBuild struct {
	once sync.Once
	b    []byte
	err  error
	skip string
}

var guest, reactor goBuild

// goTool finds the go command: on PATH, else in $GOROOT/bin (go test
// sets GOROOT for the test binary).
func goTool() (string, error) {
	p, err := exec.LookPath("go")
	if err == nil {
		return p, nil
	}
	if root := os.Getenv("GOROOT"); root != "" {
		if _, statErr := os.Stat(filepath.Join(root, "bin", "go")); statErr == nil {
			return filepath.Join(root, "bin", "go"), nil
		}
	}
	return "", err
}

// get builds ./testdata/<pkg> with GOOS=wasip1 GOARCH=wasm and extra build
// flags the first time, and skips the test if there is no go tool.
func (g *goBuild) get(t testing.TB, pkg string, flags ...string) []byte {
	t.Helper()
	g.once.Do(func() {
		gobin, err := goTool()
		if err != nil {
			g.skip = "no go tool to build wasip1 modules: " + err.Error()
			return
		}
		out := filepath.Join(testDir, pkg+".wasm")
		args := append(append([]string{"build"}, flags...), "-o", out, "./testdata/"+pkg)
		cmd := exec.Command(gobin, args...)
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			g.err = fmt.Errorf("build %s: %v\n%s", pkg, err, msg)
			return
		}
		g.b, g.err = os.ReadFile(out)
	})
	if g.skip != "" {
		t.Skip(g.skip)
	}
	if g.err != nil {
		t.Fatal(g.err)
	}
	return g.b
}

// guestModule returns testdata/guest, a WASI command.
func guestModule(t testing.TB) []byte { t.Helper(); return guest.get(t, "guest") }

// reactorModule returns testdata/reactor, a WASI reactor.
func reactorModule(t testing.TB) []byte {
	t.Helper()
	return reactor.get(t, "reactor", "-buildmode=c-shared")
}

// newEngine returns an engine on the shared cache, closed at cleanup.
func newEngine(t testing.TB, opts Options) *Engine {
	t.Helper()
	return newEngineAt(t, sharedCacheDir(), opts)
}

func newEngineAt(t testing.TB, dir string, opts Options) *Engine {
	t.Helper()
	e, err := NewEngine(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

// manifestFor returns a valid manifest of module under name.
func manifestFor(name string, module []byte, args ...string) Manifest {
	return Manifest{Name: skillID(name), Version: "1.0.0", Module: ModuleIDOf(module), Deterministic: true, Args: args}
}

// compile compiles module under m, failing the test on error.
func compile(t testing.TB, e *Engine, m Manifest, module []byte) *Program {
	t.Helper()
	p, err := e.Compile(context.Background(), m, module)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close(context.Background()) })
	return p
}
