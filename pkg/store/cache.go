package store

import (
	"context"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// CacheRecord is one entry of a result cache as the store keeps it: the
// cache's key and its encoded entry (pkg/skill encodes it; the store does
// not read it).
type CacheRecord struct {
	Key   [32]byte
	Value []byte
}

// WriteCache stores puts and deletes dels (a key in both ends deleted, as
// dels apply last) in one transaction, and returns once it is on disk.
// The result cache writes its changes through it in batches, so that a
// kill -9 loses at most the last batch.
func (s *Store) WriteCache(ctx context.Context, puts []CacheRecord, dels [][32]byte) error {
	o := s.getOp(opCache)
	o.puts, o.dels = puts, dels
	if err := s.do(ctx, o); err != nil {
		return fmt.Errorf("write result cache: %w", err)
	}
	return nil
}

func (w *writeTx) cache(puts []CacheRecord, dels [][32]byte) error {
	for i := range puts {
		if err := w.b.cache.Put(puts[i].Key[:], puts[i].Value); err != nil {
			return err
		}
	}
	for i := range dels {
		if err := w.b.cache.Delete(dels[i][:]); err != nil {
			return err
		}
	}
	return nil
}

// EachCache calls fn with every stored cache entry, in key order, until
// fn returns an error, which EachCache returns. value is valid only
// during the call. An entry whose key is not 32 bytes is corrupt.
func (s *Store) EachCache(fn func(key [32]byte, value []byte) error) error {
	return s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketCache).ForEach(func(k, v []byte) error {
			if len(k) != 32 {
				return fmt.Errorf("result cache key of %d bytes, want 32: %w", len(k), ErrCorrupt)
			}
			return fn([32]byte(k), v)
		})
	})
}
