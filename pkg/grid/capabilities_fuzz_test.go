package grid

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	pubsubpb "github.com/libp2p/go-libp2p-pubsub/pb"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"
)

// FuzzValidateAnnouncement feeds arbitrary bytes, as a peer's capability
// announcement, to the topic validator gossipsub calls. It must never
// panic; it rejects what it does not accept, with a fault error; and what
// it accepts keeps the table's invariants, survives re-encoding unchanged,
// lands in the table, and is ignored as a replay when sent again.
func FuzzValidateAnnouncement(f *testing.F) {
	for _, b := range [][]byte{
		capMsg(f, 1, nil, "echo"),
		capMsg(f, 2, nil, "text.upper", "hash.sha256", "a-b_c.d9"),
		capMsg(f, 3, func(m *cortexv1.CapabilityAnnouncement) { m.TtlSeconds = 1 << 31 }, "echo"),
		capMsg(f, 4, func(m *cortexv1.CapabilityAnnouncement) { m.Addrs = nil; m.Skills = nil }),
		capMsg(f, 5, nil, "echo", "echo"),
		capMsg(f, 6, func(m *cortexv1.CapabilityAnnouncement) {
			m.FetchesModules = true
			m.Skills[0].ModuleSha256 = make([]byte, 32)
			m.Skills[0].ModuleSha256[0] = 1
		}, "text.upper", "echo"),
		capMsg(f, 7, func(m *cortexv1.CapabilityAnnouncement) { m.Skills[0].ModuleSha256 = []byte{1} }, "text.upper"),
		{},
	} {
		f.Add(b)
	}
	key, err := GenerateIdentity()
	if err != nil {
		f.Fatal(err)
	}
	n, err := NewNode(key, WithNodeLogger(nodeTestLogger()))
	if err != nil {
		f.Fatal(err)
	}
	author := randomPeerID(f)
	validate := n.validateMessage(nil)
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, data []byte) {
		// Fuzz inputs run one at a time in a worker: a fresh table keeps
		// each independent of the ones before.
		n.table = newCapTable(n.id, time.Minute, func(peer.ID) bool { return false }, func(PeerEvent) {})
		msg := &pubsub.Message{Message: &pubsubpb.Message{Data: data, From: []byte(author)}}
		switch res := validate(ctx, author, msg); res {
		case pubsub.ValidationAccept:
		case pubsub.ValidationReject:
			if msg.ValidatorData != nil {
				t.Fatalf("a rejected announcement carries validator data %+v", msg.ValidatorData)
			}
			if _, err := parseAnnouncement(data); !errors.Is(err, errAnnMalformed) && !errors.Is(err, errAnnTooLarge) {
				t.Fatalf("rejected, but the parse error %v is neither malformed nor too large", err)
			}
			return
		case pubsub.ValidationIgnore:
			// Only an announcement whose timestamp says it expired
			// already is ignored on an empty table.
			a, err := parseAnnouncement(data)
			if err != nil || n.table.stale(a, time.Now()) == nil {
				t.Fatalf("ignored on an empty table, but not stale: %+v, %v", a, err)
			}
			return
		default:
			t.Fatalf("validation result %v on an empty table, want accept or reject", res)
		}
		a, ok := msg.ValidatorData.(*capAnnouncement)
		if !ok {
			t.Fatalf("accepted without a parsed announcement: %T", msg.ValidatorData)
		}
		checkAnnouncement(t, data, a)
		if !n.table.apply(author, a, time.Now()) {
			t.Fatal("an accepted announcement was not applied to an empty table")
		}
		for _, s := range a.skills {
			if !slices.ContainsFunc(n.table.providers(s.ID, time.Now()), func(p Provider) bool { return p.Peer == author }) {
				t.Fatalf("applied announcement does not list its author for %s", s.ID)
			}
		}
		replay := &pubsub.Message{Message: &pubsubpb.Message{Data: data, From: []byte(author)}}
		if res := validate(ctx, author, replay); res != pubsub.ValidationIgnore {
			t.Fatalf("the same announcement again: %v, want ignored as a replay", res)
		}
	})
}

// checkAnnouncement checks the invariants of an accepted announcement, and
// that encoding it again and parsing that gives it back.
func checkAnnouncement(t *testing.T, data []byte, a *capAnnouncement) {
	t.Helper()
	if len(data) > MaxAnnouncementSize {
		t.Fatalf("accepted %d bytes, over the limit", len(data))
	}
	if len(a.skills) > MaxAnnouncedSkills || len(a.addrs) > maxAnnouncedAddrs {
		t.Fatalf("accepted %d skills and %d addresses", len(a.skills), len(a.addrs))
	}
	for i, s := range a.skills {
		if err := checkSkillID(s.ID); err != nil {
			t.Fatalf("accepted a bad skill ID: %v", err)
		}
		if len(s.Version) > MaxSkillVersionLen || !utf8.ValidString(s.Version) {
			t.Fatalf("accepted version %q", s.Version)
		}
		if i > 0 && compareSkills(a.skills[i-1], s) >= 0 {
			t.Fatalf("skills not sorted and unique: %v", a.skills)
		}
	}
	if a.ttl < 0 || a.ttl > maxAnnouncedTTL || (a.ttl > 0 && a.ttl < time.Second) {
		t.Fatalf("accepted TTL %s, want 0 or within [1s, %s]", a.ttl, maxAnnouncedTTL)
	}
	l := a.load
	if l.InFlight < 0 || l.Capacity < 0 || slices.ContainsFunc(l.QueueDepth[:], func(d int) bool { return d < 0 }) {
		t.Fatalf("accepted a negative load %+v", l)
	}
	m := &cortexv1.CapabilityAnnouncement{
		Sequence:       a.seq,
		QueueDepth:     make([]uint32, NumLevels),
		InFlight:       capClampU32(l.InFlight),
		WorkerCapacity: capClampU32(l.Capacity),
		TtlSeconds:     uint32(a.ttl / time.Second),
		FetchesModules: a.fetches,
	}
	if !a.stamp.IsZero() {
		m.TimestampUnixMs = a.stamp.UnixMilli()
	}
	for i, d := range l.QueueDepth {
		m.QueueDepth[i] = capClampU32(d)
	}
	for _, s := range a.skills {
		sc := &cortexv1.SkillCapability{SkillId: string(s.ID), Version: s.Version}
		if h, ok := a.modules[s]; ok {
			sc.ModuleSha256 = h[:]
		}
		m.Skills = append(m.Skills, sc)
	}
	for _, ma := range a.addrs {
		if _, err := multiaddr.NewMultiaddrBytes(ma.Bytes()); err != nil {
			t.Fatalf("accepted address %x does not parse again: %v", ma.Bytes(), err)
		}
		m.Addrs = append(m.Addrs, ma.Bytes())
	}
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatalf("re-encode: %v", err)
	}
	again, err := parseAnnouncement(b)
	if err != nil {
		t.Fatalf("the re-encoded announcement is refused: %v", err)
	}
	if !reflect.DeepEqual(again, a) {
		t.Fatalf("re-encoded announcement parses as\n%+v\nwant\n%+v", again, a)
	}
}
