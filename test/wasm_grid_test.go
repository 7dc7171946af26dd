package test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

var wasmGuest struct {
	once sync.Once
	b    []byte
	err  error
	skip string
}

// wasmGuestModule builds pkg/wasm/testdata/guest with GOOS=wasip1
// GOARCH=wasm once per test binary; it skips without a go tool.
func wasmGuestModule(t testing.TB) []byte {
	t.Helper()
	wasmGuest.once.Do(func() {
		gobin, err := exec.LookPath("go")
		if err != nil && os.Getenv("GOROOT") != "" {
			gobin, err = filepath.Join(os.Getenv("GOROOT"), "bin", "go"), nil
		}
		if err != nil {
			wasmGuest.skip = "no go tool to build the wasip1 guest: " + err.Error()
			return
		}
		dir, err := os.MkdirTemp("", "cortexd-wasm-guest-")
		if err != nil {
			wasmGuest.err = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "guest.wasm")
		cmd := exec.Command(gobin, "build", "-o", out, "../pkg/wasm/testdata/guest")
		cmd.Env = append(os.Environ(), "GOOS=wasip1", "GOARCH=wasm", "CGO_ENABLED=0")
		if msg, err := cmd.CombinedOutput(); err != nil {
			wasmGuest.err = &buildError{err: err, out: string(msg)}
			return
		}
		wasmGuest.b, wasmGuest.err = os.ReadFile(out)
	})
	if wasmGuest.skip != "" {
		t.Skip(wasmGuest.skip)
	}
	if wasmGuest.err != nil {
		t.Fatal(wasmGuest.err)
	}
	return wasmGuest.b
}

type buildError struct {
	err error
	out string
}

func (e *buildError) Error() string { return "build wasm guest: " + e.err.Error() + "\n" + e.out }

// wasmSkill compiles the guest as skill name running mode.
func wasmSkill(t testing.TB, e *wasm.Engine, name, mode string, lim wasm.Limits) skill.Skill {
	t.Helper()
	mod := wasmGuestModule(t)
	m := wasm.Manifest{Name: reputation.SkillID(name), Version: "1.0.0", Module: wasm.ModuleIDOf(mod),
		Deterministic: true, Args: []string{mode}, Limits: lim}
	p, err := e.Compile(context.Background(), m, mod)
	if err != nil {
		t.Fatal(err)
	}
	return wasm.NewSkill(p)
}

// TestWasmSkillRunsOnTheNodeThatHasIt: a Go-built wasm skill on b runs
// for a task submitted on a, and its failures reach a with their codes
// and the module's stderr, while b stays healthy.
func TestWasmSkillRunsOnTheNodeThatHasIt(t *testing.T) {
	e, err := wasm.NewEngine(t.TempDir(), wasm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	skills := []skill.Skill{
		wasmSkill(t, e, "text.upper", "upper", wasm.Limits{}),
		wasmSkill(t, e, "wasm.exit", "exit", wasm.Limits{}),
		wasmSkill(t, e, "wasm.loop", "loop", wasm.Limits{Timeout: wasm.Duration(time.Minute)}),
		wasmSkill(t, e, "wasm.flood", "flood", wasm.Limits{Output: wasm.MiB}),
	}
	b := newHarnessNode(t, harnessConfig{skills: skills})
	a := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{b}})
	for _, s := range skills {
		a.awaitOffer(t, s.Descriptor().ID, b.ID)
	}

	res := a.run(t, skill.NewSkillTask("text.upper", skill.RawInput([]byte("hello, grid")), a.ID))
	if string(res.Output) != "HELLO, GRID" || res.ExecutedBy != b.ID {
		t.Fatalf("output %q from %s; want HELLO, GRID from b", res.Output, res.ExecutedBy.ShortString())
	}

	tests := []struct {
		name    string
		skill   reputation.SkillID
		timeout time.Duration
		code    grid.ErrorCode
		says    string
	}{
		{name: "a non-zero exit is execution_failed with the module's stderr", skill: "wasm.exit",
			code: grid.CodeExecutionFailed, says: "boom: bad input"},
		{name: "a module that loops forever is stopped at the task's deadline", skill: "wasm.loop",
			timeout: time.Second, code: grid.CodeTimeout, says: "deadline"},
		{name: "a module writing 1 GiB is stopped at its output limit", skill: "wasm.flood",
			code: grid.CodeExecutionFailed, says: "output limit of 1MiB"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			task := skill.NewSkillTask(tt.skill, skill.RawInput(nil), a.ID).WithMaxRetries(0)
			if tt.timeout > 0 {
				task.WithTimeout(tt.timeout)
			}
			res, err := a.wait(t, a.submit(t, task))
			if err == nil {
				t.Fatalf("task succeeded with %q", res.Output)
			}
			if res == nil || res.Code != tt.code || !strings.Contains(res.Error, tt.says) {
				t.Fatalf("result %+v, error %v; want code %v saying %q", res, err, tt.code, tt.says)
			}
		})
	}

	// b is still healthy.
	res = a.run(t, skill.NewSkillTask("text.upper", skill.RawInput([]byte("again")), a.ID))
	if string(res.Output) != "AGAIN" {
		t.Fatalf("after the failures: output %q", res.Output)
	}
}
