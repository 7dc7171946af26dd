package grid

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/ipfs/go-cid"
	"github.com/libp2p/go-libp2p"
	dht "github.com/libp2p/go-libp2p-kad-dht"
	"github.com/libp2p/go-libp2p/core/discovery"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/discovery/mdns"
	drouting "github.com/libp2p/go-libp2p/p2p/discovery/routing"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/net/connmgr"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	tls "github.com/libp2p/go-libp2p/p2p/security/tls"
	quic "github.com/libp2p/go-libp2p/p2p/transport/quic"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"github.com/multiformats/go-multiaddr"
	mh "github.com/multiformats/go-multihash"
)

const (
	// skillKeyPrefix is hashed with a skill ID into the DHT key its
	// providers are stored under.
	skillKeyPrefix = "cortex/skill/"

	dialTimeout      = 10 * time.Second
	findTimeout      = 30 * time.Second
	provideTimeout   = 60 * time.Second
	reprovideEvery   = time.Hour // DHT provider records live 48 h
	maxParallelDials = 8
	maxParallelPuts  = 4
	bootstrapTag     = "cortex-bootstrap"
)

// SkillCID returns the DHT key under which providers of skill are stored:
// a raw CIDv1 of the SHA-256 of "cortex/skill/<id>".
func SkillCID(skill reputation.SkillID) cid.Cid {
	h, err := mh.Sum([]byte(skillKeyPrefix+string(skill)), mh.SHA2_256, -1)
	if err != nil {
		panic(fmt.Sprintf("sha2-256 multihash: %v", err)) // cannot fail: SHA2_256 is built in
	}
	return cid.NewCidV1(cid.Raw, h)
}

