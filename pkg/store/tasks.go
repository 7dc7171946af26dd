package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// Accept records a task submitted to this node and returns once the record
// is on disk: the API answers the submission after it. A zero State is
// StateQueued; a zero UpdatedAt is CreatedAt. rec must not be changed
// until Accept returns. It fails with ErrExists if the ID is recorded,
// ErrInvalid if rec lacks an ID, a skill or CreatedAt, and ErrClosed after
// Close. Concurrent Accepts share commits (see Store).
func (s *Store) Accept(ctx context.Context, rec *TaskRecord) error {
	if err := checkTask(rec); err != nil {
		return fmt.Errorf("accept task: %w", err)
	}
	o := s.getOp(opAccept)
	o.task = rec
	if err := s.do(ctx, o); err != nil {
		return fmt.Errorf("accept task %s: %w", rec.ID.Short(), err)
	}
	return nil
}

// AcceptAsync queues rec as Accept does and returns at once; done (not
// nil) is called with Accept's outcome once rec is on disk or has failed,
// on the writer goroutine or, if rec cannot be queued, at once. Writes
// queued after it apply after it, so a task's later changes may be queued
// before done is called. rec must not be changed until then.
func (s *Store) AcceptAsync(rec *TaskRecord, done func(error)) {
	if err := checkTask(rec); err != nil {
		done(fmt.Errorf("accept task: %w", err))
		return
	}
	o := s.getOp(opAccept)
	o.task = rec
	s.doAsync(o, func(err error) {
		if err != nil {
			err = fmt.Errorf("accept task %s: %w", rec.ID.Short(), err)
		}
		done(err)
	})
}

func checkTask(r *TaskRecord) error {
	if r == nil {
		return fmt.Errorf("record is nil: %w", ErrInvalid)
	}
	var errs []error
	if r.ID.IsZero() {
		errs = append(errs, errors.New("task ID is zero"))
	}
	if r.Skill == "" {
		errs = append(errs, errors.New("skill is empty"))
	}
	if r.CreatedAt.IsZero() {
		errs = append(errs, errors.New("creation time is zero"))
	}
	if r.State != 0 && !r.State.Valid() {
		errs = append(errs, fmt.Errorf("state %d is unknown", r.State))
	}
	if r.Attempt < 0 || r.MaxRetries < 0 || r.Timeout < 0 {
		errs = append(errs, fmt.Errorf("attempt %d, max retries %d, timeout %v: none may be negative", r.Attempt, r.MaxRetries, r.Timeout))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %w", ErrInvalid, errors.Join(errs...))
	}
	return nil
}

// Update records a change of a task's state and returns once it is on
// disk. A terminal change must be durable before its result is reported
// (see doc.go); other changes may use UpdateAsync. A change that does not
// move the task forward (an older attempt, or an earlier step of the same
// attempt: queued or delegated, then running, then retrying) is ignored,
// so changes may arrive out of order. Once a task is terminal its record
// no longer changes: the same terminal state again is ignored, another one
// fails with ErrFinished. It fails with ErrNotFound if the task was never
// accepted (or has been pruned).
func (s *Store) Update(ctx context.Context, tr Transition) error {
	o, err := s.updateOp(tr)
	if err != nil {
		return err
	}
	if err := s.do(ctx, o); err != nil {
		return fmt.Errorf("update task %s to %s: %w", tr.ID.Short(), tr.State, err)
	}
	return nil
}

// UpdateAsync queues the change as Update does and returns at once; done,
// if not nil, is called once the change is on disk or has failed. done
// runs on the store's writer goroutine: it must be quick and must not call
// the store's blocking methods. tr.Result must not be changed until then.
// Changes are applied in the order UpdateAsync (or any write) was called.
func (s *Store) UpdateAsync(tr Transition, done func(error)) {
	o, err := s.updateOp(tr)
	if err != nil {
		if done != nil {
			done(err)
		}
		return
	}
	s.doAsync(o, done)
}

