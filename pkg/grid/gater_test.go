package grid

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/net/swarm"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// connectT dials to from from's host. A dial that the far side's gater
// refuses after the handshake may still succeed on the dialing side: with
// Noise the muxer is agreed inside the handshake, so the dialer has a
// connection until the far side closes it.
func connectT(tb testing.TB, from, to *Node) error {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return from.Host().Connect(ctx, nodeAddrInfo(to))
}

// assertRefused checks that from cannot connect to to: the dial fails or
// the connection it made is closed by to, and to never counts it.
func assertRefused(t *testing.T, from, to *Node, what string) {
	t.Helper()
	before := to.gater.refusedI.Load()
	err := connectT(t, from, to)
	pollUntil(t, 5*time.Second, what+": the far side's gater refuses it", func() bool {
		return to.gater.refusedI.Load() > before
	})
	if err == nil {
		// The dialer may finish its side of the upgrade before the far
		// side refuses; the refusal then closes the connection.
		pollUntil(t, 5*time.Second, what+": the refused connection closes", func() bool {
			return !hostConnected(from.Host(), to.ID())
		})
	}
	if hostConnected(to.Host(), from.ID()) {
		t.Fatalf("%s: %s counts a connection from %s", what, to.ID(), from.ID())
	}
}

func TestGaterDeniedPeerCannotConnectEitherWay(t *testing.T) {
	b := newNodeT(t)
	a := startNodeT(t, WithDenyPeers(b.ID()))
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertRefused(t, b, a, "the denied peer dials in")
	if err := connectT(t, a, b); !errors.Is(err, swarm.ErrGaterDisallowedConnection) {
		t.Fatalf("dialing a denied peer: %v, want the gater's refusal", err)
	}
	if a.PeerAllowed(b.ID()) {
		t.Fatal("PeerAllowed says the denied peer may connect")
	}
	if a.gater.refusedI.Load() == 0 || a.gater.refusedD.Load() == 0 {
		t.Fatalf("refusals counted inbound %d outbound %d, want both above 0", a.gater.refusedI.Load(), a.gater.refusedD.Load())
	}
}

func TestGaterAllowListAdmitsOnlyListedPeers(t *testing.T) {
	listed, other := newNodeT(t), newNodeT(t)
	a := startNodeT(t, WithAllowPeers(listed.ID()))
	for _, n := range []*Node{listed, other} {
		if err := n.Start(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if err := connectT(t, listed, a); err != nil {
		t.Fatalf("a listed peer dials in: %v", err)
	}
	pollUntil(t, 5*time.Second, "a counts the listed peer's connection", func() bool {
		return hostConnected(a.Host(), listed.ID())
	})
	assertRefused(t, other, a, "an unlisted peer dials in")
	if err := connectT(t, a, other); !errors.Is(err, swarm.ErrGaterDisallowedConnection) {
		t.Fatalf("dialing an unlisted peer: %v, want the gater's refusal", err)
	}
	allow, deny := a.AccessLists()
	if !slices.Equal(allow, []peer.ID{listed.ID()}) || len(deny) != 0 {
		t.Fatalf("AccessLists() = %v, %v; want [listed], []", allow, deny)
	}
}

func TestDenyPeerAtRunTimeCutsOffAConnectedPeerUntilAllowed(t *testing.T) {
	a := startNodeT(t)
	b := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(a)))
	b.SetCapabilities([]SkillCapability{{"echo", "1"}})
	pollUntil(t, 10*time.Second, "a sees b's skill", func() bool { return offers(a, "echo", b.ID()) })
	left := make(chan struct{}, 1)
	defer a.OnPeerEvent(func(ev PeerEvent) {
		if ev.Peer == b.ID() && ev.Kind == PeerLeft {
			nudge(left)
		}
	})()

	if err := a.DenyPeer(b.ID()); err != nil {
		t.Fatal(err)
	}
	if hostConnected(a.Host(), b.ID()) {
		t.Fatal("a is still connected to b after denying it")
	}
	if got := a.Providers("echo"); len(got) != 0 {
		t.Fatalf("a still lists the denied peer as a provider: %+v", got)
	}
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("no left event for the denied peer")
	}
	assertRefused(t, b, a, "the peer denied at run time dials back")

	if err := a.AllowPeer(b.ID()); err != nil {
		t.Fatal(err)
	}
	if err := connectT(t, b, a); err != nil {
		t.Fatalf("the peer allowed again dials in: %v", err)
	}
	pollUntil(t, 10*time.Second, "a sees b's skill again", func() bool { return offers(a, "echo", b.ID()) })
}

func TestDenyPeerIgnoresAnnouncementsOthersRelay(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := newNodeT(t)
	a := startNodeT(t, WithDenyPeers(c.ID()), WithPrometheusRegisterer(reg))
	relay := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(a)))
	if err := c.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	speakTask(c) // so that the relay lists it
	if err := connectT(t, c, relay); err != nil {
		t.Fatal(err)
	}
	c.SetCapabilities([]SkillCapability{{"from.denied", "1"}})
	ignored := func() float64 {
		var m dto.Metric
		if err := a.rt.Load().metrics.announcements.WithLabelValues("ignored").Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	pollUntil(t, 15*time.Second, "the relay lists c and a ignores c's relayed announcements", func() bool {
		return offers(relay, "from.denied", c.ID()) && ignored() > 0
	})
	if got := a.Providers("from.denied"); len(got) != 0 {
		t.Fatalf("a lists the denied peer from relayed gossip: %+v", got)
	}
	if hostConnected(a.Host(), c.ID()) {
		t.Fatal("a connected to the denied peer")
	}
}

