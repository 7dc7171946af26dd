package skill

import (
	"container/list"
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
// it did not fit the byte bound.
type sentResult struct {
	key     recentKey
	attempt int
	res     grid.RemoteResult
	kept    bool // res.Output is the whole output
	expires time.Time
}

// recentResults is the bounded record of results sent to peers, oldest
// first. It is safe for concurrent use.
type recentResults struct {
	cfg   recentConfig
	mu    sync.Mutex
	m     map[recentKey]*list.Element // of *sentResult
	order list.List                   // oldest at the front
	bytes int64
}

func newRecentResults(cfg recentConfig) *recentResults {
	return &recentResults{cfg: cfg, m: make(map[recentKey]*list.Element)}
}

// add records that res, the answer to attempt of id, went to from. A
// canceled result is not recorded, and forgets an earlier one: a peer that
// asks again for a task it canceled (or whose connection was lost) wants
// it run.
func (r *recentResults) add(from peer.ID, id TaskID, attempt int, res *grid.RemoteResult, now time.Time) {
	k := recentKey{from, id}
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.m[k]; e != nil {
		r.removeLocked(e)
	}
	if res.ErrorCode == grid.CodeCanceled {
		return
	}
	sr := &sentResult{key: k, attempt: attempt, res: *res, kept: true, expires: now.Add(r.cfg.ttl)}
	if int64(len(res.Output)) > r.cfg.bytes {
		sr.res.Output, sr.kept = nil, false
	}
	for r.order.Len() >= r.cfg.entries || r.bytes+int64(len(sr.res.Output)) > r.cfg.bytes {
		r.removeLocked(r.order.Front())
	}
	r.m[k] = r.order.PushBack(sr)
	r.bytes += int64(len(sr.res.Output))
}

// get returns the result sent to from for id, if it is recorded.
func (r *recentResults) get(from peer.ID, id TaskID, now time.Time) (sentResult, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.m[recentKey{from, id}]
	if e == nil {
		return sentResult{}, false
	}
	sr := e.Value.(*sentResult)
	if !now.Before(sr.expires) {
		r.removeLocked(e)
		return sentResult{}, false
	}
	return *sr, true
}

// forget drops the record of id for from.
func (r *recentResults) forget(from peer.ID, id TaskID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if e := r.m[recentKey{from, id}]; e != nil {
		r.removeLocked(e)
	}
}

// sweep drops the records that expired by now.
func (r *recentResults) sweep(now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for e := r.order.Front(); e != nil && !now.Before(e.Value.(*sentResult).expires); e = r.order.Front() {
		r.removeLocked(e)
	}
}

// len returns how many results are recorded and the bytes they hold.
func (r *recentResults) len() (int, int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.order.Len(), r.bytes
}

func (r *recentResults) removeLocked(e *list.Element) {
	sr := r.order.Remove(e).(*sentResult)
	delete(r.m, sr.key)
	r.bytes -= int64(len(sr.res.Output))
}

// errResultNotKept is the message of a repeat whose result went out but
// was too large to keep.
var errResultNotKept = errors.New("its result was sent already and was too large to keep: ask with a new attempt to run it again")
