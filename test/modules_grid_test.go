package test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/modules"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// skillModules lists the module hashes of reg's wasm skills, as the
// daemon announces them beside capabilitiesOf.
func skillModules(reg *skill.Registry) grid.SkillModules {
	mods := grid.SkillModules{}
	for _, d := range reg.List() {
		if s, err := reg.Lookup(d.ID, d.Version); err == nil {
			if h, ok := skill.ModuleOf(s); ok {
				mods[grid.SkillCapability{ID: d.ID, Version: d.Version}] = h
			}
		}
	}
	return mods
}

// serveModules makes h serve the modules in st and announce their hashes.
func serveModules(t testing.TB, h *harnessNode, st *wasm.Store) {
	t.Helper()
	srv, err := modules.NewServer(h.Node.Host(), modules.Local{Store: st}, modules.ServerOptions{Logger: harnessLogger()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	h.addCloser(srv.Close)
	h.Node.SetSkillModules(skillModules(h.Reg))
	h.Reg.OnChange(func() { h.Node.SetSkillModules(skillModules(h.Reg)) })
}

// installGuest installs the Go-built guest in a fresh store as skill name
// and returns the store and the skill.
func installGuest(t testing.TB, e *wasm.Engine, name, mode string) (*wasm.Store, skill.Skill) {
	t.Helper()
	mod := wasmGuestModule(t)
	st, err := wasm.OpenStore(t.TempDir(), e.Options().MaxModule)
	if err != nil {
		t.Fatal(err)
	}
	m := wasm.Manifest{Name: reputation.SkillID(name), Version: "1.0.0", Module: wasm.ModuleIDOf(mod), Deterministic: true, Args: []string{mode}}
	p, err := wasm.Install(context.Background(), e, st, m, mod)
	if err != nil {
		t.Fatal(err)
	}
	return st, wasm.NewSkill(p)
}

// fetchingNode is a node wired as the daemon wires one with
// skills.fetch_modules on: the orchestrator's handler is a
// skill.FetchingHandler over the coordinator, with a modules.Fetcher that
// keeps what it fetches in a Cache and serves it on.
type fetchingNode struct {
	*harnessNode
	Fetcher *modules.Fetcher
	Cache   *modules.Cache
	Engine  *wasm.Engine
}

// fetchHandlerRef forwards to the FetchingHandler once it is set.
type fetchHandlerRef struct {
	h atomic.Pointer[skill.FetchingHandler]
}

func (r *fetchHandlerRef) HandleTask(from peer.ID, t *grid.RemoteTask, reply grid.Replier) error {
	h := r.h.Load()
	if h == nil {
		return &grid.RejectError{Reason: grid.RejectShuttingDown, Message: "node is starting", RetryAfter: 100 * time.Millisecond}
	}
	return h.HandleTask(from, t, reply)
}

func (r *fetchHandlerRef) CancelTask(from peer.ID, id grid.TaskID) {
	if h := r.h.Load(); h != nil {
		h.CancelTask(from, id)
	}
}

func (r *fetchHandlerRef) AbandonTask(from peer.ID, t *grid.RemoteTask) {
	if h := r.h.Load(); h != nil {
		h.AbandonTask(from, t)
	}
}

func newFetchingNode(t testing.TB, mode modules.Mode, bootstrap ...*harnessNode) *fetchingNode {
	t.Helper()
	n := &fetchingNode{harnessNode: &harnessNode{}}
	t.Cleanup(func() {
		if err := n.Close(); err != nil {
			t.Errorf("close fetching node: %v", err)
		}
	})
	if err := n.start(t, mode, bootstrap); err != nil {
		t.Fatalf("start fetching node: %v", err)
	}
	return n
}

func (n *fetchingNode) start(t testing.TB, mode modules.Mode, bootstrap []*harnessNode) error {
	log := harnessLogger()
	ctx, cancel := context.WithTimeout(context.Background(), harnessWait)
	defer cancel()
	n.Reg = skill.NewRegistry()
	key, err := grid.GenerateIdentity()
	if err != nil {
		return err
	}
	opts := []grid.NodeOption{grid.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), grid.WithAnnounceInterval(harnessAnnounce),
		grid.WithCapabilityTTL(harnessTTL), grid.WithNodeLogger(log)}
	for _, b := range bootstrap {
		opts = append(opts, grid.WithBootstrapPeers(b.addrInfo()))
	}
	if n.Node, err = grid.NewNode(key, opts...); err != nil {
		return err
	}
	n.ID = n.Node.ID()
	n.addCloser(n.Node.Close)
	n.Node.SetFetchesModules(mode != modules.ModeOff)
	if err := n.Node.Start(ctx); err != nil {
		return err
	}
	ref := &fetchHandlerRef{}
	if n.Orch, err = grid.NewOrchestrator(n.Node.Host(), ref, grid.WithOrchLogger(log)); err != nil {
		return err
	}
	if err := n.Orch.Start(ctx); err != nil {
		return err
	}
	n.addCloser(n.Orch.Close)
	if n.Engine, err = wasm.NewEngine("", wasm.Options{Logger: log}); err != nil {
		return err
	}
	n.addCloser(func() error { return n.Engine.Close(context.Background()) }) // after the coordinator
	if n.Cache, err = modules.OpenCache(filepath.Join(t.TempDir(), "fetched"), 0); err != nil {
		return err
	}
	if n.Exec, err = skill.NewExecutor(n.Reg, n.ID, skill.WithWorkers(4), skill.WithExecLogger(log)); err != nil {
		return err
	}
	if n.Trust, err = reputation.NewGraph(n.ID, reputation.WithLogger(log)); err != nil {
		return err
	}
	n.Metrics = grid.NewMetricsTracker()
	n.Coord, err = skill.NewCoordinator(skill.Deps{Self: n.ID, Registry: n.Reg, Executor: n.Exec, Directory: n.Node,
		Metrics: n.Metrics, Trust: n.Trust, Remote: n.Orch}, skill.WithLogger(log))
	if err != nil {
		return err
	}
	if err := n.Coord.Start(ctx); err != nil {
		return err
	}
	n.addCloser(n.Coord.Close)
	n.Fetcher, err = modules.NewFetcher(n.Node.Host(), n.Engine, n.Cache, n.Reg, modules.Options{
		Mode: mode, Trust: n.Trust.Trust, Holders: n.Node.ModuleHolders, Announced: n.Node.AnnouncedModule, Logger: log,
	})
	if err != nil {
		return err
	}
	n.addCloser(n.Fetcher.Close)
	fh := skill.NewFetchingHandler(n.Coord, n.Fetcher)
	n.addCloser(fh.Close) // before the fetcher and the coordinator
	ref.h.Store(fh)
	srv, err := modules.NewServer(n.Node.Host(), modules.Local{Cache: n.Cache}, modules.ServerOptions{Logger: log})
	if err != nil {
		return err
	}
	if err := srv.Start(); err != nil {
		return err
	}
	n.addCloser(srv.Close)
	n.Node.SetLoadFunc(n.Coord.LocalLoad)
	n.Reg.OnChange(func() {
		n.Node.SetCapabilities(capabilitiesOf(n.Reg))
		n.Node.SetSkillModules(skillModules(n.Reg))
	})
	return nil
}

// fetchWait bounds a task whose executor first fetches and compiles a
// Go-built module: under -race on a loaded 2-core machine, compiling
// alone has taken over 20 s.
const fetchWait = 2 * time.Minute

// delegate sends one attempt of a task for skill to p from h, as h's
// coordinator would, with the module hash mod.
func delegate(t testing.TB, h *harnessNode, p peer.ID, name reputation.SkillID, mod wasm.ModuleID, input string) (*grid.RemoteResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), fetchWait)
	defer cancel()
	return h.Orch.Delegate(ctx, p, &grid.RemoteTask{ID: grid.NewTaskID(), Skill: string(name), Input: []byte(input),
		InputKind: grid.InputRaw, Deadline: time.Now().Add(fetchWait), Attempt: 1, Requester: h.ID, ModuleSHA256: mod})
}

