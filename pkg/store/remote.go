package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
	bolt "go.etcd.io/bbolt"
)

// AcceptRemote records a task that peer rec.From sent to this node and
// returns once it is on disk. A zero State is StateQueued; zero ReceivedAt
// and UpdatedAt are now. rec must not be changed until AcceptRemote
// returns. It fails with ErrExists if (From, ID) is recorded: the caller
// then answers from Remote instead of running the task again.
func (s *Store) AcceptRemote(ctx context.Context, rec *RemoteRecord) error {
	o, err := s.acceptRemoteOp(rec)
	if err != nil {
		return err
	}
	if err := s.do(ctx, o); err != nil {
		return fmt.Errorf("accept task %s from %s: %w", rec.ID.Short(), rec.From, err)
	}
	return nil
}

// AcceptRemoteAsync queues what AcceptRemote writes and returns at once;
// done, if not nil, is called as UpdateAsync describes. rec must not be
// changed until then.
func (s *Store) AcceptRemoteAsync(rec *RemoteRecord, done func(error)) {
	o, err := s.acceptRemoteOp(rec)
	if err != nil {
		if done != nil {
			done(err)
		}
		return
	}
	s.doAsync(o, done)
}

func (s *Store) acceptRemoteOp(rec *RemoteRecord) (*op, error) {
	switch {
	case rec == nil:
		return nil, fmt.Errorf("accept remote task: record is nil: %w", ErrInvalid)
	case rec.ID.IsZero():
		return nil, fmt.Errorf("accept remote task: task ID is zero: %w", ErrInvalid)
	case rec.State != 0 && !rec.State.Valid():
		return nil, fmt.Errorf("accept remote task %s: state %d is unknown: %w", rec.ID.Short(), rec.State, ErrInvalid)
	}
	if err := checkPeer("requester", rec.From); err != nil {
		return nil, fmt.Errorf("accept remote task %s: %w", rec.ID.Short(), err)
	}
	o := s.getOp(opAcceptRemote)
	o.remote = rec
	return o, nil
}

// FinishRemote records the result of a task run for peer from and returns
// once it is on disk. delivered says whether the requester already has it;
// if not, the result is listed by PendingDeliveries(from) until
// MarkDelivered or the retention ends. The state becomes succeeded, timed
// out (CodeTimeout), canceled (CodeCanceled) or failed. A zero
// res.FinishedAt is now. It fails with ErrNotFound if the task was not
// recorded and ErrFinished if it already has a result.
func (s *Store) FinishRemote(ctx context.Context, from peer.ID, id grid.TaskID, res Result, delivered bool) error {
	if err := s.do(ctx, s.finishRemoteOp(from, id, res, delivered)); err != nil {
		return fmt.Errorf("finish task %s from %s: %w", id.Short(), from, err)
	}
	return nil
}

// FinishRemoteAsync queues what FinishRemote writes and returns at once;
// done, if not nil, is called as UpdateAsync describes.
func (s *Store) FinishRemoteAsync(from peer.ID, id grid.TaskID, res Result, delivered bool, done func(error)) {
	s.doAsync(s.finishRemoteOp(from, id, res, delivered), done)
}

func (s *Store) finishRemoteOp(from peer.ID, id grid.TaskID, res Result, delivered bool) *op {
	if res.FinishedAt.IsZero() {
		res.FinishedAt = s.cfg.now()
	}
	o := s.getOp(opFinishRemote)
	o.from, o.id, o.result, o.delivered = from, id, res, delivered
	return o
}

// MarkDelivered records that peer from has the result of task id, which is
// then no longer pending. It fails with ErrNotFound if the task is not
// recorded and ErrInvalid if it has no result yet.
func (s *Store) MarkDelivered(ctx context.Context, from peer.ID, id grid.TaskID) error {
	o := s.getOp(opMarkDelivered)
	o.from, o.id = from, id
	if err := s.do(ctx, o); err != nil {
		return fmt.Errorf("mark task %s delivered to %s: %w", id.Short(), from, err)
	}
	return nil
}

