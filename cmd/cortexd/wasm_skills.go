package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/command"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/modules"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
	"github.com/libp2p/go-libp2p/core/peer"
)

// openWasm opens the wasm skill store (DIR/wasm) and the engine, whose
// compilation cache is DIR/wasm/cache, with the limits of the wasm config
// section, and registers every stored wasm skill. A stored skill that
// fails to load or register is logged and skipped: one bad module does
// not keep the node down. The engine closes after the coordinator (which
// closes the executor), so no task is cut short. (The file is not named
// *_wasm.go: Go would read that as a GOARCH=wasm build constraint.)
func (d *daemon) openWasm(ctx context.Context) error {
	dir := filepath.Join(d.dir, "wasm")
	opts := d.cfg.Wasm.WasmOptions()
	opts.Logger = d.log // the engine adds subsystem=wasm itself
	eng, err := wasm.NewEngine(filepath.Join(dir, "cache"), opts)
	if err != nil {
		return err
	}
	inst := &skillInstaller{d: d, register: d.registry.Register}
	d.addCloser("wasm engine", func() error {
		err := eng.Close(context.Background())
		inst.closing.Wait() // Close stopped what still ran of removed skills
		return err
	})
	st, err := wasm.OpenStore(dir, eng.Options().MaxModule)
	if err != nil {
		return err
	}
	d.wasmStore, d.wasmEngine, d.installer = st, eng, inst
	cacheBytes, _ := wasm.ParseSize(d.cfg.Skills.ModuleCache) // validated by config.Load
	if d.moduleCache, err = modules.OpenCache(filepath.Join(dir, "fetched"), int64(cacheBytes)); err != nil {
		return fmt.Errorf("open the fetched-module cache: %w", err)
	}
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

// skillInstaller is the daemon as the API's api.SkillInstaller: it adds
// wasm skills to the store and the registry, and removes them, one change
// at a time.
type skillInstaller struct {
	d *daemon
	// register is d.registry.Register unless a test fails it.
	register func(skill.Skill) error

	mu      sync.Mutex     // serializes Install and Remove
	closing sync.WaitGroup // programs of removed skills, closing once their runs end
}

var _ api.SkillInstaller = (*skillInstaller)(nil)

// MaxModule implements api.SkillInstaller: wasm.max_module.
func (s *skillInstaller) MaxModule() int64 { return int64(s.d.wasmEngine.Options().MaxModule) }

// Install implements api.SkillInstaller. It refuses a name that is built
// in (enabled or not: enabling it later would clash) or registered, or
// whose version is stored already (a skill that failed to load at
// startup); then wasm.Install checks, compiles and stores the module, and
// the skill is registered. If Register fails, the stored manifest (and
// its module, unless another manifest uses it) is removed again.
func (s *skillInstaller) Install(ctx context.Context, m wasm.Manifest, module []byte) (api.SkillInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.d
	if slices.Contains(builtinNames, string(m.Name)) {
		return api.SkillInfo{}, fmt.Errorf("add wasm skill %q: that is a built-in skill's name; pick another: %w", m.Name, api.ErrSkillExists)
	}
	if info, ok := s.Describe(m.Name); ok {
		var ver string
		if sk, err := d.registry.Lookup(m.Name, ""); err == nil {
			ver = sk.Descriptor().Version
		}
		hint := "pick another name"
		if info.Kind == apiv1.SkillWasm {
			hint = fmt.Sprintf("remove it first with `cortexd skill rm %s`, or pick another name", m.Name)
		}
		return api.SkillInfo{}, fmt.Errorf("add wasm skill %q: %s skill %q version %q is registered here; %s: %w",
			m.Name, info.Kind, m.Name, ver, hint, api.ErrSkillExists)
	}
	if _, err := d.wasmStore.Manifest(m.Name, m.Version); err == nil {
		return api.SkillInfo{}, fmt.Errorf("add wasm skill %q: version %q is stored under %s but was not loaded (the daemon's log says why); remove it first with `cortexd skill rm %s@%s`: %w",
			m.Name, m.Version, d.wasmStore.Dir(), m.Name, m.Version, api.ErrSkillExists)
	}
	start := time.Now()
	p, err := wasm.Install(context.WithoutCancel(ctx), d.wasmEngine, d.wasmStore, m, module)
	if err != nil {
		return api.SkillInfo{}, err
	}
	if err := s.register(wasm.NewSkill(p)); err != nil {
		_ = p.Close(context.Background())
		if _, rerr := d.wasmStore.Remove(m.Name, m.Version); rerr != nil {
			d.log.Error("wasm skill not registered, and its files were not removed; remove them by hand",
				"skill", m.Name, "version", m.Version, "dir", d.wasmStore.Dir(), "err", rerr)
		}
		return api.SkillInfo{}, fmt.Errorf("add wasm skill %q: %w", m.Name, err)
	}
	lim := p.Limits()
	d.log.Info("wasm skill added", "skill", m.Name, "version", m.Version, "module", m.Module.Short(),
		"memory", lim.Memory, "timeout", lim.Timeout, "took", time.Since(start).Round(time.Millisecond))
	return api.SkillInfo{Kind: apiv1.SkillWasm, Manifest: m, Limits: lim}, nil
}

// Remove implements api.SkillInstaller. The skill is unregistered at
// once, so no new task starts on it; its program closes in the
// background once the runs in progress end (Program.Close waits for
// them).
func (s *skillInstaller) Remove(_ context.Context, name reputation.SkillID, version string) ([]api.SkillInfo, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d := s.d
	if slices.Contains(builtinNames, string(name)) {
		return nil, fmt.Errorf("remove skill %q: it is built in; take it off skills.enabled in the config instead: %w", name, api.ErrNotRemovable)
	}
	var unreg *wasm.Skill
	if sk, err := d.registry.Lookup(name, ""); err == nil {
		ws, ok := sk.(*wasm.Skill)
		if !ok {
			return nil, fmt.Errorf("remove skill %q: it is not a wasm skill but a command skill, set in the config; remove it there: %w", name, api.ErrNotRemovable)
		}
		if version == "" || ws.Descriptor().Version == version {
			d.registry.Unregister(name)
			unreg = ws
		}
	}
	if unreg != nil {
		p := unreg.Program()
		s.closing.Add(1)
		go func() {
			defer s.closing.Done()
			_ = p.Close(context.Background())
		}()
	}
	gone, err := d.wasmStore.Remove(name, version)
	if err != nil && (unreg == nil || !errors.Is(err, wasm.ErrNotFound)) {
		if unreg != nil {
			return nil, fmt.Errorf("remove wasm skill %q: unregistered, but its files under %s were not all removed: %w", name, d.wasmStore.Dir(), err)
		}
		return nil, err
	}
	out := make([]api.SkillInfo, 0, len(gone))
	for _, m := range gone {
		out = append(out, api.SkillInfo{Kind: apiv1.SkillWasm, Manifest: m, Limits: d.wasmEngine.Limits(m.Limits)})
	}
	if unreg != nil && len(gone) == 0 {
		m := unreg.Program().Manifest()
		out = append(out, api.SkillInfo{Kind: apiv1.SkillWasm, Manifest: m, Limits: unreg.Program().Limits()})
	}
	for _, m := range gone {
		d.log.Info("wasm skill removed", "skill", m.Name, "version", m.Version, "module", m.Module.Short(), "unregistered", unreg != nil)
	}
	return out, nil
}

// Describe implements api.SkillInstaller: wasm skills are *wasm.Skill,
// command skills *command.Skill, and the built-ins are named in
// builtinNames. Any other skill has no kind.
func (s *skillInstaller) Describe(id reputation.SkillID) (api.SkillInfo, bool) {
	sk, err := s.d.registry.Lookup(id, "")
	if err != nil {
		return api.SkillInfo{}, false
	}
	switch sk := sk.(type) {
	case *wasm.Skill:
		p := sk.Program()
		return api.SkillInfo{Kind: apiv1.SkillWasm, Manifest: p.Manifest(), Limits: p.Limits()}, true
	case *command.Skill:
		return api.SkillInfo{Kind: apiv1.SkillCommand}, true
	}
	if slices.Contains(builtinNames, string(id)) {
		return api.SkillInfo{Kind: apiv1.SkillBuiltin}, true
	}
	return api.SkillInfo{}, true
}

// startModules serves the modules of this node's wasm skills to peers
// (/cortex/module/1.0.0) and, with skills.fetch_modules on, fetches the
// module of a wasm skill it lacks when a task for it arrives. It returns
// the handler peers' tasks go to.
func (d *daemon) startModules() (grid.TaskHandler, error) {
	msrv, err := modules.NewServer(d.node.Host(), modules.Local{Store: d.wasmStore, Cache: d.moduleCache},
		modules.ServerOptions{Logger: d.log})
	if err != nil {
		return nil, fmt.Errorf("build module server: %w", err)
	}
	if err := msrv.Start(); err != nil {
		return nil, fmt.Errorf("start module server: %w", err)
	}
	d.addCloser("module server", msrv.Close)
	mode, _ := modules.ParseMode(d.cfg.Skills.FetchModules) // validated by config.Load
	d.node.SetFetchesModules(mode != modules.ModeOff)
	if mode == modules.ModeOff {
		return noFetchHandler{d.coord, d.registry}, nil
	}
	f, err := modules.NewFetcher(d.node.Host(), d.wasmEngine, d.moduleCache, d.registry, modules.Options{
		Mode: mode, MinTrust: d.cfg.Skills.FetchMinTrust, Trust: d.trust.Trust,
		Holders: d.node.ModuleHolders, Announced: d.node.AnnouncedModule,
		Fetch:  modules.FetchOptions{MaxModule: int(d.wasmEngine.Options().MaxModule)},
		Logger: d.log, // the fetcher adds subsystem=modules itself
	})
	if err != nil {
		return nil, fmt.Errorf("build module fetcher: %w", err)
	}
	d.addCloser("module fetcher", f.Close)
	fh := skill.NewFetchingHandler(d.coord, f)
	// Closes before the coordinator, so tasks waiting for a fetch are
	// answered while it still runs.
	d.addCloser("module fetch handler", fh.Close)
	return fh, nil
}

// noFetchHandler is the coordinator as the task handler of a node with
// skills.fetch_modules off. The coordinator's refusal of a task naming
// the module of a wasm skill this node lacks says only that the skill is
// unknown; this one also says that the node does not fetch, and what the
// operator may change. The coordinator's checks and their order (docs/
// protocol.md, 6.1) are kept: only the message of that refusal changes.
type noFetchHandler struct {
	*skill.DelegationCoordinator
	reg *skill.Registry
}

var _ grid.TaskAbandoner = noFetchHandler{}

var _ grid.TaskHandler = noFetchHandler{}

// HandleTask implements grid.TaskHandler, in place of the coordinator's.
func (h noFetchHandler) HandleTask(from peer.ID, rt *grid.RemoteTask, reply grid.Replier) error {
	err := h.DelegationCoordinator.HandleTask(from, rt, reply)
	var rej *grid.RejectError
	if err == nil || !errors.As(err, &rej) || rej.Reason != grid.RejectUnknownSkill || rt.ModuleSHA256 == ([32]byte{}) {
		return err
	}
	if _, lerr := h.reg.Lookup(reputation.SkillID(rt.Skill), rt.Version); lerr == nil {
		return err // here, but another module: the message names both
	}
	return &grid.RejectError{Reason: grid.RejectUnknownSkill, RetryAfter: rej.RetryAfter, Message: fmt.Sprintf(
		"wasm skill %q (module %s) is not registered on this node, which does not fetch modules (skills.fetch_modules is off): add the skill here with `cortexd skill add`, or set skills.fetch_modules to trusted or any",
		rt.Skill, wasm.ModuleID(rt.ModuleSHA256).Short())}
}
