package store

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// Group commit. Callers queue ops; one writer goroutine takes everything
// queued (up to maxBatchSize), applies it in one bbolt transaction and
// commits it (one sync), then answers each op. While it commits, new ops
// queue up for the next transaction, so the batch size follows the load by
// itself: one op per commit for a lone caller (no added latency), dozens
// under concurrency. This differs from bbolt's DB.Batch, which starts a
// timer per batch: there a batch waits MaxBatchDelay even when the disk is
// idle, and a delay shorter than a commit lets batches pile up behind the
// write lock under sustained load. BenchmarkAccept64 compares the two.

type opKind uint8

const (
	opAccept opKind = iota + 1
	opUpdate
	opAcceptRemote
	opFinishRemote
	opMarkDelivered
	opForgetRemote
	opPutBlob
	opCache
	opWorkflows
	opSync
)

// op is one queued write. Its fields are read by the writer until the op
// is answered.
type op struct {
	kind      opKind
	task      *TaskRecord
	tr        Transition
	remote    *RemoteRecord
	from      peer.ID
	id        grid.TaskID
	result    Result
	delivered bool
	name      []byte
	blob      []byte
	puts      []CacheRecord
	dels      [][32]byte
	wops      []WorkflowOp

	done  func(error) // async ops
	async bool
	wait  chan error // sync ops; cap 1, reused with the op
	err   error      // set by apply
}

// ops are pooled per Store (not globally) so that a channel made inside a
// testing/synctest bubble is never used outside it.
func (s *Store) getOp(kind opKind) *op {
	o, _ := s.ops.Get().(*op)
	if o == nil {
		o = &op{wait: make(chan error, 1)}
	}
	o.kind = kind
	return o
}

func (s *Store) putOp(o *op) {
	wait := o.wait
	*o = op{wait: wait}
	s.ops.Put(o)
}

// do queues o and waits for its commit. ctx is looked at only before o is
// queued: once queued, do waits for the commit whatever ctx does, so that
// what it returns is the truth (a write reported failed is never on disk).
func (s *Store) do(ctx context.Context, o *op) error {
	if err := ctx.Err(); err != nil {
		s.putOp(o)
		return err
	}
	if err := s.enqueue(o); err != nil {
		s.putOp(o)
		return err
	}
	err := <-o.wait
	s.putOp(o)
	return err
}

// doAsync queues o; done (if not nil) is called with its outcome, from the
// writer goroutine, or at once if o cannot be queued.
func (s *Store) doAsync(o *op, done func(error)) {
	o.async, o.done = true, done
	if err := s.enqueue(o); err != nil {
		s.putOp(o)
		if done != nil {
			done(err)
		}
	}
}

func (s *Store) enqueue(o *op) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.pending = append(s.pending, o)
	first := len(s.pending) == 1
	s.mu.Unlock()
	if first {
		s.wake()
	}
	return nil
}

func (s *Store) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

// take moves up to maxBatchSize queued ops into batch.
func (s *Store) take(batch []*op) (_ []*op, closed bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := min(len(s.pending), s.cfg.maxBatchSize-len(batch))
	batch = append(batch, s.pending[:n]...)
	rest := copy(s.pending, s.pending[n:])
	clear(s.pending[rest:])
	s.pending = s.pending[:rest]
	return batch, s.closed
}

// writeLoop is the writer goroutine. After Close it commits what is queued
// and returns.
func (s *Store) writeLoop() {
	defer s.wg.Done()
	w := &writeTx{now: s.cfg.now}
	var batch []*op
	// The previous commit: its writes, how long it took, when it ended.
	prev, took, ended := 0, time.Duration(0), time.Time{}
	for {
		<-s.kick
		for {
			var closed bool
			batch, closed = s.take(batch[:0])
			if len(batch) == 0 {
				if closed {
					return
				}
				break
			}
			if prev > 1 && !closed && s.cfg.maxBatchDelay > 0 && time.Since(ended) < took {
				batch = s.linger(batch, min(prev, s.cfg.maxBatchSize), min(took, s.cfg.maxBatchDelay))
			}
			start := time.Now()
			s.commit(w, batch)
			ended = time.Now()
			prev, took = len(batch), ended.Sub(start)
			clear(batch)
		}
	}
}

