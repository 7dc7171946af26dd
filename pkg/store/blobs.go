package store

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	bolt "go.etcd.io/bbolt"
)

// Names of the JSON values kept beside the records.
var (
	blobTrust   = []byte("trust")
	blobMetrics = []byte("metrics")
)

// SaveTrust replaces the stored trust snapshot (the trust graph and skill
// ratings) with snap and returns once it is on disk. The daemon calls it
// periodically and on shutdown.
func (s *Store) SaveTrust(ctx context.Context, snap reputation.Snapshot) error {
	if err := s.putJSON(ctx, blobTrust, snap); err != nil {
		return fmt.Errorf("save trust snapshot: %w", err)
	}
	return nil
}

// LoadTrust returns the stored trust snapshot, for reputation.Graph's
// Restore; ok is false if none was saved.
func (s *Store) LoadTrust() (snap reputation.Snapshot, ok bool, err error) {
	ok, err = s.getJSON(blobTrust, &snap)
	if err != nil {
		return reputation.Snapshot{}, false, fmt.Errorf("load trust snapshot: %w", err)
	}
	return snap, ok, nil
}

// SaveMetrics replaces the stored metrics with v encoded as JSON (such as
// a grid.MetricsSnapshot) and returns once it is on disk.
func (s *Store) SaveMetrics(ctx context.Context, v any) error {
	if err := s.putJSON(ctx, blobMetrics, v); err != nil {
		return fmt.Errorf("save metrics: %w", err)
	}
	return nil
}

// LoadMetrics decodes the stored metrics into v, a pointer; ok is false if
// none were saved (v is then untouched).
func (s *Store) LoadMetrics(v any) (ok bool, err error) {
	ok, err = s.getJSON(blobMetrics, v)
	if err != nil {
		return false, fmt.Errorf("load metrics: %w", err)
	}
	return ok, nil
}

func (s *Store) putJSON(ctx context.Context, name []byte, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	o := s.getOp(opPutBlob)
	o.name, o.blob = name, b
	return s.do(ctx, o)
}

func (s *Store) getJSON(name []byte, v any) (bool, error) {
	var ok bool
	err := s.view(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketBlobs).Get(name)
		if b == nil {
			return nil
		}
		ok = true
		if err := json.Unmarshal(b, v); err != nil {
			return fmt.Errorf("decode: %w: %w", ErrCorrupt, err)
		}
		return nil
	})
	return ok, err
}
