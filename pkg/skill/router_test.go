package skill

import (
	"errors"
	"math"
	"slices"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
)

// rtDirectory lists fixed providers per skill.
type rtDirectory map[reputation.SkillID][]grid.Provider

func (d rtDirectory) Providers(s reputation.SkillID) []grid.Provider { return verifiedAll(d[s]) }

// verifiedAll returns a copy of ps with every provider verified, as the
// test directories list them unless a test says otherwise
// (rtCandidateDirectory).
func verifiedAll(ps []grid.Provider) []grid.Provider {
	if ps == nil {
		return nil
	}
	out := slices.Clone(ps)
	for i := range out {
		out[i].Verified = true
	}
	return out
}

// rtTrust gives fixed trust (default 0.5) and skill ratings (default 0).
type rtTrust struct {
	trust  map[peer.ID]float64
	rating map[peer.ID]float64
}

func (f rtTrust) Trust(p peer.ID) float64 {
	if v, ok := f.trust[p]; ok {
		return v
	}
	return 0.5
}

func (f rtTrust) SkillRating(p peer.ID, _ reputation.SkillID) float64 { return f.rating[p] }

// rtPerf gives fixed node metrics.
type rtPerf map[peer.ID]grid.NodeMetrics

func (f rtPerf) Node(p peer.ID) (grid.NodeMetrics, bool) {
	m, ok := f[p]
	return m, ok
}

func rtPeers(tb testing.TB, n int) []peer.ID {
	tb.Helper()
	ids := make([]peer.ID, n)
	for i := range ids {
		ids[i] = test.RandPeerIDFatal(tb)
	}
	return ids
}

func rtRegistry(tb testing.TB) *Registry {
	tb.Helper()
	reg := NewRegistry()
	for _, s := range Builtins(BuiltinOptions{DebugSleep: true}) {
		if err := reg.Register(s); err != nil {
			tb.Fatalf("Register: %v", err)
		}
	}
	return reg
}

func newRtRouter(tb testing.TB, self peer.ID, dir Directory, tr TrustSource, perf PerfSource, load func() grid.Load) *Router {
	tb.Helper()
	r, err := NewRouter(self, rtRegistry(tb), dir, tr, perf, load)
	if err != nil {
		tb.Fatalf("NewRouter: %v", err)
	}
	return r
}

func rtPeersOf(cs []Candidate) []peer.ID {
	out := make([]peer.ID, len(cs))
	for i, c := range cs {
		out[i] = c.Peer
	}
	return out
}

func TestRouteOrdersCandidates(t *testing.T) {
	ids := rtPeers(t, 3)
	self, a, b := ids[0], ids[1], ids[2]
	idle := grid.Load{Capacity: 4}
	busy := grid.Load{Capacity: 4, InFlight: 4, QueueDepth: [grid.NumLevels]int{0, 8}}
	tests := []struct {
		name  string
		provs []grid.Provider
		trust rtTrust
		perf  rtPerf
		load  grid.Load // this node's
		want  []peer.ID
	}{
		{
			name:  "the more trusted peer ranks first",
			provs: []grid.Provider{{Peer: a, Load: idle, Connected: true}, {Peer: b, Load: idle, Connected: true}},
			trust: rtTrust{trust: map[peer.ID]float64{a: 0.6, b: 0.9}},
			load:  busy,
			want:  []peer.ID{b, a, self},
		},
		{
			name:  "the less loaded peer ranks first",
			provs: []grid.Provider{{Peer: a, Load: busy, Connected: true}, {Peer: b, Load: idle, Connected: true}},
			load:  busy,
			want:  []peer.ID{b, self, a},
		},
		{
			name:  "the better rated peer for the skill ranks first",
			provs: []grid.Provider{{Peer: a, Load: idle, Connected: true}, {Peer: b, Load: idle, Connected: true}},
			trust: rtTrust{rating: map[peer.ID]float64{a: 0.8, b: -0.5}},
			load:  busy,
			want:  []peer.ID{a, self, b},
		},
		{
			name:  "the peer with the better recent success and latency ranks first",
			provs: []grid.Provider{{Peer: a, Load: idle, Connected: true}, {Peer: b, Load: idle, Connected: true}},
			perf: rtPerf{
				a: {Metrics: grid.Metrics{Completed: 5, Failed: 5}, RecentSuccess: 0.4, RecentLatency: 400 * time.Millisecond},
				b: {Metrics: grid.Metrics{Completed: 10}, RecentSuccess: 1, RecentLatency: 5 * time.Millisecond},
			},
			load: busy,
			want: []peer.ID{b, self, a},
		},
		{
			name:  "an idle local node beats equally idle peers it trusts more",
			provs: []grid.Provider{{Peer: a, Load: idle, Connected: true}, {Peer: b, Load: idle, Connected: true}},
			load:  idle,
			want:  []peer.ID{self}, // a and b tie; their order is by ID
		},
		{
			name:  "connected peers rank before unconnected ones",
			provs: []grid.Provider{{Peer: a, Load: idle, Connected: false}, {Peer: b, Load: busy, Connected: true}},
			trust: rtTrust{trust: map[peer.ID]float64{a: 1, b: 0.4}},
			load:  busy,
			want:  []peer.ID{self, b, a},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			load := tc.load
			r := newRtRouter(t, self, rtDirectory{"echo": tc.provs}, tc.trust, tc.perf, func() grid.Load { return load })
			got, err := r.Route(NewSkillTask("echo", RawInput(nil), self))
			if err != nil {
				t.Fatalf("Route: %v", err)
			}
			if len(got) != 3 {
				t.Fatalf("Route returned %d candidates, want 3: %v", len(got), rtPeersOf(got))
			}
			for i, p := range tc.want {
				if got[i].Peer != p {
					t.Fatalf("candidate %d is %s, want %s (order %v, scores %v)", i, got[i].Peer, p, rtPeersOf(got), got)
				}
			}
			for i := 1; i < len(got); i++ {
				if got[i-1].Connected == got[i].Connected && got[i-1].Score < got[i].Score {
					t.Errorf("candidates %d and %d are out of score order: %v", i-1, i, got)
				}
			}
			best, err := r.best(NewSkillTask("echo", RawInput(nil), self), true, nil)
			if err != nil || best.Peer != got[0].Peer {
				t.Errorf("best = %s, %v; want %s, the head of Route", best.Peer, err, got[0].Peer)
			}
		})
	}
}

