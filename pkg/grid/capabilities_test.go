package grid

import (
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
	"github.com/libp2p/go-libp2p"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/protobuf/proto"
)

// capMsg returns a valid announcement for seq offering skills, after
// applying edit to it.
func capMsg(tb testing.TB, seq uint64, edit func(*cortexv1.CapabilityAnnouncement), skills ...string) []byte {
	tb.Helper()
	m := &cortexv1.CapabilityAnnouncement{
		QueueDepth:      []uint32{1, 2, 3, 4},
		InFlight:        5,
		WorkerCapacity:  8,
		Sequence:        seq,
		TtlSeconds:      30,
		TimestampUnixMs: time.Now().UnixMilli(),
		Addrs:           [][]byte{multiaddr.StringCast("/ip4/127.0.0.1/tcp/4001").Bytes()},
	}
	for _, s := range skills {
		m.Skills = append(m.Skills, &cortexv1.SkillCapability{SkillId: s, Version: "1.0.0"})
	}
	if edit != nil {
		edit(m)
	}
	b, err := proto.Marshal(m)
	if err != nil {
		tb.Fatalf("marshal announcement: %v", err)
	}
	return b
}

func randomPeerID(tb testing.TB) peer.ID {
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

func TestCapabilityValidationRejectsBadAnnouncements(t *testing.T) {
	manySkills := make([]string, MaxAnnouncedSkills+1)
	for i := range manySkills {
		manySkills[i] = "s" + strings.Repeat("a", i%100) + "." + string(rune('a'+i%26))
	}
	cases := []struct {
		name string
		data []byte
		want error
	}{
		{"a message over 64 KiB is too large", make([]byte, MaxAnnouncementSize+1), errAnnTooLarge},
		{"bytes that are not protobuf are malformed", []byte{0xff, 0xff, 0xff}, errAnnMalformed},
		{"an uppercase skill ID is malformed", capMsg(t, 1, nil, "Hash.sha256"), errAnnMalformed},
		{"a skill ID with an empty label is malformed", capMsg(t, 1, nil, "hash..sha256"), errAnnMalformed},
		{"a skill ID starting with a digit is malformed", capMsg(t, 1, nil, "1hash"), errAnnMalformed},
		{"an empty skill ID is malformed", capMsg(t, 1, nil, ""), errAnnMalformed},
		{"a skill ID over 128 bytes is malformed", capMsg(t, 1, nil, "a"+strings.Repeat(".b", 64)), errAnnMalformed},
		{"a version over 64 bytes is malformed", capMsg(t, 1, func(m *cortexv1.CapabilityAnnouncement) {
			m.Skills[0].Version = strings.Repeat("9", MaxSkillVersionLen+1)
		}, "hash.sha256"), errAnnMalformed},
		{"more than 256 skills are malformed", capMsg(t, 1, nil, manySkills...), errAnnMalformed},
		{"a skill listed twice is malformed", capMsg(t, 1, nil, "echo", "echo"), errAnnMalformed},
		{"three queue depths are malformed", capMsg(t, 1, func(m *cortexv1.CapabilityAnnouncement) {
			m.QueueDepth = m.QueueDepth[:3]
		}, "echo"), errAnnMalformed},
		{"an address that is not a multiaddr is malformed", capMsg(t, 1, func(m *cortexv1.CapabilityAnnouncement) {
			m.Addrs = [][]byte{{0xde, 0xad}}
		}, "echo"), errAnnMalformed},
	}
	tbl := newCapTable(randomPeerID(t), time.Minute, func(peer.ID) bool { return false }, func(PeerEvent) {})
	author := randomPeerID(t)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			a, err := tbl.check(author, c.data, time.Now())
			if !errors.Is(err, c.want) {
				t.Fatalf("check: got %v, %v; want error %v", a, err, c.want)
			}
		})
	}
	if got := tbl.size(); got != 0 {
		t.Fatalf("table holds %d entries after only bad announcements", got)
	}
}