// FindProviders looks skill up in the DHT and returns up to max providers
// other than this node and peers the access lists refuse (max <= 0 means
// 20). It is for skills the gossip table does not know; it blocks until max
// are found, the lookup ends or ctx is done. Found peers' addresses are kept in the peerstore for a while.
func (n *Node) FindProviders(ctx context.Context, skill reputation.SkillID, max int) ([]peer.AddrInfo, error) {
	if err := checkSkillID(skill); err != nil {
		return nil, fmt.Errorf("find providers of %q: %w", skill, err)
	}
	rt := n.rt.Load()
	if rt == nil {
		return nil, fmt.Errorf("find providers of %s: %w", skill, ErrNodeNotStarted)
	}
	if max <= 0 {
		max = 20
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // ends the lookup if we stop reading early
	var out []peer.AddrInfo
	for ai := range rt.dht.FindProvidersAsync(ctx, SkillCID(skill), max+1) {
		if ai.ID == n.id || !n.gater.allowed(ai.ID) {
			continue
		}
		out = append(out, ai)
		if len(out) == max {
			break
		}
	}
	if len(out) == 0 && ctx.Err() != nil {
		return nil, fmt.Errorf("find providers of %s: %w", skill, ctx.Err())
	}
	return out, nil
}

// hostConnected reports whether h has a connection to p, direct or
// through a relay (limited).
func hostConnected(h host.Host, p peer.ID) bool {
	c := h.Network().Connectedness(p)
	return c == network.Connected || c == network.Limited
}

func (n *Node) newHost() (host.Host, error) {
	rm, err := n.newResourceManager()
	if err != nil {
		return nil, err
	}
	cm, err := connmgr.NewConnManager(n.cfg.connLow, n.cfg.connHigh, connmgr.WithGracePeriod(n.cfg.connGrace))
	if err != nil {
		_ = rm.Close()
		return nil, fmt.Errorf("build connection manager: %w", err)
	}
	listen, dropped := n.cfg.splitListenAddrs()
	if len(dropped) > 0 {
		n.log.Warn("private network: not listening on QUIC addresses, which a pre-shared key cannot protect; listen on TCP only to silence this",
			"dropped", dropped)
	}
	opts := []libp2p.Option{
		libp2p.Identity(n.key),
		// Listening happens below, once the host is built: libp2p leaks
		// the swarm when listening fails inside New.
		libp2p.NoListenAddrs,
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.ConnectionGater(n.gater),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Security(tls.ID, tls.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.ResourceManager(rm),
		libp2p.ConnectionManager(cm),
		libp2p.UserAgent("cortexd"),
	}
	opts = append(opts, n.natOptions()...)
	if len(n.cfg.psk) > 0 {
		opts = append(opts, libp2p.PrivateNetwork(n.cfg.psk))
	} else {
		opts = append(opts, libp2p.Transport(quic.NewTransport))
	}
	if n.cfg.registerer != nil {
		opts = append(opts, libp2p.PrometheusRegisterer(n.cfg.registerer))
	} else {
		opts = append(opts, libp2p.DisableMetrics())
	}
	h, err := libp2p.New(opts...)
	if err != nil {
		// libp2p closes them only on some of its error paths; both
		// Close methods are idempotent.
		_ = cm.Close()
		_ = rm.Close()
		return nil, fmt.Errorf("build libp2p host: %w", err)
	}
	for _, a := range listen {
		ma, err := multiaddr.NewMultiaddr(a)
		if err == nil {
			err = h.Network().Listen(ma)
		}
		if err != nil {
			_ = h.Close()
			return nil, fmt.Errorf("listen on %s: %w", a, err)
		}
	}
	return h, nil
}

// newResourceManager scales go-libp2p's default limits to the machine, or
// to MaxMemory and MaxFDs when set, then caps the system scope.
func (n *Node) newResourceManager() (network.ResourceManager, error) {
	l := n.cfg.limits
	scaling := rcmgr.DefaultLimits
	libp2p.SetDefaultServiceLimits(&scaling)
	limits := scaling.AutoScale()
	if l.MaxMemory > 0 || l.MaxFDs > 0 {
		sys := limits.ToPartialLimitConfig().System
		mem, fds := int64(sys.Memory), int(sys.FD)
		if l.MaxMemory > 0 {
			mem = l.MaxMemory
		}
		if l.MaxFDs > 0 {
			fds = l.MaxFDs
		}
		limits = scaling.Scale(mem, fds)
	}
	var sys rcmgr.ResourceLimits
	if l.MaxMemory > 0 {
		sys.Memory = rcmgr.LimitVal64(l.MaxMemory)
	}
	if l.MaxFDs > 0 {
		sys.FD = rcmgr.LimitVal(l.MaxFDs)
	}
	if l.MaxConns > 0 {
		sys.Conns = rcmgr.LimitVal(l.MaxConns)
	}
	if l.MaxStreams > 0 {
		sys.Streams = rcmgr.LimitVal(l.MaxStreams)
	}
	limits = rcmgr.PartialLimitConfig{System: sys}.Build(limits)
	var opts []rcmgr.Option
	if n.cfg.registerer == nil {
		opts = append(opts, rcmgr.WithMetricsDisabled())
	}
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits), opts...)
	if err != nil {
		return nil, fmt.Errorf("build resource manager: %w", err)
	}
	return rm, nil
}

func (n *Node) newDHT(h host.Host) (*dht.IpfsDHT, error) {
	mode, err := parseDHTMode(n.cfg.dhtMode)
	if err != nil {
		return nil, err // validated in NewNode
	}
	d, err := dht.New(h,
		dht.ProtocolPrefix(n.cfg.dhtPrefix),
		dht.Mode(mode),
		dht.BootstrapPeers(n.bootstrapPeers()...),
		dht.DisableValues(), // only provider records: peers and skills
	)
	if err != nil {
		return nil, fmt.Errorf("build DHT: %w", err)
	}
	return d, nil
}

// bootstrapPeers returns the configured bootstrap peers without this node
// and without peers denied at run time.
func (n *Node) bootstrapPeers() []peer.AddrInfo {
	out := make([]peer.AddrInfo, 0, len(n.cfg.bootstrap))
	for _, p := range n.cfg.bootstrap {
		if p.ID != n.id && n.gater.allowed(p.ID) {
			out = append(out, p)
		}
	}
	return out
}

