package grid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	dht "github.com/libp2p/go-libp2p-kad-dht"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
)

// ErrNodeNotStarted is returned by Node methods that need the network
// before Start has succeeded.
var ErrNodeNotStarted = errors.New("node not started")

// ErrNodeStarted is returned by a second call to Node.Start.
var ErrNodeStarted = errors.New("node already started")

// Defaults for NodeOption values.
const (
	DefaultDHTPrefix        protocol.ID = "/cortex"
	DefaultRendezvous                   = "cortex/v1"
	DefaultAnnounceInterval             = 30 * time.Second
	DefaultConnLow                      = 100
	DefaultConnHigh                     = 400
	DefaultConnGrace                    = time.Minute
)

// DefaultListenAddrs are the addresses a Node listens on unless
// WithListenAddrs says otherwise: TCP and QUIC on port 4001, all IPv4
// interfaces.
var DefaultListenAddrs = []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"}

// DHT modes accepted by WithDHTMode.
const (
	DHTModeServer = "server"
	DHTModeClient = "client"
	DHTModeAuto   = "auto"
)

// NodeOption configures a Node.
type NodeOption func(*nodeConfig)

type nodeConfig struct {
	listenAddrs      []string
	bootstrap        []peer.AddrInfo
	dhtPrefix        protocol.ID
	dhtMode          string
	mdns             bool
	rendezvous       string
	announceInterval time.Duration
	capabilityTTL    time.Duration // 0: 3 x announceInterval
	connLow          int
	connHigh         int
	connGrace        time.Duration
	limits           ResourceLimits
	logger           *slog.Logger
	registerer       prometheus.Registerer
	psk              pnet.PSK
	allowPeers       []peer.ID
	denyPeers        []peer.ID
	peerTrust        func(peer.ID) float64 // nil: every peer neutral
	noGossip         bool                  // WithCapabilityGossip(false)
	scoreInspect     func(map[peer.ID]float64)
	opinions         OpinionGraph // nil: no trust opinions (WithTrustOpinions)
	opinionInterval  time.Duration
	nat              natConfig

	// Discovery rounds start at discoveryMin and back off to discoveryMax.
	// Not exported: tests shorten them.
	discoveryMin time.Duration
	discoveryMax time.Duration
	// DHT lookups are cached this long when they found a provider, and
	// when not. Not exported: tests shorten them.
	searchHit  time.Duration
	searchMiss time.Duration
}

func defaultNodeConfig() nodeConfig {
	return nodeConfig{
		listenAddrs:      DefaultListenAddrs,
		dhtPrefix:        DefaultDHTPrefix,
		dhtMode:          DHTModeServer,
		rendezvous:       DefaultRendezvous,
		announceInterval: DefaultAnnounceInterval,
		connLow:          DefaultConnLow,
		connHigh:         DefaultConnHigh,
		connGrace:        DefaultConnGrace,
		discoveryMin:     time.Second,
		discoveryMax:     20 * time.Second,
		searchHit:        searchHitTTL,
		searchMiss:       searchMissTTL,
		nat:              defaultNATConfig(),
	}
}

// WithListenAddrs sets the multiaddrs the host listens on (default
// DefaultListenAddrs). Tests use "/ip4/127.0.0.1/tcp/0".
func WithListenAddrs(addrs ...string) NodeOption {
	return func(c *nodeConfig) { c.listenAddrs = addrs }
}

// WithBootstrapPeers sets the peers the node connects to at start and
// whenever it has no connections left. The node's own ID in the list is
// skipped, so every node may share one list. Entries with the same peer
// ID (a peer's TCP and QUIC addresses, say) are one peer with all their
// addresses.
func WithBootstrapPeers(peers ...peer.AddrInfo) NodeOption {
	return func(c *nodeConfig) { c.bootstrap = mergeAddrInfos(peers) }
}