func TestCapabilityValidationAcceptsAndParsesAGoodAnnouncement(t *testing.T) {
	tbl := newCapTable(randomPeerID(t), time.Minute, func(peer.ID) bool { return false }, func(PeerEvent) {})
	a, err := tbl.check(randomPeerID(t), capMsg(t, 7, nil, "text.upper", "hash.sha256", "a-b_c.d9"), time.Now())
	if err != nil {
		t.Fatalf("check: %v", err)
	}
	wantSkills := []SkillCapability{{"a-b_c.d9", "1.0.0"}, {"hash.sha256", "1.0.0"}, {"text.upper", "1.0.0"}}
	if !slices.Equal(a.skills, wantSkills) {
		t.Errorf("skills %v, want sorted %v", a.skills, wantSkills)
	}
	if want := (Load{QueueDepth: [NumLevels]int{1, 2, 3, 4}, InFlight: 5, Capacity: 8}); a.load != want {
		t.Errorf("load %+v, want %+v", a.load, want)
	}
	if a.seq != 7 || a.ttl != 30*time.Second || len(a.addrs) != 1 {
		t.Errorf("seq %d ttl %s addrs %v, want 7, 30s, one address", a.seq, a.ttl, a.addrs)
	}
}

func TestCapabilityValidationDropsReplayedSequences(t *testing.T) {
	tbl := newCapTable(randomPeerID(t), time.Minute, func(peer.ID) bool { return false }, func(PeerEvent) {})
	author := randomPeerID(t)
	now := time.Now()
	a, err := tbl.check(author, capMsg(t, 10, nil, "echo"), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !tbl.apply(author, a, now) {
		t.Fatal("first announcement not applied")
	}
	for _, seq := range []uint64{10, 9, 1} {
		if _, err := tbl.check(author, capMsg(t, seq, nil, "echo", "other"), time.Now()); !errors.Is(err, errAnnStale) {
			t.Errorf("sequence %d after 10: got %v, want errAnnStale", seq, err)
		}
	}
	// A replay that raced past check is still refused by apply.
	if tbl.apply(author, &capAnnouncement{seq: 9, skills: []SkillCapability{{ID: "other"}}}, now) {
		t.Error("apply stored sequence 9 after 10")
	}
	if _, err := tbl.check(author, capMsg(t, 11, nil, "echo"), time.Now()); err != nil {
		t.Errorf("sequence 11 after 10: %v", err)
	}
	// Once the entry expired its sequence goes with it, and the
	// announcement's own timestamp keeps an old copy out.
	tbl.expire(now.Add(time.Minute)) // past the 30 s TTL
	if got := tbl.size(); got != 0 {
		t.Fatalf("%d entries after expiry, want 0", got)
	}
	old := capMsg(t, 10, func(m *cortexv1.CapabilityAnnouncement) {
		m.TimestampUnixMs = now.Add(-time.Minute - maxClockSkew).UnixMilli()
	}, "echo")
	if _, err := tbl.check(author, old, now); !errors.Is(err, errAnnStale) {
		t.Errorf("replay after expiry: got %v, want errAnnStale", err)
	}
}

func TestCapabilityValidationIgnoresNewPeersWhileTheTableIsFull(t *testing.T) {
	tbl := newCapTable(randomPeerID(t), time.Minute, func(peer.ID) bool { return false }, func(PeerEvent) {})
	tbl.maxPeers = 2
	first := randomPeerID(t)
	for i, p := range []peer.ID{first, randomPeerID(t)} {
		a, err := tbl.check(p, capMsg(t, 1, nil, "echo"), time.Now())
		if err != nil {
			t.Fatalf("peer %d: %v", i, err)
		}
		tbl.apply(p, a, time.Now())
	}
	if _, err := tbl.check(randomPeerID(t), capMsg(t, 1, nil, "echo"), time.Now()); !errors.Is(err, errAnnTableFull) {
		t.Fatalf("third peer: %v, want errAnnTableFull", err)
	}
	if _, err := tbl.check(first, capMsg(t, 2, nil, "echo"), time.Now()); err != nil {
		t.Fatalf("a known peer's refresh while full: %v", err)
	}
}

func TestCapabilityTableProvidersExpiryAndEvents(t *testing.T) {
	self, p1, p2 := randomPeerID(t), randomPeerID(t), randomPeerID(t)
	var events []PeerEvent
	tbl := newCapTable(self, 10*time.Second, func(p peer.ID) bool { return p == p1 }, func(ev PeerEvent) { events = append(events, ev) })
	now := time.Now()
	ann := func(seq uint64, ttl time.Duration, skills ...SkillCapability) *capAnnouncement {
		return &capAnnouncement{seq: seq, skills: skills, ttl: ttl, load: Load{InFlight: int(seq)}}
	}
	echo1, echo2, upper := SkillCapability{"echo", "1"}, SkillCapability{"echo", "2"}, SkillCapability{"text.upper", ""}

	tbl.apply(self, ann(1, 0, echo1), now)
	tbl.apply(p1, ann(1, 0, echo1, upper), now)
	tbl.apply(p2, ann(1, 2*time.Second, echo2), now)
	if got := tbl.providers("echo", now); len(got) != 2 {
		t.Fatalf("echo providers %+v, want p1 and p2 (never self)", got)
	}
	got := tbl.providers("text.upper", now)
	if len(got) != 1 || got[0].Peer != p1 || !got[0].Connected || got[0].Load.InFlight != 1 || !got[0].LastSeen.Equal(now) {
		t.Fatalf("text.upper providers %+v, want connected p1 with its load", got)
	}

	// A refresh with the same skills updates the load in place.
	tbl.apply(p1, ann(2, 0, echo1, upper), now.Add(time.Second))
	if got := tbl.providers("text.upper", now.Add(time.Second)); got[0].Load.InFlight != 2 {
		t.Fatalf("load after refresh %+v, want in-flight 2", got[0].Load)
	}
	// p2 announced a 2 s TTL, p1 none (the table's 10 s applies).
	if got := tbl.providers("echo", now.Add(3*time.Second)); len(got) != 1 || got[0].Peer != p1 {
		t.Fatalf("echo providers after p2's TTL %+v, want only p1", got)
	}
	tbl.apply(p1, ann(3, 0, upper), now.Add(4*time.Second))
	if got := tbl.providers("echo", now.Add(4*time.Second)); len(got) != 0 {
		t.Fatalf("echo providers after p1 dropped it: %+v", got)
	}
	tbl.expire(now.Add(5 * time.Second))
	if tbl.size() != 1 {
		t.Fatalf("table size %d after p2 expired, want 1", tbl.size())
	}

	kinds := make([]PeerEventKind, len(events))
	for i, ev := range events {
		kinds[i] = ev.Kind
	}
	want := []PeerEventKind{PeerJoined, PeerJoined, PeerCapabilitiesChanged, PeerLeft}
	if !slices.Equal(kinds, want) {
		t.Fatalf("events %v, want %v", kinds, want)
	}
	if events[3].Peer != p2 {
		t.Errorf("left event for %s, want p2", events[3].Peer)
	}
}

func TestCapabilitiesSetCleansTheSet(t *testing.T) {
	n := newNodeT(t)
	n.SetCapabilities([]SkillCapability{
		{"text.upper", "1"}, {"Bad.ID", "1"}, {"echo", strings.Repeat("v", 65)}, {"echo", "1"}, {"text.upper", "1"},
	})
	want := []SkillCapability{{"echo", "1"}, {"text.upper", "1"}}
	if got := *n.skills.Load(); !slices.Equal(got, want) {
		t.Fatalf("skills %v, want %v", got, want)
	}
	select {
	case <-n.announceNow:
	default:
		t.Fatal("a changed set did not ask for an announcement")
	}
	n.SetCapabilities([]SkillCapability{{"echo", "1"}, {"text.upper", "1"}})
	select {
	case <-n.announceNow:
		t.Fatal("an unchanged set asked for an announcement")
	default:
	}
}

func TestNodePeerEventHubDeliversInOrderUntilUnsubscribed(t *testing.T) {
	h := newPeerEventHub()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); h.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	got := make(chan PeerEvent, 10)
	unsub := h.subscribe(func(ev PeerEvent) { got <- ev })
	for i := range 5 {
		h.publish(PeerEvent{Kind: PeerConnected, Time: time.Unix(int64(i), 0)})
	}
	for i := range 5 {
		select {
		case ev := <-got:
			if ev.Time.Unix() != int64(i) {
				t.Fatalf("event %d arrived as number %d", ev.Time.Unix(), i)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("event %d not delivered", i)
		}
	}
	unsub()
	unsub() // idempotent
	h.publish(PeerEvent{Kind: PeerLeft})
	h.mu.Lock()
	queued := len(h.queue)
	h.mu.Unlock()
	if queued != 0 {
		t.Fatalf("%d events queued with no subscriber", queued)
	}
}

// rawGossiper is a bare libp2p host with its own gossipsub, publishing
// whatever bytes it is given on the capability topic: a misbehaving peer.
type rawGossiper struct {
	host  host.Host
	topic *pubsub.Topic
}

// newRawGossiper connects a raw gossiper to target. With task, it also
// registers a handler for the task protocol (that resets every stream),
// so that identify shows it speaks it.
func newRawGossiper(tb testing.TB, target *Node, task bool) *rawGossiper {
	tb.Helper()
	return newRawGossiperOn(tb, target, task, "/ip4/127.0.0.1/tcp/0")
}

func newRawGossiperOn(tb testing.TB, target *Node, task bool, addr string) *rawGossiper {
	tb.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings(addr), libp2p.DisableMetrics())
	if err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	tb.Cleanup(func() { cancel(); h.Close() })
	if task {
		h.SetStreamHandler(wire.ProtocolTask, func(s network.Stream) { _ = s.Reset() })
	}
	ps, err := pubsub.NewGossipSub(ctx, h)
	if err != nil {
		tb.Fatal(err)
	}
	topic, err := ps.Join(CapabilityTopic)
	if err != nil {
		tb.Fatal(err)
	}
	if err := h.Connect(ctx, peer.AddrInfo{ID: target.ID(), Addrs: target.Host().Addrs()}); err != nil {
		tb.Fatal(err)
	}
	pollUntil(tb, 10*time.Second, "raw gossiper sees the node on the topic", func() bool {
		return slices.Contains(topic.ListPeers(), target.ID())
	})
	return &rawGossiper{host: h, topic: topic}
}

