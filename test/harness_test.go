package test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// Harness timings: nodes announce their capabilities every 200 ms, and
// an announcement stays valid for 1 s (the shortest TTL the wire carries).
const (
	harnessAnnounce = 200 * time.Millisecond
	harnessTTL      = time.Second
	// harnessWait bounds every eventual condition and every Wait.
	harnessWait = 20 * time.Second
)

// harnessConfig says what newHarnessNode builds. The zero value is a node
// with no skills, four workers and no bootstrap peer.
type harnessConfig struct {
	builtins  []reputation.SkillID // built-in skills to register, debug.sleep included
	skills    []skill.Skill        // further skills to register
	workers   int                  // executor workers; 0 means 4
	bootstrap []*harnessNode       // peers to bootstrap from
	nodeOpts  []grid.NodeOption
	orchOpts  []grid.OrchestratorOption
	coordOpts []skill.CoordinatorOption
	// dhtSearch makes the router ask the DHT (grid.Node.SearchProviders)
	// when the capability table lists no provider, as the daemon wires it.
	dhtSearch bool
	// startWait bounds the start; 0 means harnessWait.
	startWait time.Duration
	// opinions, if not 0, makes the node share its trust opinions every
	// opinions and feed others' to its trust graph, which then
	// recomputes global trust every harnessRecompute, as the daemon wires
	// it.
	opinions time.Duration
}

// harnessRecompute is how often a node with opinions recomputes global
// trust.
const harnessRecompute = 100 * time.Millisecond

// harnessNode is a whole cortexd node in this process, wired as the daemon
// wires one: a grid.Node on loopback, an orchestrator whose handler
// forwards to the coordinator, a registry whose skills are the node's
// announced capabilities, an executor, a trust graph and a metrics
// tracker. Its fields are set once by newHarnessNode; the components are
// safe for concurrent use.
type harnessNode struct {
	ID      peer.ID
	Node    *grid.Node
	Orch    *grid.Orchestrator
	Reg     *skill.Registry
	Exec    *skill.Executor
	Coord   *skill.DelegationCoordinator
	Trust   *reputation.Graph
	Metrics *grid.MetricsTracker

	mu      sync.Mutex
	closers []func() error // run in reverse order by Close
	closed  bool
}

// harnessLogger discards logs unless CORTEX_TEST_LOG is set.
func harnessLogger() *slog.Logger {
	if os.Getenv("CORTEX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// newHarnessNode builds and starts a node as cfg says; t.Cleanup closes it.
func newHarnessNode(t testing.TB, cfg harnessConfig) *harnessNode {
	t.Helper()
	h := &harnessNode{}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close node %s: %v", h.ID.ShortString(), err)
		}
	})
	if err := h.start(cfg); err != nil {
		t.Fatalf("start harness node: %v", err)
	}
	return h
}

