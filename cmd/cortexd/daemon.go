package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/modules"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/store"
	"github.com/cortexgrid/cortexd/pkg/wasm"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

// builtinNames are the built-in skills skills.enabled may list.
var builtinNames = func() []string {
	var out []string
	for _, s := range skill.Builtins(skill.BuiltinOptions{DebugSleep: true}) {
		out = append(out, string(s.Descriptor().ID))
	}
	return out
}()

// daemon is one running cortexd node: the grid layer, the skill layer and
// the API, composed from a config. Build it with newDaemon, run it with
// start, stop it with shutdown.
type daemon struct {
	cfg *config.Config
	dir string
	log *slog.Logger

	key      crypto.PrivKey
	private  bool                 // on a private network (network.swarm_key_file)
	prom     *prometheus.Registry // nil when metrics are off
	node     *grid.Node
	metrics  *grid.MetricsTracker
	trust    *reputation.Graph
	registry *skill.Registry
	executor *skill.Executor
	router   *skill.Router
	admit    *skill.AdmissionPolicy // the orchestrator's PeerPolicy and the coordinator's check
	orch     *grid.Orchestrator
	handler  handlerRef
	coord    *skill.DelegationCoordinator
	flows    *workflow.Engine   // workflows and chained tasks on coord; closes before it
	qopts    []grid.QueueOption // the coordinator builds the queue
	api      *api.Server
	store    *store.Store // persistent state (issue 5); closes last

	wasmStore   *wasm.Store     // installed wasm skills, DIR/wasm
	wasmEngine  *wasm.Engine    // runs them; closes after the coordinator
	moduleCache *modules.Cache  // modules fetched from peers, DIR/wasm/fetched
	installer   *skillInstaller // adds and removes them for the API

	listener net.Listener
	url      string
	served   chan error // Serve's result

	// closers run in reverse order at shutdown; each component adds its
	// own as it starts, so a failed start tears down what started.
	closers []namedCloser
}

type namedCloser struct {
	name string
	fn   func() error
}

// handlerRef forwards tasks from peers to the coordinator once it exists
// (the orchestrator needs a handler before the coordinator, which needs the
// orchestrator, can be built), and refuses them while the daemon drains.
type handlerRef struct {
	h        atomic.Pointer[grid.TaskHandler]
	draining atomic.Bool
}

var _ grid.TaskHandler = (*handlerRef)(nil)

func (r *handlerRef) set(h grid.TaskHandler) { r.h.Store(&h) }

// HandleTask implements grid.TaskHandler.
func (r *handlerRef) HandleTask(from peer.ID, t *grid.RemoteTask, reply grid.Replier) error {
	h, err := r.handler()
	if err != nil {
		return err
	}
	return h.HandleTask(from, t, reply)
}

// handler returns the handler to forward a task to, or why there is none.
func (r *handlerRef) handler() (grid.TaskHandler, error) {
	h := r.h.Load()
	switch {
	case h == nil:
		return nil, &grid.RejectError{Reason: grid.RejectShuttingDown, Message: "node is starting", RetryAfter: time.Second}
	case r.draining.Load():
		return nil, &grid.RejectError{Reason: grid.RejectShuttingDown, Message: "node is shutting down"}
	}
	return *h, nil
}

// CancelTask implements grid.TaskHandler.
func (r *handlerRef) CancelTask(from peer.ID, id grid.TaskID) {
	if h := r.h.Load(); h != nil {
		(*h).CancelTask(from, id)
	}
}

var _ grid.ProgressSink = (*handlerRef)(nil)

// TaskProgress implements grid.ProgressSink: a peer's report about a task
// this node delegated.
func (r *handlerRef) TaskProgress(id grid.TaskID, attempt int, fraction float64, msg string) {
	if h := r.h.Load(); h != nil {
		if ps, ok := (*h).(grid.ProgressSink); ok {
			ps.TaskProgress(id, attempt, fraction, msg)
		}
	}
}

var _ grid.TaskAbandoner = (*handlerRef)(nil)