func TestRouteScoreFollowsTheDocumentedFormula(t *testing.T) {
	ids := rtPeers(t, 2)
	self, a := ids[0], ids[1]
	load := grid.Load{Capacity: 10, InFlight: 3, QueueDepth: [grid.NumLevels]int{1, 1, 0, 0}} // utilization 0.5
	tr := rtTrust{trust: map[peer.ID]float64{a: 0.8}, rating: map[peer.ID]float64{a: 0.2}}
	perf := rtPerf{a: {Metrics: grid.Metrics{Completed: 9, Failed: 1}, RecentSuccess: 0.9, RecentLatency: 50 * time.Millisecond}}
	dir := rtDirectory{"echo": {{Peer: a, Load: load, Connected: true}}}
	r := newRtRouter(t, self, dir, tr, perf, func() grid.Load { return grid.Load{Capacity: 1, InFlight: 2} })
	got, err := r.Route(NewSkillTask("echo", RawInput(nil), self))
	if err != nil {
		t.Fatalf("Route: %v", err)
	}
	w := DefaultWeights()
	sum := w.Trust + w.Skill + w.Success + w.Latency + w.Load
	wantPeer := (w.Trust*0.8 + w.Skill*(0.2+1)/2 + w.Success*0.9 + w.Latency*1/(1+1.0) + w.Load*(1-0.5)) / sum
	// This node: trust 1, no rating, no history (success 1 as the
	// metrics tracker reports an untried node, latency 0.5), utilization 2
	// capped at 1.
	wantSelf := (w.Trust*1 + w.Skill*0.5 + w.Success*1 + w.Latency*0.5 + w.Load*0) / sum
	for _, c := range got {
		want := wantPeer
		if c.Local {
			want = wantSelf
		}
		if math.Abs(c.Score-want) > 1e-12 {
			t.Errorf("score of %s = %.6f, want %.6f", c.Peer, c.Score, want)
		}
	}
}

