package store

import (
	"context"
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestRecordsRoundTrip(t *testing.T) {
	rec := sampleTask(5, "12D3KooWrequester")
	st := statusOf(rec)
	st.state, st.attempt, st.peer, st.tried, st.err = StateFailed, 2, "b", []peer.ID{"a", "b"}, "boom"
	st.result = &Result{Code: grid.CodeExecutionFailed, Error: "boom", Output: []byte{0, 1}, Duration: time.Second, ExecutedBy: "b", FinishedAt: t0}
	var gotSpec TaskRecord
	if err := decodeSpec(appendSpec(nil, rec), &gotSpec); err != nil {
		t.Fatalf("decode spec: %v", err)
	}
	gotSpec.ID = rec.ID
	checkRecord(t, gotSpec, *rec)
	var got status
	if err := decodeStatus(appendStatus(nil, &st), &got); err != nil {
		t.Fatalf("decode status: %v", err)
	}
	if got.state != st.state || got.attempt != 2 || len(got.tried) != 2 || got.result.Code != grid.CodeExecutionFailed ||
		string(got.result.Output) != "\x00\x01" || !got.result.FinishedAt.Equal(t0) || got.err != "boom" {
		t.Fatalf("status round trip: %+v, want %+v", got, st)
	}
	for _, b := range [][]byte{nil, {}, {2}, appendStatus(nil, &st)[:10], append(appendStatus(nil, &st), 0)} {
		if err := decodeStatus(b, &got); !errors.Is(err, errDecode) {
			t.Fatalf("decode of %d bad bytes: %v, want errDecode", len(b), err)
		}
	}
}

// FuzzDecodeRecords feeds the record decoders what a damaged file might
// hold: they must fail cleanly, never panic.
func FuzzDecodeRecords(f *testing.F) {
	rec := sampleTask(1, "p")
	st := statusOf(rec)
	f.Add(appendSpec(nil, rec))
	f.Add(appendStatus(nil, &st))
	f.Add(appendRemote(nil, remoteTask("p", 1)))
	f.Fuzz(func(t *testing.T, b []byte) {
		var r TaskRecord
		var s status
		var rr RemoteRecord
		_ = decodeSpec(b, &r)
		_ = decodeStatus(b, &s)
		_ = decodeRemote(b, &rr)
	})
}

func TestLoneCallerDoesNotLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		s := openStore(t, t.TempDir(), WithBatch(DefaultMaxBatchSize, time.Hour))
		start := time.Now()
		for i := range 3 {
			if err := s.Accept(context.Background(), sampleTask(i, "")); err != nil {
				t.Fatalf("accept: %v", err)
			}
		}
		if waited := time.Since(start); waited != 0 {
			t.Fatalf("a lone caller waited %v for the batch delay", waited)
		}
	})
}