// mergeAddrInfos joins entries of the same peer, keeping the order of
// first appearance. Auto-relay counts static relays by entry: a peer
// listed twice would make it wait for a second relay that never comes.
func mergeAddrInfos(in []peer.AddrInfo) []peer.AddrInfo {
	out := make([]peer.AddrInfo, 0, len(in))
	for _, p := range in {
		i := slices.IndexFunc(out, func(q peer.AddrInfo) bool { return q.ID == p.ID })
		if i < 0 {
			out = append(out, peer.AddrInfo{ID: p.ID, Addrs: slices.Clone(p.Addrs)})
			continue
		}
		for _, a := range p.Addrs {
			if !slices.ContainsFunc(out[i].Addrs, a.Equal) {
				out[i].Addrs = append(out[i].Addrs, a)
			}
		}
	}
	return out
}

// WithDHTPrefix sets the protocol prefix of the private DHT (default
// "/cortex"). "/ipfs", the public IPFS DHT, is refused.
func WithDHTPrefix(p protocol.ID) NodeOption {
	return func(c *nodeConfig) { c.dhtPrefix = p }
}

// WithDHTMode sets the DHT mode: "server" (default: answer queries),
// "client" (only query) or "auto" (server when publicly reachable).
func WithDHTMode(m string) NodeOption {
	return func(c *nodeConfig) { c.dhtMode = m }
}

// WithMDNS turns discovery of peers on the local network by mDNS on or off
// (default off).
func WithMDNS(on bool) NodeOption {
	return func(c *nodeConfig) { c.mdns = on }
}

// WithRendezvous sets the namespace nodes advertise and look up in the DHT
// to find each other (default "cortex/v1"). Only nodes that share it meet.
func WithRendezvous(ns string) NodeOption {
	return func(c *nodeConfig) { c.rendezvous = ns }
}

// WithAnnounceInterval sets how often the node publishes its capabilities
// when nothing changed (default 10 s).
func WithAnnounceInterval(d time.Duration) NodeOption {
	return func(c *nodeConfig) { c.announceInterval = d }
}

// WithCapabilityTTL sets how long this node's announcements stay valid on
// other nodes without a refresh (default 3 x the announce interval). It is
// carried in each announcement; entries from peers expire after the TTL
// their own announcements carry (clamped to [1 s, 1 h]), or after this one
// when they carry none.
func WithCapabilityTTL(d time.Duration) NodeOption {
	return func(c *nodeConfig) { c.capabilityTTL = d }
}

// WithConnManager sets the connection manager's watermarks: above high
// connections it trims down to low, sparing connections younger than grace
// (default 100, 400, 1 min).
func WithConnManager(low, high int, grace time.Duration) NodeOption {
	return func(c *nodeConfig) { c.connLow, c.connHigh, c.connGrace = low, high, grace }
}

// ResourceLimits caps what the libp2p resource manager lets the host use.
// A zero field keeps go-libp2p's default, scaled to the machine's memory
// and file descriptors.
type ResourceLimits struct {
	MaxMemory  int64 // bytes of buffers for all connections and streams
	MaxFDs     int   // file descriptors for connections
	MaxConns   int   // connections, inbound and outbound together
	MaxStreams int   // streams, inbound and outbound together
}

// WithResourceLimits sets the resource manager's system-wide limits. MaxConns,
// when set, must be at least the connection manager's high watermark.
func WithResourceLimits(l ResourceLimits) NodeOption {
	return func(c *nodeConfig) { c.limits = l }
}

// WithNodeLogger sets the logger (default slog.Default()).
func WithNodeLogger(l *slog.Logger) NodeOption {
	return func(c *nodeConfig) { c.logger = l }
}

// WithPrometheusRegisterer registers go-libp2p's metrics and the node's own
// (cortex_grid_capability_announcements_total{result},
// cortex_grid_trust_opinions_total{result},
// cortex_grid_provider_lookups_total{result},
// cortex_grid_capability_peers,
// cortex_grid_gater_refused_connections_total{direction},
// cortex_grid_gossip_messages_total{result},
// cortex_grid_gossip_dropped_rpcs_total,
// cortex_grid_gossip_mesh_changes_total{change}) on r; only one
// started Node may use a given r. With nil (the default) go-libp2p's
// metrics are off.
func WithPrometheusRegisterer(r prometheus.Registerer) NodeOption {
	return func(c *nodeConfig) { c.registerer = r }
}