func TestCapabilityValidatorStopsBadGossipFromARawPeer(t *testing.T) {
	reg := prometheus.NewRegistry()
	n := startNodeT(t, WithPrometheusRegisterer(reg))
	raw := newRawGossiper(t, n, true)
	counter := func(result string) float64 {
		var m dto.Metric
		if err := n.rt.Load().metrics.announcements.WithLabelValues(result).Write(&m); err != nil {
			t.Fatal(err)
		}
		return m.GetCounter().GetValue()
	}
	ctx := context.Background()
	publish := func(b []byte) {
		t.Helper()
		if err := raw.topic.Publish(ctx, b); err != nil {
			t.Fatal(err)
		}
	}

	publish(capMsg(t, 10, nil, "good.first"))
	pollUntil(t, 10*time.Second, "the valid announcement is in the table", func() bool {
		return len(n.Providers("good.first")) == 1
	})
	publish(capMsg(t, 11, nil, "Bad.Skill"))
	publish(make([]byte, MaxAnnouncementSize+1))
	pollUntil(t, 10*time.Second, "both bad announcements are rejected", func() bool { return counter("rejected") == 2 })
	publish(capMsg(t, 9, nil, "replayed.skill"))
	pollUntil(t, 10*time.Second, "the replayed sequence is ignored", func() bool { return counter("ignored") == 1 })

	if got := n.Providers("good.first"); len(got) != 1 {
		t.Fatalf("good.first providers %+v after bad gossip, want the raw peer still", got)
	}
	for _, s := range []reputation.SkillID{"replayed.skill"} {
		if got := n.Providers(s); len(got) != 0 {
			t.Errorf("%s providers %+v: a bad announcement changed the table", s, got)
		}
	}
	if counter("accepted") != 1 {
		t.Errorf("accepted %v, want 1", counter("accepted"))
	}
}

