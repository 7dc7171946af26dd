package grid

import (
	"fmt"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/host/autorelay"
	relayv2 "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/relay"
	"github.com/multiformats/go-multiaddr"
)

// Relay service modes accepted by WithRelayService.
const (
	// RelayServiceAuto runs the circuit relay v2 service while AutoNAT
	// finds the node publicly reachable (the default).
	RelayServiceAuto = "auto"
	// RelayServiceOn runs it from Start on, whatever AutoNAT finds: for a
	// bootstrap node known to be public.
	RelayServiceOn = "on"
	// RelayServiceOff never runs it.
	RelayServiceOff = "off"
)

// Reachability values accepted by WithReachability and reported by
// NATStatus.
const (
	ReachabilityAuto    = "auto"    // AutoNAT decides (the default)
	ReachabilityUnknown = "unknown" // AutoNAT has not decided yet
	ReachabilityPublic  = "public"
	ReachabilityPrivate = "private"
)

// hopProtocol is what a node running the relay service speaks.
const hopProtocol = "/libp2p/circuit/relay/0.2.0/hop"

// natConfig is the NAT traversal part of nodeConfig.
type natConfig struct {
	relayService string
	autoRelay    bool
	staticRelays []peer.AddrInfo // empty: the bootstrap peers
	holePunching bool
	portMapping  bool
	reachability string
	relayLimits  RelayLimits
	// relayAnyAddr makes the relay service of RelayServiceOn hand out
	// reservations with non-public addresses too. Not exported: tests on
	// loopback set it.
	relayAnyAddr bool
}

func defaultNATConfig() natConfig {
	return natConfig{relayService: RelayServiceAuto, autoRelay: true, holePunching: true, reachability: ReachabilityAuto,
		relayLimits: DefaultRelayLimits()}
}

// RelayLimits bound what this node's relay service gives peers behind
// NAT. A circuit that reaches Duration or Data is reset by the relay.
type RelayLimits struct {
	// MaxReservations is how many peers may hold a slot at once.
	MaxReservations int
	// MaxCircuits is how many relayed connections may be open to or from
	// one peer at once.
	MaxCircuits int
	// Duration is how long one relayed connection may last.
	Duration time.Duration
	// Data is how many bytes one relayed connection may carry each way.
	Data int64
}

// Lower bounds of RelayLimits: identify and the hole-punch exchange run
// over a relayed connection before anything else, and need about this
// much of it.
const (
	minRelayDuration = time.Second
	minRelayData     = 16 << 10
)

// DefaultRelayLimits are circuit relay v2's own defaults: 128
// reservations, 16 circuits per peer, 2 minutes and 128 KiB each way per
// circuit.
func DefaultRelayLimits() RelayLimits {
	r := relayv2.DefaultResources()
	return RelayLimits{MaxReservations: r.MaxReservations, MaxCircuits: r.MaxCircuits,
		Duration: r.Limit.Duration, Data: r.Limit.Data}
}

// WithRelayLimits sets the limits of the relay service
// (DefaultRelayLimits unless set). They apply only while it runs (see
// WithRelayService).
func WithRelayLimits(l RelayLimits) NodeOption {
	return func(c *nodeConfig) { c.nat.relayLimits = l }
}

// resources are the relay v2 resources of l: its defaults with l's
// limits.
func (l RelayLimits) resources() relayv2.Resources {
	r := relayv2.DefaultResources()
	r.MaxReservations, r.MaxCircuits = l.MaxReservations, l.MaxCircuits
	r.Limit = &relayv2.RelayLimit{Duration: l.Duration, Data: l.Data}
	return r
}

// WithRelayService sets when the node relays connections for peers behind
// NAT (circuit relay v2): RelayServiceAuto (default), RelayServiceOn or
// RelayServiceOff. A relayed connection carries at most the limits of
// WithRelayLimits.
func WithRelayService(mode string) NodeOption {
	return func(c *nodeConfig) { c.nat.relayService = mode }
}

// WithAutoRelay turns auto-relay on (the default) or off: while AutoNAT
// finds the node not publicly reachable, it reserves a slot on a relay
// and advertises the /p2p-circuit address through it. The relays tried
// are static, or the bootstrap peers when static is empty.
func WithAutoRelay(on bool, static ...peer.AddrInfo) NodeOption {
	return func(c *nodeConfig) { c.nat.autoRelay, c.nat.staticRelays = on, mergeAddrInfos(static) }
}