func (s *Store) updateOp(tr Transition) (*op, error) {
	switch {
	case tr.ID.IsZero():
		return nil, fmt.Errorf("update task: task ID is zero: %w", ErrInvalid)
	case !tr.State.Valid():
		return nil, fmt.Errorf("update task %s: state %d is unknown: %w", tr.ID.Short(), tr.State, ErrInvalid)
	case tr.State == StateSucceeded && tr.Result == nil:
		return nil, fmt.Errorf("update task %s: succeeded without a result: %w", tr.ID.Short(), ErrInvalid)
	case tr.Attempt < 0:
		return nil, fmt.Errorf("update task %s: attempt %d: %w", tr.ID.Short(), tr.Attempt, ErrInvalid)
	}
	if tr.At.IsZero() {
		tr.At = s.cfg.now()
	}
	o := s.getOp(opUpdate)
	o.tr = tr
	return o, nil
}

// statusOf is the status part of a record about to be accepted.
func statusOf(r *TaskRecord) status {
	st := status{
		state: r.State, attempt: r.Attempt, created: r.CreatedAt, updated: r.UpdatedAt,
		peer: r.Peer, tried: r.Tried, err: r.Error, result: r.Result,
	}
	if st.state == 0 {
		st.state = StateQueued
	}
	if st.updated.IsZero() {
		st.updated = st.created
	}
	if len(st.tried) == 0 && st.attempt > 0 && st.peer != "" {
		st.tried = []peer.ID{st.peer}
	}
	if len(st.tried) > maxTried {
		st.tried = st.tried[len(st.tried)-maxTried:]
	}
	if st.state.Terminal() {
		st.result = finishedResult(st.result, st.err, st.peer, st.updated)
	}
	return st
}

// finishedResult returns r, or a failure saying errMsg if r is nil, with
// FinishedAt set to at if it is zero. It does not modify *r.
func finishedResult(r *Result, errMsg string, by peer.ID, at time.Time) *Result {
	if r == nil {
		return &Result{Error: errMsg, ExecutedBy: by, FinishedAt: at}
	}
	if r.FinishedAt.IsZero() {
		c := *r
		c.FinishedAt = at
		return &c
	}
	return r
}

func (w *writeTx) accept(r *TaskRecord) error {
	if w.b.spec.Get(r.ID[:]) != nil {
		return ErrExists
	}
	st := statusOf(r)
	start := len(w.arena)
	w.arena = appendSpec(w.arena, r)
	spec := w.value(start)
	start = len(w.arena)
	w.arena = appendStatus(w.arena, &st)
	if err := w.b.spec.Put(r.ID[:], spec); err != nil {
		return fmt.Errorf("put spec: %w", err)
	}
	if err := w.b.status.Put(r.ID[:], w.value(start)); err != nil {
		return fmt.Errorf("put status: %w", err)
	}
	var ck [timeLen + idLen]byte
	if err := w.b.created.Put(createdKey(&ck, r.CreatedAt, r.ID), empty); err != nil {
		return fmt.Errorf("put creation index: %w", err)
	}
	if st.state.Terminal() {
		return w.putDone(st.result.FinishedAt, r.ID)
	}
	if err := w.b.live.Put(r.ID[:], empty); err != nil {
		return fmt.Errorf("put live index: %w", err)
	}
	return nil
}

func (w *writeTx) putDone(finished time.Time, id grid.TaskID) error {
	var k [timeLen + idLen]byte
	if err := w.b.done.Put(timeKey(k[:0], finished, id[:]), empty); err != nil {
		return fmt.Errorf("put finished index: %w", err)
	}
	return nil
}

// advances reports whether tr moves a task in st forward.
func advances(st *status, tr *Transition) bool {
	if tr.State.Terminal() {
		return true
	}
	if tr.Attempt != st.attempt {
		return tr.Attempt > st.attempt
	}
	return tr.State.rank() >= st.state.rank()
}

