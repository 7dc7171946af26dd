package wasm

import (
	"context"
	"errors"
	"fmt"
)

// Install compiles module against m (so a module that does not match its
// hash, is not wasm, is too large or does not compile is never stored),
// then stores the module and the manifest. The caller registers
// NewSkill(p) and owns p.
func Install(ctx context.Context, e *Engine, s *Store, m Manifest, module []byte) (*Program, error) {
	p, err := e.Compile(ctx, m, module)
	if err != nil {
		return nil, fmt.Errorf("install wasm skill: %w", err)
	}
	if _, err := s.PutModule(module); err != nil {
		_ = p.Close(ctx)
		return nil, fmt.Errorf("install wasm skill %q: %w", m.Name, err)
	}
	if err := s.PutManifest(m); err != nil {
		_ = p.Close(ctx)
		return nil, fmt.Errorf("install wasm skill %q: %w", m.Name, err)
	}
	return p, nil
}

// Load compiles every stored manifest's module (a cache hit after the
// first time) and returns the programs. A manifest that fails (unreadable,
// module missing or changed, no longer compiles under this node's
// options) is skipped and named in the error; the others still load, so
// one bad skill does not keep a daemon from starting.
func Load(ctx context.Context, e *Engine, s *Store) ([]*Program, error) {
	ms, err := s.Manifests()
	errs := []error{err}
	var out []*Program
	for _, m := range ms {
		mod, err := s.Module(m.Module)
		if err != nil {
			errs = append(errs, fmt.Errorf("load wasm skill %q version %q: %w", m.Name, m.Version, err))
			continue
		}
		p, err := e.Compile(ctx, m, mod)
		if err != nil {
			errs = append(errs, fmt.Errorf("load wasm skill %q version %q: %w", m.Name, m.Version, err))
			continue
		}
		out = append(out, p)
	}
	return out, errors.Join(errs...)
}
