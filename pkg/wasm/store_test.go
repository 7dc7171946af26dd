package wasm

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func openStore(t testing.TB, max Size) *Store {
	t.Helper()
	s, err := OpenStore(t.TempDir(), max)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestStoreKeepsModulesByHashAndChecksThemOnRead(t *testing.T) {
	s := openStore(t, 0)
	mod := echoModule()
	id, err := s.PutModule(mod)
	if err != nil {
		t.Fatal(err)
	}
	if id != ModuleIDOf(mod) || !s.HasModule(id) {
		t.Fatalf("stored as %s, want %s", id, ModuleIDOf(mod))
	}
	if _, err := s.PutModule(mod); err != nil {
		t.Fatalf("putting it again: %v", err)
	}
	got, err := s.Module(id)
	if err != nil || !bytes.Equal(got, mod) {
		t.Fatalf("read back %d bytes, %v", len(got), err)
	}
	// Change it behind the store's back: the read must notice.
	path := filepath.Join(s.Dir(), "modules", id.String()+".wasm")
	if err := os.WriteFile(path, append(bytes.Clone(mod), 0), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Module(id); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("reading a changed module: %v, want ErrHashMismatch", err)
	}
	if _, err := s.Module(ModuleIDOf([]byte("absent"))); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reading a missing module: %v, want ErrNotFound", err)
	}
	if tmp, _ := filepath.Glob(filepath.Join(s.Dir(), "modules", ".tmp-*")); len(tmp) != 0 {
		t.Fatalf("temporary files left behind: %v", tmp)
	}
}

func TestStoreRefusesModulesThatAreNotWasmOrTooLarge(t *testing.T) {
	s := openStore(t, 1*KiB)
	if _, err := s.PutModule([]byte("MZ\x90\x00 a windows program")); !errors.Is(err, ErrNotWasm) {
		t.Fatalf("not wasm: %v, want ErrNotWasm", err)
	}
	big := append(bytes.Clone(wasmMagic), make([]byte, 2*KiB)...)
	_, err := s.PutModule(big)
	if !errors.Is(err, ErrModuleTooLarge) || !strings.Contains(err.Error(), "1KiB") {
		t.Fatalf("oversized: %v, want ErrModuleTooLarge naming the 1KiB limit", err)
	}
	if files, _ := os.ReadDir(filepath.Join(s.Dir(), "modules")); len(files) != 0 {
		t.Fatalf("a refused module left %d files", len(files))
	}
}

