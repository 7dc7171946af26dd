package main

import (
	"context"
	"path/filepath"
	"time"

	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// openWasm opens the wasm skill store (DIR/wasm) and the engine, whose
// compilation cache is DIR/wasm/cache, and registers every stored wasm
// skill. A stored skill that fails to load or register is logged and
// skipped: one bad module does not keep the node down. The engine closes
// after the coordinator (which closes the executor), so no task is cut
// short. (The file is not named *_wasm.go: Go would read that as a
// GOARCH=wasm build constraint.)
func (d *daemon) openWasm(ctx context.Context) error {
	dir := filepath.Join(d.dir, "wasm")
	eng, err := wasm.NewEngine(filepath.Join(dir, "cache"), wasm.Options{Logger: d.log.With("subsystem", "wasm")})
	if err != nil {
		return err
	}
	d.addCloser("wasm engine", func() error { return eng.Close(context.Background()) })
	st, err := wasm.OpenStore(dir, eng.Options().MaxModule)
	if err != nil {
		return err
	}
	d.wasmStore, d.wasmEngine = st, eng
	start := time.Now()
	progs, err := wasm.Load(ctx, eng, st)
	if err != nil {
		d.log.Error("some stored wasm skills were not loaded; fix or remove them under "+dir, "err", err)
	}
	for _, p := range progs {
		m := p.Manifest()
		if err := d.registry.Register(wasm.NewSkill(p)); err != nil {
			d.log.Error("stored wasm skill not registered", "skill", m.Name, "version", m.Version, "err", err)
			_ = p.Close(ctx)
			continue
		}
		d.log.Info("wasm skill loaded", "skill", m.Name, "version", m.Version, "module", m.Module.Short(),
			"memory", p.Limits().Memory, "timeout", p.Limits().Timeout)
	}
	if len(progs) > 0 {
		d.log.Info("wasm skills ready", "count", len(progs), "took", time.Since(start).Round(time.Millisecond))
	}
	return nil
}