func TestAllowPeerOnANodeWithAnAllowListAddsToIt(t *testing.T) {
	first, second := randomPeerID(t), randomPeerID(t)
	n := newNodeT(t, WithAllowPeers(first))
	if n.PeerAllowed(second) {
		t.Fatal("an unlisted peer is allowed")
	}
	if err := n.AllowPeer(second); err != nil {
		t.Fatal(err)
	}
	if err := n.DenyPeer(first); err != nil {
		t.Fatal(err)
	}
	if !n.PeerAllowed(second) || n.PeerAllowed(first) {
		t.Fatalf("allowed(second)=%v allowed(first)=%v; want true, false", n.PeerAllowed(second), n.PeerAllowed(first))
	}
	// Denying every listed peer must not empty the allow list, which
	// would open the node to everyone.
	if err := n.DenyPeer(second); err != nil {
		t.Fatal(err)
	}
	if stranger := randomPeerID(t); n.PeerAllowed(stranger) {
		t.Fatal("denying the listed peers opened the node to everyone")
	}
	if err := n.DenyPeer(n.ID()); !errors.Is(err, ErrSelfDenied) {
		t.Fatalf("DenyPeer(self): %v, want ErrSelfDenied", err)
	}
	if err := n.DenyPeer(""); err == nil {
		t.Fatal("DenyPeer accepted an empty peer ID")
	}
}

func TestAllowListWithoutOneAllowPeerDoesNotCreateOne(t *testing.T) {
	p := randomPeerID(t)
	n := newNodeT(t)
	if err := n.AllowPeer(p); err != nil {
		t.Fatal(err)
	}
	if allow, _ := n.AccessLists(); len(allow) != 0 {
		t.Fatalf("AllowPeer created an allow list: %v", allow)
	}
	if !n.PeerAllowed(randomPeerID(t)) {
		t.Fatal("a node without an allow list refuses a stranger")
	}
}

func TestGaterListsAreSafeForConcurrentUse(t *testing.T) {
	g := newPeerGater(nil, nil, nil)
	ids := make([]peer.ID, 16)
	for i := range ids {
		ids[i] = randomPeerID(t)
	}
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := range 500 {
				p := ids[(i+w)%len(ids)]
				if i%2 == 0 {
					g.deny(p)
				} else {
					g.allow(p)
				}
				g.allowed(ids[i%len(ids)])
				g.InterceptSecured(network.DirInbound, p, nil)
			}
		})
	}
	wg.Wait()
	for _, p := range ids {
		g.allow(p)
		if !g.allowed(p) {
			t.Fatalf("%s still denied after allow", p)
		}
	}
}

func TestNewNodeReportsBadAccessListsAndKeys(t *testing.T) {
	key, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	self, err := peer.IDFromPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	boot := peer.AddrInfo{ID: randomPeerID(t), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.1/tcp/4001")}}
	quicBoot := peer.AddrInfo{ID: randomPeerID(t), Addrs: []multiaddr.Multiaddr{multiaddr.StringCast("/ip4/10.0.0.2/udp/4001/quic-v1")}}
	psk, err := GenerateSwarmKey()
	if err != nil {
		t.Fatal(err)
	}
	other := randomPeerID(t)
	tcp := WithListenAddrs("/ip4/127.0.0.1/tcp/0")
	cases := []struct {
		name string
		opts []NodeOption
		errs int
	}{
		{"a bootstrap peer on the allow list is fine", []NodeOption{WithAllowPeers(boot.ID), WithBootstrapPeers(boot)}, 0},
		{"a bootstrap peer missing from the allow list is refused", []NodeOption{WithAllowPeers(other), WithBootstrapPeers(boot)}, 1},
		{"a denied bootstrap peer is refused", []NodeOption{WithDenyPeers(boot.ID), WithBootstrapPeers(boot)}, 1},
		{"a peer on both lists is refused", []NodeOption{WithAllowPeers(other), WithDenyPeers(other)}, 1},
		{"the node's own ID on the deny list is refused", []NodeOption{WithDenyPeers(self)}, 1},
		{"an empty peer ID on either list is refused", []NodeOption{WithAllowPeers(""), WithDenyPeers("")}, 2},
		{"a key and the default listen addresses are fine", []NodeOption{WithPrivateNetworkKey(psk)}, 0},
		{"a key that is not 32 bytes is refused", []NodeOption{WithPrivateNetworkKey(psk[:16]), tcp}, 1},
		{"a key with only QUIC listen addresses is refused", []NodeOption{WithPrivateNetworkKey(psk), WithListenAddrs("/ip4/0.0.0.0/udp/4001/quic-v1")}, 1},
		{"a key with a QUIC-only bootstrap peer is refused", []NodeOption{WithPrivateNetworkKey(psk), tcp, WithBootstrapPeers(quicBoot)}, 1},
		{"a QUIC-only bootstrap peer without a key is fine", []NodeOption{tcp, WithBootstrapPeers(quicBoot)}, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewNode(key, c.opts...)
			if got := countJoinedErrs(err); got != c.errs {
				t.Fatalf("NewNode: %d problems (%v), want %d", got, err, c.errs)
			}
		})
	}
}