func TestStoreManifestsListGetAndRemove(t *testing.T) {
	s := openStore(t, 0)
	modA, modB := echoModule(), exitModule()
	if err := s.PutManifest(manifestFor("text.a", modA)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a manifest before its module: %v, want ErrNotFound", err)
	}
	for _, m := range [][]byte{modA, modB} {
		if _, err := s.PutModule(m); err != nil {
			t.Fatal(err)
		}
	}
	a1 := manifestFor("text.a", modA)
	a2 := manifestFor("text.a", modA)
	a2.Version = "2.0.0"
	b1 := manifestFor("text.b", modB)
	for _, m := range []Manifest{b1, a2, a1} {
		if err := s.PutManifest(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutManifest(a1); err != nil {
		t.Fatalf("the same manifest again: %v", err)
	}
	changed := a1
	changed.Limits.Memory = 8 * MiB
	if err := s.PutManifest(changed); !errors.Is(err, ErrExists) {
		t.Fatalf("a different manifest under the same name and version: %v, want ErrExists", err)
	}
	list, err := s.Manifests()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range list {
		names = append(names, string(m.Name)+"@"+m.Version)
	}
	if got := strings.Join(names, " "); got != "text.a@1.0.0 text.a@2.0.0 text.b@1.0.0" {
		t.Fatalf("listed %s", got)
	}
	if got, err := s.Manifest("text.a", "2.0.0"); err != nil || got.Version != "2.0.0" || got.Module != ModuleIDOf(modA) {
		t.Fatalf("get: %+v, %v", got, err)
	}

	// Removing one version keeps the module the other still uses.
	if gone, err := s.Remove("text.a", "1.0.0"); err != nil || len(gone) != 1 {
		t.Fatalf("remove text.a@1.0.0: %v, %v", gone, err)
	}
	if !s.HasModule(ModuleIDOf(modA)) {
		t.Fatal("a module still in use was removed")
	}
	// Removing every version of a name removes its module too.
	if gone, err := s.Remove("text.a", ""); err != nil || len(gone) != 1 {
		t.Fatalf("remove text.a: %v, %v", gone, err)
	}
	if s.HasModule(ModuleIDOf(modA)) {
		t.Fatal("a module no manifest uses was kept")
	}
	if _, err := s.Remove("text.a", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("removing it again: %v, want ErrNotFound", err)
	}
	if !s.HasModule(ModuleIDOf(modB)) {
		t.Fatal("another skill's module was removed")
	}
}

func TestStoreListSkipsABadManifestAndNamesIt(t *testing.T) {
	s := openStore(t, 0)
	mod := echoModule()
	if _, err := s.PutModule(mod); err != nil {
		t.Fatal(err)
	}
	if err := s.PutManifest(manifestFor("good.one", mod)); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(s.Dir(), "manifests", "bad.one@1.0.0.json")
	if err := os.WriteFile(bad, []byte(`{"name":"bad.one"`), 0o600); err != nil {
		t.Fatal(err)
	}
	list, err := s.Manifests()
	if len(list) != 1 || list[0].Name != "good.one" {
		t.Fatalf("listed %+v", list)
	}
	if !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), bad) {
		t.Fatalf("error %v does not name %s", err, bad)
	}
}

func TestInstallStoresOnlyModulesThatCompileAndLoadRestoresThem(t *testing.T) {
	ctx := context.Background()
	e := newEngine(t, Options{})
	s := openStore(t, 0)
	mod := echoModule()
	wrongHash := manifestFor("text.echo", mod)
	wrongHash.Module = ModuleIDOf([]byte("something else"))
	if _, err := Install(ctx, e, s, wrongHash, mod); !errors.Is(err, ErrHashMismatch) {
		t.Fatalf("install with a wrong hash: %v, want ErrHashMismatch", err)
	}
	noStart := buildModule(modSpec{minPages: 1, start: "main"})
	if _, err := Install(ctx, e, s, manifestFor("text.nostart", noStart), noStart); !errors.Is(err, ErrCompile) {
		t.Fatalf("install of a module without _start: %v, want ErrCompile", err)
	}
	if list, _ := s.Manifests(); len(list) != 0 || s.HasModule(ModuleIDOf(noStart)) {
		t.Fatalf("a refused install left %d manifests or its module", len(list))
	}
	p, err := Install(ctx, e, s, manifestFor("text.echo", mod), mod)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close(ctx)

	// A second manifest whose module is then damaged on disk: Load skips
	// it, names it, and still loads the good one.
	exitMod := exitModule()
	if _, err := Install(ctx, e, s, manifestFor("text.exit", exitMod), exitMod); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir(), "modules", ModuleIDOf(exitMod).String()+".wasm"), []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	e2 := newEngine(t, Options{})
	progs, err := Load(ctx, e2, s)
	if len(progs) != 1 || progs[0].Manifest().Name != "text.echo" {
		t.Fatalf("loaded %d programs", len(progs))
	}
	if !errors.Is(err, ErrHashMismatch) || !strings.Contains(err.Error(), "text.exit") {
		t.Fatalf("load error %v does not name the damaged skill", err)
	}
	out, err := progs[0].Run(ctx, []byte("after restart"))
	if err != nil || string(out) != "after restart" {
		t.Fatalf("run after load: %q, %v", out, err)
	}
}