// TestAWasmSkillRunsOnANodeThatFetchesIt: node 1 has a Go-built wasm
// skill installed; node 2 has none and fetches modules. A task for the
// skill sent from node 1 to node 2, naming the module, runs on node 2
// after it fetched, verified and compiled the module; node 1 counts node 2
// as a candidate; a task naming another module is refused with both
// hashes, and one whose module nobody serves fails with unknown_skill.
func TestAWasmSkillRunsOnANodeThatFetchesIt(t *testing.T) {
	e, err := wasm.NewEngine(t.TempDir(), wasm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	st, upper := installGuest(t, e, "text.upper", "upper")
	one := newHarnessNode(t, harnessConfig{skills: []skill.Skill{upper}})
	serveModules(t, one, st)
	two := newFetchingNode(t, modules.ModeAny, one)
	id := wasm.ModuleIDOf(wasmGuestModule(t))

	awaitCond(t, harnessWait, "node 1 counts node 2 as a fetcher of text.upper", func() bool {
		return slices.ContainsFunc(one.Node.ModuleFetchers("text.upper"), func(p grid.Provider) bool { return p.Peer == two.ID })
	})
	router, err := skill.NewRouter(one.ID, one.Reg, one.Node, one.Trust, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	cands, err := router.Route(skill.NewSkillTask("text.upper", skill.RawInput(nil), one.ID))
	if err != nil || !slices.ContainsFunc(cands, func(c skill.Candidate) bool { return c.Peer == two.ID }) {
		t.Fatalf("node 1's router: candidates %v, %v; want node 2 among them", cands, err)
	}

	res, err := delegate(t, one, two.ID, "text.upper", id, "hello, fetched grid")
	if err != nil {
		t.Fatal(err)
	}
	if !res.Success || string(res.Output) != "HELLO, FETCHED GRID" || res.Executor != two.ID {
		t.Fatalf("result %+v; want HELLO, FETCHED GRID from node 2", res)
	}
	if !two.Reg.Has("text.upper") || !two.Cache.Has(id) {
		t.Fatalf("node 2 after the task: registered %v, cached %v; want both", two.Reg.Has("text.upper"), two.Cache.Has(id))
	}
	// Node 2 now announces the skill with its module.
	one.awaitOffer(t, "text.upper", two.ID)

	t.Run("a task naming another module is refused with both hashes", func(t *testing.T) {
		other := wasm.ModuleIDOf([]byte("other code"))
		_, err := delegate(t, one, two.ID, "text.upper", other, "x")
		var rej *grid.RejectError
		if !errors.As(err, &rej) || rej.Reason != grid.RejectUnknownSkill ||
			!strings.Contains(rej.Message, fmt.Sprintf("%x", other[:])) || !strings.Contains(rej.Message, fmt.Sprintf("%x", id[:])) {
			t.Fatalf("delegate: %v; want unknown skill naming %s and %s", err, other.Short(), id.Short())
		}
	})
	t.Run("a task whose module nobody serves fails with unknown_skill", func(t *testing.T) {
		res, err := delegate(t, one, two.ID, "text.missing", wasm.ModuleIDOf([]byte("nowhere")), "x")
		if err != nil {
			t.Fatal(err)
		}
		if res.Success || res.ErrorCode != grid.CodeUnknownSkill || !strings.Contains(res.ErrorMessage, "not found") {
			t.Fatalf("result %+v; want unknown_skill saying the module was not found", res)
		}
	})
}

// TestANodeWithFetchingOffRefusesAWasmSkillItLacks: the same request to a
// node that does not fetch is rejected at once as an unknown skill.
func TestANodeWithFetchingOffRefusesAWasmSkillItLacks(t *testing.T) {
	e, err := wasm.NewEngine(t.TempDir(), wasm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	st, upper := installGuest(t, e, "text.upper", "upper")
	one := newHarnessNode(t, harnessConfig{skills: []skill.Skill{upper}})
	serveModules(t, one, st)
	two := newFetchingNode(t, modules.ModeOff, one)
	awaitCond(t, harnessWait, "node 1 connects to node 2", func() bool {
		return one.Node.Host().Network().Connectedness(two.ID) == network.Connected
	})
	_, err = delegate(t, one, two.ID, "text.upper", wasm.ModuleIDOf(wasmGuestModule(t)), "x")
	var rej *grid.RejectError
	if !errors.As(err, &rej) || rej.Reason != grid.RejectUnknownSkill || !strings.Contains(rej.Message, "fetch_modules is off") {
		t.Fatalf("delegate: %v; want unknown skill saying fetching is off", err)
	}
}
