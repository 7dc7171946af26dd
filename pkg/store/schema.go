package store

import (
	"encoding/binary"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// SchemaVersion is the bucket layout this package writes. A file with a
// higher version is refused (ErrNewerSchema); a lower one would be
// migrated by Open.
const SchemaVersion = 1

// The buckets of schema 1. Keys are task IDs (32 bytes), remote keys
// (remoteKey), or an 8-byte big-endian time followed by one of those, so
// that a cursor walks them in time order.
var (
	bucketMeta     = []byte("meta")     // "schema" -> uint32
	bucketSpec     = []byte("spec")     // id -> spec (what was asked)
	bucketStatus   = []byte("status")   // id -> status (where it stands)
	bucketLive     = []byte("live")     // id -> empty: tasks not terminal
	bucketCreated  = []byte("created")  // created + ^id -> empty: List order
	bucketDone     = []byte("done")     // finished + id -> empty: prune order
	bucketRemote   = []byte("remote")   // remoteKey -> remote record
	bucketRLive    = []byte("rlive")    // remoteKey -> empty: peers' tasks not terminal
	bucketRPending = []byte("rpending") // remoteKey -> empty: results to deliver
	bucketRDone    = []byte("rdone")    // finished + remoteKey -> empty: prune order
	bucketBlobs    = []byte("blobs")    // name -> JSON (trust, metrics)
	bucketCache    = []byte("cache")    // result cache key -> entry (see cache.go)
	bucketWorkflow = []byte("workflow") // workflow ID + kind -> record (pkg/workflow's own; see workflows.go)

	allBuckets = [][]byte{
		bucketMeta, bucketSpec, bucketStatus, bucketLive, bucketCreated, bucketDone,
		bucketRemote, bucketRLive, bucketRPending, bucketRDone, bucketBlobs,
	}
	keySchema = []byte("schema")

	// addedBuckets came after schema 1 was first written: Open creates
	// them in a file that lacks them, which needs no migration.
	addedBuckets = [][]byte{bucketCache, bucketWorkflow}
	// legacyBlobs are blobs an earlier build wrote and this one no
	// longer reads: Open deletes them (the result cache was one JSON
	// blob, rewritten whole at shutdown, before it had its bucket).
	legacyBlobs = [][]byte{[]byte("result_cache")}
)

// checkSchema initializes an empty file, or checks that a file holds a
// store whose schema this package reads.
func checkSchema(db *bolt.DB) error {
	var empty bool
	err := db.View(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if meta == nil {
			n := 0
			_ = tx.ForEach(func([]byte, *bolt.Bucket) error { n++; return nil })
			if n > 0 {
				return fmt.Errorf("file holds %d buckets but no schema version: not a cortexd store: %w", n, ErrCorrupt)
			}
			empty = true
			return nil
		}
		v := meta.Get(keySchema)
		if len(v) != 4 {
			return fmt.Errorf("schema version is %d bytes, want 4: %w", len(v), ErrCorrupt)
		}
		switch ver := binary.BigEndian.Uint32(v); {
		case ver > SchemaVersion:
			return fmt.Errorf("schema version %d, newer than the %d this cortexd reads: run a newer cortexd, or move the file aside to start with an empty store: %w",
				ver, SchemaVersion, ErrNewerSchema)
		case ver < 1:
			return fmt.Errorf("schema version %d: %w", ver, ErrCorrupt)
		}
		for _, name := range allBuckets {
			if tx.Bucket(name) == nil {
				return fmt.Errorf("bucket %q is missing: %w", name, ErrCorrupt)
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	if !empty {
		return upgrade(db)
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range append(allBuckets, addedBuckets...) {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion))
	})
}

// upgrade creates the addedBuckets a file of schema 1 lacks and deletes
// its legacyBlobs. It writes only when there is something to do.
func upgrade(db *bolt.DB) error {
	var todo bool
	_ = db.View(func(tx *bolt.Tx) error {
		for _, name := range addedBuckets {
			todo = todo || tx.Bucket(name) == nil
		}
		for _, name := range legacyBlobs {
			todo = todo || tx.Bucket(bucketBlobs).Get(name) != nil
		}
		return nil
	})
	if !todo {
		return nil
	}
	return db.Update(func(tx *bolt.Tx) error {
		for _, name := range addedBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return fmt.Errorf("create bucket %q: %w", name, err)
			}
		}
		for _, name := range legacyBlobs {
			if err := tx.Bucket(bucketBlobs).Delete(name); err != nil {
				return fmt.Errorf("delete legacy blob %q: %w", name, err)
			}
		}
		return nil
	})
}

// buckets are the buckets of one transaction.
type buckets struct {
	spec, status, live, created, done *bolt.Bucket
	remote, rlive, rpending, rdone    *bolt.Bucket
	blobs, cache, workflow            *bolt.Bucket
}

func bucketsOf(tx *bolt.Tx) buckets {
	return buckets{
		spec: tx.Bucket(bucketSpec), status: tx.Bucket(bucketStatus), live: tx.Bucket(bucketLive),
		created: tx.Bucket(bucketCreated), done: tx.Bucket(bucketDone),
		remote: tx.Bucket(bucketRemote), rlive: tx.Bucket(bucketRLive),
		rpending: tx.Bucket(bucketRPending), rdone: tx.Bucket(bucketRDone),
		blobs: tx.Bucket(bucketBlobs), cache: tx.Bucket(bucketCache), workflow: tx.Bucket(bucketWorkflow),
	}
}