func TestRouteFilters(t *testing.T) {
	ids := rtPeers(t, 3)
	self, a, b := ids[0], ids[1], ids[2]
	tr := rtTrust{trust: map[peer.ID]float64{a: 0.2, b: 0.6}}
	tests := []struct {
		name       string
		task       *SkillTask
		dir        rtDirectory
		exclude    []peer.ID
		want       []peer.ID
		wantReason NoCapableReason
	}{
		{
			name: "peers below the minimum trust are left out",
			task: NewSkillTask("remote.only", RawInput(nil), self).WithMinTrust(0.5),
			dir:  rtDirectory{"remote.only": {{Peer: a, Connected: true}, {Peer: b, Connected: true}}},
			want: []peer.ID{b},
		},
		{
			name:       "only peers below the minimum trust give AllBelowTrust",
			task:       NewSkillTask("remote.only", RawInput(nil), self).WithMinTrust(0.7),
			dir:        rtDirectory{"remote.only": {{Peer: a, Connected: true}, {Peer: b, Connected: true}}},
			wantReason: AllBelowTrust,
		},
		{
			name:       "a skill nobody offers gives NoProvider",
			task:       NewSkillTask("nobody.has", RawInput(nil), self),
			dir:        rtDirectory{"remote.only": {{Peer: a, Connected: true}}},
			wantReason: NoProvider,
		},
		{
			name:       "trusted providers that are all excluded give AllUnreachable",
			task:       NewSkillTask("remote.only", RawInput(nil), self),
			dir:        rtDirectory{"remote.only": {{Peer: a, Connected: true}, {Peer: b, Connected: true}}},
			exclude:    []peer.ID{b},
			wantReason: AllUnreachable,
		},
		{
			name: "a version mismatch leaves a provider out",
			task: NewSkillTask("echo", RawInput(nil), self).WithVersion("2.0.0").WithMinTrust(0),
			dir:  rtDirectory{"echo": {{Peer: a, Version: "1.0.0", Connected: true}, {Peer: b, Version: "2.0.0", Connected: true}}},
			want: []peer.ID{b},
		},
		{
			name: "this node listed by the directory counts once",
			task: NewSkillTask("echo", RawInput(nil), self),
			dir:  rtDirectory{"echo": {{Peer: self, Version: "1.0.0", Connected: true}}},
			want: []peer.ID{self},
		},
		{
			name:    "an excluded local node is left out",
			task:    NewSkillTask("echo", RawInput(nil), self),
			exclude: []peer.ID{self},
			dir:     rtDirectory{"echo": {{Peer: b, Connected: true}}},
			want:    []peer.ID{b},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := newRtRouter(t, self, tc.dir, tr, nil, nil)
			got, err := r.Route(tc.task, tc.exclude...)
			if tc.wantReason != 0 {
				var nc *NoCapableNodeError
				if !errors.As(err, &nc) || !errors.Is(err, ErrNoCapableNode) || nc.Reason != tc.wantReason {
					t.Fatalf("Route = %v, %v; want a NoCapableNodeError with reason %v", rtPeersOf(got), err, tc.wantReason)
				}
				return
			}
			if err != nil {
				t.Fatalf("Route: %v", err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("Route = %v, want %v", rtPeersOf(got), tc.want)
			}
			for i := range got {
				if got[i].Peer != tc.want[i] {
					t.Fatalf("Route = %v, want %v", rtPeersOf(got), tc.want)
				}
			}
		})
	}
}

func TestNewRouterRejectsBadConfiguration(t *testing.T) {
	self := rtPeers(t, 1)[0]
	reg := NewRegistry()
	tests := []struct {
		name string
		self peer.ID
		reg  *Registry
		opts []RouterOption
	}{
		{"an empty self ID is refused", "", reg, nil},
		{"a nil registry is refused", self, nil, nil},
		{"negative weights are refused", self, reg, []RouterOption{WithWeights(Weights{Trust: -1, Load: 1})}},
		{"all-zero weights are refused", self, reg, []RouterOption{WithWeights(Weights{})}},
		{"a zero latency reference is refused", self, reg, []RouterOption{WithLatencyReference(0)}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewRouter(tc.self, tc.reg, nil, nil, nil, nil, tc.opts...); err == nil {
				t.Fatal("NewRouter succeeded, want an error")
			}
		})
	}
}

func TestRouteWithOnlyTheLocalProviderAllocatesOnlyTheResult(t *testing.T) {
	self := rtPeers(t, 1)[0]
	r := newRtRouter(t, self, rtDirectory{}, rtTrust{}, rtPerf{}, func() grid.Load { return grid.Load{Capacity: 4} })
	task := NewSkillTask("echo", RawInput(nil), self)
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := r.Route(task); err != nil {
			t.Fatal(err)
		}
	}); n > 1 {
		t.Errorf("Route allocates %v times per call, want at most 1 (the result)", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := r.best(task, true, nil); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("best allocates %v times per call, want 0", n)
	}
	if n := testing.AllocsPerRun(1000, func() {
		if _, err := r.bestWith(task, true, nil, r.gate, DefaultRankingSize); err != nil {
			t.Fatal(err)
		}
	}); n != 0 {
		t.Errorf("best with a ranking, for this node alone, allocates %v times per call, want 0", n)
	}
}

func BenchmarkRoute(b *testing.B) {
	ids := rtPeers(b, 9)
	self := ids[0]
	var provs []grid.Provider
	for _, p := range ids[1:] {
		provs = append(provs, grid.Provider{Peer: p, Version: "1.0.0", Connected: true, Load: grid.Load{Capacity: 8, InFlight: 2}})
	}
	load := func() grid.Load { return grid.Load{Capacity: 8} }
	task := NewSkillTask("echo", RawInput(nil), self)
	for _, bc := range []struct {
		name string
		dir  Directory
	}{{"local only", nil}, {"local and 8 peers", rtDirectory{"echo": provs}}} {
		r := newRtRouter(b, self, bc.dir, rtTrust{}, rtPerf{}, load)
		b.Run(bc.name+"/Route", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = r.Route(task)
			}
		})
		b.Run(bc.name+"/best", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = r.best(task, true, nil)
			}
		})
		// What the coordinator's pick costs while events are subscribed
		// to: best with the Ranking of DefaultRankingSize candidates.
		b.Run(bc.name+"/best+ranking", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				_, _ = r.bestWith(task, true, nil, r.gate, DefaultRankingSize)
			}
		})
	}
}