// start builds the components in dependency order, each adding its closer
// as soon as it runs.
func (h *harnessNode) start(cfg harnessConfig) error {
	log := harnessLogger()
	wait := cfg.startWait
	if wait == 0 {
		wait = harnessWait
	}
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()

	reg, err := harnessRegistry(cfg)
	if err != nil {
		return err
	}
	h.Reg = reg
	key, err := grid.GenerateIdentity()
	if err != nil {
		return fmt.Errorf("generate identity: %w", err)
	}
	id, err := peer.IDFromPrivateKey(key)
	if err != nil {
		return fmt.Errorf("peer ID of the identity: %w", err)
	}
	trustOpts := []reputation.Option{reputation.WithLogger(log)}
	if cfg.opinions > 0 {
		trustOpts = append(trustOpts, reputation.WithRecomputeInterval(harnessRecompute))
	}
	if h.Trust, err = reputation.NewGraph(id, trustOpts...); err != nil {
		return fmt.Errorf("new trust graph: %w", err)
	}
	nodeOpts := []grid.NodeOption{
		grid.WithListenAddrs("/ip4/127.0.0.1/tcp/0"),
		grid.WithAnnounceInterval(harnessAnnounce),
		grid.WithCapabilityTTL(harnessTTL),
		grid.WithNodeLogger(log),
	}
	if len(cfg.bootstrap) > 0 {
		// One option with them all: each WithBootstrapPeers replaces the last.
		ais := make([]peer.AddrInfo, 0, len(cfg.bootstrap))
		for _, b := range cfg.bootstrap {
			ais = append(ais, b.addrInfo())
		}
		nodeOpts = append(nodeOpts, grid.WithBootstrapPeers(ais...))
	}
	if cfg.opinions > 0 {
		nodeOpts = append(nodeOpts, grid.WithTrustOpinions(h.Trust, cfg.opinions))
		if err := h.Trust.Start(ctx); err != nil {
			return fmt.Errorf("start trust graph: %w", err)
		}
		h.addCloser(h.Trust.Close)
	}
	if h.Node, err = grid.NewNode(key, append(nodeOpts, cfg.nodeOpts...)...); err != nil {
		return fmt.Errorf("new node: %w", err)
	}
	h.ID = h.Node.ID()
	h.addCloser(h.Node.Close)
	if err := h.Node.Start(ctx); err != nil {
		return fmt.Errorf("start node: %w", err)
	}

	// The orchestrator needs a handler before the coordinator exists, and
	// the coordinator needs the orchestrator: a forwarder breaks the cycle.
	fwd := &forwardingHandler{}
	orchOpts := append([]grid.OrchestratorOption{grid.WithOrchLogger(log)}, cfg.orchOpts...)
	if h.Orch, err = grid.NewOrchestrator(h.Node.Host(), fwd, orchOpts...); err != nil {
		return fmt.Errorf("new orchestrator: %w", err)
	}
	if err := h.Orch.Start(ctx); err != nil {
		return fmt.Errorf("start orchestrator: %w", err)
	}
	h.addCloser(h.Orch.Close)

	workers := cfg.workers
	if workers == 0 {
		workers = 4
	}
	if h.Exec, err = skill.NewExecutor(reg, h.ID, skill.WithWorkers(workers), skill.WithExecLogger(log)); err != nil {
		return fmt.Errorf("new executor: %w", err)
	}
	h.Metrics = grid.NewMetricsTracker()
	coordOpts := append([]skill.CoordinatorOption{skill.WithLogger(log)}, cfg.coordOpts...)
	deps := skill.Deps{
		Self: h.ID, Registry: reg, Executor: h.Exec, Directory: h.Node,
		Metrics: h.Metrics, Trust: h.Trust, Remote: h.Orch,
	}
	if cfg.dhtSearch {
		if deps.Router, err = skill.NewRouter(h.ID, reg, h.Node, h.Trust, h.Metrics, nil,
			skill.WithSearcher(h.Node, 5*time.Second)); err != nil {
			return fmt.Errorf("new router: %w", err)
		}
	}
	h.Coord, err = skill.NewCoordinator(deps, coordOpts...)
	if err != nil {
		return fmt.Errorf("new coordinator: %w", err)
	}
	if err := h.Coord.Start(ctx); err != nil {
		return fmt.Errorf("start coordinator: %w", err)
	}
	h.addCloser(h.Coord.Close)
	fwd.set(h.Coord)

	h.Node.SetLoadFunc(h.Coord.LocalLoad)
	// Skills are announced once the task handler is up, as the daemon
	// does: a peer that identified this node earlier would check a claim
	// its orchestrator could not yet answer.
	h.Node.SetCapabilities(capabilitiesOf(reg))
	reg.OnChange(func() { h.Node.SetCapabilities(capabilitiesOf(reg)) })
	return nil
}