// connectBootstrap dials the bootstrap peers in parallel and protects their
// connections from the connection manager. Unreachable peers are logged;
// the error is ctx's, if it ended first.
func (n *Node) connectBootstrap(ctx context.Context, h host.Host) error {
	peers := n.bootstrapPeers()
	if len(peers) == 0 {
		return nil
	}
	errs := make([]error, len(peers))
	var wg sync.WaitGroup
	for i, p := range peers {
		h.ConnManager().Protect(p.ID, bootstrapTag)
		wg.Go(func() {
			dctx, cancel := context.WithTimeout(ctx, dialTimeout)
			defer cancel()
			errs[i] = h.Connect(dctx, p)
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("connect to bootstrap peers: %w", err)
	}
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			n.log.Debug("bootstrap peer unreachable", "peer", peers[i].ID, "err", err)
		}
	}
	if failed == len(peers) {
		n.log.Warn("no bootstrap peer reachable; will retry", "peers", len(peers))
	}
	return nil
}

// findLoop looks up the rendezvous namespace, quickly at first and then
// every discoveryMax, and connects to the peers it finds. It also dials the
// peers mDNS reports, and redials them each round while they stay
// unconnected: mDNS reports a peer only once.
func (n *Node) findLoop(ctx context.Context, rt *nodeRuntime) {
	disc := drouting.NewRoutingDiscovery(rt.dht)
	lan := make(map[peer.ID]lanPeer)
	wait := n.cfg.discoveryMin
	timer := time.NewTimer(wait)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case ai := <-n.found:
			if _, ok := lan[ai.ID]; ok || len(lan) < maxLANPeers {
				lan[ai.ID] = lanPeer{ai: ai, seen: time.Now()}
			}
			// When two nodes hear of each other at once, only the one with
			// the lower ID dials at once: simultaneous dials over reused
			// ports can open one TCP connection that both sides think they
			// initiated, and both fail. The other dials next round.
			if n.id < ai.ID {
				n.dial(ctx, rt.host, ai)
			}
			continue
		case <-timer.C:
		}
		if len(rt.host.Network().Peers()) == 0 {
			_ = n.connectBootstrap(ctx, rt.host) // the error is ctx's
		}
		n.findRound(ctx, rt.host, disc, lan)
		wait = min(2*wait, n.cfg.discoveryMax)
		timer.Reset(wait)
	}
}

// lanPeer is a peer mDNS reported, remembered for lanPeerMemory.
type lanPeer struct {
	ai   peer.AddrInfo
	seen time.Time
}

const (
	maxLANPeers   = 64
	lanPeerMemory = 10 * time.Minute
)

// findRound redials remembered LAN peers, then looks up the rendezvous
// namespace and dials what it finds, while below the low watermark.
func (n *Node) findRound(ctx context.Context, h host.Host, disc *drouting.RoutingDiscovery, lan map[peer.ID]lanPeer) {
	fctx, cancel := context.WithTimeout(ctx, findTimeout)
	defer cancel()
	sem := make(chan struct{}, maxParallelDials)
	var wg sync.WaitGroup
	dial := func(ai peer.AddrInfo) {
		if ai.ID == n.id || hostConnected(h, ai.ID) || !n.gater.allowed(ai.ID) || len(h.Network().Peers()) >= n.cfg.connLow {
			return
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			n.dial(fctx, h, ai)
		})
	}
	now := time.Now()
	for id, lp := range lan {
		if now.Sub(lp.seen) > lanPeerMemory {
			delete(lan, id)
			continue
		}
		dial(lp.ai)
	}
	found, err := disc.FindPeers(fctx, n.cfg.rendezvous, discovery.Limit(100))
	if err != nil {
		n.log.Debug("rendezvous lookup failed", "err", err)
	} else {
		for ai := range found {
			dial(ai) // returns at once when it need not dial: keep draining
		}
	}
	wg.Wait()
}

func (n *Node) dial(ctx context.Context, h host.Host, ai peer.AddrInfo) {
	if ai.ID == n.id || hostConnected(h, ai.ID) || !n.gater.allowed(ai.ID) {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, dialTimeout)
	defer cancel()
	if err := h.Connect(dctx, ai); err != nil {
		n.log.Debug("connect to discovered peer failed", "peer", ai.ID, "err", err)
		return
	}
	n.log.Debug("connected to discovered peer", "peer", ai.ID)
}