// linger waits up to delay for more writes to join batch, until it holds
// target writes: as many as the previous commit carried, the best guess of
// how many callers are about to come back. The writer lingers only under
// load (the previous commit carried more than one write and ended less
// than its own duration ago), so a lone caller never waits, and never
// longer than the previous commit took, so lingering at most doubles the
// latency under load, while it lets one sync carry the writes of every
// caller rather than of half of them.
func (s *Store) linger(batch []*op, target int, delay time.Duration) []*op {
	if len(batch) >= target || delay <= 0 {
		return batch
	}
	t := time.NewTimer(delay)
	defer t.Stop()
	for len(batch) < target {
		select {
		case <-t.C:
			batch, _ = s.take(batch)
			return batch
		case <-s.kick:
			var closed bool
			if batch, closed = s.take(batch); closed {
				return batch
			}
		}
	}
	return batch
}

// commit applies batch in one transaction and answers every op. If an op
// fails in a way that spoils the transaction (a bbolt error rather than a
// refusal such as ErrExists), each op is retried in a transaction of its
// own, so that one bad op does not fail the others.
func (s *Store) commit(w *writeTx, batch []*op) {
	spoiled := false
	err := s.db.Update(func(tx *bolt.Tx) error {
		w.begin(tx)
		for _, o := range batch {
			o.err = w.apply(o)
			if o.err != nil && !refusal(o.err) {
				spoiled = true
				return o.err
			}
		}
		return nil
	})
	w.end()
	if spoiled && len(batch) > 1 {
		for _, o := range batch {
			s.commit(w, []*op{o})
		}
		return
	}
	if err == nil {
		s.commits.Add(1)
		s.writes.Add(uint64(len(batch)))
	} else {
		s.log.Error("store commit failed", "dir", s.dir, "writes", len(batch), "err", err)
		err = fmt.Errorf("commit to store: %w", err)
	}
	for _, o := range batch {
		e := err
		if e == nil {
			e = o.err
		}
		if o.async {
			if o.done != nil {
				o.done(e)
			}
			s.putOp(o)
		} else {
			o.wait <- e
		}
	}
}

// refusal reports whether err is an op's refusal, made before it wrote
// anything, which leaves the transaction usable.
func refusal(err error) bool {
	return errors.Is(err, ErrExists) || errors.Is(err, ErrNotFound) ||
		errors.Is(err, ErrFinished) || errors.Is(err, ErrInvalid) || errors.Is(err, ErrCorrupt)
}

// Sync returns once every write queued before it is durable.
func (s *Store) Sync(ctx context.Context) error {
	if err := s.do(ctx, s.getOp(opSync)); err != nil {
		return fmt.Errorf("sync store: %w", err)
	}
	return nil
}

// writeTx is the writer's state for one transaction. Values handed to
// bbolt's Put must stay untouched until the commit, so they are carved
// from an arena that is reset only after it.
type writeTx struct {
	b     buckets
	arena []byte
	now   func() time.Time
}

// maxArena is the arena capacity kept between transactions.
const maxArena = 4 << 20

func (w *writeTx) begin(tx *bolt.Tx) {
	w.b = bucketsOf(tx)
	w.arena = w.arena[:0]
}

func (w *writeTx) end() {
	w.b = buckets{}
	if cap(w.arena) > maxArena {
		w.arena = nil
	}
}

// value returns arena[start:] as a value for Put.
func (w *writeTx) value(start int) []byte { return w.arena[start:len(w.arena):len(w.arena)] }

func (w *writeTx) apply(o *op) error {
	switch o.kind {
	case opAccept:
		return w.accept(o.task)
	case opUpdate:
		return w.update(&o.tr)
	case opAcceptRemote:
		return w.acceptRemote(o.remote)
	case opFinishRemote:
		return w.finishRemote(o.from, o.id, &o.result, o.delivered)
	case opMarkDelivered:
		return w.markDelivered(o.from, o.id)
	case opForgetRemote:
		return w.forgetRemote(o.from, o.id)
	case opPutBlob:
		return w.b.blobs.Put(o.name, o.blob)
	case opCache:
		return w.cache(o.puts, o.dels)
	case opWorkflows:
		return w.workflows(o.wops)
	case opSync:
		return nil
	}
	return fmt.Errorf("unknown store op %d", o.kind)
}

var empty = []byte{}
