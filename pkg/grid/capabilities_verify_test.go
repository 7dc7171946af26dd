package grid

import (
	"context"
	"errors"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
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

// verifiedProvider reports whether n lists p as a verified provider of
// skill.
func verifiedProvider(n *Node, skill reputation.SkillID, p peer.ID) bool {
	return slices.ContainsFunc(n.Providers(skill), func(pr Provider) bool { return pr.Peer == p && pr.Verified })
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
	pollUntil(t, 10*time.Second, "the honest announcer is a verified provider", func() bool {
		return verifiedProvider(n, "claimed.skill", honest.host.ID())
	})
	pollUntil(t, 10*time.Second, "the fake announcer's entry is in the table, refused", func() bool {
		pi, ok := peerInfoOf(n, fake.host.ID())
		return ok && len(pi.Skills) == 1 && !pi.Candidate
	})
	if offers(n, "claimed.skill", fake.host.ID()) {
		t.Fatalf("a connected peer that identify shows speaks no task protocol is a provider: %+v", n.Providers("claimed.skill"))
	}
	if pi, _ := peerInfoOf(n, fake.host.ID()); pi.Verified || !pi.Connected {
		t.Errorf("fake announcer %+v: want connected, not verified", pi)
	}
	if pi, _ := peerInfoOf(n, honest.host.ID()); !pi.Verified || pi.Candidate {
		t.Errorf("honest announcer %+v: want verified", pi)
	}

	// Once it starts speaking the protocol, identify's push tells the node.
	fake.host.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) { _ = s.Reset() })
	pollUntil(t, 10*time.Second, "the announcer that now speaks the protocol is a provider", func() bool {
		return verifiedProvider(n, "claimed.skill", fake.host.ID())
	})
	// And when it stops, it is no provider any more.
	fake.host.RemoveStreamHandler(wire.ProtocolTask)
	pollUntil(t, 10*time.Second, "the announcer that stopped speaking the protocol is no provider", func() bool {
		return !offers(n, "claimed.skill", fake.host.ID())
	})
}

func TestCapabilityAnnouncerKnownOnlyByGossipIsACandidateUntilAStreamProvesIt(t *testing.T) {
	// n hears of a only through relay's gossip: n lists a as a candidate
	// without dialling it, and a task stream, dialled to the addresses a
	// announced, verifies it.
	n := startNodeT(t)
	a := relayedAnnouncer(t, n, true)
	publishUntilListed(t, n, a)
	if hostConnected(n.Host(), a.host.ID()) {
		t.Fatal("n connected to a: nothing should dial it")
	}
	if verifiedProvider(n, "claimed.skill", a.host.ID()) {
		t.Fatal("n lists a as verified without a connection to it")
	}
	if pi, _ := peerInfoOf(n, a.host.ID()); !pi.Candidate || pi.Verified {
		t.Fatalf("a as n sees it: %+v; want a candidate", pi)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	s, err := n.Host().NewStream(ctx, a.host.ID(), wire.ProtocolTask)
	if err != nil {
		t.Fatalf("task stream to a: %v", err)
	}
	_ = s.Reset()
	pollUntil(t, 10*time.Second, "n lists a as verified once a stream proved it", func() bool {
		return verifiedProvider(n, "claimed.skill", a.host.ID())
	})
}

// A gossip-only announcer (a Kubo-like node) that n knows only through a
// relay is a candidate; Delegate to it fails with ErrNotProvider before
// any task byte is sent, and n then leaves it out.
func TestCapabilityCandidateThatSpeaksNoTaskProtocolGetsNoTask(t *testing.T) {
	n := startNodeT(t)
	a := relayedAnnouncer(t, n, false)
	publishUntilListed(t, n, a)
	o, err := NewOrchestrator(n.Host(), nil, WithOrchLogger(orchQuietLogger()))
	if err != nil {
		t.Fatal(err)
	}
	if err := o.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = o.Close() })
	_, err = o.Delegate(orchCtx(t), a.host.ID(), &RemoteTask{ID: NewTaskID(), Skill: "claimed.skill", Input: []byte("x"),
		InputKind: InputRaw, Deadline: time.Now().Add(time.Minute), Attempt: 1})
	if !errors.Is(err, ErrNotProvider) || errors.Is(err, ErrPeerGone) {
		t.Fatalf("delegate to a gossip-only candidate: %v; want ErrNotProvider, not ErrPeerGone", err)
	}
	pollUntil(t, 10*time.Second, "n leaves a out once identify over the new connection refutes it", func() bool {
		return !offers(n, "claimed.skill", a.host.ID())
	})
	if pi, _ := peerInfoOf(n, a.host.ID()); pi.Candidate || pi.Verified {
		t.Fatalf("a as n sees it: %+v; want neither verified nor a candidate", pi)
	}
}