// WithHolePunching turns DCUtR hole punching on (the default) or off: a
// node reached through a relay then tries to open a direct connection.
func WithHolePunching(on bool) NodeOption {
	return func(c *nodeConfig) { c.nat.holePunching = on }
}

// WithPortMapping turns UPnP / NAT-PMP port mapping on the local router
// on or off (default off).
func WithPortMapping(on bool) NodeOption {
	return func(c *nodeConfig) { c.nat.portMapping = on }
}

// WithReachability overrides AutoNAT: ReachabilityPublic or
// ReachabilityPrivate make the node believe it, ReachabilityAuto (the
// default) lets AutoNAT find out by asking peers to dial back.
func WithReachability(r string) NodeOption {
	return func(c *nodeConfig) { c.nat.reachability = r }
}

func (c *nodeConfig) validateNAT(bad func(string, ...any)) {
	n := c.nat
	switch n.relayService {
	case RelayServiceAuto, RelayServiceOn, RelayServiceOff:
	default:
		bad("relay service mode %q is unknown: want %q, %q or %q", n.relayService, RelayServiceAuto, RelayServiceOn, RelayServiceOff)
	}
	switch n.reachability {
	case ReachabilityAuto, ReachabilityPublic, ReachabilityPrivate:
	default:
		bad("reachability %q is unknown: want %q, %q or %q", n.reachability, ReachabilityAuto, ReachabilityPublic, ReachabilityPrivate)
	}
	for i, p := range n.staticRelays {
		if err := p.ID.Validate(); err != nil {
			bad("static relay %d has no valid peer ID: %w", i, err)
		} else if len(p.Addrs) == 0 {
			bad("static relay %s has no address: give a full multiaddr ending in /p2p/<id>", p.ID)
		}
	}
	if l := n.relayLimits; l.MaxReservations < 1 {
		bad("relay max reservations must be at least 1, got %d", l.MaxReservations)
	}
	if l := n.relayLimits; l.MaxCircuits < 1 {
		bad("relay max circuits must be at least 1, got %d", l.MaxCircuits)
	}
	if l := n.relayLimits; l.Duration < minRelayDuration {
		bad("relay limit duration must be at least %s, got %s", minRelayDuration, l.Duration)
	}
	if l := n.relayLimits; l.Data < minRelayData {
		bad("relay limit data must be at least %d bytes (16 KiB: identify and hole punching run over the relayed connection first), got %d", minRelayData, l.Data)
	}
	if n.autoRelay && len(n.staticRelays) == 0 && len(c.bootstrap) == 0 && n.reachability == ReachabilityPrivate {
		bad("auto-relay needs a relay: give static relays or bootstrap peers, or turn auto-relay off")
	}
}

// relays returns the relays auto-relay tries: the static ones, else the
// bootstrap peers, without this node.
func (n *Node) relays() []peer.AddrInfo {
	src := n.cfg.nat.staticRelays
	if len(src) == 0 {
		src = n.bootstrapPeers()
	}
	return slices.DeleteFunc(slices.Clone(src), func(p peer.AddrInfo) bool { return p.ID == n.id })
}

// natOptions are the host options of NAT traversal: the relay transport
// (always: it dials peers that are reachable through a relay only),
// AutoNAT v1 and v2 with their dial-back services, and what natConfig
// turns on.
func (n *Node) natOptions() []libp2p.Option {
	c := n.cfg.nat
	opts := []libp2p.Option{libp2p.EnableRelay(), libp2p.EnableNATService(), libp2p.EnableAutoNATv2()}
	switch c.reachability {
	case ReachabilityPublic:
		opts = append(opts, libp2p.ForceReachabilityPublic())
	case ReachabilityPrivate:
		opts = append(opts, libp2p.ForceReachabilityPrivate())
	}
	if c.relayService == RelayServiceAuto {
		opts = append(opts, libp2p.EnableRelayService(relayv2.WithResources(c.relayLimits.resources())))
	}
	if relays := n.relays(); c.autoRelay && len(relays) > 0 {
		// A relay that refused (not public yet, say) is tried again after
		// a minute, not libp2p's hour: the relays are few and known.
		opts = append(opts, libp2p.EnableAutoRelayWithStaticRelays(relays, autorelay.WithBackoff(time.Minute)))
	}
	if c.holePunching {
		opts = append(opts, libp2p.EnableHolePunching())
	}
	if c.portMapping {
		opts = append(opts, libp2p.NATPortMap())
	}
	return opts
}

