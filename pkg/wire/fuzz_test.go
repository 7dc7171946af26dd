package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// FuzzReadMsg feeds arbitrary bytes to a Reader: it must never panic,
// never return a message from a frame longer than the cap, and every
// message it does return must survive a write and read back unchanged.
func FuzzReadMsg(f *testing.F) {
	good, _ := wire.AppendFrame(nil, request(20))
	two := append(append([]byte{}, good...), good...)
	beat, _ := wire.AppendFrame(nil, &cortexv1.Envelope{Body: &cortexv1.Envelope_Heartbeat{Heartbeat: &cortexv1.TaskHeartbeat{
		TaskIds: [][]byte{bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)}, IntervalMs: 5000,
	}}})
	f.Add(beat)
	f.Add(good)
	f.Add(two)
	f.Add([]byte{})
	f.Add([]byte{0x80})
	f.Add(binary.AppendUvarint(nil, 1<<20))
	f.Add(bytes.Repeat([]byte{0xff}, 12))
	f.Add([]byte{2, 0x0a, 0x00})
	f.Fuzz(func(t *testing.T, data []byte) {
		const maxSize = 4096
		r := wire.NewReader(bytes.NewReader(data), maxSize)
		for range 64 {
			var m cortexv1.Envelope
			err := r.ReadMsg(&m)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) &&
					!errors.Is(err, wire.ErrMalformed) && !errors.Is(err, wire.ErrMessageTooLarge) {
					t.Fatalf("ReadMsg returned an unclassified error: %v", err)
				}
				return
			}
			frame, err := wire.AppendFrame(nil, &m)
			if err != nil {
				t.Fatalf("a message ReadMsg accepted does not encode: %v", err)
			}
			var back cortexv1.Envelope
			if err := wire.NewReader(bytes.NewReader(frame), maxSize+16).ReadMsg(&back); err != nil {
				t.Fatalf("re-reading an accepted message: %v", err)
			}
			if !proto.Equal(&m, &back) {
				t.Fatal("an accepted message changed across write and read")
			}
		}
	})
}
