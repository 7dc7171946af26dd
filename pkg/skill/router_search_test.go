package skill

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// rtSearcher is a Searcher whose lookups find found, at once or (block)
// only once ctx is done; it counts the calls.
type rtSearcher struct {
	mu     sync.Mutex
	calls  int
	found  []grid.Provider
	block  bool
	peeked int // CachedProviders calls, for rtPeekingSearcher
}

func (s *rtSearcher) SearchProviders(ctx context.Context, _ reputation.SkillID) []grid.Provider {
	s.mu.Lock()
	s.calls++
	block := s.block
	s.mu.Unlock()
	if block {
		<-ctx.Done()
		return nil
	}
	return verifiedAll(s.found)
}

func (s *rtSearcher) counts() (calls, peeked int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls, s.peeked
}

// rtNoGossipSearcher is an rtSearcher on a node that hears no gossip.
type rtNoGossipSearcher struct{ *rtSearcher }

func (rtNoGossipSearcher) CapabilityGossip() bool { return false }

// rtPeekingSearcher is an rtSearcher that can answer from its cache.
type rtPeekingSearcher struct{ *rtSearcher }

func (s rtPeekingSearcher) CachedProviders(reputation.SkillID) []grid.Provider {
	s.mu.Lock()
	s.peeked++
	s.mu.Unlock()
	return verifiedAll(s.found)
}

func TestRouteCrossChecksTheDirectoryWithTheSearcher(t *testing.T) {
	ids := rtPeers(t, 3)
	self, a, b := ids[0], ids[1], ids[2]
	idle := grid.Load{Capacity: 4}
	gossiped := rtDirectory{"remote.only": {{Peer: a, Version: "1.0.0", Connected: true, Load: idle}}}
	inDHT := []grid.Provider{{Peer: b, Connected: true}}
	tests := []struct {
		name       string
		dir        rtDirectory
		skill      reputation.SkillID
		searcher   func(*rtSearcher) Searcher
		block      bool
		want       []peer.ID
		wantCalls  int
		wantPeeked int
	}{
		{name: "gossip lists a provider: the DHT's are folded in, asked once a second",
			dir: gossiped, skill: "remote.only", want: []peer.ID{a, b}, wantCalls: 1},
		{name: "gossip lists a provider: a lookup in flight does not hold Route up",
			dir: gossiped, skill: "remote.only", block: true, want: []peer.ID{a}, wantCalls: 1},
		{name: "gossip lists a provider: a Searcher that holds a cache is read, not asked",
			dir: gossiped, skill: "remote.only", searcher: func(s *rtSearcher) Searcher { return rtPeekingSearcher{s} },
			want: []peer.ID{a, b}, wantPeeked: 1},
		{name: "this node offers the skill and hears no gossip: the DHT is asked",
			dir: rtDirectory{}, skill: "echo", searcher: func(s *rtSearcher) Searcher { return rtNoGossipSearcher{s} },
			want: []peer.ID{self, b}, wantCalls: 1},
		{name: "this node offers the skill and hears the gossip: the DHT is not asked",
			dir: rtDirectory{}, skill: "echo", want: []peer.ID{self}},
		{name: "no provider anywhere else: Route waits for the lookup",
			dir: rtDirectory{}, skill: "remote.only", want: []peer.ID{b}, wantCalls: 5},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &rtSearcher{found: inDHT, block: tc.block}
			var searcher Searcher = s
			if tc.searcher != nil {
				searcher = tc.searcher(s)
			}
			busy := grid.Load{Capacity: 4, InFlight: 4} // so that peers are candidates too
			r, err := NewRouter(self, rtRegistry(t), tc.dir, rtTrust{}, rtPerf{}, func() grid.Load { return busy },
				WithSearcher(searcher, time.Second))
			if err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for range 5 {
				got, err := r.Route(NewSkillTask(tc.skill, RawInput(nil), self))
				if err != nil {
					t.Fatalf("Route: %v", err)
				}
				peers := rtPeersOf(got)
				slices.Sort(peers)
				want := slices.Clone(tc.want)
				slices.Sort(want)
				if !slices.Equal(peers, want) {
					t.Fatalf("Route candidates %v, want %v", peers, want)
				}
			}
			if took := time.Since(start); tc.block && took > 500*time.Millisecond {
				t.Errorf("5 Routes took %v while a lookup ran; want no wait", took)
			}
			if calls, peeked := s.counts(); calls != tc.wantCalls || peeked != tc.wantPeeked {
				t.Errorf("Searcher asked %d times, its cache read %d times; want %d and %d", calls, peeked, tc.wantCalls, tc.wantPeeked)
			}
		})
	}
}

