package grid

import (
	"context"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
)

// scoreWatch keeps the last peer scores gossipsub reported.
type scoreWatch struct {
	mu     sync.Mutex
	scores map[peer.ID]float64
}

func (w *scoreWatch) inspect(m map[peer.ID]float64) {
	w.mu.Lock()
	w.scores = m
	w.mu.Unlock()
}

func (w *scoreWatch) score(p peer.ID) (float64, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.scores[p]
	return s, ok
}

func TestGossipScoreGraylistsAPeerThatSendsInvalidAnnouncements(t *testing.T) {
	var w scoreWatch
	n := startNodeT(t, withScoreInspect(w.inspect))
	raw := newRawGossiper(t, n, true)
	ctx := context.Background()
	for i := range 3 {
		if err := raw.topic.Publish(ctx, capMsg(t, uint64(i+1), nil, "Not.Valid")); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, 10*time.Second, "the sender of three invalid announcements is below the graylist threshold", func() bool {
		s, ok := w.score(raw.host.ID())
		return ok && s < scoreGraylistThreshold
	})
	// Graylisted: its valid announcements are ignored too.
	if err := raw.topic.Publish(ctx, capMsg(t, 10, nil, "good.skill")); err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond) // a delivery would take a few ms on loopback
	if got := n.Providers("good.skill"); len(got) != 0 {
		t.Fatalf("a graylisted peer's announcement reached the table: %+v", got)
	}
}

func TestGossipScoreExemptsLoopbackAndPrivateAddressesFromColocation(t *testing.T) {
	tests := []struct {
		ip     string
		exempt bool
	}{
		{"127.0.0.1", true}, {"::1", true}, {"10.1.2.3", true}, {"172.17.0.1", true},
		{"192.168.1.9", true}, {"fd00::2", true}, {"169.254.10.1", true}, {"fe80::1", true},
		{"8.8.8.8", false}, {"172.32.0.1", false}, {"100.64.0.1", false}, {"2001:db8::1", false},
	}
	for _, tc := range tests {
		exempt := slices.ContainsFunc(peerScoreParams().IPColocationFactorWhitelist, func(n *net.IPNet) bool {
			return n.Contains(net.ParseIP(tc.ip))
		})
		if exempt != tc.exempt {
			t.Errorf("%s exempt from the colocation penalty: %v, want %v", tc.ip, exempt, tc.exempt)
		}
	}
}

func TestCapabilityGossipOffJoinsNoTopic(t *testing.T) {
	n := startNodeT(t, WithCapabilityGossip(false))
	on := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(n)))
	on.SetCapabilities([]SkillCapability{{"echo", "1"}})
	n.SetCapabilities([]SkillCapability{{"text.upper", "1"}})
	if rt := n.rt.Load(); rt.ps != nil || rt.topic != nil {
		t.Fatal("a node with the gossip off started gossipsub")
	}
	pollUntil(t, 10*time.Second, "the nodes connect", func() bool { return hostConnected(on.Host(), n.ID()) })
	time.Sleep(3 * nodeTestInterval) // several announcement rounds
	if got := n.Providers("echo"); len(got) != 0 {
		t.Errorf("the node with the gossip off heard announcements: %+v", got)
	}
	if got := on.Providers("text.upper"); len(got) != 0 {
		t.Errorf("the node with the gossip off announced: %+v", got)
	}
}

func TestGossipStatsCountWhatGossipsubDidWithEachMessage(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := startNodeT(t, WithPrometheusRegisterer(reg))
	raw := newRawGossiper(t, n, true)
	ctx := context.Background()
	if err := raw.topic.Publish(ctx, capMsg(t, 1, nil, "Not.Valid")); err != nil {
		t.Fatal(err)
	}
	if err := raw.topic.Publish(ctx, capMsg(t, 2, nil, "good.skill")); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the good announcement reaches the table", func() bool { return len(n.Providers("good.skill")) == 1 })
	s := n.GossipStats()
	if s.Validated < 2 || s.Rejected != 1 || s.Delivered < 1 || s.Throttled != 0 || s.QueueFull != 0 || s.Undeliverable != 0 {
		t.Fatalf("gossip stats %+v; want at least 2 validated, 1 rejected, at least 1 delivered, no drop", s)
	}
	got := counterByLabel(t, reg, "cortex_grid_gossip_messages_total", "result")
	if got["rejected"] != 1 || got["validated"] < 2 || got["delivered"] < 1 {
		t.Fatalf("cortex_grid_gossip_messages_total by result: %v; want rejected 1, validated and delivered counted", got)
	}
}
