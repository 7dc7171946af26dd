package wasm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// Store keeps modules and manifests on disk:
//
//	DIR/modules/<sha256>.wasm         module bytes, named by their hash
//	DIR/manifests/<name>@<version>.json
//
// Every write goes to a temporary file that is synced and renamed into
// place, so a crash leaves the old file or the new one, never half of one.
// A module's hash is checked when it is put and every time it is read. It
// is safe for concurrent use within one process; only one process may use
// a directory (the daemon's repo lock guarantees it).
type Store struct {
	dir       string
	maxModule Size

	mu sync.Mutex // serializes writes
}

// OpenStore opens (creating if needed) the store in dir. Modules over
// maxModule bytes are refused; zero means DefaultMaxModule.
func OpenStore(dir string, maxModule Size) (*Store, error) {
	if maxModule <= 0 {
		maxModule = DefaultMaxModule
	}
	for _, sub := range []string{"modules", "manifests"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o700); err != nil {
			return nil, fmt.Errorf("open wasm store: %w", err)
		}
	}
	return &Store{dir: dir, maxModule: maxModule}, nil
}

// Dir returns the store's directory.
func (s *Store) Dir() string { return s.dir }

func (s *Store) modulePath(id ModuleID) string {
	return filepath.Join(s.dir, "modules", id.String()+".wasm")
}

func (s *Store) manifestPath(name reputation.SkillID, version string) string {
	// Both are validated before any path is built: a SkillID has only
	// [a-z0-9_.-] and a version only [0-9A-Za-z.+-], neither '/' nor '@',
	// and neither starts with '.'.
	return filepath.Join(s.dir, "manifests", string(name)+"@"+version+".json")
}

// PutModule checks module (size cap, wasm magic) and stores it under its
// sha256, which it returns. Putting a module that is already there is a
// no-op. It does not compile the module: use Install for the whole check.
func (s *Store) PutModule(module []byte) (ModuleID, error) {
	id, err := checkModule(module, ModuleID{}, s.maxModule)
	if err != nil {
		return ModuleID{}, fmt.Errorf("store module: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	path := s.modulePath(id)
	if _, err := os.Stat(path); err == nil {
		return id, nil
	}
	if err := writeAtomic(path, module); err != nil {
		return ModuleID{}, fmt.Errorf("store module %s: %w", id.Short(), err)
	}
	return id, nil
}

// HasModule reports whether the module is stored (without reading it).
func (s *Store) HasModule(id ModuleID) bool {
	_, err := os.Stat(s.modulePath(id))
	return err == nil
}

// Module reads a module and checks that its bytes still hash to id. A
// missing module is ErrNotFound; a changed one is ErrHashMismatch.
func (s *Store) Module(id ModuleID) ([]byte, error) {
	path := s.modulePath(id)
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("module %s: %w", id.Short(), ErrNotFound)
	} else if err != nil {
		return nil, fmt.Errorf("read module %s: %w", id.Short(), err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(s.maxModule)+1))
	if err != nil {
		return nil, fmt.Errorf("read module %s: %w", id.Short(), err)
	}
	if Size(len(b)) > s.maxModule {
		return nil, fmt.Errorf("read module %s: %s is over the limit of %s: %w", id.Short(), path, s.maxModule, ErrModuleTooLarge)
	}
	if got := ModuleIDOf(b); got != id {
		return nil, fmt.Errorf("read module %s: %s was changed on disk (its sha256 is now %s); remove the skill and add it again: %w",
			id.Short(), path, got.Short(), ErrHashMismatch)
	}
	return b, nil
}

// PutManifest validates m and stores it. Its module must be stored first
// (ErrNotFound otherwise). Storing the same manifest again is a no-op; a
// different one with the same name and version is ErrExists.
func (s *Store) PutManifest(m Manifest) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return fmt.Errorf("store manifest of %q: %w", m.Name, err)
	}
	b = append(b, '\n')
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.HasModule(m.Module) {
		return fmt.Errorf("store manifest of %q: module %s: %w; store the module first", m.Name, m.Module.Short(), ErrNotFound)
	}
	path := s.manifestPath(m.Name, m.Version)
	if old, err := os.ReadFile(path); err == nil {
		if bytes.Equal(old, b) {
			return nil
		}
		return fmt.Errorf("store manifest: %q version %q is stored with other settings; remove it first: %w", m.Name, m.Version, ErrExists)
	}
	if err := writeAtomic(path, b); err != nil {
		return fmt.Errorf("store manifest of %q: %w", m.Name, err)
	}
	return nil
}

