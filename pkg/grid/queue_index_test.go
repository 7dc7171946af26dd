package grid

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

// hashedID returns an ID whose hash is h under a zero seed: mum(1, h) = h,
// and words 16-31 add mum(0, w3) = 0.
func hashedID(h uint64) TaskID {
	var id TaskID
	binary.LittleEndian.PutUint64(id[0:], 1)
	binary.LittleEndian.PutUint64(id[8:], h)
	return id
}

func TestQueueIndexAgreesWithAMap(t *testing.T) {
	cases := []struct {
		name string
		ids  func(r *rand.Rand, n int) TaskID
		seed bool // keep the random seed
	}{
		{"random IDs find, insert and delete like a map", func(r *rand.Rand, _ int) TaskID {
			var id TaskID
			for i := range 4 {
				binary.LittleEndian.PutUint64(id[8*i:], r.Uint64())
			}
			return id
		}, true},
		{"sequential IDs find, insert and delete like a map", func(_ *rand.Rand, n int) TaskID { return qtask(n, 0).ID }, true},
		{"IDs colliding around the table's end keep their probe runs whole", func(r *rand.Rand, n int) TaskID {
			// Homes 60-67 of a 64-slot table: runs wrap past its end.
			id := hashedID(uint64(60 + r.IntN(8)))
			binary.LittleEndian.PutUint64(id[24:], uint64(n)) // w3: distinct IDs, same hash
			return id
		}, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := rand.New(rand.NewPCG(1, 2))
			x := newQueueIndex()
			if !tc.seed {
				x.seed = [4]uint64{}
			}
			ref := map[TaskID]*queueItem{}
			check := func(step int) {
				t.Helper()
				if x.n != len(ref) {
					t.Fatalf("step %d: index holds %d, map %d", step, x.n, len(ref))
				}
				for id, it := range ref {
					if got := x.get(&id); got != it {
						t.Fatalf("step %d: get(%s) = %p, want %p", step, id.Short(), got, it)
					}
				}
			}
			var held []TaskID
			for step := range 3000 {
				if len(held) > 0 && (r.IntN(3) == 0 || len(held) > 40) {
					k := r.IntN(len(held))
					id := held[k]
					held[k] = held[len(held)-1]
					held = held[:len(held)-1]
					i := x.find(&id)
					if i < 0 {
						t.Fatalf("step %d: held ID %s not found", step, id.Short())
					}
					x.deleteAt(i)
					delete(ref, id)
					if x.get(&id) != nil {
						t.Fatalf("step %d: deleted ID %s still found", step, id.Short())
					}
				} else {
					id := tc.ids(r, step+1)
					h, i, dup := x.slotFor(&id)
					if _, inRef := ref[id]; dup != inRef {
						t.Fatalf("step %d: slotFor says present=%v, map says %v", step, dup, inRef)
					}
					if !dup {
						it := &queueItem{id: id}
						x.putAt(i, h, it)
						ref[id] = it
						held = append(held, id)
					}
				}
				check(step)
			}
		})
	}
}

func TestQueueIndexGrowsAndShrinks(t *testing.T) {
	x := newQueueIndex()
	items := make([]*queueItem, 5000)
	for i := range items {
		items[i] = &queueItem{id: qtask(i+1, 0).ID}
		h, s, _ := x.slotFor(&items[i].id)
		x.putAt(s, h, items[i])
	}
	if len(x.slots) < 2*len(items) {
		t.Fatalf("%d slots for %d items: more than half full", len(x.slots), len(items))
	}
	for _, it := range items[:4990] {
		x.delete(it)
	}
	if len(x.slots) > 128 {
		t.Fatalf("%d slots left for 10 items: the table did not shrink", len(x.slots))
	}
	for _, it := range items[4990:] {
		if x.get(&it.id) != it {
			t.Fatalf("item %s lost in shrinking", it.id.Short())
		}
	}
}
