package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/cortexgrid/cortexd/pkg/grid"
	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

// FileName is the store's file in the repo directory; PIDFileName holds the
// process ID of the cortexd that has it open.
const (
	FileName    = "state.db"
	PIDFileName = "state.pid"
)

// Errors callers branch on with errors.Is.
var (
	// ErrClosed: the store is closed. It is grid.ErrClosed.
	ErrClosed = grid.ErrClosed
	// ErrInUse: another process holds the store's file; see *InUseError.
	ErrInUse = errors.New("repo in use")
	// ErrCorrupt: the file or a record in it cannot be read.
	ErrCorrupt = errors.New("store corrupt")
	// ErrNewerSchema: the file was written by a newer cortexd.
	ErrNewerSchema = errors.New("store written by a newer cortexd")
	// ErrNotFound: no record with that ID.
	ErrNotFound = errors.New("record not found")
	// ErrExists: Accept or AcceptRemote of an ID already recorded.
	ErrExists = errors.New("record already exists")
	// ErrFinished: a change to a record that is already terminal.
	ErrFinished = errors.New("record already finished")
	// ErrInvalid: a record or change the store refuses to write.
	ErrInvalid = errors.New("invalid record")
)

// InUseError says that another process has the store open.
type InUseError struct {
	Dir string
	PID int // 0 if unknown
}

func (e *InUseError) Error() string {
	who := "another cortexd"
	if e.PID > 0 {
		who += " (pid " + strconv.Itoa(e.PID) + ")"
	}
	return fmt.Sprintf("repo %s is in use by %s: stop it first, or give this daemon another repo directory", e.Dir, who)
}

// Unwrap makes errors.Is(err, ErrInUse) true.
func (e *InUseError) Unwrap() error { return ErrInUse }

// Store is cortexd's persistent state: tasks submitted here, tasks run for
// peers, the trust snapshot and metrics, in one bbolt file, DIR/state.db,
// that one process at a time may open. It is safe for concurrent use.
//
// Writes go through one writer goroutine that commits everything queued
// while its previous commit ran in a single transaction and a single sync
// to disk (group commit; see the package documentation). A write method
// that takes a ctx returns once its write is durable; an Async one returns
// at once and calls done after the commit. Writes are applied in the order
// they were queued. Reads run concurrently with the writer and see every
// committed write.
type Store struct {
	db   *bolt.DB
	dir  string
	cfg  config
	log  *slog.Logger
	kick chan struct{} // cap 1: wakes the writer

	ops sync.Pool // of *op

	mu      sync.Mutex
	pending []*op
	closed  bool
	started bool

	cancel    context.CancelFunc // of the pruner; set by Start
	wg        sync.WaitGroup     // the writer and the pruner
	closeOnce sync.Once
	closeErr  error

	commits      atomic.Uint64
	writes       atomic.Uint64
	pruneCommits atomic.Uint64
	pruned       atomic.Uint64
}

// Open opens the store in dir, creating dir (0700) and the file if need
// be, and starts its writer; Start starts the pruner. It fails with an
// *InUseError (ErrInUse) if another process has the file open after
// WithOpenTimeout, ErrCorrupt if the file is not a readable store and
// ErrNewerSchema if a newer cortexd wrote it.
func Open(dir string, opts ...Option) (*Store, error) {
	cfg := defaultConfig()
	for _, o := range opts {
		o(&cfg)
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("open store in %s: %w", dir, err)
	}
	if dir == "" {
		return nil, errors.New("open store: repo directory is empty")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open store: create repo directory: %w", err)
	}
	path := filepath.Join(dir, FileName)
	db, err := bolt.Open(path, 0o600, &bolt.Options{
		Timeout:         cfg.openTimeout,
		NoFreelistSync:  true, // commits write less; Open rebuilds the freelist
		FreelistType:    bolt.FreelistMapType,
		InitialMmapSize: cfg.mmapSize,
	})
	if err != nil {
		return nil, openError(dir, path, err)
	}
	if err := checkSchema(db); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("open store %s: %w", path, err)
	}
	writePID(dir, cfg.logger)
	s := &Store{db: db, dir: dir, cfg: cfg, log: cfg.logger, kick: make(chan struct{}, 1)}
	s.wg.Add(1)
	go s.writeLoop()
	return s, nil
}

func openError(dir, path string, err error) error {
	switch {
	case errors.Is(err, berrors.ErrTimeout):
		return fmt.Errorf("open store: %w", &InUseError{Dir: dir, PID: readPID(dir)})
	case errors.Is(err, berrors.ErrInvalid), errors.Is(err, berrors.ErrVersionMismatch),
		errors.Is(err, berrors.ErrChecksum), strings.Contains(err.Error(), "file size too small"):
		return fmt.Errorf("open store %s: %w (%w): move the file aside to start with an empty store", path, ErrCorrupt, err)
	}
	return fmt.Errorf("open store %s: %w", path, err)
}

func writePID(dir string, log *slog.Logger) {
	p := filepath.Join(dir, PIDFileName)
	if err := os.WriteFile(p, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o600); err != nil {
		// Only the in-use message of another process would lack the pid.
		log.Warn("cannot write store pid file", "path", p, "err", err)
	}
}

func readPID(dir string) int {
	b, err := os.ReadFile(filepath.Join(dir, PIDFileName))
	if err != nil {
		return 0
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return 0
	}
	return pid
}

// Dir returns the repo directory the store is in.
func (s *Store) Dir() string { return s.dir }

// Start starts the pruner, which removes records older than the retention
// every prune interval, until Close. Canceling ctx later does not stop it.
// It returns ErrClosed after Close and an error if called twice.
func (s *Store) Start(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.closed:
		return fmt.Errorf("start store: %w", ErrClosed)
	case s.started:
		return errors.New("start store: already started")
	}
	s.started = true
	ctx, s.cancel = context.WithCancel(context.WithoutCancel(ctx))
	s.wg.Add(1)
	go s.pruneLoop(ctx)
	return nil
}

// Close stops the pruner, commits every write already queued (calling
// their done functions), waits for the writer and the pruner, and closes
// the file. It waits for reads in progress. It is idempotent; later calls
// return the first one's result. Writes after Close fail with ErrClosed.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.closed = true
		cancel := s.cancel
		s.mu.Unlock()
		if cancel != nil {
			cancel()
		}
		s.wake()
		s.wg.Wait()
		// The pid file goes while the lock is held: once the file is
		// closed, another process may open it and write its own.
		_ = os.Remove(filepath.Join(s.dir, PIDFileName))
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("close store: %w", err)
		}
	})
	return s.closeErr
}

// Stats are counters of a store's work since Open.
type Stats struct {
	// Commits is the number of write transactions the writer committed,
	// each one sync of the file to disk (bbolt issues two fdatasyncs per
	// commit: data pages, then the meta page).
	Commits uint64
	// Writes is the number of writes those commits carried.
	Writes uint64
	// PruneCommits and Pruned count the pruner's transactions and the
	// records it removed.
	PruneCommits uint64
	Pruned       uint64
}

// Stats returns the store's counters.
func (s *Store) Stats() Stats {
	return Stats{
		Commits: s.commits.Load(), Writes: s.writes.Load(),
		PruneCommits: s.pruneCommits.Load(), Pruned: s.pruned.Load(),
	}
}

// view runs fn in a read transaction, mapping a closed database to
// ErrClosed.
func (s *Store) view(fn func(*bolt.Tx) error) error {
	err := s.db.View(fn)
	if errors.Is(err, berrors.ErrDatabaseNotOpen) {
		return ErrClosed
	}
	return err
}