// BenchmarkCapabilityProviders measures Providers on a table of 200 peers
// with 20 skills each, 16 of which offer the skill asked for, against the
// baseline a plain RWMutex-guarded map gives in the same run.
func BenchmarkCapabilityProviders(b *testing.B) {
	tbl := newCapTable(randomPeerID(b), time.Hour, func(peer.ID) bool { return true }, func(PeerEvent) {})
	now := time.Now()
	baseline := make(map[reputation.SkillID][]Provider)
	for i := range 200 {
		p := randomPeerID(b)
		var skills []SkillCapability
		for j := range 20 {
			skills = append(skills, SkillCapability{ID: reputation.SkillID("skill.s" + string(rune('a'+(i+j)%26)) + string(rune('a'+j))), Version: "1"})
		}
		if i%12 == 0 {
			skills = append(skills, SkillCapability{ID: "hot", Version: "1"})
		}
		slices.SortFunc(skills, compareSkills)
		skills = slices.Compact(skills)
		tbl.apply(p, &capAnnouncement{seq: 1, skills: skills}, now)
		for _, s := range skills {
			baseline[s.ID] = append(baseline[s.ID], Provider{Peer: p, Version: s.Version, LastSeen: now, Connected: true})
		}
	}
	if got := len(tbl.providers("hot", now)); got != 17 {
		b.Fatalf("%d providers of hot, want 17", got)
	}
	b.Run("table", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				if len(tbl.providers("hot", time.Now())) == 0 {
					b.Fatal("no providers")
				}
			}
		})
	})
	b.Run("baseline-rwmutex-map", func(b *testing.B) {
		var mu sync.RWMutex
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.RLock()
				src := baseline["hot"]
				out := make([]Provider, 0, len(src))
				for _, p := range src {
					if time.Now().Before(p.LastSeen.Add(time.Hour)) {
						out = append(out, p)
					}
				}
				mu.RUnlock()
				if len(out) == 0 {
					b.Fatal("no providers")
				}
			}
		})
	})
}