// Manifest reads the manifest of name at version.
func (s *Store) Manifest(name reputation.SkillID, version string) (Manifest, error) {
	if err := name.Validate(); err != nil {
		return Manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	if err := registryCheck(version, nil); err != nil {
		return Manifest{}, fmt.Errorf("read manifest of %q: %w", name, err)
	}
	return s.readManifest(s.manifestPath(name, version))
}

func (s *Store) readManifest(path string) (Manifest, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("manifest %s: %w", filepath.Base(path), ErrNotFound)
	} else if err != nil {
		return Manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	defer f.Close()
	m, err := DecodeManifest(f)
	if err != nil {
		return Manifest{}, fmt.Errorf("read %s: %w", path, err)
	}
	if want := string(m.Name) + "@" + m.Version + ".json"; filepath.Base(path) != want {
		return Manifest{}, fmt.Errorf("read %s: it holds %q version %q, so its name should be %s: %w", path, m.Name, m.Version, want, ErrInvalidManifest)
	}
	return m, nil
}

// Manifests returns every stored manifest, sorted by name then version.
// A manifest that cannot be read is left out and named in the error, so
// one bad file does not hide the others.
func (s *Store) Manifests() ([]Manifest, error) {
	paths, err := filepath.Glob(filepath.Join(s.dir, "manifests", "*.json"))
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	var out []Manifest
	var errs []error
	for _, p := range paths {
		m, err := s.readManifest(p)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		out = append(out, m)
	}
	slices.SortFunc(out, func(a, b Manifest) int {
		if c := strings.Compare(string(a.Name), string(b.Name)); c != 0 {
			return c
		}
		return strings.Compare(a.Version, b.Version)
	})
	return out, errors.Join(errs...)
}

// Serve returns the manifest (as stored, JSON) and the bytes of a stored
// module, checked against id, for serving to peers; ok is false if no
// stored manifest names id.
func (s *Store) Serve(id ModuleID) (manifest, module []byte, ok bool) {
	ms, _ := s.Manifests()
	for _, m := range ms {
		if m.Module != id {
			continue
		}
		man, err := os.ReadFile(s.manifestPath(m.Name, m.Version))
		if err != nil {
			return nil, nil, false
		}
		mod, err := s.Module(id)
		if err != nil {
			return nil, nil, false
		}
		return man, mod, true
	}
	return nil, nil, false
}

// Remove deletes the manifest of name at version, or every version of
// name if version is empty, and then each module no manifest still uses.
// It returns what it removed; nothing matching is ErrNotFound.
func (s *Store) Remove(name reputation.SkillID, version string) ([]Manifest, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	all, listErr := s.Manifests()
	var gone []Manifest
	used := map[ModuleID]bool{}
	for _, m := range all {
		if m.Name != name || (version != "" && m.Version != version) {
			used[m.Module] = true
			continue
		}
		if err := os.Remove(s.manifestPath(m.Name, m.Version)); err != nil {
			return gone, fmt.Errorf("remove %q version %q: %w", m.Name, m.Version, err)
		}
		gone = append(gone, m)
	}
	if len(gone) == 0 {
		what := fmt.Sprintf("%q", name)
		if version != "" {
			what += fmt.Sprintf(" version %q", version)
		}
		return nil, errors.Join(fmt.Errorf("remove wasm skill %s: %w", what, ErrNotFound), listErr)
	}
	for _, m := range gone {
		if !used[m.Module] {
			if err := os.Remove(s.modulePath(m.Module)); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return gone, fmt.Errorf("remove module %s: %w", m.Module.Short(), err)
			}
			used[m.Module] = true // removed once
		}
	}
	return gone, nil
}

// writeAtomic writes b to path through a synced temporary file in the same
// directory, renamed into place, and syncs the directory.
func writeAtomic(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = f.Close()
			_ = os.Remove(f.Name())
		}
	}()
	if _, err = f.Write(b); err != nil {
		return err
	}
	if err = f.Sync(); err != nil {
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	if err = os.Rename(f.Name(), path); err != nil {
		return err
	}
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
