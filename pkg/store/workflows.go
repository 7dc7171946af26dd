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

// MaxWorkflowKey is the longest key WriteWorkflows takes.
const MaxWorkflowKey = 64

// WorkflowOp is one write of WriteWorkflows: a put of Value under Key, or
// with Delete the deletion of every key that begins with Key.
type WorkflowOp struct {
	Key, Value []byte
	Delete     bool
}

// WriteWorkflows applies ops in order in one transaction and returns once
// it is on disk.
func (s *Store) WriteWorkflows(ctx context.Context, ops []WorkflowOp) error {
	for _, o := range ops {
		if len(o.Key) == 0 || len(o.Key) > MaxWorkflowKey {
			return fmt.Errorf("write workflows: key of %d bytes, want 1 to %d", len(o.Key), MaxWorkflowKey)
		}
	}
	o := s.getOp(opWorkflows)
	o.wops = ops
	if err := s.do(ctx, o); err != nil {
		return fmt.Errorf("write workflows: %w", err)
	}
	return nil
}

func (w *writeTx) workflows(ops []WorkflowOp) error {
	for _, o := range ops {
		v := o.Value
		switch {
		case o.Delete:
			v = nil
		case v == nil:
			v = empty
		}
		if err := w.workflow(o.Key, v); err != nil {
			return err
		}
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
