package grid

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

func searchFinds(n *Node, skill reputation.SkillID, want *Node) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return slices.ContainsFunc(n.SearchProviders(ctx, skill), func(p Provider) bool { return p.Peer == want.ID() })
}

func TestDiscoverySearchFindsVerifiedProvidersInTheDHTWithGossipOff(t *testing.T) {
	off := WithCapabilityGossip(false)
	fast := withSearchCache(time.Minute, 200*time.Millisecond)
	boot := startNodeT(t, off, fast)
	a := startNodeT(t, off, fast, WithBootstrapPeers(nodeAddrInfo(boot)))
	a.SetCapabilities([]SkillCapability{{"dht.only", "1"}})
	// fake provides the skill in the DHT but speaks no task protocol.
	fake := startBareNodeT(t, off, fast, WithBootstrapPeers(nodeAddrInfo(boot)))
	fake.SetCapabilities([]SkillCapability{{"dht.only", "1"}})
	b := startNodeT(t, off, fast, WithBootstrapPeers(nodeAddrInfo(boot)), WithPrometheusRegisterer(prometheus.NewRegistry()))

	pollUntil(t, 20*time.Second, "b finds a through the DHT", func() bool { return searchFinds(b, "dht.only", a) })
	if got := b.Providers("dht.only"); len(got) != 0 {
		t.Fatalf("b's capability table lists %+v with the gossip off", got)
	}
	// fake's record is in the DHT by now: a lookup that finds a, after
	// the miss cache of the first lookups ran out, found it too.
	pollUntil(t, 20*time.Second, "a's and fake's records are both found", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		found, err := b.FindProviders(ctx, "dht.only", 5)
		return err == nil && len(found) == 2
	})
	b.search.mu.Lock()
	clear(b.search.cache) // look again, now that both records are there
	b.search.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := b.SearchProviders(ctx, "dht.only")
	if len(got) != 1 || got[0].Peer != a.ID() || got[0].Version != "" {
		t.Fatalf("SearchProviders = %+v; want only a, which speaks the task protocol, with no version", got)
	}
	var m dto.Metric
	if err := b.rt.Load().metrics.lookups.WithLabelValues("found").Write(&m); err != nil || m.GetCounter().GetValue() < 1 {
		t.Errorf("cortex_grid_provider_lookups_total{result=found} = %v (%v), want at least 1", m.GetCounter().GetValue(), err)
	}
	if b.SearchProviders(context.Background(), "Not Valid") != nil {
		t.Error("SearchProviders with a bad skill ID returned providers")
	}
}

func TestDiscoverySearchIsCachedAndRateLimited(t *testing.T) {
	s := newProviderSearch(time.Minute, 10*time.Second)
	now := time.Now()
	var started []*searchEntry
	for i := range searchBurst + 2 {
		e := s.entry(reputation.SkillID("skill.n"+string(rune('a'+i))), now)
		if e != nil {
			started = append(started, e)
		}
	}
	if len(started) != searchBurst {
		t.Fatalf("%d lookups started at once, want the burst of %d", len(started), searchBurst)
	}
	if e := s.entry("skill.na", now); e != started[0] {
		t.Fatal("a lookup in flight was not shared")
	}
	// The lookups end: the first found a provider, the others none.
	n := &Node{search: s}
	for i, e := range started {
		<-s.reqs
		if i == 0 {
			n.finishSearch(e, []peer.ID{"p"}, s.missTTL)
		} else {
			n.finishSearch(e, nil, s.missTTL)
		}
	}
	later := now.Add(11 * time.Second) // tokens are back, misses expired
	if e := s.entry("skill.na", later); e != started[0] {
		t.Error("a hit was not served from the cache within its TTL")
	}
	if e := s.entry("skill.nb", later); e == nil || e == started[1] {
		t.Error("a miss was served from the cache after its TTL")
	}
	if e := s.entry("skill.na", now.Add(2*time.Minute)); e == started[0] {
		t.Error("a hit was served after its TTL")
	}
}
