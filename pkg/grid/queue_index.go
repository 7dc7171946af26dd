package grid

import (
	"crypto/rand"
	"encoding/binary"
	"math/bits"
)

// queueIndex finds a queue's items by task ID: an open-addressing hash table
// with linear probing and backward-shift deletion, kept at most half full.
//
// It replaces a map[TaskID]*queueItem on the hot path: with 32-byte keys a
// Go map hashes the whole key on each of the four operations an
// enqueue-dequeue-complete cycle needs (two of them only to check before
// writing), which cost about a third of the cycle. Here an insert that
// checks for a duplicate, and a lookup that then deletes, are one probe each;
// the hash is two 128-bit multiplies keyed by a random seed (the wyhash
// mixer), so that peers cannot choose IDs that collide, and items keep their
// hash so that moving them never rehashes.
type queueIndex struct {
	slots []*queueItem // len is a power of two; nil is empty
	n     int
	seed  [4]uint64
}

const queueIndexMinSlots = 64

func newQueueIndex() queueIndex {
	var b [32]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	var x queueIndex
	for i := range x.seed {
		x.seed[i] = binary.LittleEndian.Uint64(b[8*i:]) | 1
	}
	x.slots = make([]*queueItem, queueIndexMinSlots)
	return x
}

func (x *queueIndex) hash(id *TaskID) uint64 {
	hi0, lo0 := bits.Mul64(binary.LittleEndian.Uint64(id[0:])^x.seed[0], binary.LittleEndian.Uint64(id[8:])^x.seed[1])
	hi1, lo1 := bits.Mul64(binary.LittleEndian.Uint64(id[16:])^x.seed[2], binary.LittleEndian.Uint64(id[24:])^x.seed[3])
	return hi0 ^ lo0 ^ hi1 ^ lo1
}

// sameID compares two IDs word by word, which the compiler inlines; a ==
// on [32]byte calls memequal.
func sameID(a, b *TaskID) bool {
	le := binary.LittleEndian
	return le.Uint64(a[0:]) == le.Uint64(b[0:]) && le.Uint64(a[8:]) == le.Uint64(b[8:]) &&
		le.Uint64(a[16:]) == le.Uint64(b[16:]) && le.Uint64(a[24:]) == le.Uint64(b[24:])
}

// find returns the slot holding id, or -1.
func (x *queueIndex) find(id *TaskID) int {
	h := x.hash(id)
	mask := len(x.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		it := x.slots[i]
		if it == nil {
			return -1
		}
		if it.hash == h && sameID(&it.id, id) {
			return i
		}
	}
}

// get returns the item for id, or nil.
func (x *queueIndex) get(id *TaskID) *queueItem {
	if i := x.find(id); i >= 0 {
		return x.slots[i]
	}
	return nil
}

// slotFor returns the hash of id, the slot where id is or else the empty
// slot where it would go, and whether id is there. It grows the table first
// if need be, so the slot stays valid for one putAt.
func (x *queueIndex) slotFor(id *TaskID) (uint64, int, bool) {
	if 2*(x.n+1) > len(x.slots) {
		x.resize(2 * len(x.slots))
	}
	h := x.hash(id)
	mask := len(x.slots) - 1
	for i := int(h) & mask; ; i = (i + 1) & mask {
		it := x.slots[i]
		if it == nil {
			return h, i, false
		}
		if it.hash == h && sameID(&it.id, id) {
			return h, i, true
		}
	}
}

// putAt stores it, with the hash slotFor returned, in the empty slot i that
// slotFor returned.
func (x *queueIndex) putAt(i int, h uint64, it *queueItem) {
	it.hash = h
	x.slots[i] = it
	x.n++
}

// deleteAt empties slot i and shifts later entries of its probe run back,
// so no tombstones are needed.
func (x *queueIndex) deleteAt(i int) {
	mask := len(x.slots) - 1
	j := i
	for {
		j = (j + 1) & mask
		it := x.slots[j]
		if it == nil {
			break
		}
		home := int(it.hash) & mask
		// Move it back to i unless its home lies cyclically in (i, j].
		if (j > i && (home <= i || home > j)) || (j < i && home <= i && home > j) {
			x.slots[i] = it
			i = j
		}
	}
	x.slots[i] = nil
	x.n--
	if len(x.slots) > queueIndexMinSlots && 8*x.n < len(x.slots) {
		x.resize(len(x.slots) / 2)
	}
}

// delete removes it, which must be in the table.
func (x *queueIndex) delete(it *queueItem) {
	if i := x.find(&it.id); i >= 0 {
		x.deleteAt(i)
	}
}

func (x *queueIndex) resize(n int) {
	old := x.slots
	x.slots = make([]*queueItem, n)
	mask := n - 1
	for _, it := range old {
		if it == nil {
			continue
		}
		i := int(it.hash) & mask
		for x.slots[i] != nil {
			i = (i + 1) & mask
		}
		x.slots[i] = it
	}
}