// WithPeerTrust sets how far this node trusts a peer, in [0, 1]; the
// capability table, when full, keeps the entries of trusted (and connected,
// and verified) peers before others. f must be fast and safe for concurrent
// use, and must not call into the Node. *reputation.Graph's Trust method
// fits. Default: every peer at 0.5.
func WithPeerTrust(f func(peer.ID) float64) NodeOption {
	return func(c *nodeConfig) { c.peerTrust = f }
}

// WithCapabilityGossip turns the capability gossip on (the default) or
// off. Off, the node joins no gossipsub topic, announces nothing and hears
// no announcements: peers find its skills, and it finds theirs, through
// the DHT's provider records only (SearchProviders). For tests, and for
// operators who do not want the gossip traffic.
func WithCapabilityGossip(on bool) NodeOption {
	return func(c *nodeConfig) { c.noGossip = !on }
}

// withDiscoveryIntervals sets the first and the longest pause between
// rendezvous lookups. For tests.
func withDiscoveryIntervals(first, longest time.Duration) NodeOption {
	return func(c *nodeConfig) { c.discoveryMin, c.discoveryMax = first, longest }
}

// withSearchCache sets how long DHT lookups that found providers, and
// ones that did not, are cached. For tests.
func withSearchCache(hit, miss time.Duration) NodeOption {
	return func(c *nodeConfig) { c.searchHit, c.searchMiss = hit, miss }
}

func (c *nodeConfig) ttl() time.Duration {
	if c.capabilityTTL > 0 {
		return c.capabilityTTL
	}
	return 3 * c.announceInterval
}

// validate returns every problem in c joined into one error. self is the
// node's ID ("" if unknown).
func (c *nodeConfig) validate(self peer.ID) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.listenAddrs) == 0 {
		bad("no listen address: give at least one, such as /ip4/0.0.0.0/tcp/4001")
	}
	for _, a := range c.listenAddrs {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			bad("listen address %q is not a multiaddr: %w", a, err)
		}
	}
	for i, p := range c.bootstrap {
		if err := p.ID.Validate(); err != nil {
			bad("bootstrap peer %d has no valid peer ID: %w", i, err)
		} else if len(p.Addrs) == 0 {
			bad("bootstrap peer %s has no address: give a full multiaddr ending in /p2p/<id>", p.ID)
		}
	}
	switch {
	case !strings.HasPrefix(string(c.dhtPrefix), "/") || len(c.dhtPrefix) < 2:
		bad("DHT prefix %q must start with / and name the network, such as /cortex", c.dhtPrefix)
	case c.dhtPrefix == dht.DefaultPrefix:
		bad("DHT prefix %q is the public IPFS DHT: choose a private prefix such as /cortex", c.dhtPrefix)
	}
	if _, err := parseDHTMode(c.dhtMode); err != nil {
		errs = append(errs, err)
	}
	if c.rendezvous == "" || len(c.rendezvous) > 128 {
		bad("rendezvous namespace %q must be 1 to 128 bytes", c.rendezvous)
	} else if strings.HasPrefix(c.rendezvous, skillKeyPrefix) {
		bad("rendezvous namespace %q must not start with %q, which names skill keys", c.rendezvous, skillKeyPrefix)
	}
	if c.announceInterval < 10*time.Millisecond {
		bad("announce interval %s is too short: use at least 10ms (default %s)", c.announceInterval, DefaultAnnounceInterval)
	}
	if c.capabilityTTL < 0 {
		bad("capability TTL %s is negative", c.capabilityTTL)
	} else if c.capabilityTTL > 0 && c.capabilityTTL <= c.announceInterval {
		bad("capability TTL %s must be longer than the announce interval %s, or entries expire between announcements", c.capabilityTTL, c.announceInterval)
	}
	if c.connLow < 0 || c.connHigh <= 0 || c.connHigh < c.connLow || c.connGrace < 0 {
		bad("connection manager watermarks low=%d high=%d grace=%s: want 0 <= low <= high, high > 0, grace >= 0", c.connLow, c.connHigh, c.connGrace)
	}
	l := c.limits
	if l.MaxMemory < 0 || l.MaxFDs < 0 || l.MaxConns < 0 || l.MaxStreams < 0 {
		bad("resource limits must not be negative: %+v", l)
	}
	if l.MaxConns > 0 && l.MaxConns < c.connHigh {
		bad("resource limit MaxConns=%d is below the connection manager's high watermark %d: raise it or lower the watermark", l.MaxConns, c.connHigh)
	}
	if c.opinions != nil && c.opinionInterval < 10*time.Millisecond {
		bad("trust opinion interval %s is too short: use at least 10ms (default %s)", c.opinionInterval, DefaultOpinionInterval)
	}
	if c.opinions != nil && c.noGossip {
		bad("trust opinions travel on the gossip: they need the capability gossip on")
	}
	if c.discoveryMin <= 0 || c.discoveryMax < c.discoveryMin {
		bad("discovery intervals %s..%s are invalid", c.discoveryMin, c.discoveryMax)
	}
	c.validateAccessLists(self, bad)
	c.validatePrivateNetwork(bad)
	c.validateNAT(bad)
	return errors.Join(errs...)
}

