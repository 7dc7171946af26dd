package store

import (
	"bytes"
	"context"
	"fmt"
	"time"

	bolt "go.etcd.io/bbolt"
)

// pruneLoop runs Prune every prune interval until ctx is done.
func (s *Store) pruneLoop(ctx context.Context) {
	defer s.wg.Done()
	t := time.NewTicker(s.cfg.pruneInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if n, err := s.Prune(ctx); err != nil && ctx.Err() == nil {
			s.log.Error("store pruning failed", "dir", s.dir, "err", err)
		} else if n > 0 {
			s.log.Debug("store pruned", "dir", s.dir, "records", n)
		}
	}
}

// Prune removes the records whose retention has ended: tasks finished
// longer ago than the retention, tasks run for peers finished that long
// ago (delivered or not), and tasks run for peers that never finished and
// whose deadline is that long past. It returns how many it removed. It
// works in transactions of at most a few thousand records, so that it
// never holds writers up for long; Start runs it periodically.
func (s *Store) Prune(ctx context.Context) (int, error) {
	cutoff := s.cfg.now().Add(-s.cfg.retention)
	total := 0
	for _, step := range []func(buckets, time.Time) (int, bool, error){pruneTasks, pruneRemote, pruneRemoteLive} {
		for {
			if err := ctx.Err(); err != nil {
				return total, fmt.Errorf("prune store: %w", err)
			}
			var n int
			var more bool
			err := s.db.Update(func(tx *bolt.Tx) error {
				var err error
				n, more, err = step(bucketsOf(tx), cutoff)
				return err
			})
			if err != nil {
				return total, fmt.Errorf("prune store: %w", err)
			}
			if n > 0 {
				s.pruneCommits.Add(1)
				s.pruned.Add(uint64(n))
				total += n
			}
			if !more {
				break
			}
		}
	}
	return total, nil
}

// expired collects up to pruneChunk keys of a time-ordered index whose
// time is before cutoff. more says that the chunk was full.
func expired(c *bolt.Cursor, cutoff time.Time) (keys [][]byte, more bool) {
	var end [timeLen]byte
	end2 := timeKey(end[:0], cutoff, nil)
	for k, _ := c.First(); k != nil; k, _ = c.Next() {
		if bytes.Compare(k[:min(len(k), timeLen)], end2) >= 0 {
			return keys, false
		}
		if len(keys) == pruneChunk {
			return keys, true
		}
		keys = append(keys, bytes.Clone(k))
	}
	return keys, false
}

func pruneTasks(b buckets, cutoff time.Time) (int, bool, error) {
	keys, more := expired(b.done.Cursor(), cutoff)
	for _, k := range keys {
		if len(k) != timeLen+idLen {
			return 0, false, fmt.Errorf("finished index key of %d bytes: %w", len(k), ErrCorrupt)
		}
		id := k[timeLen:]
		if sv := b.status.Get(id); sv != nil {
			var st status
			if err := decodeStatus(sv, &st); err != nil {
				return 0, false, fmt.Errorf("read status: %w: %w", ErrCorrupt, err)
			}
			var ck [timeLen + idLen]byte
			if err := b.created.Delete(createdKey(&ck, st.created, [idLen]byte(id))); err != nil {
				return 0, false, err
			}
		}
		for _, bk := range []*bolt.Bucket{b.spec, b.status, b.live} {
			if err := bk.Delete(id); err != nil {
				return 0, false, err
			}
		}
		if err := b.done.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return len(keys), more, nil
}

func pruneRemote(b buckets, cutoff time.Time) (int, bool, error) {
	keys, more := expired(b.rdone.Cursor(), cutoff)
	for _, k := range keys {
		rk := k[timeLen:]
		for _, bk := range []*bolt.Bucket{b.remote, b.rpending, b.rlive} {
			if err := bk.Delete(rk); err != nil {
				return 0, false, err
			}
		}
		if err := b.rdone.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return len(keys), more, nil
}

// pruneRemoteLive drops peers' tasks that never finished (a crash that
// RecoverRemote was not used after) once their deadline (or, without one,
// their arrival) is longer ago than the retention.
func pruneRemoteLive(b buckets, cutoff time.Time) (int, bool, error) {
	var keys [][]byte
	more := false
	err := b.rlive.ForEach(func(k, _ []byte) error {
		var r RemoteRecord
		if err := getRemote(b, k, &r); err != nil {
			return err
		}
		end := r.Deadline
		if end.IsZero() {
			end = r.ReceivedAt
		}
		if end.Before(cutoff) {
			if len(keys) == pruneChunk {
				more = true
				return errStop
			}
			keys = append(keys, bytes.Clone(k))
		}
		return nil
	})
	if err != nil && err != errStop {
		return 0, false, err
	}
	for _, k := range keys {
		if err := b.remote.Delete(k); err != nil {
			return 0, false, err
		}
		if err := b.rlive.Delete(k); err != nil {
			return 0, false, err
		}
	}
	return len(keys), more, nil
}

var errStop = fmt.Errorf("stop")