// AbandonTask implements grid.TaskAbandoner: the requester's stream died.
func (r *handlerRef) AbandonTask(from peer.ID, t *grid.RemoteTask) {
	h := r.h.Load()
	if h == nil {
		return
	}
	if ab, ok := (*h).(grid.TaskAbandoner); ok {
		ab.AbandonTask(from, t)
		return
	}
	(*h).CancelTask(from, t.ID)
}

// newLogger builds the daemon's logger from log.level and log.format.
func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var lvl slog.Level
	_ = lvl.UnmarshalText([]byte(strings.ToLower(c.Level))) // validated
	opts := &slog.HandlerOptions{Level: lvl}
	if strings.EqualFold(c.Format, "json") {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// newDaemon builds every component from cfg. It reads the identity key and
// the API token and starts nothing.
func newDaemon(cfg *config.Config, dir string, log *slog.Logger) (*daemon, error) {
	d := &daemon{cfg: cfg, dir: dir, log: log, served: make(chan error, 1)}
	key, err := loadKey(dir, cfg.Identity.KeyFile)
	if err != nil {
		return nil, err
	}
	d.key = key
	if cfg.Metrics.Enabled {
		d.prom = prometheus.NewRegistry()
		d.prom.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	}
	if err := d.buildGrid(); err != nil {
		return nil, err
	}
	if err := d.buildSkills(); err != nil {
		return nil, err
	}
	if err := d.buildAdmission(); err != nil {
		return nil, err
	}
	return d, nil
}

func (d *daemon) buildGrid() error {
	c := d.cfg
	var boot []peer.AddrInfo
	for _, s := range c.Network.BootstrapPeers {
		ai, err := config.ParsePeerAddr(s) // validated by config.Load
		if err != nil {
			return fmt.Errorf("network.bootstrap_peers: %w", err)
		}
		boot = append(boot, *ai)
	}
	opts := []grid.NodeOption{
		grid.WithListenAddrs(c.Network.ListenAddrs...),
		grid.WithBootstrapPeers(boot...),
		grid.WithDHTPrefix(protocol.ID(c.DHT.Prefix)),
		grid.WithDHTMode(c.DHT.Mode),
		grid.WithRendezvous(c.DHT.Rendezvous),
		grid.WithMDNS(c.MDNS.Enabled),
		grid.WithAnnounceInterval(c.PubSub.AnnounceInterval),
		grid.WithCapabilityTTL(c.PubSub.CapabilityTTL),
		grid.WithConnManager(c.Network.ConnManager.Low, c.Network.ConnManager.High, c.Network.ConnManager.Grace),
		grid.WithResourceLimits(grid.ResourceLimits{
			MaxMemory:  int64(c.Network.Resources.MaxMemoryMB) << 20,
			MaxFDs:     c.Network.Resources.MaxFDs,
			MaxConns:   c.Network.Resources.MaxConns,
			MaxStreams: c.Network.Resources.MaxStreams,
		}),
		grid.WithNodeLogger(d.log.With("subsystem", "grid")),
		grid.WithCapabilityGossip(c.PubSub.Enabled),
		// d.trust is built below, before the node starts; the capability
		// table asks only after Start.
		grid.WithPeerTrust(func(p peer.ID) float64 { return d.trust.Trust(p) }),
	}
	if c.PubSub.Enabled {
		opts = append(opts, grid.WithTrustOpinions(graphOpinions{d}, c.Trust.OpinionInterval))
	}
	if d.prom != nil {
		opts = append(opts, grid.WithPrometheusRegisterer(d.prom))
	}
	var relays []peer.AddrInfo
	for _, s := range c.NAT.StaticRelays {
		ai, err := config.ParsePeerAddr(s) // validated by config.Load
		if err != nil {
			return fmt.Errorf("nat.static_relays: %w", err)
		}
		relays = append(relays, *ai)
	}
	opts = append(opts,
		grid.WithRelayService(c.NAT.RelayService),
		grid.WithAutoRelay(c.NAT.AutoRelay, relays...),
		grid.WithHolePunching(c.NAT.HolePunching),
		grid.WithPortMapping(c.NAT.PortMapping),
		grid.WithReachability(c.NAT.Reachability),
		grid.WithRelayLimits(grid.RelayLimits{MaxReservations: c.NAT.RelayMaxReservations, MaxCircuits: c.NAT.RelayMaxCircuits,
			Duration: c.NAT.RelayLimitDuration, Data: int64(c.NAT.RelayLimitData)}),
	)
	access, err := d.accessOptions()
	if err != nil {
		return err
	}
	opts = append(opts, access...)
	node, err := grid.NewNode(d.key, opts...)
	if err != nil {
		return fmt.Errorf("build node: %w", err)
	}
	d.node = node
	d.metrics = grid.NewMetricsTracker()

	var pre []peer.ID
	for _, s := range c.Trust.PreTrusted {
		p, err := peer.Decode(s)
		if err != nil {
			return fmt.Errorf("trust.pre_trusted: %w", err)
		}
		pre = append(pre, p)
	}
	d.trust, err = reputation.NewGraph(node.ID(),
		reputation.WithPreTrusted(pre...),
		reputation.WithNeutralTrust(c.Trust.Neutral),
		reputation.WithRecomputeInterval(c.Trust.RecomputeInterval),
		reputation.WithDecayHalfLife(c.Trust.DecayHalfLife),
		reputation.WithLogger(d.log.With("subsystem", "trust")),
	)
	if err != nil {
		return fmt.Errorf("build trust graph: %w", err)
	}

	q := c.Queue
	qopts := []grid.QueueOption{
		grid.WithMaxPerLevel(q.MaxPerLevel),
		grid.WithDefaultTimeout(q.DefaultTimeout),
		grid.WithAgingStep(q.AgingStep),
		grid.WithAdaptiveAging(q.AdaptiveAgingK, q.AdaptiveAgingMinStep),
		grid.WithSweepInterval(q.SweepInterval),
	}
	for l, n := range map[grid.Level]int{grid.LevelCritical: q.LevelLimits.Critical, grid.LevelHigh: q.LevelLimits.High,
		grid.LevelNormal: q.LevelLimits.Normal, grid.LevelLow: q.LevelLimits.Low} {
		if n > 0 {
			qopts = append(qopts, grid.WithLevelLimit(l, n))
		}
	}
	d.qopts = qopts
	return nil
}

func (d *daemon) buildSkills() error {
	c := d.cfg
	d.registry = skill.NewRegistry()
	enabled := c.Skills.Enabled
	for _, name := range enabled {
		if !slices.Contains(builtinNames, name) {
			return fmt.Errorf("%w: skills.enabled: unknown built-in skill %q (built-ins: %s)",
				config.ErrInvalid, name, strings.Join(builtinNames, ", "))
		}
	}
	for _, s := range skill.Builtins(skill.BuiltinOptions{DebugSleep: slices.Contains(enabled, "debug.sleep")}) {
		if !slices.Contains(enabled, string(s.Descriptor().ID)) {
			continue
		}
		if err := d.registry.Register(s); err != nil {
			return fmt.Errorf("register skill %s: %w", s.Descriptor().ID, err)
		}
	}
	if err := d.registerCommands(); err != nil {
		return err
	}
	eopts := []skill.ExecutorOption{skill.WithExecLogger(d.log)}
	if c.Queue.Workers > 0 {
		eopts = append(eopts, skill.WithWorkers(c.Queue.Workers))
	}
	var err error
	d.executor, err = skill.NewExecutor(d.registry, d.node.ID(), eopts...)
	if err != nil {
		return fmt.Errorf("build executor: %w", err)
	}
	w := c.Routing.Weights
	d.router, err = skill.NewRouter(d.node.ID(), d.registry, d.node, d.trust, d.metrics, d.localLoad,
		skill.WithWeights(skill.Weights{Trust: w.Trust, Skill: w.Skill, Success: w.Success, Latency: w.Latency, Load: w.Load}),
		skill.WithSearcher(d.node, 0), // the DHT when gossip lists no provider; waits up to skill.DefaultSearchWait
		skill.WithObservedLoad(d.observedLoad))
	if err != nil {
		return fmt.Errorf("build router: %w", err)
	}
	return nil
}

// buildAdmission builds the admission policy from the admission and trust
// sections: trust.pre_trusted and network.allow_peers are trusted, and
// admission.mode decides whether a private network's members are known.
func (d *daemon) buildAdmission() error {
	c := d.cfg
	a := c.Admission
	cfg := skill.AdmissionConfig{
		AcceptThreshold: c.Trust.AcceptThreshold,
		KnownTrust:      a.KnownTrust,
		Stranger:        peerLimits(a.Stranger),
		Known:           peerLimits(a.Known),
		NoStrangers:     a.Mode == config.AdmissionOpen || (a.Mode == config.AdmissionAuto && d.private),
		DecayHalfLife:   c.Trust.DecayHalfLife,
	}
	for _, list := range []struct {
		key string
		ids []string
	}{{"trust.pre_trusted", c.Trust.PreTrusted}, {"network.allow_peers", c.Network.AllowPeers}} {
		ids, err := config.ParsePeerIDs(list.key, list.ids) // validated by config.Load
		if err != nil {
			return fmt.Errorf("%w: %w", config.ErrInvalid, err)
		}
		cfg.Trusted = append(cfg.Trusted, ids...)
	}
	p, err := skill.NewAdmissionPolicy(d.trust, cfg)
	if err != nil {
		return fmt.Errorf("%w: admission: %w", config.ErrInvalid, err)
	}
	d.admit = p
	if !cfg.NoStrangers {
		d.log.Info("peers that have not earned trust get the stranger limits (admission.stranger)",
			"mode", a.Mode, "tasks", a.Stranger.MaxTasks, "rate", a.Stranger.Rate, "bytes", a.Stranger.MaxBytes)
	}
	return nil
}

// peerLimits converts a class's configured limits; rate 0 is unlimited.
func peerLimits(l config.PeerLimits) grid.PeerLimits {
	r := rate.Limit(l.Rate)
	if l.Rate == 0 {
		r = rate.Inf
	}
	return grid.PeerLimits{Rate: r, Burst: l.Burst, MaxTasks: l.MaxTasks, MaxBytes: l.MaxBytes}
}

// localLoad reports this node's load for routing and announcements. It is
// called only once the coordinator (which owns the queue) exists.
func (d *daemon) localLoad() grid.Load { return d.coord.LocalLoad() }

// graphOpinions is the node's trust opinion graph: d.trust, which is built
// after the node; the node shares and receives opinions only after Start.
type graphOpinions struct{ d *daemon }

var _ grid.OpinionGraph = graphOpinions{}

func (g graphOpinions) LocalOpinions(max int) map[peer.ID]float64 {
	return g.d.trust.LocalOpinions(max)
}

func (g graphOpinions) SetPeerOpinions(from peer.ID, local map[peer.ID]float64) {
	g.d.trust.SetPeerOpinions(from, local)
}

// spotChecks is the coordinator's spot-check configuration from trust.
func (d *daemon) spotChecks() skill.SpotCheckConfig {
	sc := skill.SpotCheckConfig{Rate: d.cfg.Trust.SpotCheckRate}
	for _, s := range d.cfg.Trust.SpotCheckSkills {
		sc.Deterministic = append(sc.Deterministic, reputation.SkillID(s))
	}
	return sc
}

// loadKey reads the identity key at keyFile (relative to dir). It never
// creates one: a repo without its key is refused, so that a node cannot
// silently come up as a new peer. A key file that group or others may
// access is refused on Unix.
func loadKey(dir, keyFile string) (crypto.PrivKey, error) {
	path := repoFile(dir, keyFile)
	st, err := os.Stat(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("no identity in %s (identity.key_file %s): %w; run `cortexd init` (or `cortexd init --force` to replace the repo)", dir, path, err)
	case err != nil:
		return nil, fmt.Errorf("read identity key (identity.key_file): %w", err)
	case runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0:
		return nil, fmt.Errorf("identity key %s has mode %04o: %w; run chmod 600 %s", path, st.Mode().Perm(), grid.ErrInsecureIdentityFile, path)
	case st.Size() > 64<<10:
		return nil, fmt.Errorf("identity key %s is larger than 64 KiB: not a key file", path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read identity key (identity.key_file): %w", err)
	}
	k, err := grid.UnmarshalIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("identity key %s (identity.key_file): %w", path, err)
	}
	return k, nil
}

// start checks the API's token and opens its listener, then starts every
// component in dependency order, serves the API last, and records its URL
// in DIR/api. On failure it tears down what started.
func (d *daemon) start(ctx context.Context) (err error) {
	defer func() {
		if err != nil {
			d.closeAll()
		}
	}()
	tok, err := d.listenAPI()
	if err != nil {
		return err
	}
	if err := d.openStore(ctx); err != nil {
		return err
	}
	if err := d.openWasm(ctx); err != nil {
		return fmt.Errorf("open wasm skills: %w", err)
	}
	if err := d.node.Start(ctx); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	d.addCloser("node", d.node.Close)
	if err := d.trust.Start(ctx); err != nil {
		return fmt.Errorf("start trust graph: %w", err)
	}
	d.addCloser("trust graph", d.trust.Close)
	d.restoreState()
	d.startStateSaver()
	t := d.cfg.Tasks
	oopts := []grid.OrchestratorOption{
		grid.WithMaxMessageSize(d.cfg.Network.MaxMessageSize),
		grid.WithAckTimeout(t.AckTimeout),
		grid.WithHeartbeatInterval(t.HeartbeatInterval),
		grid.WithLeaseMisses(t.LeaseMisses),
		grid.WithPeerPolicy(d.admit),
		grid.WithNodeByteBudget(d.cfg.Admission.NodeMaxBytes),
		grid.WithOrchLogger(d.log),
	}
	if d.prom != nil {
		oopts = append(oopts, grid.WithOrchRegisterer(d.prom))
	}
	d.orch, err = grid.NewOrchestrator(d.node.Host(), &d.handler, oopts...)
	if err != nil {
		return fmt.Errorf("build orchestrator: %w", err)
	}
	if err := d.orch.Start(ctx); err != nil {
		return fmt.Errorf("start orchestrator: %w", err)
	}
	d.addCloser("orchestrator", d.orch.Close)

	// The coordinator owns the queue (built from d.qopts, with its expiry
	// handler) and the executor: its Start starts them, its Close closes them.
	d.coord, err = skill.NewCoordinator(skill.Deps{
		Self: d.node.ID(), Registry: d.registry, Executor: d.executor, Router: d.router,
		Metrics: d.metrics, Trust: d.trust, Remote: d.orch,
	},
		skill.WithQueueOptions(d.qopts...),
		skill.WithRetryBackoff(d.cfg.Queue.BackoffBase, d.cfg.Queue.BackoffMax),
		skill.WithResultRetention(t.ResultRetention),
		skill.WithMaxTasks(t.MaxTasks),
		skill.WithAdmission(d.admit),
		skill.WithCircuitBreaker(d.cfg.Breaker.Failures, d.cfg.Breaker.OpenFor),
		skill.WithLogger(d.log),
		skill.WithStore(d.store),
		skill.WithSpotChecks(d.spotChecks()),
	)
	if err != nil {
		return fmt.Errorf("build coordinator: %w", err)
	}
	if cc := d.cfg.Cache; cc.Enabled {
		rc, err := skill.NewResultCache(skill.CacheConfig{MaxBytes: int64(cc.MaxBytes), TTL: cc.TTL})
		if err != nil {
			return fmt.Errorf("build result cache (config cache.*): %w", err)
		}
		d.coord.UseResultCache(rc)
		d.keepResultCache(rc)
	}
	if err := d.coord.Start(ctx); err != nil {
		return fmt.Errorf("start coordinator: %w", err)
	}
	d.addCloser("coordinator", d.coord.Close)
	wo := workflow.Options{MaxWorkflows: d.cfg.Workflow.MaxWorkflows, Logger: d.log.With("subsystem", "workflow")}
	if d.store != nil {
		wo.Store = d.store
	}
	d.flows = workflow.New(d.coord, wo)
	if err := d.flows.Start(ctx); err != nil {
		return fmt.Errorf("start workflows: %w", err)
	}
	d.addCloser("workflows", d.flows.Close)
	if d.prom != nil {
		for _, g := range []struct {
			name, help string
			chains     bool
		}{
			{"cortex_workflows_running", "Workflows running on this node (at most workflow.max_workflows).", false},
			{"cortex_chained_tasks_active", "Tasks submitted with input_from that are waiting or running.", true},
		} {
			f := func() float64 {
				w, c := d.flows.Active()
				if g.chains {
					return float64(c)
				}
				return float64(w)
			}
			if err := d.prom.Register(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: g.name, Help: g.help}, f)); err != nil {
				return fmt.Errorf("register workflow metrics: %w", err)
			}
		}
	}
	h, err := d.startModules()
	if err != nil {
		return err
	}
	d.handler.set(h)

	d.node.SetLoadFunc(d.localLoad)
	d.announceSkills()
	d.registry.OnChange(d.announceSkills)

	return d.startAPI(tok)
}