func parseDHTMode(m string) (dht.ModeOpt, error) {
	switch m {
	case DHTModeServer:
		return dht.ModeServer, nil
	case DHTModeClient:
		return dht.ModeClient, nil
	case DHTModeAuto:
		return dht.ModeAuto, nil
	}
	return 0, fmt.Errorf("DHT mode %q is unknown: want %q, %q or %q", m, DHTModeServer, DHTModeClient, DHTModeAuto)
}

// Node is this daemon's presence on the grid: a libp2p host, a private
// Kademlia DHT, rendezvous discovery and the capability gossip. It keeps a
// table of what every peer offers, and refuses peers its allow and deny
// lists (a connection gater) or its private network key keep out.
//
// All methods are safe for concurrent use. Providers is cheap and takes no
// lock; it is meant to be called for every task.
type Node struct {
	cfg   nodeConfig
	key   crypto.PrivKey
	id    peer.ID
	log   *slog.Logger
	table *capTable
	hub   *peerEventHub
	gater *peerGater

	skills      atomic.Pointer[[]SkillCapability] // sorted; never nil after NewNode
	loadFn      atomic.Pointer[func() Load]
	seq         atomic.Uint64
	announceNow chan struct{} // capacity 1: capabilities changed
	provideNow  chan struct{} // capacity 1: skills to provide changed
	peerJoined  chan struct{} // capacity 1: a peer joined the topic
	found       chan peer.AddrInfo
	checks      chan peer.ID // announcers identify refuted, to recheck
	search      *providerSearch
	opGate      *opinionGate // per-author limits on trust opinions
	gtrace      gossipTracer // what gossipsub did with received messages

	rt atomic.Pointer[nodeRuntime] // set once Start succeeds

	mu      sync.Mutex // guards started, closed, cancel
	started bool
	closed  bool
	cancel  context.CancelFunc
	wg      sync.WaitGroup
}

// nodeRuntime is what Start builds. Its fields are not changed afterwards.
type nodeRuntime struct {
	host    host.Host
	dht     *dht.IpfsDHT
	ps      *pubsub.PubSub
	topic   *pubsub.Topic
	sub     *pubsub.Subscription
	events  *pubsub.TopicEventHandler
	connSub event.Subscription
	mdns    interface{ Close() error }
	relay   interface{ Close() error } // the relay service of RelayServiceOn
	metrics *nodeMetrics
	started time.Time // when Start built it
	// The trust opinion topic; nil without WithTrustOpinions.
	opTopic *pubsub.Topic
	opSub   *pubsub.Subscription
}

