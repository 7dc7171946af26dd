package grid

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/peer"
	relayclient "github.com/libp2p/go-libp2p/p2p/protocol/circuitv2/client"
	"github.com/multiformats/go-multiaddr"
)

func TestNewNodeRefusesBadNATOptions(t *testing.T) {
	key, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		opt  NodeOption
	}{
		{"an unknown relay service mode is refused", WithRelayService("sometimes")},
		{"an unknown reachability is refused", WithReachability("maybe")},
		{"a static relay without an address is refused", WithAutoRelay(true, peer.AddrInfo{ID: nodeKeyID(t)})},
		{"a private node with auto-relay and no relay at all is refused", WithReachability(ReachabilityPrivate)},
		{"no relay reservation at all is refused", WithRelayLimits(RelayLimits{MaxReservations: 0, MaxCircuits: 16, Duration: time.Minute, Data: 1 << 17})},
		{"no relayed connection per peer is refused", WithRelayLimits(RelayLimits{MaxReservations: 128, MaxCircuits: 0, Duration: time.Minute, Data: 1 << 17})},
		{"a relay limit duration under a second is refused", WithRelayLimits(RelayLimits{MaxReservations: 128, MaxCircuits: 16, Duration: time.Millisecond, Data: 1 << 17})},
		{"a relay data limit under 16 KiB is refused", WithRelayLimits(RelayLimits{MaxReservations: 128, MaxCircuits: 16, Duration: time.Minute, Data: 1000})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewNode(key, WithListenAddrs("/ip4/127.0.0.1/tcp/0"), tc.opt); err == nil {
				t.Fatal("NewNode accepted it")
			}
		})
	}
}

func nodeKeyID(tb testing.TB) peer.ID {
	tb.Helper()
	k, err := GenerateIdentity()
	if err != nil {
		tb.Fatal(err)
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		tb.Fatal(err)
	}
	return id
}

// TestNodeBehindNATTakesTasksThroughARelay starts a relay (relay service
// on), a node that believes itself private and reserves a slot on the
// relay, and a requester that knows only the private node's /p2p-circuit
// address. With hole punching off, the task stream goes through the relay
// (a limited connection), and the result comes back.
func TestNodeBehindNATTakesTasksThroughARelay(t *testing.T) {
	relay := startBareNodeT(t, func(c *nodeConfig) { c.nat.relayAnyAddr = true }, WithRelayService(RelayServiceOn), WithReachability(ReachabilityPublic), WithCapabilityGossip(false))
	natted := startBareNodeT(t, WithReachability(ReachabilityPrivate), WithBootstrapPeers(nodeAddrInfo(relay)),
		WithHolePunching(false), WithCapabilityGossip(false))
	// A bare host: a Node's DHT would dial the private node's loopback
	// address, which a NAT would not let through.
	requester, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.EnableRelay())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = requester.Close() })

	if st, err := relay.NATStatus(); err != nil || !st.RelayService || st.Reachability != ReachabilityPublic {
		t.Fatalf("relay NATStatus = %+v, %v; want public with the relay service on", st, err)
	}
	if st, err := natted.NATStatus(); err != nil || st.Reachability != ReachabilityPrivate {
		t.Fatalf("private node NATStatus = %+v, %v; want private", st, err)
	}
	// Auto-relay advertises circuit addresses through a relay's public
	// addresses only; on loopback the requester builds one itself.
	circuit := multiaddr.StringCast(relay.Host().Addrs()[0].String() + "/p2p/" + relay.ID().String() + "/p2p-circuit")

	handler := newOrchHandler()
	startOrchestrator(t, natted.Host(), handler)
	client := startOrchestrator(t, requester, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pollUntil(t, 15*time.Second, "the requester to connect through the relay (once the private node holds a reservation)", func() bool {
		cctx, ccancel := context.WithTimeout(ctx, 2*time.Second)
		defer ccancel()
		return requester.Connect(cctx, peer.AddrInfo{ID: natted.ID(), Addrs: []multiaddr.Multiaddr{circuit}}) == nil
	})
	if !IsRelayed(requester, natted.ID()) {
		t.Fatal("the requester's connection to the private node is not relayed")
	}
	task := &RemoteTask{ID: NewTaskID(), Skill: "text.echo", Input: []byte("through the relay"), InputKind: InputRaw,
		Priority: 100, Deadline: time.Now().Add(20 * time.Second), Attempt: 1, Requester: requester.ID()}
	res, err := client.Delegate(ctx, natted.ID(), task)
	if err != nil {
		t.Fatalf("Delegate through the relay: %v", err)
	}
	if !res.Success || string(res.Output) != "through the relay" || res.Executor != natted.ID() {
		t.Fatalf("result %+v, want the private node's echo", res)
	}
	st, err := natted.NATStatus()
	if err != nil || !slices.Equal(st.RelayedPeers, []peer.ID{requester.ID()}) || st.DirectPeers != 1 {
		t.Fatalf("private node NATStatus = %+v, %v; want the requester relayed only and the relay direct", st, err)
	}
}

