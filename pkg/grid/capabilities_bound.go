package grid

import (
	"cmp"
	"math"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Bounds of the capability table. A peer's entry holds at most
// MaxAnnouncedSkills skills (a longer announcement is malformed).
const (
	maxCapPeers     = 10000   // entries
	maxCapSkillRefs = 1 << 16 // (peer, skill) pairs over all entries

	// maxClockSkew is how far an announcement's timestamp may lag this
	// node's clock beyond its TTL before it counts as a replay.
	maxClockSkew = 30 * time.Second

	// neutralKeepTrust is the trust keepScore uses without WithPeerTrust,
	// and for peers the trust function has never heard of.
	neutralKeepTrust = 0.5

	// A full table keeps up to evictBatch eviction candidates, found by a
	// scan of every entry at most once per evictRescan: at most 64
	// evictions a second, and one O(entries) scan.
	evictBatch  = 64
	evictRescan = time.Second
)

// victim is an eviction candidate with the score it had when found.
type victim struct {
	peer  peer.ID
	score float64
}

// keepScore ranks p for a place in a full table, higher kept first: its
// trust in [0, 1], plus 1 if it is connected now, plus 1 if identify showed
// it speaks the task protocol. A fresh key that is neither connected nor
// trusted scores neutralKeepTrust and cannot push out an entry that scores
// as much. Called with mu held: connected, speaks and trust must not call
// back into the table.
func (t *capTable) keepScore(p peer.ID) float64 {
	verified := t.speaks == nil || t.speaks(p)
	if slot, ok := t.slots[p]; ok {
		verified = slot.verified.Load()
	}
	return t.score(p, verified)
}

func (t *capTable) score(p peer.ID, verified bool) float64 {
	s := neutralKeepTrust
	if t.trust != nil {
		if v := t.trust(p); !math.IsNaN(v) {
			s = min(max(v, 0), 1)
		}
	}
	if t.connected(p) {
		s++
	}
	if verified {
		s++
	}
	return s
}

// fitsLocked reports whether an entry fits without eviction: a new one
// (known false) or one whose skill set grows by grow pairs.
func (t *capTable) fitsLocked(known bool, grow int) bool {
	return (known || len(t.slots) < t.maxPeers) && t.refs+grow <= t.maxRefs
}

// wouldEvictLocked reports whether the worst eviction candidate scores
// below score, so that a newcomer scoring score would take its place.
func (t *capTable) wouldEvictLocked(score float64, now time.Time) bool {
	t.refreshVictimsLocked(now)
	return len(t.victims) > 0 && t.victims[0].score < score
}

// makeRoomLocked evicts entries that score below author until author's
// entry (new unless known, its skill set growing by grow) fits. It reports
// whether it fits; if not, what it evicted stays evicted, as the worse
// entries it was.
func (t *capTable) makeRoomLocked(author peer.ID, known bool, grow int, now time.Time) bool {
	score := t.keepScore(author)
	evicted := false
	defer func() {
		if evicted {
			t.rebuildLocked()
		}
	}()
	for !t.fitsLocked(known, grow) {
		v, ok := t.nextVictimLocked(author, now)
		if !ok || v.score >= score {
			return false
		}
		t.victims = t.victims[1:]
		// The score was taken at the last scan: take it again.
		if _, live := t.slots[v.peer]; !live || t.keepScore(v.peer) >= score {
			continue
		}
		evicted = t.dropLocked(v.peer, now) || evicted
	}
	return true
}

// nextVictimLocked returns the worst eviction candidate other than author.
func (t *capTable) nextVictimLocked(author peer.ID, now time.Time) (victim, bool) {
	for {
		t.refreshVictimsLocked(now)
		if len(t.victims) == 0 {
			return victim{}, false
		}
		if v := t.victims[0]; v.peer != author {
			if _, live := t.slots[v.peer]; live {
				return v, true
			}
		}
		t.victims = t.victims[1:]
	}
}

// refreshVictimsLocked rescans the table for the evictBatch lowest-scoring
// entries once the candidates ran out, at most once per evictRescan: an
// announcement flood from fresh keys costs one scan a second, not one per
// announcement.
func (t *capTable) refreshVictimsLocked(now time.Time) {
	if len(t.victims) > 0 || now.Sub(t.scanned) < evictRescan {
		return
	}
	t.scanned = now
	all := make([]victim, 0, len(t.slots))
	for p, slot := range t.slots {
		all = append(all, victim{peer: p, score: t.score(p, slot.verified.Load())})
	}
	slices.SortFunc(all, func(a, b victim) int {
		return cmp.Or(cmp.Compare(a.score, b.score), cmp.Compare(a.peer, b.peer))
	})
	t.victims = slices.Clip(all[:min(len(all), evictBatch)])
}
