package test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// fakeAnnouncer is a plain libp2p host with gossipsub, connected to a
// node, that publishes well-formed capability announcements.
type fakeAnnouncer struct {
	host  host.Host
	topic *pubsub.Topic
	seq   uint64
}

func newFakeAnnouncer(t testing.TB, to *harnessNode) *fakeAnnouncer {
	t.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); _ = h.Close() })
	ps, err := pubsub.NewGossipSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(grid.CapabilityTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Connect(ctx, to.addrInfo()); err != nil {
		t.Fatal(err)
	}
	awaitCond(t, harnessWait, "the fake announcer meets the node on the topic", func() bool {
		return slices.Contains(topic.ListPeers(), to.ID)
	})
	return &fakeAnnouncer{host: h, topic: topic}
}

func (f *fakeAnnouncer) announce(t testing.TB, skills ...string) {
	t.Helper()
	f.seq++
	m := &cortexv1.CapabilityAnnouncement{
		QueueDepth: make([]uint32, grid.NumLevels), WorkerCapacity: 8,
		Sequence: f.seq, TimestampUnixMs: time.Now().UnixMilli(), TtlSeconds: 30,
	}
	for _, a := range f.host.Addrs() {
		m.Addrs = append(m.Addrs, a.Bytes())
	}
	for _, s := range skills {
		m.Skills = append(m.Skills, &cortexv1.SkillCapability{SkillId: s, Version: "1.0.0"})
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.topic.Publish(context.Background(), b); err != nil {
		t.Fatal(err)
	}
}

// A libp2p node that speaks no task protocol but announces a skill is
// listed as a peer, unverified, and never chosen to run a task.
func TestDiscFakeProviderThatSpeaksNoTaskProtocolGetsNoTask(t *testing.T) {
	a := newHarnessNode(t, harnessConfig{})
	fake := newFakeAnnouncer(t, a)
	fake.announce(t, "fake.skill")
	var info grid.PeerInfo
	awaitCond(t, harnessWait, "a holds the fake announcer's entry", func() bool {
		ps := a.Node.Peers()
		i := slices.IndexFunc(ps, func(p grid.PeerInfo) bool { return p.Peer == fake.host.ID() && len(p.Skills) == 1 })
		if i >= 0 {
			info = ps[i]
		}
		return i >= 0
	})
	if info.Verified {
		t.Fatalf("the fake announcer is verified: %+v", info)
	}
	if ps := a.Node.Providers("fake.skill"); len(ps) != 0 {
		t.Fatalf("providers of fake.skill: %+v; want none", ps)
	}
	// Once a's table has had its time to fill (before that a task waits
	// for a provider), a task for the skill is refused.
	awaitCond(t, harnessWait, "a's capability table is past its warm-up", func() bool { return !a.Node.CapabilitiesWarming() })
	_, err := a.Coord.SubmitTask(context.Background(), skill.NewSkillTask("fake.skill", skill.RawInput([]byte("x")), ""))
	if !errors.Is(err, skill.ErrUnknownSkill) {
		t.Fatalf("submit fake.skill: %v; want ErrUnknownSkill", err)
	}

	// The same host, once it speaks the task protocol, is a provider.
	streams := make(chan struct{}, 1)
	fake.host.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) {
		select {
		case streams <- struct{}{}:
		default:
		}
		_ = s.Reset()
	})
	a.awaitOffer(t, "fake.skill", fake.host.ID())
	if _, err := a.Coord.SubmitTask(context.Background(), skill.NewSkillTask("fake.skill", skill.RawInput([]byte("x")), "")); err != nil {
		t.Fatalf("submit fake.skill to a verified provider: %v", err)
	}
	select {
	case <-streams:
	case <-time.After(harnessWait):
		t.Fatal("no task stream reached the verified provider")
	}
}