// ForgetRemote deletes what is known of task id sent by peer from, and
// returns once that is on disk: a later AcceptRemote of the same (from,
// id) succeeds, and the task runs again. It is for a task whose record
// must not be replayed, such as one stopped because its requester's
// connection was lost. Forgetting an unknown task is not an error.
func (s *Store) ForgetRemote(ctx context.Context, from peer.ID, id grid.TaskID) error {
	if err := s.do(ctx, s.forgetRemoteOp(from, id)); err != nil {
		return fmt.Errorf("forget task %s from %s: %w", id.Short(), from, err)
	}
	return nil
}

// ForgetRemoteAsync queues what ForgetRemote writes and returns at once;
// done, if not nil, is called as UpdateAsync describes.
func (s *Store) ForgetRemoteAsync(from peer.ID, id grid.TaskID, done func(error)) {
	s.doAsync(s.forgetRemoteOp(from, id), done)
}

func (s *Store) forgetRemoteOp(from peer.ID, id grid.TaskID) *op {
	o := s.getOp(opForgetRemote)
	o.from, o.id = from, id
	return o
}

// MarkDeliveredAsync queues what MarkDelivered writes and returns at once;
// done, if not nil, is called as UpdateAsync describes.
func (s *Store) MarkDeliveredAsync(from peer.ID, id grid.TaskID, done func(error)) {
	o := s.getOp(opMarkDelivered)
	o.from, o.id = from, id
	s.doAsync(o, done)
}

// stateOfResult is the terminal state a result puts a task in.
func stateOfResult(r *Result) State {
	switch {
	case r.Success:
		return StateSucceeded
	case r.Code == grid.CodeTimeout:
		return StateTimedOut
	case r.Code == grid.CodeCanceled:
		return StateCanceled
	}
	return StateFailed
}

func (w *writeTx) putRemote(key []byte, r *RemoteRecord) error {
	start := len(w.arena)
	w.arena = appendRemote(w.arena, r)
	if err := w.b.remote.Put(key, w.value(start)); err != nil {
		return fmt.Errorf("put remote record: %w", err)
	}
	return nil
}

func (w *writeTx) acceptRemote(in *RemoteRecord) error {
	var kb [1 + maxPeerLen + idLen]byte
	key := remoteKey(kb[:0], in.From, in.ID)
	if w.b.remote.Get(key) != nil {
		return ErrExists
	}
	r := *in
	now := w.now()
	if r.State == 0 {
		r.State = StateQueued
	}
	if r.ReceivedAt.IsZero() {
		r.ReceivedAt = now
	}
	if r.UpdatedAt.IsZero() {
		r.UpdatedAt = now
	}
	if r.State.Terminal() {
		r.Result = finishedResult(r.Result, "", "", r.UpdatedAt)
		return w.finished(key, &r)
	}
	if err := w.putRemote(key, &r); err != nil {
		return err
	}
	if err := w.b.rlive.Put(key, empty); err != nil {
		return fmt.Errorf("put remote live index: %w", err)
	}
	return nil
}

// getRemote reads the remote record at key into r.
func getRemote(b buckets, key []byte, r *RemoteRecord) error {
	v := b.remote.Get(key)
	if v == nil {
		return ErrNotFound
	}
	from, id, err := splitRemoteKey(key)
	if err != nil {
		return err
	}
	r.From, r.ID = from, id
	if err := decodeRemote(v, r); err != nil {
		return fmt.Errorf("read remote record: %w: %w", ErrCorrupt, err)
	}
	return nil
}

func (w *writeTx) finishRemote(from peer.ID, id grid.TaskID, res *Result, delivered bool) error {
	var kb [1 + maxPeerLen + idLen]byte
	key := remoteKey(kb[:0], from, id)
	var r RemoteRecord
	if err := getRemote(w.b, key, &r); err != nil {
		return err
	}
	if r.State.Terminal() {
		return fmt.Errorf("it is %s: %w", r.State, ErrFinished)
	}
	r.State, r.Result, r.Delivered, r.UpdatedAt = stateOfResult(res), res, delivered, res.FinishedAt
	return w.finished(key, &r)
}

// finished writes r, terminal, and its index entries.
func (w *writeTx) finished(key []byte, r *RemoteRecord) error {
	if err := w.putRemote(key, r); err != nil {
		return err
	}
	if err := w.b.rlive.Delete(key); err != nil {
		return fmt.Errorf("delete remote live index: %w", err)
	}
	if !r.Delivered {
		if err := w.b.rpending.Put(key, empty); err != nil {
			return fmt.Errorf("put pending delivery: %w", err)
		}
	}
	var tk [timeLen + 1 + maxPeerLen + idLen]byte
	if err := w.b.rdone.Put(timeKey(tk[:0], r.Result.FinishedAt, key), empty); err != nil {
		return fmt.Errorf("put remote finished index: %w", err)
	}
	return nil
}

