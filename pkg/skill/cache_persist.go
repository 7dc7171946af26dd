package skill

import (
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// CacheStore is where a persisted ResultCache keeps its entries:
// *store.Store is one.
type CacheStore interface {
	WriteCache(ctx context.Context, puts []store.CacheRecord, dels [][32]byte) error
	EachCache(fn func(key [32]byte, value []byte) error) error
}

var _ CacheStore = (*store.Store)(nil)

// cacheFlushDelay is how long the writer lets changes gather before it
// writes them: one transaction for a burst of tasks, and what a kill -9
// loses at most (with the write in progress).
const cacheFlushDelay = 250 * time.Millisecond

// CacheWriter writes a persisted ResultCache's changes to its store (see
// Persist). Close writes what is left and stops it.
type CacheWriter struct {
	rc     *ResultCache
	st     CacheStore
	log    *slog.Logger
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
	failed int // writes that failed, by the writer goroutine
}

// Persist fills rc, which must be empty and not yet in use, with the
// entries st holds that are younger than the TTL (as many as MaxBytes
// allows, the most recently stored kept), deletes the others from st,
// and starts writing rc's changes to st: a put or a removal reaches st
// within cacheFlushDelay (250 ms) plus one commit. It returns the writer,
// whose Close the caller owns, and how many entries were restored. An
// entry st holds that does not decode is dropped with a warning: the
// cache is a cache.
func (rc *ResultCache) Persist(st CacheStore, log *slog.Logger) (*CacheWriter, int, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	type loaded struct {
		key CacheKey
		res CachedResult
	}
	var es []loaded
	var drop [][32]byte
	bad := 0
	err := st.EachCache(func(k [32]byte, v []byte) error {
		res, err := decodeCacheEntry(v)
		if err != nil {
			bad++
			drop = append(drop, k)
			return nil
		}
		es = append(es, loaded{CacheKey(k), res})
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("load result cache: %w", err)
	}
	if bad > 0 {
		log.Warn("dropped result cache entries that do not decode", "entries", bad)
	}
	// The most recently stored are used last, so kept first.
	slices.SortFunc(es, func(a, b loaded) int { return a.res.StoredAt.Compare(b.res.StoredAt) })
	rc.mu.Lock()
	now := rc.now()
	for _, e := range es {
		if age := now.Sub(e.res.StoredAt); age < 0 || age >= rc.ttl {
			continue
		}
		rc.putLocked(e.key, e.res)
	}
	for _, e := range es {
		if rc.m[e.key] == nil {
			drop = append(drop, e.key)
		}
	}
	n := len(rc.m)
	rc.journal, rc.kick = make(map[CacheKey]*cacheEntry), make(chan struct{}, 1)
	for _, k := range drop {
		rc.journal[CacheKey(k)] = nil
	}
	if len(drop) > 0 {
		rc.kick <- struct{}{}
	}
	rc.mu.Unlock()
	w := &CacheWriter{rc: rc, st: st, log: log, stop: make(chan struct{}), done: make(chan struct{})}
	go w.loop()
	return w, n, nil
}

func (w *CacheWriter) loop() {
	defer close(w.done)
	t := time.NewTimer(0)
	<-t.C
	for {
		select {
		case <-w.stop:
			w.flush()
			return
		case <-w.rc.kick:
		}
		t.Reset(cacheFlushDelay)
		select {
		case <-w.stop:
			t.Stop()
			w.flush()
			return
		case <-t.C:
		}
		w.flush()
	}
}

// flush writes the journal's changes in one store write.
func (w *CacheWriter) flush() {
	rc := w.rc
	rc.mu.Lock()
	j := rc.journal
	if len(j) == 0 {
		rc.mu.Unlock()
		return
	}
	rc.journal = make(map[CacheKey]*cacheEntry, len(j))
	rc.mu.Unlock()
	var puts []store.CacheRecord
	var dels [][32]byte
	for k, e := range j {
		if e == nil {
			dels = append(dels, k)
		} else {
			puts = append(puts, store.CacheRecord{Key: k, Value: encodeCacheEntry(&e.res)})
		}
	}
	// Key order: the B+tree takes sorted puts with fewer page splits.
	slices.SortFunc(puts, func(a, b store.CacheRecord) int { return cmp.Compare(string(a.Key[:]), string(b.Key[:])) })
	if err := w.st.WriteCache(context.Background(), puts, dels); err != nil {
		w.failed++
		if errors.Is(err, store.ErrClosed) {
			w.log.Debug("result cache changes not written: the store is closed", "puts", len(puts), "deletes", len(dels))
			return
		}
		// The entries stay in memory; a restart would miss them.
		w.log.Warn("cannot write result cache changes; they stay in memory only", "puts", len(puts), "deletes", len(dels), "err", err)
	}
}

// Close writes the changes not yet written and stops the writer. The
// cache stays usable, in memory only. Close it before the store.
func (w *CacheWriter) Close() error {
	w.once.Do(func() { close(w.stop) })
	<-w.done
	return nil
}

// Entry encoding, version 1: version byte, stored-at (Unix ns) and
// duration (ns) as 8 bytes big-endian each, the executor's peer ID as a
// uvarint length and bytes, then the output.
const cacheEntryV1 = 1

func encodeCacheEntry(r *CachedResult) []byte {
	b := make([]byte, 0, 1+8+8+binary.MaxVarintLen64+len(r.ExecutedBy)+len(r.Output))
	b = append(b, cacheEntryV1)
	b = binary.BigEndian.AppendUint64(b, uint64(r.StoredAt.UnixNano()))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Duration))
	b = binary.AppendUvarint(b, uint64(len(r.ExecutedBy)))
	b = append(b, r.ExecutedBy...)
	return append(b, r.Output...)
}

func decodeCacheEntry(b []byte) (CachedResult, error) {
	if len(b) < 17 || b[0] != cacheEntryV1 {
		return CachedResult{}, errors.New("not a version 1 cache entry")
	}
	r := CachedResult{
		StoredAt: time.Unix(0, int64(binary.BigEndian.Uint64(b[1:9]))),
		Duration: time.Duration(binary.BigEndian.Uint64(b[9:17])),
	}
	n, k := binary.Uvarint(b[17:])
	if k <= 0 || n > uint64(len(b)-17-k) {
		return CachedResult{}, errors.New("cache entry: bad executor length")
	}
	at := 17 + k
	if n > 0 {
		id, err := peer.IDFromBytes(b[at : at+int(n)])
		if err != nil {
			return CachedResult{}, fmt.Errorf("cache entry: executor: %w", err)
		}
		r.ExecutedBy = id
	}
	// A copy: the store's bytes are valid only during EachCache's call.
	r.Output = append([]byte{}, b[at+int(n):]...)
	return r, nil
}