func (w *writeTx) update(tr *Transition) error {
	v := w.b.status.Get(tr.ID[:])
	if v == nil {
		return ErrNotFound
	}
	var st status
	if err := decodeStatus(v, &st); err != nil {
		return fmt.Errorf("read status: %w: %w", ErrCorrupt, err)
	}
	if st.state.Terminal() {
		if tr.State == st.state {
			return nil
		}
		return fmt.Errorf("it is %s: %w", st.state, ErrFinished)
	}
	if !advances(&st, tr) {
		return nil
	}
	if tr.Attempt > st.attempt {
		st.tried = append(st.tried, tr.Peer)
		if len(st.tried) > maxTried {
			st.tried = st.tried[len(st.tried)-maxTried:]
		}
		st.attempt = tr.Attempt
	}
	if tr.Peer != "" {
		st.peer = tr.Peer
	}
	st.state, st.err, st.updated = tr.State, tr.Error, tr.At
	if st.state.Terminal() {
		st.result = finishedResult(tr.Result, tr.Error, st.peer, tr.At)
		if err := w.b.live.Delete(tr.ID[:]); err != nil {
			return fmt.Errorf("delete live index: %w", err)
		}
		if err := w.putDone(st.result.FinishedAt, tr.ID); err != nil {
			return err
		}
	}
	start := len(w.arena)
	w.arena = appendStatus(w.arena, &st)
	if err := w.b.status.Put(tr.ID[:], w.value(start)); err != nil {
		return fmt.Errorf("put status: %w", err)
	}
	return nil
}

// Get returns the record of a task, or ErrNotFound.
func (s *Store) Get(id grid.TaskID) (TaskRecord, error) {
	var r TaskRecord
	err := s.view(func(tx *bolt.Tx) error { return readTask(bucketsOf(tx), id, &r) })
	if err != nil {
		return TaskRecord{}, fmt.Errorf("get task %s: %w", id.Short(), err)
	}
	return r, nil
}

func readTask(b buckets, id grid.TaskID, r *TaskRecord) error {
	spec, sv := b.spec.Get(id[:]), b.status.Get(id[:])
	if spec == nil || sv == nil {
		return ErrNotFound
	}
	r.ID = id
	if err := decodeSpec(spec, r); err != nil {
		return fmt.Errorf("read spec: %w: %w", ErrCorrupt, err)
	}
	var st status
	if err := decodeStatus(sv, &st); err != nil {
		return fmt.Errorf("read status: %w: %w", ErrCorrupt, err)
	}
	r.State, r.Attempt, r.Peer, r.Tried = st.state, st.attempt, st.peer, st.tried
	r.Error, r.UpdatedAt, r.Result = st.err, st.updated, st.result
	return nil
}

// List returns up to f.Limit records, newest first, as Filter describes.
func (s *Store) List(f Filter) ([]TaskRecord, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultListLimit
	}
	limit = min(limit, MaxListLimit)
	out := []TaskRecord{}
	err := s.view(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		c := b.created.Cursor()
		var k []byte
		if f.After.IsZero() {
			k, _ = c.Last()
		} else {
			var st status
			sv := b.status.Get(f.After[:])
			if sv == nil {
				return nil
			}
			if err := decodeStatus(sv, &st); err != nil {
				return fmt.Errorf("read status: %w: %w", ErrCorrupt, err)
			}
			var ck [timeLen + idLen]byte
			at := createdKey(&ck, st.created, f.After)
			if k, _ = c.Seek(at); k != nil && bytes.Equal(k, at) {
				k, _ = c.Prev()
			} else if k == nil {
				k, _ = c.Last()
			} else {
				k, _ = c.Prev()
			}
		}
		for ; k != nil && len(out) < limit; k, _ = c.Prev() {
			if len(k) != timeLen+idLen {
				return fmt.Errorf("creation index key of %d bytes: %w", len(k), ErrCorrupt)
			}
			var id grid.TaskID
			for i := range id {
				id[i] = ^k[timeLen+i]
			}
			var r TaskRecord
			if err := readTask(b, id, &r); err != nil {
				return fmt.Errorf("read task %s: %w", id.Short(), err)
			}
			if len(f.States) == 0 || slices.Contains(f.States, r.State) {
				out = append(out, r)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	return out, nil
}

// Recover returns every task that is not terminal, oldest first, for the
// coordinator to resume after a restart. Call it before accepting new
// tasks.
func (s *Store) Recover() ([]TaskRecord, error) {
	var out []TaskRecord
	err := s.view(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		return b.live.ForEach(func(k, _ []byte) error {
			id, err := grid.TaskIDFromBytes(k)
			if err != nil {
				return fmt.Errorf("live index: %w: %w", ErrCorrupt, err)
			}
			var r TaskRecord
			if err := readTask(b, id, &r); err != nil {
				return fmt.Errorf("read task %s: %w", id.Short(), err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("recover tasks: %w", err)
	}
	slices.SortFunc(out, func(a, b TaskRecord) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
	return out, nil
}
