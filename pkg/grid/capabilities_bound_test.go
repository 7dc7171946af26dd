package grid

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
	"github.com/libp2p/go-libp2p/core/peer"
)

// boundTable is a table of at most maxPeers entries and maxRefs skill
// entries whose peers are connected, verified and trusted as the maps say.
type boundTable struct {
	*capTable
	connected, verified map[peer.ID]bool
	trust               map[peer.ID]float64
}

func newBoundTable(tb testing.TB, maxPeers, maxRefs int) *boundTable {
	bt := &boundTable{connected: map[peer.ID]bool{}, verified: map[peer.ID]bool{}, trust: map[peer.ID]float64{}}
	bt.capTable = newCapTable(randomPeerID(tb), time.Minute, func(p peer.ID) bool { return bt.connected[p] }, func(PeerEvent) {})
	bt.speaks = func(p peer.ID) bool { return bt.verified[p] }
	bt.capTable.trust = func(p peer.ID) float64 {
		if v, ok := bt.trust[p]; ok {
			return v
		}
		return neutralKeepTrust
	}
	bt.maxPeers, bt.maxRefs = maxPeers, maxRefs
	return bt
}

// announce checks and applies an announcement of skills from p, and
// returns check's error.
func (bt *boundTable) announce(tb testing.TB, p peer.ID, seq uint64, now time.Time, skills ...string) error {
	tb.Helper()
	at := func(m *cortexv1.CapabilityAnnouncement) { m.TimestampUnixMs = now.UnixMilli() }
	a, err := bt.check(p, capMsg(tb, seq, at, skills...), now)
	if err != nil {
		return err
	}
	if !bt.apply(p, a, now) {
		return fmt.Errorf("checked, but not applied")
	}
	return nil
}

func (bt *boundTable) has(p peer.ID) bool {
	bt.mu.Lock()
	defer bt.mu.Unlock()
	_, ok := bt.slots[p]
	return ok
}

func TestCapabilityTableFullOfFreshKeysMakesRoomForBetterPeersOnly(t *testing.T) {
	bt := newBoundTable(t, 4, 1000)
	now := time.Now()
	fresh := make([]peer.ID, 4)
	for i := range fresh {
		fresh[i] = randomPeerID(t)
		if err := bt.announce(t, fresh[i], 1, now, "echo"); err != nil {
			t.Fatalf("fresh key %d: %v", i, err)
		}
	}
	if err := bt.announce(t, randomPeerID(t), 1, now, "echo"); !errors.Is(err, errAnnTableFull) {
		t.Fatalf("one more fresh key: %v, want errAnnTableFull", err)
	}

	tests := []struct {
		name string
		set  func(peer.ID)
	}{
		{"a connected peer takes the place of a fresh key", func(p peer.ID) { bt.connected[p] = true }},
		{"a trusted peer takes the place of a fresh key", func(p peer.ID) { bt.trust[p] = 0.9 }},
		{"a peer that speaks the task protocol takes the place of a fresh key", func(p peer.ID) { bt.verified[p] = true }},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := randomPeerID(t)
			tc.set(p)
			now := now.Add(time.Duration(i+1) * evictRescan) // a rescan is due
			if err := bt.announce(t, p, 1, now, "echo"); err != nil {
				t.Fatalf("announce: %v", err)
			}
			if !bt.has(p) || bt.size() != 4 {
				t.Fatalf("newcomer in table: %v, size %d; want it in and 4 entries", bt.has(p), bt.size())
			}
		})
	}
	kept := 0
	for _, p := range fresh {
		if bt.has(p) {
			kept++
		}
	}
	if kept != 1 {
		t.Errorf("%d fresh keys kept, want 1 (three were evicted)", kept)
	}
	// A fresh key never displaces a better peer, nor the fresh key left
	// (a tie keeps the incumbent), even when a rescan is due.
	if err := bt.announce(t, randomPeerID(t), 1, now.Add(time.Hour), "echo"); !errors.Is(err, errAnnTableFull) {
		t.Errorf("a fresh key when the worst entry is a fresh key: %v, want errAnnTableFull", err)
	}
	for p := range bt.connected {
		if !bt.has(p) {
			t.Errorf("connected peer %s evicted for a fresh key", p)
		}
	}
}

func TestCapabilityTableBoundsSkillEntriesInTotal(t *testing.T) {
	bt := newBoundTable(t, 100, 6)
	now := time.Now()
	a, b := randomPeerID(t), randomPeerID(t)
	if err := bt.announce(t, a, 1, now, "s.one", "s.two", "s.three"); err != nil {
		t.Fatal(err)
	}
	if err := bt.announce(t, b, 1, now, "s.one", "s.two", "s.three"); err != nil {
		t.Fatal(err)
	}
	if err := bt.announce(t, randomPeerID(t), 1, now, "s.one"); !errors.Is(err, errAnnTableFull) {
		t.Fatalf("a seventh skill entry from a fresh key: %v, want errAnnTableFull", err)
	}
	if err := bt.announce(t, a, 2, now, "s.one", "s.two", "s.three", "s.four"); !errors.Is(err, errAnnTableFull) {
		t.Fatalf("a known peer growing past the bound: %v, want errAnnTableFull", err)
	}
	if err := bt.announce(t, a, 3, now, "s.one"); err != nil {
		t.Fatalf("a known peer shrinking: %v", err)
	}
	if bt.refs != 4 {
		t.Fatalf("%d skill entries counted, want 4", bt.refs)
	}
	bt.remove(b, now)
	if bt.refs != 1 {
		t.Fatalf("%d skill entries counted after a removal, want 1", bt.refs)
	}
}

func TestCapabilityTableForgetsAPeerWithItsEntry(t *testing.T) {
	bt := newBoundTable(t, 100, 1000)
	now := time.Now()
	for range 50 {
		if err := bt.announce(t, randomPeerID(t), 1000, now, "echo"); err != nil {
			t.Fatal(err)
		}
	}
	p := randomPeerID(t)
	if err := bt.announce(t, p, 1000, now, "echo"); err != nil {
		t.Fatal(err)
	}
	bt.expire(now.Add(time.Hour))
	if bt.size() != 0 || bt.refs != 0 {
		t.Fatalf("after expiry: %d entries, %d skill entries; want none", bt.size(), bt.refs)
	}
	// Nothing of p is left: a restarted p (a lower sequence, a fresh
	// timestamp) is accepted.
	if err := bt.announce(t, p, 1, now.Add(time.Hour), "echo"); err != nil {
		t.Fatalf("p after its entry expired: %v", err)
	}
}