func TestCircuitRelayNamesTheRelay(t *testing.T) {
	relay, other := nodeKeyID(t), nodeKeyID(t)
	for _, tc := range []struct {
		name, addr string
		want       peer.ID
		ok         bool
	}{
		{"a circuit address names its relay", "/ip4/1.2.3.4/tcp/4001/p2p/" + relay.String() + "/p2p-circuit", relay, true},
		{"a circuit address with the target names the relay, not the target",
			"/ip4/1.2.3.4/tcp/4001/p2p/" + relay.String() + "/p2p-circuit/p2p/" + other.String(), relay, true},
		{"a direct address is no circuit", "/ip4/1.2.3.4/tcp/4001/p2p/" + relay.String(), "", false},
		{"a circuit address without a relay ID names none", "/ip4/1.2.3.4/tcp/4001/p2p-circuit", "", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := circuitRelay(multiaddr.StringCast(tc.addr))
			if ok != tc.ok || got != tc.want {
				t.Fatalf("circuitRelay = %s, %v; want %s, %v", got, ok, tc.want, tc.ok)
			}
		})
	}
}

func TestBootstrapEntriesOfOnePeerAreOnePeer(t *testing.T) {
	id, other := nodeKeyID(t), nodeKeyID(t)
	tcp := multiaddr.StringCast("/ip4/11.0.0.10/tcp/4001")
	quic := multiaddr.StringCast("/ip4/11.0.0.10/udp/4001/quic-v1")
	var c nodeConfig
	WithBootstrapPeers(
		peer.AddrInfo{ID: id, Addrs: []multiaddr.Multiaddr{quic}},
		peer.AddrInfo{ID: other, Addrs: []multiaddr.Multiaddr{tcp}},
		peer.AddrInfo{ID: id, Addrs: []multiaddr.Multiaddr{tcp, quic}},
	)(&c)
	if len(c.bootstrap) != 2 || c.bootstrap[0].ID != id || c.bootstrap[1].ID != other {
		t.Fatalf("bootstrap %v: want %s then %s, once each", c.bootstrap, id, other)
	}
	if got := c.bootstrap[0].Addrs; len(got) != 2 || !got[0].Equal(quic) || !got[1].Equal(tcp) {
		t.Fatalf("addresses of %s: %v, want %s and %s", id, got, quic, tcp)
	}
}

// TestRelayServiceKeepsItsReservationLimit: a relay allowed one
// reservation gives it to the first peer and refuses the second.
func TestRelayServiceKeepsItsReservationLimit(t *testing.T) {
	limits := DefaultRelayLimits()
	limits.MaxReservations = 1
	relay := startBareNodeT(t, func(c *nodeConfig) { c.nat.relayAnyAddr = true }, WithRelayService(RelayServiceOn),
		WithReachability(ReachabilityPublic), WithCapabilityGossip(false), WithRelayLimits(limits))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for i, want := range []bool{true, false} {
		h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = h.Close() })
		_, err = relayclient.Reserve(ctx, h, nodeAddrInfo(relay))
		if got := err == nil; got != want {
			t.Fatalf("reservation %d: err %v; want granted %v (max reservations 1)", i+1, err, want)
		}
	}
}
