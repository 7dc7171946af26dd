package skill

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// Defaults of the record of results sent to peers (WithRecentResults).
const (
	DefaultRecentResults     = 4096
	DefaultRecentResultBytes = 32 << 20
	DefaultRecentResultTTL   = 2 * time.Minute
)

type recentConfig struct {
	entries int
	bytes   int64
	ttl     time.Duration
}

func defaultRecentConfig() recentConfig {
	return recentConfig{entries: DefaultRecentResults, bytes: DefaultRecentResultBytes, ttl: DefaultRecentResultTTL}
}

func (c *recentConfig) validate() error {
	if c.entries < 1 || c.bytes < 0 || c.ttl <= 0 {
		return fmt.Errorf("recent results %d entries, %d bytes, kept %v: want at least 1 entry, bytes not negative, a positive time", c.entries, c.bytes, c.ttl)
	}
	return nil
}

// WithRecentResults bounds the in-memory record of results sent to peers,
// which answers a request repeated after its result went out (see
// HandleTask) when the coordinator has no store: at most entries results,
// whose outputs hold at most bytes together, each kept for ttl. The oldest
// go first. A result whose output does not fit is kept without it, so that
// a repeat is still never run twice. Defaults: 4096, 32 MiB, 2 minutes.
func WithRecentResults(entries int, bytes int64, ttl time.Duration) CoordinatorOption {
	return func(c *coordinatorConfig) { c.recent = recentConfig{entries: entries, bytes: bytes, ttl: ttl} }
}

// recentKey names a result by the peer it went to and the peer's task ID.
type recentKey struct {
	from peer.ID
	id   TaskID
}

// sentResult is a result sent to a peer. Output is nil and kept false when
// it did not fit the byte bound. A slot whose record was dropped early
// (replaced or forgotten) is dead until the ring reaches it.
type sentResult struct {
	key     recentKey
	attempt int
	res     grid.RemoteResult
	kept    bool // res.Output is the whole output
	dead    bool
	expires time.Time
}

// recentResults is the bounded record of results sent to peers: a ring of
// at most cfg.entries slots, oldest at head, indexed by m. It grows to its
// bound as results come, and never allocates once there. It is safe for
// concurrent use.
type recentResults struct {
	cfg   recentConfig
	mu    sync.Mutex
	m     map[recentKey]int // slot of each live record
	ring  []sentResult
	head  int // oldest slot
	n     int // slots in use, dead ones included
	bytes int64
}

func newRecentResults(cfg recentConfig) *recentResults {
	return &recentResults{cfg: cfg, m: make(map[recentKey]int)}
}

// add records that res, the answer to attempt of id, went to from. A
// canceled result is not recorded, and forgets an earlier one: a peer that
// asks again for a task it canceled (or whose connection was lost) wants
// it run.
func (r *recentResults) add(from peer.ID, id TaskID, attempt int, res *grid.RemoteResult, now time.Time) {
	k := recentKey{from, id}
	out := res.Output
	kept := int64(len(out)) <= r.cfg.bytes
	if !kept {
		out = nil
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.m[k]; ok {
		r.killLocked(i)
	}
	if res.ErrorCode == grid.CodeCanceled {
		return
	}
	for r.n > 0 && (r.n >= r.cfg.entries || r.bytes+int64(len(out)) > r.cfg.bytes) {
		r.popLocked()
	}
	i := (r.head + r.n) % r.cfg.entries
	if i == len(r.ring) {
		r.ring = append(r.ring, sentResult{})
	}
	r.ring[i] = sentResult{key: k, attempt: attempt, res: *res, kept: kept, expires: now.Add(r.cfg.ttl)}
	r.ring[i].res.Output = out
	r.n++
	r.m[k] = i
	r.bytes += int64(len(out))
}

// get returns the result sent to from for id, if it is recorded.
func (r *recentResults) get(from peer.ID, id TaskID, now time.Time) (sentResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	i, ok := r.m[recentKey{from, id}]
	if !ok {
		return sentResult{}, false
	}
	if !now.Before(r.ring[i].expires) {
		r.killLocked(i)
		return sentResult{}, false
	}
	return r.ring[i], true
}

// forget drops the record of id for from.
func (r *recentResults) forget(from peer.ID, id TaskID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if i, ok := r.m[recentKey{from, id}]; ok {
		r.killLocked(i)
	}
}

// sweep drops the records that expired by now, and the dead slots before
// them.
func (r *recentResults) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for r.n > 0 && (r.ring[r.head].dead || !now.Before(r.ring[r.head].expires)) {
		r.popLocked()
	}
}

// len returns how many results are recorded and the bytes they hold.
func (r *recentResults) len() (int, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.m), r.bytes
}

// killLocked drops the record in slot i, leaving the slot dead.
func (r *recentResults) killLocked(i int) {
	sr := &r.ring[i]
	delete(r.m, sr.key)
	r.bytes -= int64(len(sr.res.Output))
	*sr = sentResult{dead: true}
}

// popLocked frees the oldest slot.
func (r *recentResults) popLocked() {
	if !r.ring[r.head].dead {
		r.killLocked(r.head)
	}
	r.ring[r.head] = sentResult{}
	r.head = (r.head + 1) % r.cfg.entries
	r.n--
}

// errResultNotKept is the message of a repeat whose result went out but
// was too large to keep.
var errResultNotKept = errors.New("its result was sent already and was too large to keep: ask with a new attempt to run it again")