// harnessRegistry registers the skills cfg names.
func harnessRegistry(cfg harnessConfig) (*skill.Registry, error) {
	reg := skill.NewRegistry()
	builtins := skill.Builtins(skill.BuiltinOptions{DebugSleep: slices.Contains(cfg.builtins, "debug.sleep")})
	var skills []skill.Skill
	for _, id := range cfg.builtins {
		i := slices.IndexFunc(builtins, func(s skill.Skill) bool { return s.Descriptor().ID == id })
		if i < 0 {
			return nil, fmt.Errorf("no built-in skill %q", id)
		}
		skills = append(skills, builtins[i])
	}
	for _, s := range append(skills, cfg.skills...) {
		if err := reg.Register(s); err != nil {
			return nil, fmt.Errorf("register %s: %w", s.Descriptor().ID, err)
		}
	}
	return reg, nil
}

// capabilitiesOf lists the registry's skills as the node announces them.
func capabilitiesOf(reg *skill.Registry) []grid.SkillCapability {
	ds := reg.List()
	caps := make([]grid.SkillCapability, 0, len(ds))
	for _, d := range ds {
		caps = append(caps, grid.SkillCapability{ID: d.ID, Version: d.Version})
	}
	return caps
}

func (h *harnessNode) addCloser(fn func() error) {
	h.mu.Lock()
	h.closers = append(h.closers, fn)
	h.mu.Unlock()
}

// Close closes the node's components in the reverse of the order they
// started: coordinator, orchestrator, then the grid node. It is idempotent.
func (h *harnessNode) Close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil
	}
	h.closed = true
	var errs []error
	for _, fn := range slices.Backward(h.closers) {
		errs = append(errs, fn())
	}
	return errors.Join(errs...)
}

// addrInfo is the node's ID and listen addresses, for bootstrapping.
func (h *harnessNode) addrInfo() peer.AddrInfo {
	return peer.AddrInfo{ID: h.ID, Addrs: h.Node.Host().Addrs()}
}

// submit submits task and fails the test if the coordinator refuses it.
func (h *harnessNode) submit(t testing.TB, task *skill.SkillTask) skill.TaskID {
	t.Helper()
	id, err := h.Coord.SubmitTask(context.Background(), task)
	if err != nil {
		t.Fatalf("submit %s on %s: %v", task.Skill, h.ID.ShortString(), err)
	}
	return id
}

// wait waits for task id to finish, failing the test if it does not within
// harnessWait, and returns Wait's result and error.
func (h *harnessNode) wait(t testing.TB, id skill.TaskID) (*skill.SkillResult, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), harnessWait)
	defer cancel()
	res, err := h.Coord.Wait(ctx, id)
	if ctx.Err() != nil {
		t.Fatalf("task %s on %s did not finish within %s", id.Short(), h.ID.ShortString(), harnessWait)
	}
	return res, err
}

// run submits task, waits for it and fails the test unless it succeeded.
func (h *harnessNode) run(t testing.TB, task *skill.SkillTask) *skill.SkillResult {
	t.Helper()
	res, err := h.wait(t, h.submit(t, task))
	if err != nil {
		t.Fatalf("%s on %s failed: %v", task.Skill, h.ID.ShortString(), err)
	}
	return res
}

// offers reports whether h's capability table lists p as a provider of id.
func (h *harnessNode) offers(id reputation.SkillID, p peer.ID) bool {
	return slices.ContainsFunc(h.Node.Providers(id), func(pr grid.Provider) bool { return pr.Peer == p })
}

// awaitOffer waits until h's capability table lists p as a provider of id.
func (h *harnessNode) awaitOffer(t testing.TB, id reputation.SkillID, p peer.ID) {
	t.Helper()
	awaitCond(t, harnessWait, fmt.Sprintf("%s lists %s as a provider of %s", h.ID.ShortString(), p.ShortString(), id),
		func() bool { return h.offers(id, p) })
}

