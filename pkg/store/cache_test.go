package store

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func cacheContents(tb testing.TB, s *Store) map[[32]byte]string {
	tb.Helper()
	got := map[[32]byte]string{}
	if err := s.EachCache(func(k [32]byte, v []byte) error {
		got[k] = string(v)
		return nil
	}); err != nil {
		tb.Fatalf("EachCache: %v", err)
	}
	return got
}

func TestCacheEntriesSurviveReopenAndDeletesApplyLast(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx := context.Background()
	a, b, c := [32]byte{1}, [32]byte{2}, [32]byte{3}
	if err := s.WriteCache(ctx, []CacheRecord{{a, []byte("A")}, {b, []byte("B")}}, nil); err != nil {
		t.Fatal(err)
	}
	// c is put and deleted in one write: deletes apply last.
	if err := s.WriteCache(ctx, []CacheRecord{{c, []byte("C")}, {a, []byte("A2")}}, [][32]byte{b, c}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	got := cacheContents(t, s)
	if len(got) != 1 || got[a] != "A2" {
		t.Fatalf("after reopen the cache holds %q; want only a = A2", got)
	}
	stop := errors.New("stop")
	if err := s.EachCache(func([32]byte, []byte) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("EachCache returned %v; want fn's error", err)
	}
}

// A file of schema 1 written before the cache bucket existed opens: the
// bucket is created and the result cache's old whole-cache blob goes.
func TestOpenAddsTheCacheBucketAndDropsTheLegacyBlob(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, FileName)
	boltUpdate(t, path, func(tx *bolt.Tx) error {
		if err := tx.DeleteBucket(bucketCache); err != nil {
			return err
		}
		return tx.Bucket(bucketBlobs).Put(legacyBlobs[0], []byte(`[{"key":"00"}]`))
	})
	s = openStore(t, dir)
	if err := s.WriteCache(context.Background(), []CacheRecord{{[32]byte{9}, []byte("x")}}, nil); err != nil {
		t.Fatalf("write to the added bucket: %v", err)
	}
	if got := cacheContents(t, s); len(got) != 1 {
		t.Fatalf("cache holds %q, want one entry", got)
	}
	if ok, err := s.getJSON(legacyBlobs[0], new(any)); ok || err != nil {
		t.Fatalf("legacy blob still there (%v, %v)", ok, err)
	}
}
