package skill

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// Defaults of a ResultCache.
const (
	DefaultCacheMaxBytes int64         = 64 << 20
	DefaultCacheTTL      time.Duration = time.Hour
)

// cacheEntryOverhead is what one entry costs beyond its output and the
// executor's ID: the key, the list element, the map slot.
const cacheEntryOverhead = 160

// CacheConfig bounds a ResultCache.
type CacheConfig struct {
	MaxBytes int64         // 0: DefaultCacheMaxBytes
	TTL      time.Duration // 0: DefaultCacheTTL
}

// CacheKey names a result in the cache: the sha256 of the skill ID and
// version, the module hash (zero for skills that run no module), the input
// kind and the sha256 of the input.
type CacheKey [32]byte

// keyOf returns the cache key of running s (resolved to its descriptor
// desc) on in.
func keyOf(s Skill, desc *Descriptor, in SkillInput) CacheKey {
	module, _ := ModuleOf(s)
	return cacheKey(string(desc.ID), desc.Version, module, in)
}

func cacheKey(id, version string, module [32]byte, in SkillInput) CacheKey {
	h := sha256.New()
	var n [8]byte
	for _, f := range [...]string{id, version} {
		binary.BigEndian.PutUint64(n[:], uint64(len(f)))
		h.Write(n[:])
		h.Write([]byte(f))
	}
	h.Write(module[:])
	h.Write([]byte{byte(in.Kind)})
	sum := sha256.Sum256(in.Data)
	h.Write(sum[:])
	var k CacheKey
	h.Sum(k[:0])
	return k
}

// CachedResult is a stored success.
type CachedResult struct {
	Output     []byte
	ExecutedBy peer.ID       // the node that ran the task first
	Duration   time.Duration // its execution time there
	StoredAt   time.Time
}

func (r *CachedResult) size() int64 {
	return int64(len(r.Output)+len(r.ExecutedBy)) + cacheEntryOverhead
}

// CacheStats counts a ResultCache's lookups and contents. Hits count the
// tasks submitted here answered from the cache or from an identical
// task's execution (Shared of them); Misses the cacheable tasks that ran.
// The Peer counters are the same for the tasks peers sent this node to
// run: PeerHits answered from the cache, PeerShared answered by an
// identical request's run here, PeerMisses each started a run.
type CacheStats struct {
	Hits, Shared, Misses, Evictions  uint64
	PeerHits, PeerShared, PeerMisses uint64
	Entries                          int
	Bytes                            int64
}

// ResultCache holds the outputs of deterministic skills, bounded in bytes
// (least recently used out first) and in age. It also tracks the cacheable
// tasks running now, so that identical ones share one execution. Install
// it on a coordinator with UseResultCache. It is safe for concurrent use.
//
// The cache is in memory; with Persist it writes its changes through to
// a store in batches and starts from what the store holds, so that a
// restart, even after kill -9, keeps it (less the last batch).
type ResultCache struct {
	max int64
	ttl time.Duration
	now func() time.Time

	mu      sync.Mutex
	size    int64
	lru     list.List // of *cacheEntry, most recently used first
	m       map[CacheKey]*list.Element
	flights map[CacheKey]*flight
	// runs are peers' tasks running here, by key (see execRun).
	runs       map[CacheKey]*execRun
	maxWaiters int
	// journal holds the changes not yet written to the store (Persist):
	// the entry to write, or nil to delete the key. nil: not persisted.
	journal map[CacheKey]*cacheEntry
	kick    chan struct{} // cap 1: the journal has changes

	hits, shared, misses, evictions atomic.Uint64
	// Peers' requests: answered from the cache, joined a run going on,
	// answered by the run they joined, started a run.
	peerHits, peerJoins, peerShared, peerMisses atomic.Uint64
}

type cacheEntry struct {
	key CacheKey
	res CachedResult
}

// NewResultCache returns an empty cache bounded by cfg.
func NewResultCache(cfg CacheConfig) (*ResultCache, error) {
	if cfg.MaxBytes < 0 {
		return nil, fmt.Errorf("result cache: max bytes is %d; it must be 0 (default %d) or more", cfg.MaxBytes, DefaultCacheMaxBytes)
	}
	if cfg.TTL < 0 {
		return nil, fmt.Errorf("result cache: TTL is %v; it must be 0 (default %v) or more", cfg.TTL, DefaultCacheTTL)
	}
	if cfg.MaxBytes == 0 {
		cfg.MaxBytes = DefaultCacheMaxBytes
	}
	if cfg.TTL == 0 {
		cfg.TTL = DefaultCacheTTL
	}
	return &ResultCache{max: cfg.MaxBytes, ttl: cfg.TTL, now: time.Now,
		m: make(map[CacheKey]*list.Element), flights: make(map[CacheKey]*flight),
		runs: make(map[CacheKey]*execRun), maxWaiters: DefaultMaxRunWaiters}, nil
}