// rtWarmingDirectory is a Directory still filling: it lists nothing until
// appear has passed, then a.
type rtWarmingDirectory struct {
	appear    time.Time
	a         peer.ID // "": no provider ever
	warming   bool
	warmUntil time.Time // zero: warming stays as set
}

func (d *rtWarmingDirectory) Providers(reputation.SkillID) []grid.Provider {
	if d.a == "" || time.Now().Before(d.appear) {
		return nil
	}
	return verifiedAll([]grid.Provider{{Peer: d.a, Connected: true, Load: grid.Load{Capacity: 4}}})
}

func (d *rtWarmingDirectory) CapabilitiesWarming() bool {
	return d.warming && (d.warmUntil.IsZero() || time.Now().Before(d.warmUntil))
}

func TestRouteWaitsForAFirstProviderWhileTheDirectoryFills(t *testing.T) {
	ids := rtPeers(t, 2)
	self, a := ids[0], ids[1]
	for _, tc := range []struct {
		name    string
		warming bool
		want    bool // a is routed to
	}{
		{"warming: the provider gossip brings is used", true, true},
		{"warm: no provider fails after the lookup, as before", false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := &rtWarmingDirectory{appear: time.Now().Add(300 * time.Millisecond), a: a, warming: tc.warming}
			s := &rtSearcher{} // the DHT finds nothing
			r, err := NewRouter(self, rtRegistry(t), dir, rtTrust{}, rtPerf{}, nil, WithSearcher(s, 5*time.Second))
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Route(NewSkillTask("remote.only", RawInput(nil), self))
			if !tc.want {
				if err == nil || !slices.Equal(rtPeersOf(got), nil) {
					t.Fatalf("Route on a warm directory: %v, %v; want no candidate", rtPeersOf(got), err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Route while the directory fills: %v; want %s", err, a.ShortString())
			}
			if p := rtPeersOf(got); !slices.Equal(p, []peer.ID{a}) {
				t.Fatalf("Route while the directory fills: %v; want [%s]", p, a.ShortString())
			}
		})
	}
}

func TestSubmitWhileTheDirectoryFillsWaitsForAProvider(t *testing.T) {
	for _, warming := range []bool{true, false} {
		dir := &rtWarmingDirectory{appear: time.Now().Add(300 * time.Millisecond), warming: warming}
		e := newCoEnv(t, coEnvConfig{directory: dir, opts: []CoordinatorOption{WithRetryBackoff(50*time.Millisecond, 100*time.Millisecond)}})
		dir.a = e.peers[0]
		e.del.behave[e.peers[0]] = coSucceedAs(e.peers[0])
		id, err := e.c.SubmitTask(context.Background(), NewSkillTask("remote.only", RawInput([]byte("x")), ""))
		if !warming {
			if !errors.Is(err, ErrUnknownSkill) {
				t.Fatalf("submit with no provider on a warm directory: %v; want ErrUnknownSkill", err)
			}
			continue
		}
		if err != nil {
			t.Fatalf("submit while the directory fills: %v; want it accepted", err)
		}
		res, err := e.wait(t, id)
		if err != nil || !res.Success || res.ExecutedBy != e.peers[0] {
			t.Fatalf("the task accepted while the directory filled: %+v, %v; want it run on %s", res, err, e.peers[0].ShortString())
		}
	}
}

func TestSubmitDuringWarmUpFailsAsUnknownOnceTheTableHasFilled(t *testing.T) {
	dir := &rtWarmingDirectory{warming: true, warmUntil: time.Now().Add(200 * time.Millisecond)}
	e := newCoEnv(t, coEnvConfig{directory: dir, opts: []CoordinatorOption{WithRetryBackoff(50*time.Millisecond, 100*time.Millisecond)}})
	task := NewSkillTask("nobody.has.it", RawInput(nil), "")
	task.Timeout = time.Minute
	id, err := e.c.SubmitTask(context.Background(), task)
	if err != nil {
		t.Fatalf("submit during warm-up: %v; want it accepted", err)
	}
	res, err := e.wait(t, id)
	if !errors.Is(err, ErrUnknownSkill) || res == nil || res.Code != grid.CodeUnknownSkill {
		t.Fatalf("after the warm-up: %+v, %v; want ErrUnknownSkill with code unknown_skill, well before the 1 min deadline", res, err)
	}
}