func (w *writeTx) markDelivered(from peer.ID, id grid.TaskID) error {
	var kb [1 + maxPeerLen + idLen]byte
	key := remoteKey(kb[:0], from, id)
	var r RemoteRecord
	if err := getRemote(w.b, key, &r); err != nil {
		return err
	}
	if !r.State.Terminal() {
		return fmt.Errorf("it is %s, without a result: %w", r.State, ErrInvalid)
	}
	if r.Delivered {
		return nil
	}
	r.Delivered = true
	if err := w.putRemote(key, &r); err != nil {
		return err
	}
	if err := w.b.rpending.Delete(key); err != nil {
		return fmt.Errorf("delete pending delivery: %w", err)
	}
	return nil
}

func (w *writeTx) forgetRemote(from peer.ID, id grid.TaskID) error {
	var kb [1 + maxPeerLen + idLen]byte
	key := remoteKey(kb[:0], from, id)
	var r RemoteRecord
	if err := getRemote(w.b, key, &r); err != nil {
		if errors.Is(err, ErrNotFound) {
			return nil
		}
		return err
	}
	for _, bk := range []*bolt.Bucket{w.b.remote, w.b.rlive, w.b.rpending} {
		if err := bk.Delete(key); err != nil {
			return fmt.Errorf("delete remote record: %w", err)
		}
	}
	if r.State.Terminal() && r.Result != nil {
		var tk [timeLen + 1 + maxPeerLen + idLen]byte
		if err := w.b.rdone.Delete(timeKey(tk[:0], r.Result.FinishedAt, key)); err != nil {
			return fmt.Errorf("delete remote finished index: %w", err)
		}
	}
	return nil
}

// Remote returns what is known of task id sent by peer from, or
// ErrNotFound: the idempotency lookup for a repeated request.
func (s *Store) Remote(from peer.ID, id grid.TaskID) (RemoteRecord, error) {
	var r RemoteRecord
	err := s.view(func(tx *bolt.Tx) error {
		var kb [1 + maxPeerLen + idLen]byte
		return getRemote(bucketsOf(tx), remoteKey(kb[:0], from, id), &r)
	})
	if err != nil {
		return RemoteRecord{}, fmt.Errorf("get task %s from %s: %w", id.Short(), from, err)
	}
	return r, nil
}

// PendingDeliveries returns the finished tasks of peer from whose results
// it is not known to have, oldest first, for resending when it is back.
func (s *Store) PendingDeliveries(from peer.ID) ([]RemoteRecord, error) {
	var out []RemoteRecord
	prefix := peerPrefix(from)
	err := s.view(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		c := b.rpending.Cursor()
		for k, _ := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, _ = c.Next() {
			var r RemoteRecord
			if err := getRemote(b, k, &r); err != nil {
				return fmt.Errorf("read pending delivery: %w", err)
			}
			out = append(out, r)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("list pending deliveries to %s: %w", from, err)
	}
	sortRemote(out)
	return out, nil
}

// RecoverRemote returns every task run for a peer that has no result, as
// a crash left them. The executor cannot resume them (inputs are not
// kept): the plan is to FinishRemote each with a CodeInternal failure, not
// delivered, so that the requester, when back, retries it elsewhere.
func (s *Store) RecoverRemote() ([]RemoteRecord, error) {
	var out []RemoteRecord
	err := s.view(func(tx *bolt.Tx) error {
		b := bucketsOf(tx)
		return b.rlive.ForEach(func(k, _ []byte) error {
			var r RemoteRecord
			if err := getRemote(b, k, &r); err != nil {
				return fmt.Errorf("read remote task: %w", err)
			}
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("recover remote tasks: %w", err)
	}
	sortRemote(out)
	return out, nil
}

func sortRemote(rs []RemoteRecord) {
	slices.SortFunc(rs, func(a, b RemoteRecord) int {
		if c := a.ReceivedAt.Compare(b.ReceivedAt); c != 0 {
			return c
		}
		return bytes.Compare(a.ID[:], b.ID[:])
	})
}
