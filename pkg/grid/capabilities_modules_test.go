package grid

import (
	"bytes"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

func newUnstartedNode(t *testing.T) *Node {
	t.Helper()
	key, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	n, err := NewNode(key)
	if err != nil {
		t.Fatal(err)
	}
	n.table.speaks = nil // every peer counts as verified: there is no host to ask
	return n
}

// learn stores an announcement from author in n's table as the gossip
// read loop would.
func learn(t *testing.T, n *Node, author peer.ID, data []byte) {
	t.Helper()
	a, err := n.table.check(author, data, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	if !n.table.apply(author, a, time.Now()) {
		t.Fatal("announcement not applied")
	}
}

func TestAnnouncementsCarryModuleHashesAndTheFetchFlag(t *testing.T) {
	hash := bytes.Repeat([]byte{0xab}, 32)
	n := newUnstartedNode(t)
	n.SetCapabilities([]SkillCapability{{"echo", "1.0.0"}, {"text.upper", "1.0.0"}})
	n.SetSkillModules(SkillModules{{"text.upper", "1.0.0"}: [32]byte(hash), {"not.offered", "1"}: [32]byte(hash)})
	n.SetFetchesModules(true)
	data, err := n.buildAnnouncement(nil, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a, err := parseAnnouncement(data)
	if err != nil {
		t.Fatal(err)
	}
	want := SkillModules{{"text.upper", "1.0.0"}: [32]byte(hash)}
	if !a.fetches || len(a.modules) != 1 || a.modules[SkillCapability{"text.upper", "1.0.0"}] != want[SkillCapability{"text.upper", "1.0.0"}] {
		t.Fatalf("parsed fetches %v, modules %v; want true and %v", a.fetches, a.modules, want)
	}
}

func TestAnAnnouncedModuleHashOfTheWrongLengthIsMalformed(t *testing.T) {
	for _, n := range []int{1, 31, 33} {
		data := capMsg(t, 1, func(m *cortexv1.CapabilityAnnouncement) { m.Skills[0].ModuleSha256 = make([]byte, n) }, "text.upper")
		if _, err := parseAnnouncement(data); !errors.Is(err, errAnnMalformed) {
			t.Fatalf("a module hash of %d bytes: %v; want malformed", n, err)
		}
	}
}

func TestModuleFetchersAreListedOnlyForWasmSkills(t *testing.T) {
	n := newUnstartedNode(t)
	holder, fetcher, plain := randomPeerID(t), randomPeerID(t), randomPeerID(t)
	hash := bytes.Repeat([]byte{7}, 32)
	learn(t, n, holder, capMsg(t, 1, func(m *cortexv1.CapabilityAnnouncement) { m.Skills[0].ModuleSha256 = hash }, "text.upper", "echo"))
	learn(t, n, fetcher, capMsg(t, 1, func(m *cortexv1.CapabilityAnnouncement) { m.FetchesModules = true }))
	learn(t, n, plain, capMsg(t, 1, nil, "hash.sha256"))

	if fs := n.ModuleFetchers("text.upper"); len(fs) != 1 || fs[0].Peer != fetcher {
		t.Fatalf("fetchers of the wasm skill text.upper: %v; want only the fetching peer", fs)
	}
	if fs := n.ModuleFetchers("echo"); fs != nil {
		t.Fatalf("fetchers of echo, which no one announces with a module: %v; want none", fs)
	}
	if hs := n.ModuleHolders([32]byte(hash)); !slices.Equal(hs, []peer.ID{holder}) {
		t.Fatalf("holders of the module: %v; want the peer announcing it", hs)
	}
	if h, ok := n.AnnouncedModule(holder, "text.upper", ""); !ok || h != [32]byte(hash) {
		t.Fatalf("module announced by the holder: %x, %v", h, ok)
	}
	if _, ok := n.AnnouncedModule(holder, "echo", ""); ok {
		t.Fatal("echo, announced without a module, has one")
	}

	// The fetcher stops fetching: it is no longer listed.
	learn(t, n, fetcher, capMsg(t, 2, nil))
	if fs := n.ModuleFetchers("text.upper"); len(fs) != 0 {
		t.Fatalf("fetchers after the flag went off: %v; want none", fs)
	}
}
