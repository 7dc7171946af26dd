package store

import (
	"context"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	bolt "go.etcd.io/bbolt"
)

// BenchmarkAccept64 measures durable acceptance with 64 concurrent
// submitters: accepted tasks/s and syncs to disk (committed write
// transactions) per accepted task, for the store's group commit, for
// bbolt's DB.Batch, for one db.Update per task, and for no store at all
// (a map under a mutex). Every variant except the map answers a caller
// only once its task is committed.
func BenchmarkAccept64(b *testing.B) {
	for _, v := range acceptVariants() {
		b.Run(v.name, func(b *testing.B) { benchAccept(b, 64, v) })
	}
}

// BenchmarkAccept1 is BenchmarkAccept64 with one submitter: ns/op is the
// latency an API caller sees.
func BenchmarkAccept1(b *testing.B) {
	for _, v := range acceptVariants() {
		b.Run(v.name, func(b *testing.B) { benchAccept(b, 1, v) })
	}
}

type acceptVariant struct {
	name string
	// open returns the accept function and a counter of commits.
	open func(b *testing.B) (accept func(*TaskRecord) error, commits func() uint64)
}

func acceptVariants() []acceptVariant {
	return []acceptVariant{
		{"store=group-commit", openGroup()}, // defaults: linger up to 1 ms under load
		{"store=group-commit-linger-200us", openGroup(WithBatch(DefaultMaxBatchSize, 200*time.Microsecond))},
		{"store=group-commit-no-linger", openGroup(WithBatch(DefaultMaxBatchSize, 0))},
		{"bbolt=Batch-10ms", openBatch(1000, 10*time.Millisecond)}, // bbolt's defaults
		{"bbolt=Batch-1ms", openBatch(64, time.Millisecond)},
		{"bbolt=Update-per-task", openUpdate},
		{"none=map", openMap},
	}
}

func benchAccept(b *testing.B, callers int, v acceptVariant) {
	accept, commits := v.open(b)
	recs := make([]*TaskRecord, b.N)
	for i := range recs {
		recs[i] = sampleTask(i, "12D3KooWbench")
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range callers {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= int64(len(recs)) {
					return
				}
				if err := accept(recs[i]); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "tasks/s")
	b.ReportMetric(float64(commits())/float64(b.N), "fsyncs/task")
}

func openGroup(opts ...Option) func(b *testing.B) (func(*TaskRecord) error, func() uint64) {
	return func(b *testing.B) (func(*TaskRecord) error, func() uint64) {
		s := openStore(b, b.TempDir(), opts...)
		ctx := context.Background()
		return func(r *TaskRecord) error { return s.Accept(ctx, r) }, func() uint64 { return s.Stats().Commits }
	}
}

// openRaw opens a bbolt file set up as Open sets it up, with the store's
// buckets, and counts its commits.
func openRaw(b *testing.B) (*bolt.DB, *atomic.Uint64, func(tx *bolt.Tx)) {
	db, err := bolt.Open(filepath.Join(b.TempDir(), FileName), 0o600, &bolt.Options{
		Timeout: time.Second, NoFreelistSync: true, FreelistType: bolt.FreelistMapType, InitialMmapSize: DefaultInitialMmapSize,
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = db.Close() })
	if err := checkSchema(db); err != nil {
		b.Fatal(err)
	}
	var commits atomic.Uint64
	var last atomic.Pointer[bolt.Tx]
	count := func(tx *bolt.Tx) { // once per transaction
		if last.Swap(tx) != tx {
			tx.OnCommit(func() { commits.Add(1) })
		}
	}
	return db, &commits, count
}

func applyAccept(tx *bolt.Tx, r *TaskRecord) error {
	w := &writeTx{now: time.Now}
	w.begin(tx)
	return w.accept(r)
}

func openBatch(size int, delay time.Duration) func(b *testing.B) (func(*TaskRecord) error, func() uint64) {
	return func(b *testing.B) (func(*TaskRecord) error, func() uint64) {
		db, commits, count := openRaw(b)
		db.MaxBatchSize, db.MaxBatchDelay = size, delay
		return func(r *TaskRecord) error {
			return db.Batch(func(tx *bolt.Tx) error { count(tx); return applyAccept(tx, r) })
		}, commits.Load
	}
}

func openUpdate(b *testing.B) (func(*TaskRecord) error, func() uint64) {
	db, commits, count := openRaw(b)
	return func(r *TaskRecord) error {
		return db.Update(func(tx *bolt.Tx) error { count(tx); return applyAccept(tx, r) })
	}, commits.Load
}

func openMap(*testing.B) (func(*TaskRecord) error, func() uint64) {
	var mu sync.Mutex
	m := make(map[grid.TaskID]*TaskRecord)
	return func(r *TaskRecord) error {
		mu.Lock()
		m[r.ID] = r
		mu.Unlock()
		return nil
	}, func() uint64 { return 0 }
}
