package modules

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// Mode says whose modules a node fetches: the daemon's
// skills.fetch_modules.
type Mode uint8

// Modes.
const (
	ModeOff     Mode = iota // never fetch
	ModeTrusted             // from requesters whose trust is at least Options.MinTrust
	ModeAny                 // from any requester the node admits tasks from
)

var modeNames = [...]string{"off", "trusted", "any"}

func (m Mode) String() string {
	if int(m) < len(modeNames) {
		return modeNames[m]
	}
	return fmt.Sprintf("mode(%d)", m)
}

// ParseMode parses "off", "trusted" or "any".
func ParseMode(s string) (Mode, error) {
	for i, n := range modeNames {
		if n == s {
			return Mode(i), nil
		}
	}
	return 0, fmt.Errorf("fetch_modules is %q: want off, trusted or any", s)
}

// ErrNotAllowed is wrapped by CanFetch's error.
var ErrNotAllowed = errors.New("module fetching not allowed")

// Fetcher defaults.
const (
	DefaultFetchTimeout = time.Minute
	DefaultMaxPrograms  = 32
	maxHolders          = 3
)

// Options configures a Fetcher.
type Options struct {
	Mode     Mode
	MinTrust float64                 // for ModeTrusted, in [0, 1]
	Trust    func(p peer.ID) float64 // required for ModeTrusted: *reputation.Graph's Trust
	// Holders lists other peers that announce module id (the capability
	// table's ModuleHolders); tried after the requester. Optional.
	Holders func(id [32]byte) []peer.ID
	// Announced gives the module p announces for skill at version, for a
	// request that carries no module hash (a requester that predates the
	// field, or whose coordinator does not set it). Optional.
	Announced func(p peer.ID, skill reputation.SkillID, version string) ([32]byte, bool)
	// Timeout bounds one module's fetch, verification and compilation.
	Timeout time.Duration
	// MaxPrograms bounds the fetched skills kept registered and compiled;
	// past it the least recently fetched is unregistered.
	MaxPrograms int
	Fetch       FetchOptions
	Logger      *slog.Logger
}