// awaitCond polls cond every 10 ms and fails the test if it is not true
// within d.
func awaitCond(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// forwardingHandler hands tasks from peers to the coordinator once it is
// set, and refuses them before (as the daemon's handlerRef does).
type forwardingHandler struct {
	h atomic.Pointer[skill.DelegationCoordinator]
}

var _ grid.TaskHandler = (*forwardingHandler)(nil)

func (f *forwardingHandler) set(c *skill.DelegationCoordinator) { f.h.Store(c) }

// HandleTask implements grid.TaskHandler.
func (f *forwardingHandler) HandleTask(from peer.ID, t *grid.RemoteTask, reply grid.Replier) error {
	c := f.h.Load()
	if c == nil {
		return &grid.RejectError{Reason: grid.RejectShuttingDown, Message: "node is starting", RetryAfter: 100 * time.Millisecond}
	}
	return c.HandleTask(from, t, reply)
}

// CancelTask implements grid.TaskHandler.
func (f *forwardingHandler) CancelTask(from peer.ID, id grid.TaskID) {
	if c := f.h.Load(); c != nil {
		c.CancelTask(from, id)
	}
}

// AbandonTask implements grid.TaskAbandoner.
func (f *forwardingHandler) AbandonTask(from peer.ID, t *grid.RemoteTask) {
	if c := f.h.Load(); c != nil {
		c.AbandonTask(from, t)
	}
}

// funcSkill is a skill made of a descriptor and a function, for skills
// that only a test offers.
type funcSkill struct {
	desc skill.Descriptor
	fn   func(ctx context.Context, in skill.SkillInput) ([]byte, error)
}

func (s funcSkill) Descriptor() skill.Descriptor { return s.desc }

func (s funcSkill) Execute(ctx context.Context, in skill.SkillInput) ([]byte, error) {
	return s.fn(ctx, in)
}

// taggedSkill returns a skill id (version 1.0.0) whose output is tag
// followed by its input, so that a result tells which node ran it.
func taggedSkill(id reputation.SkillID, tag string) skill.Skill {
	return funcSkill{
		desc: skill.Descriptor{ID: id, Version: "1.0.0", Description: "test skill: " + tag},
		fn: func(_ context.Context, in skill.SkillInput) ([]byte, error) {
			return append([]byte(tag), in.Data...), nil
		},
	}
}

// rawFrameClient is a bare libp2p host that speaks the task protocol to one
// node frame by frame, one new stream per exchange. It is not safe for
// concurrent use.
type rawFrameClient struct {
	host host.Host
	to   peer.ID
	s    network.Stream
	r    *wire.Reader
}

// rawTaskClient returns a raw client connected to n, closed at cleanup.
func rawTaskClient(t testing.TB, n *harnessNode) *rawFrameClient {
	t.Helper()
	h, err := libp2p.New(
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
	)
	if err != nil {
		t.Fatalf("new raw host: %v", err)
	}
	t.Cleanup(func() { _ = h.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), harnessWait)
	defer cancel()
	if err := h.Connect(ctx, n.addrInfo()); err != nil {
		t.Fatalf("connect raw host: %v", err)
	}
	return &rawFrameClient{host: h, to: n.ID}
}

func (c *rawFrameClient) ID() peer.ID { return c.host.ID() }

// exchange opens a task stream, writes b and reads one frame back. The
// error is the stream's if the node reset or closed it, and wraps
// os.ErrDeadlineExceeded if it did neither within 10 s.
func (c *rawFrameClient) exchange(t testing.TB, b []byte) (*cortexv1.Envelope, error) {
	t.Helper()
	if c.s != nil {
		_ = c.s.Reset()
	}
	ctx, cancel := context.WithTimeout(context.Background(), harnessWait)
	defer cancel()
	s, err := c.host.NewStream(ctx, c.to, wire.ProtocolTask)
	if err != nil {
		t.Fatalf("open task stream: %v", err)
	}
	c.s, c.r = s, wire.NewReader(s, 1<<20)
	_ = s.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = s.Write(b) // the node may reset the stream before it reads all of b
	return c.next()
}

// next reads the next frame of the current stream.
func (c *rawFrameClient) next() (*cortexv1.Envelope, error) {
	env := &cortexv1.Envelope{}
	if err := c.r.ReadMsg(env); err != nil {
		return nil, err
	}
	return env, nil
}

// frameOf encodes env as one frame.
func frameOf(t testing.TB, env *cortexv1.Envelope) []byte {
	t.Helper()
	b, err := wire.AppendFrame(nil, env)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