// NewNode returns a Node with identity key. It checks the options and
// starts nothing; Start does the I/O.
func NewNode(key crypto.PrivKey, opts ...NodeOption) (*Node, error) {
	cfg := defaultNodeConfig()
	for _, o := range opts {
		o(&cfg)
	}
	var errs []error
	var id peer.ID
	if key == nil {
		errs = append(errs, errors.New("no identity key: use LoadOrCreateIdentity or GenerateIdentity"))
	} else {
		var err error
		if id, err = peer.IDFromPrivateKey(key); err != nil {
			errs = append(errs, fmt.Errorf("derive peer ID from identity key: %w", err))
		}
	}
	if err := cfg.validate(id); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("configure node: %w", err)
	}
	if cfg.logger == nil {
		cfg.logger = slog.Default()
	}
	n := &Node{
		cfg:         cfg,
		key:         key,
		id:          id,
		log:         cfg.logger.With("component", "grid.node"),
		hub:         newPeerEventHub(),
		announceNow: make(chan struct{}, 1),
		provideNow:  make(chan struct{}, 1),
		peerJoined:  make(chan struct{}, 1),
		found:       make(chan peer.AddrInfo, 64),
		checks:      make(chan peer.ID, checkQueue),
		search:      newProviderSearch(cfg.searchHit, cfg.searchMiss),
		opGate:      newOpinionGate(cfg.opinionInterval),
	}
	n.table = newCapTable(id, cfg.ttl(), n.isConnected, n.hub.publish)
	n.table.speaks = n.speaks
	n.table.refutes = n.refutes
	n.table.notProvider = n.logNotProvider
	n.table.recheck = n.requestCheck
	n.table.trust = n.peerTrust
	n.gater = newPeerGater(cfg.allowPeers, cfg.denyPeers, func(dir network.Direction, p peer.ID) {
		n.log.Debug("connection refused by the access lists", "peer", p, "direction", dir)
	})
	empty := []SkillCapability{}
	n.skills.Store(&empty)
	// Sequence numbers start at the clock so a restarted node's
	// announcements outrank the ones its previous run sent.
	n.seq.Store(uint64(time.Now().UnixNano()))
	return n, nil
}

// Start builds the host (TCP and QUIC, or TCP only with a private network
// key; Noise and TLS, yamux, resource and connection managers, the
// connection gater), the DHT and gossipsub, joins the capability topic,
// connects to the bootstrap peers and starts the background loops. ctx
// bounds the start-up only (bootstrap connections); the node runs until
// Close. If Start fails it tears down what it started; the Node can then
// only be closed.
func (n *Node) Start(ctx context.Context) (err error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	switch {
	case n.closed:
		return fmt.Errorf("start node: %w", ErrClosed)
	case n.started:
		return fmt.Errorf("start node: %w", ErrNodeStarted)
	}
	n.started = true

	runCtx, cancel := context.WithCancel(context.Background())
	rt := &nodeRuntime{started: time.Now()}
	defer func() {
		if err != nil {
			cancel()
			n.wg.Wait()
			n.rt.Store(nil)
			_ = rt.close() // the start error says what went wrong
		}
	}()
	if err := n.buildRuntime(runCtx, rt); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	n.rt.Store(rt)
	n.startLoops(runCtx, rt)
	if err := n.connectBootstrap(ctx, rt.host); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	if err := rt.dht.Bootstrap(runCtx); err != nil {
		return fmt.Errorf("start node: bootstrap DHT: %w", err)
	}
	n.cancel = cancel
	n.log.Info("node started", "peer", n.id, "addrs", rt.host.Addrs(), "dht_mode", n.cfg.dhtMode)
	return nil
}

// buildRuntime fills rt step by step; on error rt holds what was built.
func (n *Node) buildRuntime(ctx context.Context, rt *nodeRuntime) error {
	var err error
	if rt.host, err = n.newHost(); err != nil {
		return err
	}
	if r, err := n.startRelayService(rt.host); err != nil {
		return err
	} else if r != nil {
		rt.relay = r
	}
	if rt.metrics, err = newNodeMetrics(n.cfg.registerer, n.table, n.gater, &n.gtrace); err != nil {
		return err
	}
	if rt.dht, err = n.newDHT(rt.host); err != nil {
		return err
	}
	if !n.cfg.noGossip {
		if err := n.joinGossip(ctx, rt); err != nil {
			return err
		}
	}
	if rt.connSub, err = rt.host.EventBus().Subscribe(append([]any{new(event.EvtPeerConnectednessChanged)}, identifyEvents...)); err != nil {
		return fmt.Errorf("subscribe to connection events: %w", err)
	}
	if n.cfg.mdns {
		if rt.mdns, err = n.startMDNS(rt.host); err != nil {
			return err
		}
	}
	return nil
}

