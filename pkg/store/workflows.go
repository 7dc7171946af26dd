package store

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	bolt "go.etcd.io/bbolt"
)

// Workflows (pkg/workflow) are kept in their own bucket under keys and
// values the workflow engine makes; the store does not read them.

// MaxWorkflowKey is the longest key PutWorkflow takes.
const MaxWorkflowKey = 64

// PutWorkflow stores value under key and returns once it is on disk.
func (s *Store) PutWorkflow(ctx context.Context, key, value []byte) error {
	if len(key) == 0 || len(key) > MaxWorkflowKey {
		return fmt.Errorf("store workflow: key of %d bytes, want 1 to %d", len(key), MaxWorkflowKey)
	}
	if value == nil {
		value = empty
	}
	o := s.getOp(opWorkflow)
	o.name, o.blob = key, value
	if err := s.do(ctx, o); err != nil {
		return fmt.Errorf("store workflow: %w", err)
	}
	return nil
}

// DeleteWorkflow deletes every key that begins with prefix and returns
// once that is on disk.
func (s *Store) DeleteWorkflow(ctx context.Context, prefix []byte) error {
	if len(prefix) == 0 || len(prefix) > MaxWorkflowKey {
		return fmt.Errorf("delete workflow: prefix of %d bytes, want 1 to %d", len(prefix), MaxWorkflowKey)
	}
	o := s.getOp(opWorkflow)
	o.name, o.blob = prefix, nil
	if err := s.do(ctx, o); err != nil {
		return fmt.Errorf("delete workflow: %w", err)
	}
	return nil
}

// workflow puts value under key, or with a nil value deletes every key
// that begins with key.
func (w *writeTx) workflow(key, value []byte) error {
	if value != nil {
		return w.b.workflow.Put(key, value)
	}
	var keys [][]byte // deleting under a cursor can skip the next key
	c := w.b.workflow.Cursor()
	for k, _ := c.Seek(key); k != nil && bytes.HasPrefix(k, key); k, _ = c.Next() {
		keys = append(keys, bytes.Clone(k))
	}
	for _, k := range keys {
		if err := w.b.workflow.Delete(k); err != nil {
			return err
		}
	}
	return nil
}

// EachWorkflow calls fn with every stored workflow key and value, in key
// order, until fn returns an error, which EachWorkflow returns. Both are
// valid only during the call.
func (s *Store) EachWorkflow(fn func(key, value []byte) error) error {
	if fn == nil {
		return errors.New("each workflow: fn is nil")
	}
	return s.view(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketWorkflow).ForEach(fn)
	})
}
