package grid

import (
	"context"
	"errors"
	"math"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

var _ OpinionGraph = (*reputation.Graph)(nil)

// fakeOpinions is an OpinionGraph that shares a fixed vector and keeps
// what it receives.
type fakeOpinions struct {
	local map[peer.ID]float64

	mu   sync.Mutex
	got  map[peer.ID]map[peer.ID]float64
	sets int
}

func (f *fakeOpinions) LocalOpinions(int) map[peer.ID]float64 { return f.local }

func (f *fakeOpinions) SetPeerOpinions(from peer.ID, local map[peer.ID]float64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.got == nil {
		f.got = make(map[peer.ID]map[peer.ID]float64)
	}
	f.got[from] = local
	f.sets++
}

func (f *fakeOpinions) from(p peer.ID) (map[peer.ID]float64, int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.got[p], f.sets
}

func TestOpinionsTwoNodesShareTheirNormalizedLocalTrust(t *testing.T) {
	x, y := randomPeerID(t), randomPeerID(t)
	aGraph := &fakeOpinions{local: map[peer.ID]float64{x: 3, y: 1}}
	bGraph := &fakeOpinions{}
	a := startNodeT(t, WithTrustOpinions(aGraph, 50*time.Millisecond))
	b := startNodeT(t, WithTrustOpinions(bGraph, 50*time.Millisecond), WithBootstrapPeers(nodeAddrInfo(a)))
	pollUntil(t, 10*time.Second, "b holds a's opinions", func() bool {
		got, _ := bGraph.from(a.ID())
		return len(got) == 2
	})
	got, _ := bGraph.from(a.ID())
	if r := got[x] / got[y]; math.Abs(r-3) > 1e-3 {
		t.Errorf("b got %v from a: x/y = %v, want 3 (a shares x three times y)", got, r)
	}
	if sum := got[x] + got[y]; math.Abs(sum-opinionPPM) > 2 {
		t.Errorf("b got %v from a: weights sum to %v ppm, want %d", got, sum, opinionPPM)
	}
	if m, _ := bGraph.from(b.ID()); m != nil {
		t.Errorf("b fed its own opinions to its graph: %v", m)
	}
}

func TestOpinionsParseChecksEveryBound(t *testing.T) {
	author := randomPeerID(t)
	other := randomPeerID(t)
	entry := func(p peer.ID, w uint32) *cortexv1.TrustOpinion {
		return &cortexv1.TrustOpinion{PeerId: []byte(p), WeightPpm: w}
	}
	encode := func(es ...*cortexv1.TrustOpinion) []byte {
		b, err := proto.Marshal(&cortexv1.TrustOpinions{Opinions: es, Sequence: 1, TimestampUnixMs: time.Now().UnixMilli()})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	many := make([]*cortexv1.TrustOpinion, MaxOpinionEntries+1)
	for i := range many {
		many[i] = entry(randomPeerID(t), 1)
	}
	tests := []struct {
		name string
		data []byte
		ok   bool
	}{
		{"a vector of two peers is accepted", encode(entry(other, 600_000), entry(randomPeerID(t), 400_000)), true},
		{"an empty vector is accepted: the author trusts nobody now", encode(), true},
		{"a message over 8 KiB is rejected", make([]byte, MaxOpinionsSize+1), false},
		{"bytes that are not protobuf are rejected", []byte{0xff, 0xff, 0xff}, false},
		{"65 entries are rejected", encode(many...), false},
		{"an opinion of the author itself is rejected", encode(entry(author, 10)), false},
		{"a peer listed twice is rejected", encode(entry(other, 10), entry(other, 20)), false},
		{"a peer ID that is not a multihash is rejected", encode(&cortexv1.TrustOpinion{PeerId: []byte("nope"), WeightPpm: 1}), false},
		{"a weight over a million ppm is rejected", encode(entry(other, opinionPPM+1)), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o, err := parseOpinions(author, tc.data)
			if tc.ok != (err == nil) {
				t.Fatalf("parseOpinions: %v, want ok=%v", err, tc.ok)
			}
			if err != nil && !errors.Is(err, errAnnMalformed) && !errors.Is(err, errAnnTooLarge) {
				t.Errorf("error %v is not a fault (malformed or too large)", err)
			}
			if o != nil {
				for p := range o.local {
					if p == author {
						t.Errorf("the author's own entry was kept")
					}
				}
			}
		})
	}
}

func TestOpinionsBuildKeepsTheLargest64(t *testing.T) {
	local := make(map[peer.ID]float64)
	var top peer.ID
	for i := range 100 {
		p := randomPeerID(t)
		local[p] = float64(i + 1)
		top = p
	}
	b, err := buildOpinions(local, 7, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if len(b) > MaxOpinionsSize {
		t.Fatalf("64 entries take %d bytes, over the %d a receiver accepts", len(b), MaxOpinionsSize)
	}
	o, err := parseOpinions(randomPeerID(t), b)
	if err != nil {
		t.Fatal(err)
	}
	if len(o.local) != MaxOpinionEntries || o.local[top] == 0 || o.seq != 7 {
		t.Fatalf("parsed %d entries (largest kept: %v, seq %d), want %d with the largest and seq 7", len(o.local), o.local[top] > 0, o.seq, MaxOpinionEntries)
	}
}

func TestOpinionsGateLimitsAnAuthorAndRefusesReplays(t *testing.T) {
	g := newOpinionGate(time.Second) // a burst of 4, then one per 250 ms
	a := randomPeerID(t)
	now := time.Now()
	msg := func(seq uint64) *opinionMsg { return &opinionMsg{seq: seq, stamp: now} }
	for seq := uint64(1); seq <= opinionBurst; seq++ {
		if err := g.admit(a, msg(seq), now); err != nil {
			t.Fatalf("message %d of the burst: %v", seq, err)
		}
	}
	if err := g.admit(a, msg(10), now); !errors.Is(err, errOpinionLimited) {
		t.Fatalf("message past the burst: %v, want errOpinionLimited", err)
	}
	if err := g.admit(a, msg(11), now.Add(300*time.Millisecond)); err != nil {
		t.Fatalf("message after the refill period: %v", err)
	}
	if err := g.admit(a, msg(3), now.Add(time.Second)); !errors.Is(err, errAnnStale) {
		t.Fatalf("an old sequence number: %v, want errAnnStale", err)
	}
	old := &opinionMsg{seq: 100, stamp: now.Add(-2 * maxOpinionAge)}
	if err := g.admit(a, old, now.Add(2*time.Second)); !errors.Is(err, errAnnStale) {
		t.Fatalf("a message two hours old: %v, want errAnnStale", err)
	}
	if err := g.admit(randomPeerID(t), msg(1), now); err != nil {
		t.Fatalf("another author is limited by the first one's flood: %v", err)
	}
}

func TestOpinionsFloodFromARawPeerIsDropped(t *testing.T) {
	reg := prometheus.NewRegistry()
	graph := &fakeOpinions{}
	n := startNodeT(t, WithPrometheusRegisterer(reg), WithTrustOpinions(graph, time.Hour)) // one per 15 min after the burst
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableMetrics())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() { cancel(); h.Close() })
	ps, err := pubsub.NewGossipSub(ctx, h)
	if err != nil {
		t.Fatal(err)
	}
	topic, err := ps.Join(OpinionTopic)
	if err != nil {
		t.Fatal(err)
	}
	if err := h.Connect(ctx, nodeAddrInfo(n)); err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 10*time.Second, "the flooder sees the node on the trust topic", func() bool {
		return slices.Contains(topic.ListPeers(), n.ID())
	})
	counter := func(result string) float64 {
		var m dto.Metric
		if err := n.rt.Load().metrics.opinions.WithLabelValues(result).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	target := randomPeerID(t)
	const flood = 40
	for i := range flood {
		b, err := buildOpinions(map[peer.ID]float64{target: 1}, uint64(i+1), time.Now())
		if err != nil {
			t.Fatal(err)
		}
		if err := topic.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}
	pollUntil(t, 10*time.Second, "every flooded message is counted", func() bool {
		return counter("accepted")+counter("ignored") == flood
	})
	if got := counter("accepted"); got != opinionBurst {
		t.Errorf("accepted %v of %d flooded messages, want the burst of %d", got, flood, opinionBurst)
	}
	if _, sets := graph.from(h.ID()); sets > opinionBurst {
		t.Errorf("the graph got %d sets of opinions from the flooder, want at most %d", sets, opinionBurst)
	}
	if got, _ := graph.from(h.ID()); got[target] == 0 {
		t.Errorf("the flooder's first opinions did not reach the graph: %v", got)
	}
}