func (n *Node) startLoops(ctx context.Context, rt *nodeRuntime) {
	n.wg.Go(func() { n.hub.run(ctx) })
	if rt.topic != nil {
		n.wg.Go(func() { n.readLoop(ctx, rt) })
		n.wg.Go(func() { n.topicEventLoop(ctx, rt) })
		n.wg.Go(func() { n.announceLoop(ctx, rt) })
		n.wg.Go(func() { n.checkLoop(ctx, rt) })
	}
	if rt.opTopic != nil {
		n.wg.Go(func() { n.opinionReadLoop(ctx, rt) })
		n.wg.Go(func() { n.opinionLoop(ctx, rt) })
	}
	n.wg.Go(func() { n.connEventLoop(ctx, rt) })
	n.wg.Go(func() { n.findLoop(ctx, rt) })
	n.wg.Go(func() { n.searchLoop(ctx, rt) })
	n.wg.Go(func() { n.provideLoop(ctx, rt) })
}

// Close stops the node's loops and waits for them, then closes mDNS,
// leaves the capability topic and closes the DHT and the host, in that
// order. A Start in progress finishes first. Close does not wait for
// gossipsub's internal goroutines, which end on their own once their
// context is canceled. Close is idempotent.
func (n *Node) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.cancel == nil {
		return nil // never started, or Start failed and cleaned up
	}
	n.cancel()
	n.wg.Wait()
	if err := n.rt.Load().close(); err != nil {
		return fmt.Errorf("close node: %w", err)
	}
	return nil
}

// close releases what was built, in reverse order. Nil fields are skipped.
func (rt *nodeRuntime) close() error {
	var errs []error
	if rt.mdns != nil {
		errs = append(errs, rt.mdns.Close())
	}
	if rt.connSub != nil {
		errs = append(errs, rt.connSub.Close())
	}
	if rt.events != nil {
		rt.events.Cancel()
	}
	if rt.sub != nil {
		rt.sub.Cancel()
	}
	if rt.opSub != nil {
		rt.opSub.Cancel()
	}
	if rt.opTopic != nil {
		_ = rt.opTopic.Close() // as for the capability topic below
	}
	if rt.topic != nil {
		// Close fails only while handlers or subscriptions are open, and
		// they were all canceled above; the pubsub context ends it anyway.
		_ = rt.topic.Close()
	}
	if rt.dht != nil {
		errs = append(errs, rt.dht.Close())
	}
	if rt.relay != nil {
		errs = append(errs, rt.relay.Close())
	}
	if rt.host != nil {
		errs = append(errs, rt.host.Close())
	}
	rt.metrics.unregister()
	return errors.Join(errs...)
}

// CapabilitiesWarming reports whether the capability table may still be
// filling: before Start, and after it for one announce interval and as
// long again, up to warmSlack (gossip does not replay old announcements,
// and each provider announces once an interval). A task for a skill no
// node is known to offer waits for a provider then instead of failing at
// once. With WithCapabilityGossip(false) it is false: there is no table to
// fill.
func (n *Node) CapabilitiesWarming() bool {
	if n.cfg.noGossip {
		return false
	}
	rt := n.rt.Load()
	return rt == nil || time.Since(rt.started) < n.cfg.announceInterval+min(n.cfg.announceInterval, warmSlack)
}

// warmSlack is how long past its first announce interval a node's table
// is still taken to be filling: joining the mesh and the announcements'
// way through it.
const warmSlack = 5 * time.Second

// Host returns the libp2p host, or nil before Start.
func (n *Node) Host() host.Host {
	if rt := n.rt.Load(); rt != nil {
		return rt.host
	}
	return nil
}

// ID returns the node's peer ID. It is known from NewNode on.
func (n *Node) ID() peer.ID { return n.id }