// announceSkills publishes the registry's skills as this node's
// capabilities.
func (d *daemon) announceSkills() {
	ds := d.registry.List()
	caps := make([]grid.SkillCapability, 0, len(ds))
	mods := grid.SkillModules{}
	for _, s := range ds {
		c := grid.SkillCapability{ID: s.ID, Version: s.Version}
		caps = append(caps, c)
		if sk, err := d.registry.Lookup(s.ID, s.Version); err == nil {
			if h, ok := skill.ModuleOf(sk); ok {
				mods[c] = h
			}
		}
	}
	d.node.SetSkillModules(mods) // first, so the next announcement carries both
	d.node.SetCapabilities(caps)
}

// listenAPI reads the API token, checks that a listener beyond loopback
// has one, and opens the API's listener, so that a bad token file or a
// port in use fails before anything else starts. It returns the token
// ("" if none).
func (d *daemon) listenAPI() (string, error) {
	c := d.cfg
	tok, tokErr := readToken(d.dir, c.API.TokenFile)
	if !api.IsLoopback(c.API.Listen) {
		switch {
		case tokErr != nil:
			return "", fmt.Errorf("api.listen %s is beyond loopback, which requires a bearer token, but api.token_file %s cannot be read (%v): run `cortexd init` or write a token there",
				c.API.Listen, repoFile(d.dir, c.API.TokenFile), tokErr)
		case tok == "":
			return "", fmt.Errorf("api.listen %s is beyond loopback, which requires a bearer token, but api.token_file %s is empty: write a token there (e.g. `openssl rand -hex 32`)",
				c.API.Listen, repoFile(d.dir, c.API.TokenFile))
		}
	}
	l, err := net.Listen("tcp", c.API.Listen)
	if err != nil {
		return "", fmt.Errorf("listen for the API on %s (api.listen): %w; is another daemon running, or set api.listen to a free port", c.API.Listen, err)
	}
	d.listener = l
	d.addCloser("api listener", func() error {
		if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	if tokErr != nil {
		tok = ""
	}
	return tok, nil
}

// startAPI builds the API server, serves it on the listener listenAPI
// opened, and writes DIR/api.
func (d *daemon) startAPI(tok string) error {
	c := d.cfg
	var opts []api.Option
	if tok != "" {
		opts = append(opts, api.WithToken(tok))
	}
	opts = append(opts,
		api.WithMaxBodyBytes(c.API.MaxBodyBytes),
		api.WithLogger(d.log.With("subsystem", "api")),
		api.WithVersion(version),
		api.WithDefaults(api.TaskDefaults{Timeout: c.Queue.DefaultTimeout, MinTrust: c.Trust.MinTrustDefault, MaxRetries: c.Queue.MaxRetries}),
	)
	deps := api.Deps{Tasks: d.coord, Workflows: d.flows, Node: d.node, Skills: d.registry, Trust: d.trust, Admission: d.admit, Activity: orchActivity{d.orch},
		Installer: d.installer}
	if d.prom != nil {
		if err := d.prom.Register(api.NewCollector(d.coord, d.node, d.trust)); err != nil {
			return fmt.Errorf("register cortex metrics: %w", err)
		}
		lat := api.NewTaskLatency(d.coord, d.node.ID())
		if err := d.prom.Register(lat); err != nil {
			return fmt.Errorf("register cortex metrics: %w", err)
		}
		stop := lat.Start()
		d.addCloser("task latency metrics", func() error { stop(); return nil })
		deps.Gatherer = d.prom
	}
	srv, err := api.New(deps, opts...)
	if err != nil {
		return fmt.Errorf("build API: %w", err)
	}
	d.api = srv
	l := d.listener
	d.url = apiURL(l.Addr())
	go func() { d.served <- srv.Serve(l) }()
	d.addCloser("api", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(ctx)
	})
	if err := writeAPIFile(d.dir, d.url); err != nil {
		return err
	}
	d.addCloser("api file", func() error { return removeAPIFile(d.dir, d.url) })
	return nil
}

func (d *daemon) addCloser(name string, fn func() error) {
	d.closers = append(d.closers, namedCloser{name, fn})
}

// shutdown drains and stops the daemon: the API and the task protocol
// stop taking tasks, the tasks in flight (ours, wherever they run, and
// peers' running here) get until ctx is done to finish, then everything
// closes in reverse order of start; Close cancels what is still running.
func (d *daemon) shutdown(ctx context.Context) error {
	if d.api != nil {
		d.api.Drain()
	}
	d.handler.draining.Store(true)
	if d.coord != nil {
		// Orchestrator.Close, below, flushes the results still queued
		// for peers.
		if n := d.waitIdle(ctx); n > 0 {
			d.log.Warn("shutdown grace period over: canceling the tasks still running", "tasks", n, "grace", d.cfg.Shutdown.Grace)
		}
	}
	return d.closeAll()
}

// awayStates are the states of this node's unfinished tasks that are not
// in its queue: running on a peer, or waiting out a backoff.
var awayStates = []skill.TaskState{skill.StateDelegated, skill.StateRetrying}

// busy returns how many tasks are unfinished: those in the queue (this
// node's own and peers', ready or running here) and this node's
// own that run elsewhere or wait to retry. The coordinator has no count of
// the latter, so they are listed, at most skill.MaxListLimit of them:
// enough to tell busy from idle.
func (d *daemon) busy() int {
	st := d.coord.QueueStats()
	n := st.InFlight
	for _, q := range st.Depth {
		n += q
	}
	return n + len(d.coord.List(skill.ListFilter{States: awayStates, Limit: skill.MaxListLimit}))
}

// waitIdle waits until no task is unfinished or ctx is done, and returns
// how many were still unfinished.
func (d *daemon) waitIdle(ctx context.Context) int {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		n := d.busy()
		if n == 0 {
			return 0
		}
		select {
		case <-ctx.Done():
			return n
		case <-tick.C:
		}
	}
}