// rtFetchDirectory is an rtDirectory whose fetchers offer the wasm skills
// in wasm.
type rtFetchDirectory struct {
	rtDirectory
	fetchers []grid.Provider
	wasm     map[reputation.SkillID]bool
}

func (d rtFetchDirectory) ModuleFetchers(s reputation.SkillID) []grid.Provider {
	if !d.wasm[s] {
		return nil
	}
	return verifiedAll(d.fetchers)
}

func TestRouteCountsModuleFetchersAsCandidatesForWasmSkills(t *testing.T) {
	ids := rtPeers(t, 3)
	self, holder, fetcher := ids[0], ids[1], ids[2]
	idle := grid.Load{Capacity: 4}
	dir := rtFetchDirectory{
		rtDirectory: rtDirectory{"text.upper": {{Peer: holder, Version: "1.0.0", Load: idle, Connected: true}}},
		fetchers:    []grid.Provider{{Peer: fetcher, Load: idle, Connected: true}, {Peer: holder, Load: idle, Connected: true}},
		wasm:        map[reputation.SkillID]bool{"text.upper": true, "text.lower": true},
	}
	r := newRtRouter(t, self, dir, nil, nil, nil)
	tests := []struct {
		name    string
		task    *SkillTask
		want    []peer.ID // in any order
		version string    // the fetcher candidate's
	}{
		{"a fetcher joins the holder for a wasm skill", NewSkillTask("text.upper", RawInput(nil), self), []peer.ID{holder, fetcher}, ""},
		{"a fetcher matches the version a task names", NewSkillTask("text.upper", RawInput(nil), self).WithVersion("1.0.0"), []peer.ID{holder, fetcher}, "1.0.0"},
		{"fetchers alone can run a wasm skill no one has", NewSkillTask("text.lower", RawInput(nil), self), []peer.ID{fetcher, holder}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cs, err := r.Route(tc.task)
			if err != nil {
				t.Fatal(err)
			}
			got := rtPeersOf(cs)
			if len(got) != len(tc.want) {
				t.Fatalf("candidates %v, want %v", got, tc.want)
			}
			for _, p := range tc.want {
				i := slices.Index(got, p)
				if i < 0 {
					t.Fatalf("candidates %v lack %s", got, p)
				}
				if p == fetcher && cs[i].Version != tc.version {
					t.Fatalf("the fetcher's version is %q, want %q", cs[i].Version, tc.version)
				}
			}
		})
	}
	if _, err := r.Route(NewSkillTask("hash.sha256", RawInput(nil), self)); err != nil {
		t.Fatalf("a built-in skill: %v", err)
	}
	if cs, _ := r.Route(NewSkillTask("hash.sha256", RawInput(nil), self)); slices.Contains(rtPeersOf(cs), fetcher) {
		t.Fatal("a fetcher is a candidate for a skill that is not wasm")
	}
}

// A candidate peer, not yet verified to speak the task protocol, scores
// unverifiedPenalty less than the same peer verified, so that of two
// otherwise equal peers the verified one is tried first.
func TestRouteRanksAVerifiedPeerBeforeAnEqualCandidate(t *testing.T) {
	ids := rtPeers(t, 3)
	self, a, b := ids[0], ids[1], ids[2]
	idle := grid.Load{Capacity: 4}
	// a sorts before b by peer ID, so without the penalty a would win the tie.
	if a > b {
		a, b = b, a
	}
	dir := &rtCandidateDirectory{provs: []grid.Provider{
		{Peer: a, Version: "1.0.0", Load: idle, Connected: true},
		{Peer: b, Version: "1.0.0", Load: idle, Connected: true, Verified: true},
	}}
	r := newRtRouter(t, self, dir, nil, nil, nil)
	got, err := r.Route(NewSkillTask("remote.only", RawInput(nil), self))
	if err != nil {
		t.Fatalf("Route: %v", err)
	}
	if len(got) != 2 || got[0].Peer != b || !got[0].Verified || got[1].Verified {
		t.Fatalf("order %v; want the verified peer first", got)
	}
	if d := got[0].Score - got[1].Score; math.Abs(d-unverifiedPenalty) > 1e-9 {
		t.Fatalf("scores %v and %v differ by %v; want %v", got[0].Score, got[1].Score, d, unverifiedPenalty)
	}
}