// Get returns the result stored under k, if it is there and younger than
// the TTL, and marks it recently used. It counts no hit or miss: the
// coordinator does, as it answers tasks.
func (rc *ResultCache) Get(k CacheKey) (CachedResult, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return rc.getLocked(k, rc.now())
}

func (rc *ResultCache) getLocked(k CacheKey, now time.Time) (CachedResult, bool) {
	el := rc.m[k]
	if el == nil {
		return CachedResult{}, false
	}
	e := el.Value.(*cacheEntry)
	if now.Sub(e.res.StoredAt) >= rc.ttl {
		rc.removeLocked(el)
		return CachedResult{}, false
	}
	rc.lru.MoveToFront(el)
	return e.res, true
}

// Put stores r under k (its StoredAt, if zero, is now), evicting the
// least recently used entries to make room. A result larger than the
// whole cache is not stored. The cache keeps r.Output: it must not be
// changed afterwards.
func (rc *ResultCache) Put(k CacheKey, r CachedResult) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.putLocked(k, r)
}

func (rc *ResultCache) putLocked(k CacheKey, r CachedResult) {
	if r.StoredAt.IsZero() {
		r.StoredAt = rc.now()
	}
	n := r.size()
	if n > rc.max {
		return
	}
	if el := rc.m[k]; el != nil {
		rc.removeLocked(el)
	}
	for rc.size+n > rc.max {
		rc.removeLocked(rc.lru.Back())
		rc.evictions.Add(1)
	}
	e := &cacheEntry{key: k, res: r}
	rc.m[k] = rc.lru.PushFront(e)
	rc.size += n
	rc.noteLocked(k, e)
}

func (rc *ResultCache) removeLocked(el *list.Element) {
	e := rc.lru.Remove(el).(*cacheEntry)
	delete(rc.m, e.key)
	rc.size -= e.res.size()
	rc.noteLocked(e.key, nil)
}

// noteLocked records a change of k (e, or nil for a removal) for the
// store, if the cache is persisted.
func (rc *ResultCache) noteLocked(k CacheKey, e *cacheEntry) {
	if rc.journal == nil {
		return
	}
	rc.journal[k] = e
	select {
	case rc.kick <- struct{}{}:
	default:
	}
}

// Stats returns the counters and the current contents' size.
func (rc *ResultCache) Stats() CacheStats {
	rc.mu.Lock()
	n, b := len(rc.m), rc.size
	rc.mu.Unlock()
	shared := rc.shared.Load() // before hits, which count each shared first: Hits >= Shared
	return CacheStats{Hits: rc.hits.Load(), Shared: shared, Misses: rc.misses.Load(), Evictions: rc.evictions.Load(),
		PeerHits: rc.peerHits.Load(), PeerShared: rc.peerShared.Load(), PeerMisses: rc.peerMisses.Load(), Entries: n, Bytes: b}
}

// cachedResult is the SkillResult of a task answered with r.
func cachedResult(r CachedResult) SkillResult {
	return SkillResult{Success: true, Output: r.Output, Duration: r.Duration, ExecutedBy: r.ExecutedBy, Cached: true}
}

// UseResultCache makes c answer tasks for deterministic skills from rc,
// and share one execution between identical ones running at once (see
// SubmitTask); peers' requests are answered from it too (see HandleTask).
// Call it before tasks are submitted (before Start, or just after); nil
// removes the cache.
func (c *DelegationCoordinator) UseResultCache(rc *ResultCache) { c.cache.Store(rc) }

func (c *DelegationCoordinator) resultCache() *ResultCache { return c.cache.Load() }

// CacheStats returns the counters of the result cache installed on c, and
// false if there is none.
func (c *DelegationCoordinator) CacheStats() (CacheStats, bool) {
	rc := c.resultCache()
	if rc == nil {
		return CacheStats{}, false
	}
	return rc.Stats(), true
}

// MarshalText encodes k in hex.
func (k CacheKey) MarshalText() ([]byte, error) { return hex.AppendEncode(nil, k[:]), nil }

// UnmarshalText decodes a key encoded by MarshalText.
func (k *CacheKey) UnmarshalText(b []byte) error {
	if hex.DecodedLen(len(b)) != len(k) {
		return fmt.Errorf("cache key is %d hex digits, want %d", len(b), 2*len(k))
	}
	_, err := hex.Decode(k[:], b)
	return err
}
