package store

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Defaults of a Store.
const (
	// DefaultRetention is how long finished task records, and records of
	// tasks run for peers, are kept.
	DefaultRetention = 24 * time.Hour
	// DefaultPruneInterval is how often the pruner runs.
	DefaultPruneInterval = time.Minute
	// DefaultOpenTimeout is how long Open waits for the file lock.
	DefaultOpenTimeout = time.Second
	// DefaultMaxBatchSize bounds the writes committed in one transaction.
	DefaultMaxBatchSize = 1024
	// DefaultMaxBatchDelay bounds how long the writer lingers for more
	// writes before a commit, under load only; see WithBatch.
	DefaultMaxBatchDelay = time.Millisecond
	// DefaultInitialMmapSize is the file's initial memory map: large enough
	// that a growing file rarely has to be remapped (which waits for every
	// reader), small against a 64-bit address space.
	DefaultInitialMmapSize = 256 << 20
)

// pruneChunk bounds the records deleted in one pruning transaction, so
// that pruning never holds the writer up for long.
const pruneChunk = 2048

// Option configures a Store.
type Option func(*config)

type config struct {
	retention     time.Duration
	pruneInterval time.Duration
	openTimeout   time.Duration
	maxBatchSize  int
	maxBatchDelay time.Duration
	mmapSize      int
	logger        *slog.Logger
	now           func() time.Time
}

func defaultConfig() config {
	return config{
		retention: DefaultRetention, pruneInterval: DefaultPruneInterval, openTimeout: DefaultOpenTimeout,
		maxBatchSize: DefaultMaxBatchSize, maxBatchDelay: DefaultMaxBatchDelay, mmapSize: DefaultInitialMmapSize,
		logger: slog.Default(), now: time.Now,
	}
}

func (c *config) validate() error {
	var errs []error
	if c.retention <= 0 {
		errs = append(errs, fmt.Errorf("retention is %v; it must be more than 0", c.retention))
	}
	if c.pruneInterval <= 0 {
		errs = append(errs, fmt.Errorf("prune interval is %v; it must be more than 0", c.pruneInterval))
	}
	if c.openTimeout <= 0 {
		errs = append(errs, fmt.Errorf("open timeout is %v; it must be more than 0", c.openTimeout))
	}
	if c.maxBatchSize <= 0 {
		errs = append(errs, fmt.Errorf("max batch size is %d; it must be more than 0", c.maxBatchSize))
	}
	if c.maxBatchDelay < 0 {
		errs = append(errs, fmt.Errorf("max batch delay is %v; it must be 0 or more", c.maxBatchDelay))
	}
	if c.mmapSize < 0 {
		errs = append(errs, fmt.Errorf("initial mmap size is %d; it must be 0 or more", c.mmapSize))
	}
	if c.logger == nil {
		errs = append(errs, errors.New("logger is nil"))
	}
	if c.now == nil {
		errs = append(errs, errors.New("clock is nil"))
	}
	return errors.Join(errs...)
}

// WithRetention sets how long a finished task's record (and a finished
// task run for a peer, delivered or not) is kept after it finished. A live
// record of a peer's task is dropped once its deadline is that long past.
// Default: 24 hours.
func WithRetention(d time.Duration) Option { return func(c *config) { c.retention = d } }

// WithPruneInterval sets how often the pruner started by Start runs.
// Default: 1 minute.
func WithPruneInterval(d time.Duration) Option { return func(c *config) { c.pruneInterval = d } }

// WithOpenTimeout sets how long Open waits for another process to release
// the file before it fails with ErrInUse. Default: 1 s.
func WithOpenTimeout(d time.Duration) Option { return func(c *config) { c.openTimeout = d } }

// WithBatch tunes group commit. The writer commits, in one transaction and
// one sync to disk, every write queued while the previous commit ran, up to
// maxSize writes. Under load only (the previous commit carried more than
// one write and has just ended) it first lingers until the batch is as
// large as the previous one, for at most maxDelay and at most the previous
// commit's duration; maxDelay 0 turns lingering off. A lone caller never
// waits for it. Defaults: 1024 and 1 ms; doc.go gives the measurements.
func WithBatch(maxSize int, maxDelay time.Duration) Option {
	return func(c *config) { c.maxBatchSize, c.maxBatchDelay = maxSize, maxDelay }
}

// WithInitialMmapSize sets bbolt's initial memory map size in bytes.
// Default: 256 MiB (address space, not memory).
func WithInitialMmapSize(n int) Option { return func(c *config) { c.mmapSize = n } }

// WithLogger sets the logger. Default: slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// withClock sets the clock, for tests.
func withClock(now func() time.Time) Option { return func(c *config) { c.now = now } }