// closeAll runs the closers in reverse order, once.
func (d *daemon) closeAll() error {
	var errs []error
	for i := len(d.closers) - 1; i >= 0; i-- {
		c := d.closers[i]
		if err := c.fn(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			errs = append(errs, fmt.Errorf("close %s: %w", c.name, err))
		}
	}
	d.closers = nil
	return errors.Join(errs...)
}

// orchActivity is the orchestrator as the API's view of what each peer
// holds here and what this node has in flight to it.
type orchActivity struct{ o *grid.Orchestrator }

func (a orchActivity) PeerUsage(p peer.ID) grid.PeerUsage { return a.o.Usage(p) }
func (a orchActivity) Outstanding(p peer.ID) int          { return a.o.Outstanding(p) }

// observedLoad is what this node itself sees of p's load, against which
// the router checks what p announces: the tasks it has outstanding there
// and p's recent latency as measured here. The orchestrator is built after
// the router but before any task is routed.
func (d *daemon) observedLoad(p peer.ID) skill.ObservedLoad {
	var o skill.ObservedLoad
	if d.orch != nil {
		o.InFlight = d.orch.Outstanding(p)
	}
	if nm, ok := d.metrics.Node(p); ok {
		o.Latency = nm.RecentLatency
	}
	return o
}

// keepResultCache fills rc from the store, as the previous run left it,
// and writes its changes through to the store from then on (within a
// quarter second, so a kill -9 loses at most that much). The writer stops
// at shutdown, after the coordinator has closed.
func (d *daemon) keepResultCache(rc *skill.ResultCache) {
	if d.store == nil {
		return
	}
	w, n, err := rc.Persist(d.store, d.log.With("subsystem", "cache"))
	if err != nil {
		d.log.Warn("cannot load the saved result cache; it runs in memory only", "err", err)
		return
	}
	d.log.Debug("result cache restored", "entries", n)
	d.addCloser("result cache", w.Close)
}
