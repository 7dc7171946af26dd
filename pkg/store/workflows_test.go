package store

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	bolt "go.etcd.io/bbolt"
)

func workflowContents(tb testing.TB, s *Store) string {
	tb.Helper()
	var b strings.Builder
	if err := s.EachWorkflow(func(k, v []byte) error {
		b.WriteString(string(k) + "=" + string(v) + " ")
		return nil
	}); err != nil {
		tb.Fatalf("EachWorkflow: %v", err)
	}
	return b.String()
}

func TestWorkflowRecordsSurviveReopenAndDeleteByPrefix(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx := context.Background()
	var ops []WorkflowOp
	for _, kv := range [][2]string{{"a0", "spec"}, {"a1x", "step"}, {"a2", ""}, {"b0", "other"}, {"ab", "not a's"}} {
		ops = append(ops, WorkflowOp{Key: []byte(kv[0]), Value: []byte(kv[1])})
	}
	if err := s.WriteWorkflows(ctx, ops); err != nil {
		t.Fatal(err)
	}
	// In one transaction, in order: a delete of prefix "a", then a put under it.
	if err := s.WriteWorkflows(ctx, []WorkflowOp{{Key: []byte("a"), Delete: true}, {Key: []byte("a9"), Value: []byte("new")}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = openStore(t, dir)
	if got, want := workflowContents(t, s), "a9=new b0=other "; got != want {
		t.Fatalf("after delete of prefix a and reopen: %q, want %q", got, want)
	}
	if err := s.WriteWorkflows(ctx, []WorkflowOp{{Key: nil, Value: []byte("x")}}); err == nil {
		t.Error("empty key accepted")
	}
	if err := s.WriteWorkflows(ctx, []WorkflowOp{{Key: make([]byte, MaxWorkflowKey+1), Delete: true}}); err == nil {
		t.Error("long prefix accepted")
	}
}

// A file written before the workflow bucket existed opens with it.
func TestOpenAddsTheWorkflowBucket(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	boltUpdate(t, filepath.Join(dir, FileName), func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketWorkflow) })
	s = openStore(t, dir)
	if err := s.WriteWorkflows(context.Background(), []WorkflowOp{{Key: []byte("k"), Value: []byte("v")}}); err != nil {
		t.Fatalf("write to the added bucket: %v", err)
	}
	if got := workflowContents(t, s); got != "k=v " {
		t.Fatalf("holds %q", got)
	}
}