// startRelayService starts the relay service of RelayServiceOn on h; it
// returns nil for the other modes.
func (n *Node) startRelayService(h host.Host) (*relayv2.Relay, error) {
	if n.cfg.nat.relayService != RelayServiceOn {
		return nil, nil
	}
	opts := []relayv2.Option{relayv2.WithResources(n.cfg.nat.relayLimits.resources())}
	if n.cfg.nat.relayAnyAddr {
		opts = append(opts, relayv2.WithReservationAddressFilter(func(multiaddr.Multiaddr) bool { return true }))
	}
	if n.cfg.registerer != nil {
		opts = append(opts, relayv2.WithMetricsTracer(relayv2.NewMetricsTracer(relayv2.WithRegisterer(n.cfg.registerer))))
	}
	r, err := relayv2.New(h, opts...)
	if err != nil {
		return nil, fmt.Errorf("start relay service: %w", err)
	}
	return r, nil
}

// NATStatus is what the node knows of its own reachability.
type NATStatus struct {
	// Reachability is ReachabilityPublic, ReachabilityPrivate or
	// ReachabilityUnknown, as AutoNAT (or WithReachability) has it.
	Reachability string
	// RelayService reports whether this node relays for others now.
	RelayService bool
	// Relays are the relays this node holds a reservation on, and
	// RelayAddrs its /p2p-circuit addresses through them.
	Relays     []peer.ID
	RelayAddrs []multiaddr.Multiaddr
	// Reachable and Unreachable are the addresses AutoNAT v2 confirmed
	// to be dialable from outside, or not.
	Reachable   []multiaddr.Multiaddr
	Unreachable []multiaddr.Multiaddr
	// DirectPeers counts the connected peers with at least one direct
	// connection (a relayed one that hole punching replaced counts here);
	// RelayedPeers are the connected peers reached only through a relay
	// (limited connections), in ID order.
	DirectPeers  int
	RelayedPeers []peer.ID
}

// NATStatus returns the node's reachability, or ErrNodeNotStarted.
func (n *Node) NATStatus() (NATStatus, error) {
	rt := n.rt.Load()
	if rt == nil {
		return NATStatus{}, ErrNodeNotStarted
	}
	return natStatusOf(rt.host), nil
}

func natStatusOf(h host.Host) NATStatus {
	st := NATStatus{Reachability: ReachabilityUnknown}
	if r, ok := h.(interface{ Reachability() network.Reachability }); ok {
		switch r.Reachability() {
		case network.ReachabilityPublic:
			st.Reachability = ReachabilityPublic
		case network.ReachabilityPrivate:
			st.Reachability = ReachabilityPrivate
		}
	}
	if c, ok := h.(interface {
		ConfirmedAddrs() (reachable, unreachable, unknown []multiaddr.Multiaddr)
	}); ok {
		st.Reachable, st.Unreachable, _ = c.ConfirmedAddrs()
	}
	st.RelayService = slices.Contains(h.Mux().Protocols(), hopProtocol)
	for _, p := range h.Network().Peers() {
		switch {
		case IsRelayed(h, p):
			st.RelayedPeers = append(st.RelayedPeers, p)
		case len(h.Network().ConnsToPeer(p)) > 0:
			st.DirectPeers++
		}
	}
	slices.Sort(st.RelayedPeers)
	for _, a := range h.Addrs() {
		relay, ok := circuitRelay(a)
		if !ok {
			continue
		}
		st.RelayAddrs = append(st.RelayAddrs, a)
		if !slices.Contains(st.Relays, relay) {
			st.Relays = append(st.Relays, relay)
		}
	}
	return st
}

// circuitRelay returns the relay of a /p2p-circuit address
// (.../p2p/<relay>/p2p-circuit).
func circuitRelay(a multiaddr.Multiaddr) (peer.ID, bool) {
	var relay peer.ID
	circuit := false
	for _, c := range a {
		if c.Protocol().Code == multiaddr.P_CIRCUIT {
			circuit = true
			break
		}
		if c.Protocol().Code == multiaddr.P_P2P {
			relay, _ = peer.Decode(c.Value())
		}
	}
	if !circuit || relay == "" {
		return "", false
	}
	return relay, true
}

// IsRelayed reports whether every open connection to p goes through a
// relay (a limited connection): true after a failed hole punch, false
// once a direct one exists or when there is none.
func IsRelayed(h host.Host, p peer.ID) bool {
	conns := h.Network().ConnsToPeer(p)
	for _, c := range conns {
		if !c.Stat().Limited {
			return false
		}
	}
	return len(conns) > 0
}
