package wasm

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/cortexgrid/cortexd/pkg/skill"
)

// The daemon's path: an engine with its cache under the repo, a store
// beside it, a skill installed from a manifest and a module, and every
// stored skill loaded again after a restart.
func Example() {
	ctx := context.Background()
	repo, _ := os.MkdirTemp("", "repo-")
	defer os.RemoveAll(repo)

	engine, _ := NewEngine(filepath.Join(repo, "wasm", "cache"), Options{Max: Limits{Memory: 128 * MiB}})
	store, _ := OpenStore(filepath.Join(repo, "wasm"), 0)
	module := echoModule() // bytes of a .wasm file, e.g. from GOOS=wasip1 GOARCH=wasm go build
	m := Manifest{Name: "text.echo", Version: "1.0.0", Module: ModuleIDOf(module), Deterministic: true,
		Limits: Limits{Memory: GiB, Timeout: Duration(5e9)}}
	p, err := Install(ctx, engine, store, m, module)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("memory limit:", p.Limits().Memory, "timeout:", p.Limits().Timeout)
	_ = engine.Close(ctx)

	// After a restart.
	engine, _ = NewEngine(filepath.Join(repo, "wasm", "cache"), Options{})
	defer engine.Close(ctx)
	progs, _ := Load(ctx, engine, store)
	reg := skill.NewRegistry()
	for _, p := range progs {
		_ = reg.Register(NewSkill(p))
	}
	s, _ := reg.Lookup("text.echo", "")
	out, err := s.Execute(ctx, skill.RawInput([]byte("hi from wasm")))
	fmt.Printf("%s %v\n", out, err)
	// Output:
	// memory limit: 128MiB timeout: 5s
	// hi from wasm <nil>
}