// provideLoop advertises the rendezvous namespace and provides each offered
// skill in the DHT: at start, when the skills change, after a failure
// (backing off from discoveryMin to discoveryMax) and every reprovideEvery.
func (n *Node) provideLoop(ctx context.Context, rt *nodeRuntime) {
	disc := drouting.NewRoutingDiscovery(rt.dht)
	provided := make(map[reputation.SkillID]time.Time)
	var rendezvousDue time.Time
	backoff := n.cfg.discoveryMin
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		case <-n.provideNow:
		}
		ok := true
		if now := time.Now(); !now.Before(rendezvousDue) {
			actx, cancel := context.WithTimeout(ctx, provideTimeout)
			ttl, err := disc.Advertise(actx, n.cfg.rendezvous)
			cancel()
			if err != nil {
				ok = false
				n.log.Debug("rendezvous advertise failed", "err", err)
			} else {
				rendezvousDue = now.Add(min(7*ttl/8, reprovideEvery))
			}
		}
		ok = n.provideSkills(ctx, rt.dht, provided) && ok
		if ctx.Err() != nil {
			return
		}
		next := reprovideEvery / 4
		if ok {
			backoff = n.cfg.discoveryMin
		} else {
			next, backoff = backoff, min(2*backoff, n.cfg.discoveryMax)
		}
		timer.Reset(next)
	}
}

// provideSkills provides the offered skills not provided within
// reprovideEvery, and forgets skills no longer offered. It reports whether
// every provide succeeded.
func (n *Node) provideSkills(ctx context.Context, d *dht.IpfsDHT, provided map[reputation.SkillID]time.Time) bool {
	skills := *n.skills.Load()
	offered := make(map[reputation.SkillID]bool, len(skills))
	var due []reputation.SkillID
	now := time.Now()
	for _, s := range skills {
		if offered[s.ID] {
			continue
		}
		offered[s.ID] = true
		if at, ok := provided[s.ID]; !ok || now.Sub(at) >= reprovideEvery {
			due = append(due, s.ID)
		}
	}
	for id := range provided {
		if !offered[id] {
			delete(provided, id) // its records age out of the DHT
		}
	}
	if len(due) == 0 {
		return true
	}
	errs := make([]error, len(due))
	sem := make(chan struct{}, maxParallelPuts)
	var wg sync.WaitGroup
	for i, id := range due {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			pctx, cancel := context.WithTimeout(ctx, provideTimeout)
			defer cancel()
			errs[i] = d.Provide(pctx, SkillCID(id), true)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			n.log.Debug("provide skill in DHT failed", "skill", due[i], "err", err)
			continue
		}
		provided[due[i]] = now
	}
	return errors.Join(errs...) == nil
}

// mdnsServiceName returns the DNS-SD service nodes sharing rendezvous
// namespace ns announce on the LAN: "_cortex-" and 6 hex digits of the
// namespace's SHA-256 (service names are at most 15 characters), so nodes
// of different grids do not meet.
func mdnsServiceName(ns string) string {
	sum := sha256.Sum256([]byte(ns))
	return "_cortex-" + hex.EncodeToString(sum[:3]) + "._udp"
}

// startMDNS announces this node on the LAN and hands peers it hears of to
// findLoop.
func (n *Node) startMDNS(h host.Host) (mdns.Service, error) {
	s := mdns.NewMdnsService(h, mdnsServiceName(n.cfg.rendezvous), mdnsNotifee{n})
	if err := s.Start(); err != nil {
		return nil, fmt.Errorf("start mDNS: %w", err)
	}
	return s, nil
}

type mdnsNotifee struct{ n *Node }

// HandlePeerFound queues ai for findLoop, dropping it if the queue is full
// (mDNS repeats itself).
func (m mdnsNotifee) HandlePeerFound(ai peer.AddrInfo) {
	if ai.ID == m.n.id {
		return
	}
	select {
	case m.n.found <- ai:
		m.n.log.Debug("mDNS found a peer", "peer", ai.ID)
	default:
	}
}
