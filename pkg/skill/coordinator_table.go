package skill

import (
	"encoding/binary"
	"sync"
	"time"
)

// taskTable holds the coordinator's records, finished or not, in shards
// chosen by the task ID's first byte, each behind its own mutex.
//
// A shard keeps its records in generations: small maps filled one after
// the other, oldest first; the last one takes new records. Retention and
// the WithMaxTasks bound drop whole generations, oldest first, moving the
// unfinished records of a dropped generation into the current one. So a
// new record always goes into a small map that was used a moment ago, and
// no finished record is ever deleted one by one: the cache misses of
// inserting into, and deleting from, one large map are what this avoids.
// The bound is kept per shard (the bound divided by the number of shards,
// rounded up), so it holds to within a shard's imbalance.
type taskTable struct {
	shards   []taskShard
	mask     int
	shardCap int // records a shard keeps at most
	genSize  int // records per generation before a new one starts
}

// taskShard is one shard of a taskTable. Every field, and the records'
// fields, are guarded by mu.
type taskShard struct {
	mu     sync.Mutex
	gens   []*generation // oldest first; never empty
	n      int           // records in all generations
	active int           // of which unfinished
	_      [24]byte
}

// generation is a set of records keyed by 8 bytes of the task ID, which is
// cheaper to hash than the whole ID; a record whose key is taken (IDs are
// random, but a caller may choose them) goes to dups, keyed by the whole ID.
type generation struct {
	m      map[uint64]*record
	dups   map[TaskID]*record
	n      int       // records held
	active int       // of which unfinished
	last   time.Time // latest finish of a record held
}

// maxShards is the most shards a table has: as many as the concurrent
// submitters we plan for (64). Only GOMAXPROCS goroutines hold a shard
// lock at any moment (no lock is held across a blocking call), so they
// seldom meet on one; more shards would spread the current generations
// over more memory, which costs cache misses on every insert.
var maxShards = 64

// maxGenSize bounds a generation, so that the current generations of all
// shards, where new records go, stay small enough to be in cache.
var maxGenSize = 64

func newTaskTable(maxTasks int) *taskTable {
	n := maxShards
	for n > 1 && maxTasks/n < 16 {
		n /= 2
	}
	t := &taskTable{shards: make([]taskShard, n), mask: n - 1}
	t.shardCap = (maxTasks + n - 1) / n
	t.genSize = max(1, min(t.shardCap/4, maxGenSize))
	for i := range t.shards {
		t.shards[i].gens = []*generation{t.newGen()}
	}
	return t
}

func (t *taskTable) newGen() *generation {
	return &generation{m: make(map[uint64]*record, t.genSize)}
}

func (t *taskTable) shard(id TaskID) *taskShard { return &t.shards[int(id[31])&t.mask] }

func recordKey(id TaskID) uint64 { return binary.LittleEndian.Uint64(id[8:]) }

func (g *generation) get(id TaskID) *record {
	if r := g.m[recordKey(id)]; r != nil && r.task.ID == id {
		return r
	}
	if len(g.dups) == 0 {
		return nil
	}
	return g.dups[id]
}

func (g *generation) put(r *record) {
	k := recordKey(r.task.ID)
	if _, taken := g.m[k]; !taken {
		g.m[k] = r
	} else {
		if g.dups == nil {
			g.dups = make(map[TaskID]*record)
		}
		g.dups[r.task.ID] = r
	}
	r.gen = g
	g.n++
	if !r.state.Terminal() {
		g.active++
	}
}

func (g *generation) delete(r *record) {
	if k := recordKey(r.task.ID); g.m[k] == r {
		delete(g.m, k)
	} else {
		delete(g.dups, r.task.ID)
	}
	g.n--
	if !r.state.Terminal() {
		g.active--
	}
}

func (g *generation) each(fn func(*record)) {
	for _, r := range g.m {
		fn(r)
	}
	for _, r := range g.dups {
		fn(r)
	}
}

func (s *taskShard) cur() *generation { return s.gens[len(s.gens)-1] }

// get returns the record of id, or nil, looking at the newest generation
// first. The lock must be held.
func (s *taskShard) get(id TaskID) *record {
	for i := len(s.gens) - 1; i >= 0; i-- {
		if r := s.gens[i].get(id); r != nil {
			return r
		}
	}
	return nil
}

// each calls fn for every record. The lock must be held.
func (s *taskShard) each(fn func(*record)) {
	for _, g := range s.gens {
		g.each(fn)
	}
}

// add puts r, whose ID is not in s, in the current generation, making
// room first: if the shard is at its bound it drops its oldest
// generations. It returns false, changing nothing, if the shard holds only
// unfinished records. The lock must be held.
func (t *taskTable) add(s *taskShard, r *record) bool {
	if s.n >= t.shardCap {
		if s.active >= t.shardCap {
			return false
		}
		for s.n >= t.shardCap {
			t.dropOldest(s)
		}
	}
	g := s.cur()
	if g.n >= t.genSize {
		g = t.newGen()
		s.gens = append(s.gens, g)
	}
	g.put(r)
	s.n++
	s.active++
	return true
}

// dropOldest drops the oldest generation, after moving its unfinished
// records to the current one (to a new one if it is the current one). The
// lock must be held.
func (t *taskTable) dropOldest(s *taskShard) {
	if len(s.gens) == 1 {
		s.gens = append(s.gens, t.newGen())
	}
	g := s.gens[0]
	s.gens[0] = nil
	s.gens = s.gens[1:]
	s.n -= g.n
	if g.active > 0 {
		cur := s.cur()
		g.each(func(r *record) {
			if !r.state.Terminal() {
				cur.put(r)
				s.n++
			}
		})
	}
}

// finished accounts for r having become terminal. The lock must be held.
func (s *taskShard) finished(r *record) {
	g := r.gen
	g.active--
	s.active--
	if f := r.result.FinishedAt; f.After(g.last) {
		g.last = f
	}
}

// remove takes out r, which has not finished (a submission that failed).
// The lock must be held.
func (s *taskShard) remove(r *record) {
	r.gen.delete(r)
	s.n--
	s.active--
}

// expire drops the generations, oldest first, whose finished records all
// finished at or before cutoff and that hold at least one. It returns how
// many records it dropped. The lock must be held.
func (t *taskTable) expire(s *taskShard, cutoff time.Time) int {
	before := s.n
	for {
		g := s.gens[0]
		if g.n == g.active || g.last.After(cutoff) {
			break
		}
		t.dropOldest(s)
	}
	return before - s.n
}
