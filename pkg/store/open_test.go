package store

import (
	"context"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	bolt "go.etcd.io/bbolt"
)

func TestOpenFailsWhileAnotherHoldsTheRepo(t *testing.T) {
	dir := t.TempDir()
	openStore(t, dir)
	_, err := Open(dir, WithLogger(quiet), WithOpenTimeout(100*time.Millisecond))
	var inUse *InUseError
	if !errors.Is(err, ErrInUse) || !errors.As(err, &inUse) {
		t.Fatalf("second open: %v, want an *InUseError", err)
	}
	if inUse.Dir != dir || inUse.PID != os.Getpid() {
		t.Fatalf("in-use error names %s pid %d, want %s pid %d", inUse.Dir, inUse.PID, dir, os.Getpid())
	}
}

func TestOpenRefusesUnreadableFiles(t *testing.T) {
	cases := []struct {
		name  string
		setup func(tb testing.TB, path string)
		want  error
	}{
		{"a file of garbage is corrupt", func(tb testing.TB, path string) {
			garbage := make([]byte, 64<<10)
			for i := range garbage {
				garbage[i] = byte(i*7 + 3)
			}
			writeFile(tb, path, garbage)
		}, ErrCorrupt},
		{"a truncated file is corrupt", func(tb testing.TB, path string) {
			writeFile(tb, path, []byte("short"))
		}, ErrCorrupt},
		{"a bbolt file of another program is refused", func(tb testing.TB, path string) {
			boltUpdate(tb, path, func(tx *bolt.Tx) error {
				_, err := tx.CreateBucket([]byte("someone-else"))
				return err
			})
		}, ErrCorrupt},
		{"a store of a newer schema is refused", func(tb testing.TB, path string) {
			s, err := Open(filepath.Dir(path), WithLogger(quiet))
			if err != nil {
				tb.Fatalf("open: %v", err)
			}
			_ = s.Close()
			boltUpdate(tb, path, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketMeta).Put(keySchema, binary.BigEndian.AppendUint32(nil, SchemaVersion+1))
			})
		}, ErrNewerSchema},
		{"a store missing a bucket is corrupt", func(tb testing.TB, path string) {
			s, err := Open(filepath.Dir(path), WithLogger(quiet))
			if err != nil {
				tb.Fatalf("open: %v", err)
			}
			_ = s.Close()
			boltUpdate(tb, path, func(tx *bolt.Tx) error { return tx.DeleteBucket(bucketStatus) })
		}, ErrCorrupt},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			c.setup(t, filepath.Join(dir, FileName))
			s, err := Open(dir, WithLogger(quiet))
			if err == nil {
				_ = s.Close()
			}
			if !errors.Is(err, c.want) {
				t.Fatalf("open: %v, want %v", err, c.want)
			}
		})
	}
}

func writeFile(tb testing.TB, path string, b []byte) {
	tb.Helper()
	if err := os.WriteFile(path, b, 0o600); err != nil {
		tb.Fatal(err)
	}
}

func boltUpdate(tb testing.TB, path string, fn func(*bolt.Tx) error) {
	tb.Helper()
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		tb.Fatalf("bolt open: %v", err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		tb.Fatalf("bolt update: %v", err)
	}
}

func TestOpenRefusesBadOptions(t *testing.T) {
	_, err := Open(t.TempDir(), WithRetention(0), WithBatch(0, -1), WithLogger(nil))
	if err == nil {
		t.Fatal("open with bad options succeeded")
	}
	if _, err := Open(""); err == nil {
		t.Fatal("open of an empty directory name succeeded")
	}
}

func TestTrustAndMetricsSurviveReopen(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	if _, ok, err := s.LoadTrust(); ok || err != nil {
		t.Fatalf("load trust from an empty store: ok %v, %v; want nothing", ok, err)
	}
	var m grid.MetricsSnapshot
	if ok, err := s.LoadMetrics(&m); ok || err != nil {
		t.Fatalf("load metrics from an empty store: ok %v, %v; want nothing", ok, err)
	}
	self, other := newPeer(t), newPeer(t)
	snap := reputation.Snapshot{
		Version: reputation.SnapshotVersion, Self: self, TakenAt: t0,
		Peers: []reputation.PeerRecord{{Peer: other, Satisfaction: 2.5, Successes: 3,
			Skills: []reputation.SkillRecord{{Skill: "echo", Satisfaction: 2.5}}}},
		Global: []reputation.PeerValue{{Peer: other, Value: 1}},
	}
	ctx := context.Background()
	if err := s.SaveTrust(ctx, snap); err != nil {
		t.Fatalf("save trust: %v", err)
	}
	tracker := grid.NewMetricsTracker()
	tracker.RecordSubmitted(other)
	tracker.RecordCompleted(other, 3*time.Millisecond)
	want := tracker.Snapshot()
	if err := s.SaveMetrics(ctx, want); err != nil {
		t.Fatalf("save metrics: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s = openStore(t, dir)
	got, ok, err := s.LoadTrust()
	if err != nil || !ok {
		t.Fatalf("load trust: ok %v, %v", ok, err)
	}
	if !got.TakenAt.Equal(snap.TakenAt) {
		t.Fatalf("trust snapshot taken at %v, want %v", got.TakenAt, snap.TakenAt)
	}
	got.TakenAt = snap.TakenAt
	if !reflect.DeepEqual(got, snap) {
		t.Fatalf("trust snapshot\n got %+v\nwant %+v", got, snap)
	}
	if ok, err := s.LoadMetrics(&m); err != nil || !ok {
		t.Fatalf("load metrics: ok %v, %v", ok, err)
	}
	if m.PerNode[other].Completed != 1 || m.Completed != want.Completed || m.PerNode[other].MaxExec != 3*time.Millisecond {
		t.Fatalf("metrics after reopen %+v, want %+v", m, want)
	}
}
