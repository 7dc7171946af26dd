package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"runtime"
	"sync"
	"testing"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/command"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// testInstaller is a skillInstaller on a registry with the built-ins and
// a fresh wasm store and engine.
func testInstaller(t *testing.T) *skillInstaller {
	t.Helper()
	dir := t.TempDir()
	reg := skill.NewRegistry()
	for _, s := range skill.Builtins(skill.BuiltinOptions{}) {
		if err := reg.Register(s); err != nil {
			t.Fatal(err)
		}
	}
	def := config.Default()
	eng, err := wasm.NewEngine(filepath.Join(dir, "cache"), def.Wasm.WasmOptions())
	if err != nil {
		t.Fatal(err)
	}
	st, err := wasm.OpenStore(dir, eng.Options().MaxModule)
	if err != nil {
		t.Fatal(err)
	}
	d := &daemon{registry: reg, wasmStore: st, wasmEngine: eng, log: slog.New(slog.DiscardHandler)}
	inst := &skillInstaller{d: d, register: reg.Register}
	t.Cleanup(func() {
		_ = eng.Close(context.Background())
		inst.closing.Wait()
	})
	return inst
}

func hiManifest(name, version string) wasm.Manifest {
	return wasm.Manifest{Name: reputation.SkillID(name), Version: version, Module: wasm.ModuleIDOf(hiModule)}
}

func TestInstallerRemovesTheStoredModuleWhenRegisterFails(t *testing.T) {
	inst := testInstaller(t)
	inst.register = func(skill.Skill) error { return fmt.Errorf("register: %w", skill.ErrDuplicateSkill) }
	_, err := inst.Install(context.Background(), hiManifest("text.hi", "1.0.0"), hiModule)
	if !errors.Is(err, skill.ErrDuplicateSkill) {
		t.Fatalf("Install: %v, want the Register error", err)
	}
	ms, _ := inst.d.wasmStore.Manifests()
	if len(ms) != 0 || inst.d.wasmStore.HasModule(wasm.ModuleIDOf(hiModule)) {
		t.Fatalf("after a failed Register the store holds %v (module there: %v)", ms, inst.d.wasmStore.HasModule(wasm.ModuleIDOf(hiModule)))
	}
	if inst.d.registry.Has("text.hi") {
		t.Fatal("the skill is registered")
	}
}

func TestInstallerConcurrentAddsOfOneNameStoreOne(t *testing.T) {
	inst := testInstaller(t)
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = inst.Install(context.Background(), hiManifest("text.hi", fmt.Sprintf("1.0.%d", i)), hiModule)
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case !errors.Is(err, api.ErrSkillExists):
			t.Errorf("Install: %v, want success or ErrSkillExists", err)
		}
	}
	ms, _ := inst.d.wasmStore.Manifests()
	if ok != 1 || len(ms) != 1 {
		t.Fatalf("%d adds succeeded and %d manifests are stored, want 1 and 1", ok, len(ms))
	}
	info, found := inst.Describe("text.hi")
	if !found || info.Kind != apiv1.SkillWasm || info.Manifest.Version != ms[0].Version {
		t.Fatalf("Describe: %+v %v, stored %+v", info, found, ms[0])
	}
}

func TestInstallerRemoveUnregistersAndClosesTheProgram(t *testing.T) {
	inst := testInstaller(t)
	if _, err := inst.Install(context.Background(), hiManifest("text.hi", "1.0.0"), hiModule); err != nil {
		t.Fatal(err)
	}
	sk, err := inst.d.registry.Lookup("text.hi", "")
	if err != nil {
		t.Fatal(err)
	}
	gone, err := inst.Remove(context.Background(), "text.hi", "")
	if err != nil || len(gone) != 1 {
		t.Fatalf("Remove: %+v, %v", gone, err)
	}
	if inst.d.registry.Has("text.hi") {
		t.Fatal("still registered")
	}
	// The program closes once its runs end (none here): a caller that
	// still holds the skill is refused, not run on freed code.
	inst.closing.Wait()
	if out, err := sk.Execute(context.Background(), skill.RawInput(nil)); !errors.Is(err, wasm.ErrClosed) {
		t.Fatalf("Execute after Remove: %q, %v; want ErrClosed", out, err)
	}
	if _, err := inst.Remove(context.Background(), "text.hi", ""); !errors.Is(err, wasm.ErrNotFound) {
		t.Fatalf("second Remove: %v, want ErrNotFound", err)
	}
	if _, err := inst.Remove(context.Background(), "echo", ""); !errors.Is(err, api.ErrNotRemovable) {
		t.Fatalf("Remove(echo): %v, want ErrNotRemovable", err)
	}
}

func TestInstallerDescribesEachKind(t *testing.T) {
	inst := testInstaller(t)
	if _, err := inst.Install(context.Background(), hiManifest("text.hi", "1.0.0"), hiModule); err != nil {
		t.Fatal(err)
	}
	want := map[reputation.SkillID]string{"echo": apiv1.SkillBuiltin, "text.hi": apiv1.SkillWasm}
	if runtime.GOOS == "linux" {
		cs, err := command.New(command.Spec{Name: "cmd.true", Version: "1.0.0", Argv: []string{"true"}}, command.Options{})
		if err != nil {
			t.Fatal(err)
		}
		if err := inst.d.registry.Register(cs); err != nil {
			t.Fatal(err)
		}
		want["cmd.true"] = apiv1.SkillCommand
		if _, err := inst.Remove(context.Background(), "cmd.true", ""); !errors.Is(err, api.ErrNotRemovable) {
			t.Errorf("Remove(cmd.true): %v, want ErrNotRemovable", err)
		}
		if _, err := inst.Install(context.Background(), hiManifest("cmd.true", "2.0.0"), hiModule); !errors.Is(err, api.ErrSkillExists) {
			t.Errorf("Install over a command skill: %v, want ErrSkillExists", err)
		}
	}
	for id, kind := range want {
		if info, ok := inst.Describe(id); !ok || info.Kind != kind {
			t.Errorf("Describe(%s) = %+v, %v; want kind %s", id, info, ok, kind)
		}
	}
	if _, ok := inst.Describe("no.such"); ok {
		t.Error("Describe of an unregistered skill is ok")
	}
}