// relayedAnnouncer is a plain libp2p host with gossipsub that n hears of
// only through a relay: a second plain host, subscribed to the capability
// topic, connected to n and to the announcer. task says whether the
// announcer speaks the task protocol.
func relayedAnnouncer(t *testing.T, n *Node, task bool) *rawGossiper {
	t.Helper()
	relay := newRawGossiper(t, n, false)
	if _, err := relay.topic.Subscribe(); err != nil { // a subscriber relays
		t.Fatal(err)
	}
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = h.Close() })
	if task {
		// Answers like an orchestrator: an instant reset can overtake
		// multistream's answer to a stream this test opens.
		h.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) { _, _ = io.Copy(io.Discard, s); _ = s.Close() })
	}
	ps, err := pubsub.NewGossipSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(CapabilityTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Connect(ctx, peer.AddrInfo{ID: relay.host.ID(), Addrs: relay.host.Addrs()}); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the announcer sees the relay on the topic", func() bool {
		return slices.Contains(topic.ListPeers(), relay.host.ID())
	})
	return &rawGossiper{host: h, topic: topic}
}

// publishUntilListed has a announce claimed.skill, with its addresses,
// until n lists it among the providers (the relay's mesh takes a
// heartbeat to form).
func publishUntilListed(t *testing.T, n *Node, a *rawGossiper) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for seq := uint64(1); ; seq++ {
		msg := capMsg(t, seq, func(m *cortexv1.CapabilityAnnouncement) {
			m.Addrs = nil
			for _, ad := range a.host.Addrs() {
				m.Addrs = append(m.Addrs, ad.Bytes())
			}
		}, "claimed.skill")
		if err := a.topic.Publish(context.Background(), msg); err != nil {
			t.Fatal(err)
		}
		for range 25 {
			if offers(n, "claimed.skill", a.host.ID()) {
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
		if time.Now().After(deadline) {
			t.Fatal("n does not list the relayed announcer after 15s")
		}
	}
}

func TestCapabilityNotProviderIsLeftOutUntilIdentifyShowsTheProtocol(t *testing.T) {
	n := startNodeT(t)
	g := newRawGossiper(t, n, true)
	if err := g.topic.Publish(context.Background(), capMsg(t, 10, nil, "claimed.skill")); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the announcer is a verified provider", func() bool {
		return verifiedProvider(n, "claimed.skill", g.host.ID())
	})
	g.host.RemoveStreamHandler(wire.ProtocolTask)
	pollUntil(t, 10*time.Second, "the announcer that stopped speaking the protocol is no provider", func() bool {
		return !offers(n, "claimed.skill", g.host.ID())
	})
	n.NotProvider(g.host.ID()) // as the coordinator says after ErrNotProvider
	n.table.reverify(time.Now())
	if offers(n, "claimed.skill", g.host.ID()) {
		t.Fatal("a refused peer is listed after a reverify round")
	}
	g.host.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) { _ = s.Reset() })
	pollUntil(t, 10*time.Second, "identify's push lifts the refusal", func() bool {
		return verifiedProvider(n, "claimed.skill", g.host.ID())
	})
}

// identify can be stale (a connection identified while the peer's
// orchestrator was starting): a refusal by identify is rechecked with a
// task stream over the same connection, which verifies a peer that does
// speak the protocol.
func TestCapabilityStaleIdentifyRefusalIsRecheckedOverTheConnection(t *testing.T) {
	n := startNodeT(t)
	g := newRawGossiper(t, n, true)
	// A handler that answers like an orchestrator, not with an instant
	// reset, which can overtake multistream's answer.
	g.host.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) { _, _ = io.Copy(io.Discard, s); _ = s.Close() })
	if err := g.topic.Publish(context.Background(), capMsg(t, 10, nil, "claimed.skill")); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the announcer is a verified provider", func() bool {
		return verifiedProvider(n, "claimed.skill", g.host.ID())
	})
	// What a stale identify leaves: the peerstore without the protocol,
	// the entry refused.
	if err := n.Host().Peerstore().RemoveProtocols(g.host.ID(), wire.ProtocolTask); err != nil {
		t.Fatal(err)
	}
	n.table.setVerified(g.host.ID(), false, "")
	if offers(n, "claimed.skill", g.host.ID()) {
		t.Fatal("a refused peer is listed")
	}
	n.requestCheck(g.host.ID())
	pollUntil(t, 10*time.Second, "the recheck over the connection verifies the announcer", func() bool {
		return verifiedProvider(n, "claimed.skill", g.host.ID())
	})
}