func TestCapabilityTableOffersAgreesWithProviders(t *testing.T) {
	self, p1, p2, p3, p4 := randomPeerID(t), randomPeerID(t), randomPeerID(t), randomPeerID(t), randomPeerID(t)
	tbl := newCapTable(self, 10*time.Second, func(peer.ID) bool { return false }, func(PeerEvent) {})
	tbl.speaks = func(p peer.ID) bool { return p != p3 && p != p4 }
	tbl.refutes = func(p peer.ID) bool { return p == p3 }
	now := time.Now()
	echo1, echo2 := SkillCapability{"echo", "1"}, SkillCapability{"echo", "2"}
	tbl.apply(self, &capAnnouncement{seq: 1, skills: []SkillCapability{echo1}}, now)
	tbl.apply(p1, &capAnnouncement{seq: 1, skills: []SkillCapability{echo1}}, now)
	tbl.apply(p2, &capAnnouncement{seq: 1, skills: []SkillCapability{echo2}, ttl: 2 * time.Second}, now)
	tbl.apply(p3, &capAnnouncement{seq: 1, skills: []SkillCapability{echo1}, ttl: time.Hour}, now)
	tbl.apply(p4, &capAnnouncement{seq: 1, skills: []SkillCapability{echo1}}, now)
	listed := func(p peer.ID, version string, at time.Time) bool {
		for _, q := range tbl.providers("echo", at) {
			if q.Peer == p && (version == "" || q.Version == version) {
				return true
			}
		}
		return false
	}
	cases := []struct {
		name    string
		p       peer.ID
		version string
		at      time.Time
		want    bool
	}{
		{"a verified peer offers the skill at its version", p1, "1", now, true},
		{"a verified peer offers the skill at any version", p1, "", now, true},
		{"a peer does not offer a version it does not announce", p1, "2", now, false},
		{"a peer whose announcement expired offers nothing", p2, "", now.Add(3 * time.Second), false},
		{"a peer that identify shows does not speak the task protocol offers nothing", p3, "", now, false},
		{"a refused peer offers again once its refusal is over", p3, "", now.Add(notProviderFor + time.Second), true},
		{"a candidate, neither verified nor refused, offers the skill", p4, "", now, true},
		{"this node is never a provider", self, "", now, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := tbl.offers(tc.p, "echo", tc.version, tc.at)
			if got != tc.want || got != listed(tc.p, tc.version, tc.at) {
				t.Fatalf("offers = %v, want %v (providers lists it: %v)", got, tc.want, listed(tc.p, tc.version, tc.at))
			}
		})
	}
}

func TestAboutEarlyAnnouncersOfANewcomersPeersAnswerIt(t *testing.T) {
	for _, peers := range []int{1, earlyAnnouncers, 24, 50, 200} {
		answered := 0
		const draws = 1000
		for i := range draws {
			if answerNewcomer(peers, float64(i)/draws) {
				answered++
			}
		}
		want := draws
		if peers > earlyAnnouncers {
			want = draws * earlyAnnouncers / peers
		}
		if answered < want-1 || answered > want+1 {
			t.Errorf("%d topic peers: %d of %d draws answer, want %d (about %d of a newcomer's peers)", peers, answered, draws, want, earlyAnnouncers)
		}
	}
}