// Addrs returns the node's listen addresses with /p2p/<id> appended, the
// form other nodes take as bootstrap peers. It is nil before Start.
func (n *Node) Addrs() []multiaddr.Multiaddr {
	rt := n.rt.Load()
	if rt == nil {
		return nil
	}
	addrs, err := peer.AddrInfoToP2pAddrs(&peer.AddrInfo{ID: n.id, Addrs: rt.host.Addrs()})
	if err != nil {
		return nil // only fails for an empty peer ID, which n.id is not
	}
	return addrs
}

func (n *Node) isConnected(p peer.ID) bool {
	rt := n.rt.Load()
	return rt != nil && hostConnected(rt.host, p)
}

// nodeMetrics are the node's own metrics. A nil *nodeMetrics records
// nothing.
type nodeMetrics struct {
	reg           prometheus.Registerer
	announcements *prometheus.CounterVec
	opinions      *prometheus.CounterVec
	lookups       *prometheus.CounterVec
	peers         prometheus.GaugeFunc
	gossip        prometheus.Collector
	refused       []prometheus.Collector
}

// newNodeMetrics registers the node's metrics on reg; nil reg gives nil.
// Only one started Node may use a given registerer.
func newNodeMetrics(reg prometheus.Registerer, t *capTable, g *peerGater, gt *gossipTracer) (*nodeMetrics, error) {
	if reg == nil {
		return nil, nil
	}
	m := &nodeMetrics{
		reg: reg,
		announcements: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_grid_capability_announcements_total",
			Help: "Capability announcements received from peers, by validation result (accepted, ignored, rejected).",
		}, []string{"result"}),
		opinions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_grid_trust_opinions_total",
			Help: "Trust opinion messages received from peers, by validation result (accepted, ignored: over the author's rate, stale or from a denied peer; rejected: malformed).",
		}, []string{"result"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "cortex_grid_provider_lookups_total",
			Help: "DHT provider lookups SearchProviders asked for, by result (found, none, not_run: no DHT peer yet, limited: over the lookup limits).",
		}, []string{"result"}),
		peers: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "cortex_grid_capability_peers",
			Help: "Peers in the capability table.",
		}, func() float64 { return float64(t.size()) }),
		gossip: gossipCollector{gt},
	}
	for dir, n := range map[string]*atomic.Uint64{"outbound": &g.refusedD, "inbound": &g.refusedI} {
		m.refused = append(m.refused, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "cortex_grid_gater_refused_connections_total",
			Help:        "Connections the allow and deny lists refused, by direction.",
			ConstLabels: prometheus.Labels{"direction": dir},
		}, func() float64 { return float64(n.Load()) }))
	}
	all := append([]prometheus.Collector{m.announcements, m.opinions, m.lookups, m.peers, m.gossip}, m.refused...)
	for i, c := range all {
		if err := reg.Register(c); err != nil {
			for _, done := range all[:i] {
				reg.Unregister(done)
			}
			return nil, fmt.Errorf("register node metrics: %w", err)
		}
	}
	return m, nil
}

func (m *nodeMetrics) announcement(result string) {
	if m != nil {
		m.announcements.WithLabelValues(result).Inc()
	}
}

func (m *nodeMetrics) opinion(result string) {
	if m != nil {
		m.opinions.WithLabelValues(result).Inc()
	}
}

func (m *nodeMetrics) lookup(result string) {
	if m != nil {
		m.lookups.WithLabelValues(result).Inc()
	}
}

func (m *nodeMetrics) unregister() {
	if m != nil {
		m.reg.Unregister(m.announcements)
		m.reg.Unregister(m.opinions)
		m.reg.Unregister(m.lookups)
		m.reg.Unregister(m.peers)
		m.reg.Unregister(m.gossip)
		for _, c := range m.refused {
			m.reg.Unregister(c)
		}
	}
}

// CapabilityGossip reports whether the node hears the capability gossip
// (false with WithCapabilityGossip(false)); the router then asks the DHT
// for the skills this node offers too.
func (n *Node) CapabilityGossip() bool { return !n.cfg.noGossip }
