package grid

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

func peerInfoOf(n *Node, p peer.ID) (PeerInfo, bool) {
	ps := n.Peers()
	i := slices.IndexFunc(ps, func(pi PeerInfo) bool { return pi.Peer == p })
	if i < 0 {
		return PeerInfo{}, false
	}
	return ps[i], true
}

func TestCapabilityAnnouncerThatSpeaksNoTaskProtocolIsNoProvider(t *testing.T) {
	n := startNodeT(t)
	fake := newRawGossiper(t, n, false)
	honest := newRawGossiper(t, n, true)
	ctx := context.Background()
	for _, g := range []*rawGossiper{fake, honest} {
		if err := g.topic.Publish(ctx, capMsg(t, 10, nil, "claimed.skill")); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, 10*time.Second, "the honest announcer is a provider", func() bool {
		return offers(n, "claimed.skill", honest.host.ID())
	})
	pollUntil(t, 10*time.Second, "the fake announcer's entry is in the table", func() bool {
		pi, ok := peerInfoOf(n, fake.host.ID())
		return ok && len(pi.Skills) == 1
	})
	if offers(n, "claimed.skill", fake.host.ID()) {
		t.Fatalf("a peer that speaks no task protocol is a provider: %+v", n.Providers("claimed.skill"))
	}
	if pi, _ := peerInfoOf(n, fake.host.ID()); pi.Verified || !pi.Connected {
		t.Errorf("fake announcer %+v: want connected, not verified", pi)
	}
	if pi, _ := peerInfoOf(n, honest.host.ID()); !pi.Verified {
		t.Errorf("honest announcer %+v: want verified", pi)
	}

	// Once it starts speaking the protocol, identify's push tells the node.
	fake.host.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) { _ = s.Reset() })
	pollUntil(t, 10*time.Second, "the announcer that now speaks the protocol is a provider", func() bool {
		return offers(n, "claimed.skill", fake.host.ID())
	})
	// And when it stops, it is no provider any more.
	fake.host.RemoveStreamHandler(wire.ProtocolTask)
	pollUntil(t, 10*time.Second, "the announcer that stopped speaking the protocol is no provider", func() bool {
		return !offers(n, "claimed.skill", fake.host.ID())
	})
}

func TestCapabilityAnnouncerKnownOnlyByGossipIsProbed(t *testing.T) {
	// a and c run no rendezvous lookups, so c hears of a only through
	// b's relay of its announcements; c dials a to verify it.
	quiet := withDiscoveryIntervals(time.Hour, time.Hour)
	a := startNodeT(t, quiet)
	a.SetCapabilities([]SkillCapability{{"relayed.skill", "1"}})
	b := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(a)))
	c := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(b)), quiet)
	pollUntil(t, 15*time.Second, "c lists a as a verified provider", func() bool {
		return offers(c, "relayed.skill", a.ID())
	})
	if !hostConnected(c.Host(), a.ID()) {
		t.Fatal("c lists a without having connected to it")
	}
}