func (o Options) withDefaults() (Options, error) {
	if o.Timeout <= 0 {
		o.Timeout = DefaultFetchTimeout
	}
	if o.MaxPrograms <= 0 {
		o.MaxPrograms = DefaultMaxPrograms
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.Fetch = o.Fetch.withDefaults()
	var errs []error
	if o.Mode > ModeAny {
		errs = append(errs, fmt.Errorf("fetch mode %d unknown", o.Mode))
	}
	if o.Mode == ModeTrusted && o.Trust == nil {
		errs = append(errs, errors.New("fetch mode trusted needs a trust function"))
	}
	if !(o.MinTrust >= 0 && o.MinTrust <= 1) || math.IsNaN(o.MinTrust) {
		errs = append(errs, fmt.Errorf("fetch_min_trust is %v: want a number in [0, 1]", o.MinTrust))
	}
	return o, errors.Join(errs...)
}

// Fetcher runs wasm skills this node lacks by fetching their modules: it
// is the coordinator's skill.ModuleFetcher. Concurrent requests for one
// module share one fetch. Fetched modules go to the Cache; their programs
// are registered in the Registry, at most Options.MaxPrograms of them.
// It is safe for concurrent use; Close stops fetches in progress and
// waits for them.
type Fetcher struct {
	h     host.Host
	eng   *wasm.Engine
	cache *Cache
	reg   *skill.Registry
	opts  Options
	log   *slog.Logger

	ctx    context.Context // parent of every fetch; canceled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	closed  bool
	flights map[wasm.ModuleID]*flight
	progs   []*wasm.Program // registered by this fetcher, oldest first
}

type flight struct {
	done chan struct{}
	err  error
}

var _ skill.ModuleFetcher = (*Fetcher)(nil)

// NewFetcher returns a fetcher. It starts nothing.
func NewFetcher(h host.Host, eng *wasm.Engine, cache *Cache, reg *skill.Registry, opts Options) (*Fetcher, error) {
	o, err := opts.withDefaults()
	if h == nil || eng == nil || cache == nil || reg == nil {
		err = errors.Join(err, errors.New("host, engine, cache and registry are required"))
	}
	if err != nil {
		return nil, fmt.Errorf("new module fetcher: %w", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Fetcher{h: h, eng: eng, cache: cache, reg: reg, opts: o, log: o.Logger.With("subsystem", "modules"),
		ctx: ctx, cancel: cancel, flights: map[wasm.ModuleID]*flight{}}, nil
}

// CanFetch reports, as an error wrapping ErrNotAllowed, why this node
// would not fetch a module that from asks it to run.
func (f *Fetcher) CanFetch(from peer.ID) error {
	switch f.opts.Mode {
	case ModeAny:
		return nil
	case ModeTrusted:
		if tr := f.opts.Trust(from); tr < f.opts.MinTrust {
			return fmt.Errorf("%w: this node fetches modules only from peers with trust %.2f or more (skills.fetch_min_trust), the requester has %.2f", ErrNotAllowed, f.opts.MinTrust, tr)
		}
		return nil
	}
	return fmt.Errorf("%w: this node does not fetch modules (skills.fetch_modules is off)", ErrNotAllowed)
}

// FetchModule makes skill at version, running module, runnable here: it
// fetches the module from from (then from other peers announcing it),
// verifies it, keeps it in the cache, compiles it and registers it. A
// zero module is resolved through Options.Announced. It returns once the
// skill is registered, or with why not; ctx bounds only this caller's
// wait, not the shared fetch.
func (f *Fetcher) FetchModule(ctx context.Context, from peer.ID, name reputation.SkillID, version string, module [32]byte) error {
	if err := f.CanFetch(from); err != nil {
		return err
	}
	id := wasm.ModuleID(module)
	if id.IsZero() {
		var ok bool
		if f.opts.Announced != nil {
			module, ok = f.opts.Announced(from, name, version)
		}
		if !ok || module == ([32]byte{}) {
			return fmt.Errorf("skill %q is not here, and the request names no module to fetch (nor does the requester announce one)", name)
		}
		id = module
	}
	fl, err := f.join(from, id)
	if err != nil {
		return err
	}
	select {
	case <-fl.done:
	case <-ctx.Done():
		return fmt.Errorf("wait for module %s: %w", id.Short(), ctx.Err())
	}
	if fl.err != nil {
		return fl.err
	}
	return f.check(name, version, id)
}

// check confirms that the registry now runs module id as name at version.
func (f *Fetcher) check(name reputation.SkillID, version string, id wasm.ModuleID) error {
	s, err := f.reg.Lookup(name, version)
	if err != nil {
		return fmt.Errorf("module %s was fetched but does not provide the skill asked for: %w", id.Short(), err)
	}
	if h, _ := skill.ModuleOf(s); h != id {
		return fmt.Errorf("skill %q runs module %s here, the task names module %s", name, wasm.ModuleID(h).Short(), id.Short())
	}
	return nil
}

// join returns the flight for id, starting it if none runs.
func (f *Fetcher) join(from peer.ID, id wasm.ModuleID) (*flight, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	if fl, ok := f.flights[id]; ok {
		return fl, nil
	}
	fl := &flight{done: make(chan struct{})}
	f.flights[id] = fl
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		ctx, cancel := context.WithTimeout(f.ctx, f.opts.Timeout)
		fl.err = f.load(ctx, from, id)
		cancel()
		f.mu.Lock()
		delete(f.flights, id)
		f.mu.Unlock()
		close(fl.done)
	}()
	return fl, nil
}

// load gets module id (from the cache, or fetched), compiles it and
// registers its skill.
func (f *Fetcher) load(ctx context.Context, from peer.ID, id wasm.ModuleID) error {
	start := time.Now()
	m, mod, err := f.cache.Get(id)
	cached := err == nil
	src := f.h.ID() // the peer the module came from: here, if cached
	if !cached {
		if m, mod, src, err = f.fetchAny(ctx, from, id); err != nil {
			return err
		}
	}
	p, err := f.eng.Compile(ctx, m, mod)
	if err != nil {
		return fmt.Errorf("module %s fetched from %s: %w", id.Short(), from.ShortString(), err)
	}
	if !cached {
		// Kept only once it compiles: a module that is not a runnable
		// command never takes cache space.
		if err := f.cache.Put(m, mod); err != nil {
			f.log.Warn("fetched module not cached; it runs, but will be fetched again after a restart", "module", id.Short(), "err", err)
		}
	}
	kept, err := f.register(p)
	if !kept {
		_ = p.Close(context.Background())
	}
	if err != nil {
		return err
	}
	f.log.Info("wasm skill fetched", "skill", m.Name, "version", m.Version, "module", id.Short(), "from", src,
		"requester", from, "cached", cached, "bytes", len(mod), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// fetchAny tries from, then up to maxHolders other peers announcing id,
// and returns the module with the peer that served it.
func (f *Fetcher) fetchAny(ctx context.Context, from peer.ID, id wasm.ModuleID) (wasm.Manifest, []byte, peer.ID, error) {
	peers := []peer.ID{from}
	if f.opts.Holders != nil {
		for _, p := range f.opts.Holders(id) {
			if p != from && p != f.h.ID() && len(peers) <= maxHolders {
				peers = append(peers, p)
			}
		}
	}
	var errs []error
	for _, p := range peers {
		m, mod, err := Fetch(ctx, f.h, p, id, f.opts.Fetch)
		if err == nil {
			return m, mod, p, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return wasm.Manifest{}, nil, "", errors.Join(errs...)
}

// register adds p's skill to the registry and reports whether it kept p.
// A skill of that name registered already is fine if it runs the same
// module (p is not needed), and refused otherwise.
func (f *Fetcher) register(p *wasm.Program) (bool, error) {
	m := p.Manifest()
	if err := f.reg.Register(wasm.NewSkill(p)); err != nil {
		if s, lerr := f.reg.Lookup(m.Name, ""); lerr == nil {
			if h, _ := skill.ModuleOf(s); h == m.Module {
				return false, nil
			}
		}
		return false, fmt.Errorf("run fetched module %s as skill %q: %w", m.Module.Short(), m.Name, err)
	}
	f.mu.Lock()
	f.progs = append(f.progs, p)
	var old *wasm.Program
	if len(f.progs) > f.opts.MaxPrograms {
		old, f.progs = f.progs[0], f.progs[1:]
	}
	f.mu.Unlock()
	if old != nil {
		f.evict(old)
	}
	return true, nil
}

// evict unregisters old's skill (if it is still old's) and closes old in
// the background: Close waits for its running tasks.
func (f *Fetcher) evict(old *wasm.Program) {
	m := old.Manifest()
	if s, err := f.reg.Lookup(m.Name, m.Version); err == nil {
		if ws, ok := s.(*wasm.Skill); ok && ws.Program() == old {
			f.reg.Unregister(m.Name)
		}
	}
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		_ = old.Close(context.Background())
	}()
}

// Close stops the fetches in progress and waits for them. The skills it
// registered stay registered and their programs open (the engine's Close
// frees them): close the coordinator first. Close is idempotent.
func (f *Fetcher) Close() error {
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.closed = true
	f.mu.Unlock()
	f.cancel()
	f.wg.Wait()
	return nil
}

// Local serves the modules of a node: those its operator installed (the
// wasm.Store) and those it fetched (the Cache). Either may be nil.
type Local struct {
	Store *wasm.Store
	Cache *Cache
}

var _ Source = Local{}

// Module implements Source.
func (l Local) Module(id wasm.ModuleID) ([]byte, []byte, bool) {
	if l.Store != nil {
		if man, mod, ok := l.Store.Serve(id); ok {
			return man, mod, true
		}
	}
	if l.Cache != nil {
		return l.Cache.Module(id)
	}
	return nil, nil, false
}
