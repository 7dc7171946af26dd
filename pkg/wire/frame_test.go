package wire_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"runtime"
	"testing"
	"testing/iotest"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

func request(n int) *cortexv1.Envelope {
	return &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
		TaskId:         bytes.Repeat([]byte{7}, 32),
		SkillId:        "text.echo",
		Input:          bytes.Repeat([]byte{'x'}, n),
		InputKind:      cortexv1.InputKind_INPUT_KIND_RAW,
		Priority:       200,
		DeadlineUnixMs: 1_900_000_000_000,
		Attempt:        1,
	}}}
}

// countingWriter counts the Write calls that reach it.
type countingWriter struct {
	bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.Buffer.Write(p)
}

func TestFrameRoundTrip(t *testing.T) {
	var buf countingWriter
	w := wire.NewWriter(&buf)
	sizes := []int{0, 1, 200, 5000, 100 << 10} // the last one exceeds the reused buffer
	for _, n := range sizes {
		if err := w.WriteMsg(request(n)); err != nil {
			t.Fatalf("WriteMsg(%d): %v", n, err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(&buf, 1<<20)
	for _, n := range sizes {
		var got cortexv1.Envelope
		if err := r.ReadMsg(&got); err != nil {
			t.Fatalf("ReadMsg(%d): %v", n, err)
		}
		if !proto.Equal(&got, request(n)) {
			t.Fatalf("frame with %d-byte input came back different", n)
		}
	}
	var m cortexv1.Envelope
	if err := r.ReadMsg(&m); !errors.Is(err, io.EOF) {
		t.Fatalf("ReadMsg at the end = %v, want io.EOF", err)
	}
}

func TestFrameWriterCoalescesUntilFlush(t *testing.T) {
	var buf countingWriter
	w := wire.NewWriter(&buf)
	for range 50 {
		if err := w.WriteMsg(request(200)); err != nil {
			t.Fatal(err)
		}
	}
	if buf.writes != 0 {
		t.Fatalf("%d writes before Flush, want 0", buf.writes)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if buf.writes != 1 {
		t.Fatalf("50 small frames took %d writes, want 1", buf.writes)
	}
}

func TestFrameAppendFrameMatchesWriteMsg(t *testing.T) {
	var buf bytes.Buffer
	w := wire.NewWriter(&buf)
	m := request(300)
	if err := w.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	f, err := wire.AppendFrame([]byte("prefix"), m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(f[len("prefix"):], buf.Bytes()) || string(f[:len("prefix")]) != "prefix" {
		t.Fatal("AppendFrame and WriteMsg produce different frames")
	}
}

// endlessReader yields an endless run of zeros: a reader that trusted a
// length prefix would allocate it and block reading.
type endlessReader struct{ read int }

func (r *endlessReader) Read(p []byte) (int, error) {
	clear(p)
	r.read += len(p)
	return len(p), nil
}

func TestFrameReaderRefusesOversizedLengthBeforeAllocating(t *testing.T) {
	cases := []struct {
		name   string
		prefix []byte
	}{
		{"a length one above the cap is refused", binary.AppendUvarint(nil, 1025)},
		{"a length of 16 GiB is refused", binary.AppendUvarint(nil, 16<<30)},
		{"a varint that overflows 64 bits is refused", bytes.Repeat([]byte{0xff}, 11)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			src := io.MultiReader(bytes.NewReader(tc.prefix), &endlessReader{})
			r := wire.NewReader(src, 1024)
			var m cortexv1.Envelope
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			err := r.ReadMsg(&m)
			runtime.ReadMemStats(&after)
			if !errors.Is(err, wire.ErrMessageTooLarge) {
				t.Fatalf("ReadMsg = %v, want ErrMessageTooLarge", err)
			}
			if allocs := after.TotalAlloc - before.TotalAlloc; allocs > 16<<10 {
				t.Fatalf("refusing the frame allocated %d bytes", allocs)
			}
		})
	}
}

func TestFrameReaderErrors(t *testing.T) {
	good, err := wire.AppendFrame(nil, request(10))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name  string
		input []byte
		want  error
	}{
		{"a clean end between frames is io.EOF", nil, io.EOF},
		{"a stream cut inside the length is unexpected EOF", []byte{0x80}, io.ErrUnexpectedEOF},
		{"a stream cut inside the body is unexpected EOF", good[:len(good)-3], io.ErrUnexpectedEOF},
		{"a body that is not protobuf is malformed", []byte{3, 0xff, 0xff, 0xff}, wire.ErrMalformed},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			r := wire.NewReader(bytes.NewReader(tc.input), 1024)
			var m cortexv1.Envelope
			if err := r.ReadMsg(&m); !errors.Is(err, tc.want) {
				t.Fatalf("ReadMsg = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestFrameReaderDoesNotAliasItsBuffer(t *testing.T) {
	var buf bytes.Buffer
	w := wire.NewWriter(&buf)
	for i := range 2 {
		m := request(100)
		m.GetRequest().Input[0] = byte('a' + i)
		if err := w.WriteMsg(m); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(&buf, 1024)
	var first, second cortexv1.Envelope
	if err := r.ReadMsg(&first); err != nil {
		t.Fatal(err)
	}
	if err := r.ReadMsg(&second); err != nil {
		t.Fatal(err)
	}
	if first.GetRequest().Input[0] != 'a' || second.GetRequest().Input[0] != 'b' {
		t.Fatal("reading the second frame changed the first message's bytes")
	}
}

func BenchmarkFrameWriteRead(b *testing.B) {
	var buf bytes.Buffer
	w := wire.NewWriter(&buf)
	r := wire.NewReader(&buf, wire.DefaultMaxMessageSize)
	m := request(200)
	var got cortexv1.Envelope
	b.ReportAllocs()
	for b.Loop() {
		if err := w.WriteMsg(m); err != nil {
			b.Fatal(err)
		}
		if err := w.Flush(); err != nil {
			b.Fatal(err)
		}
		if err := r.ReadMsg(&got); err != nil {
			b.Fatal(err)
		}
	}
}

// TestFrameReaderAllocatesWhatArrivesNotWhatIsDeclared declares a body of
// 16 MiB - 1 and sends 11 bytes: the Reader must not allocate the
// declared length before the bytes come.
func TestFrameReaderAllocatesWhatArrivesNotWhatIsDeclared(t *testing.T) {
	src := append(binary.AppendUvarint(nil, wire.DefaultMaxMessageSize-1), bytes.Repeat([]byte{7}, 11)...)
	r := wire.NewReader(bytes.NewReader(src), 0)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := r.ReadFrame()
	runtime.ReadMemStats(&after)
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Fatalf("ReadFrame = %v, want io.ErrUnexpectedEOF", err)
	}
	if allocs := after.TotalAlloc - before.TotalAlloc; allocs > 128<<10 {
		t.Fatalf("a frame of 11 bytes declared as 16 MiB allocated %d bytes, want at most 128 KiB", allocs)
	}
}

// TestFrameReaderReadsLargeFramesWhole reads frames around and far above
// the chunk size, split into small writes.
func TestFrameReaderReadsLargeFramesWhole(t *testing.T) {
	for _, n := range []int{64<<10 - 1, 64 << 10, 64<<10 + 1, 1<<20 + 3} {
		body := make([]byte, n)
		for i := range body {
			body[i] = byte(i * 7)
		}
		src := append(binary.AppendUvarint(nil, uint64(n)), body...)
		r := wire.NewReader(iotest.OneByteReader(bytes.NewReader(src)), 0)
		if n > 1<<20 {
			r = wire.NewReader(iotest.HalfReader(bytes.NewReader(src)), 0)
		}
		got, err := r.ReadFrame()
		if err != nil {
			t.Fatalf("frame of %d bytes: %v", n, err)
		}
		if !bytes.Equal(got, body) {
			t.Fatalf("frame of %d bytes came back changed", n)
		}
	}
}

// TestFrameReaderTimesOutAStalledFrameButNotAnIdleStream leaves a stream
// idle past the frame timeout (fine), then starts a frame and stalls it.
func TestFrameReaderTimesOutAStalledFrameButNotAnIdleStream(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	r := wire.NewReader(a, 0)
	if !r.SetFrameTimeout(a, 50*time.Millisecond) {
		t.Fatal("SetFrameTimeout does not see net.Pipe's SetReadDeadline")
	}
	good, err := wire.AppendFrame(nil, request(10))
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(150 * time.Millisecond) // idle: three frame timeouts
		_, _ = b.Write(good[:3])
		time.Sleep(20 * time.Millisecond)
		_, _ = b.Write(good[3:]) // completes within the limit
		_, _ = b.Write(good[:5]) // then stalls
	}()
	if _, err := r.ReadFrame(); err != nil {
		t.Fatalf("a frame after an idle spell, sent in two parts within the limit: %v", err)
	}
	start := time.Now()
	_, err = r.ReadFrame()
	if !errors.Is(err, wire.ErrFrameTimeout) {
		t.Fatalf("a stalled frame: ReadFrame = %v, want ErrFrameTimeout", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("a stalled frame took %s to fail, want about 50ms", d)
	}
}

// budget is a reserve/release pair over a fixed number of bytes.
type budget struct {
	left, peak, held int
	calls            int
}

var errSpent = errors.New("budget spent")

func (b *budget) reserve(n int) error {
	b.calls++
	if n > b.left {
		return errSpent
	}
	b.left -= n
	b.held += n
	b.peak = max(b.peak, b.held)
	return nil
}

func (b *budget) release(n int) { b.left += n; b.held -= n }

// TestFrameReaderReservesLargeBodiesChunkByChunk reads a small frame (not
// charged), a large one (charged until released), a large one cut short
// (given back at once) and one over the budget (refused).
func TestFrameReaderReservesLargeBodiesChunkByChunk(t *testing.T) {
	frame := func(n int) []byte {
		return append(binary.AppendUvarint(nil, uint64(n)), bytes.Repeat([]byte{3}, n)...)
	}
	t.Run("a small frame is not charged", func(t *testing.T) {
		b := &budget{left: 1 << 20}
		r := wire.NewReader(iotest.OneByteReader(bytes.NewReader(frame(1000))), 0)
		r.SetReserve(b.reserve, b.release)
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
		if b.calls != 0 {
			t.Fatalf("reserve called %d times for a 1000-byte frame, want 0", b.calls)
		}
	})
	t.Run("a large frame is charged until released or the next read", func(t *testing.T) {
		b := &budget{left: 1 << 20}
		src := append(frame(300<<10), frame(200<<10)...)
		r := wire.NewReader(iotest.HalfReader(bytes.NewReader(src)), 0)
		r.SetReserve(b.reserve, b.release)
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
		if b.held != 300<<10 || b.calls != 5 {
			t.Fatalf("after a 300 KiB frame: %d bytes held in %d reservations, want %d in 5", b.held, b.calls, 300<<10)
		}
		if _, err := r.ReadFrame(); err != nil {
			t.Fatal(err)
		}
		if b.held != 200<<10 {
			t.Fatalf("after the next 200 KiB frame: %d bytes held, want %d", b.held, 200<<10)
		}
		r.ReleaseFrame()
		r.ReleaseFrame()
		if b.held != 0 {
			t.Fatalf("after ReleaseFrame: %d bytes held, want 0", b.held)
		}
	})
	t.Run("a frame cut short gives back what it reserved", func(t *testing.T) {
		b := &budget{left: 1 << 20}
		src := frame(500 << 10)[:300<<10]
		r := wire.NewReader(bytes.NewReader(src), 0)
		r.SetReserve(b.reserve, b.release)
		if _, err := r.ReadFrame(); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("ReadFrame = %v, want io.ErrUnexpectedEOF", err)
		}
		if b.held != 0 || b.peak < 256<<10 {
			t.Fatalf("after a cut frame: %d bytes held (peak %d), want 0 (peak at least %d)", b.held, b.peak, 256<<10)
		}
	})
	t.Run("a frame over the budget is refused before it is allocated", func(t *testing.T) {
		b := &budget{left: 200 << 10}
		r := wire.NewReader(bytes.NewReader(frame(1<<20)), 0)
		r.SetReserve(b.reserve, b.release)
		_, err := r.ReadFrame()
		if !errors.Is(err, wire.ErrFrameRefused) || !errors.Is(err, errSpent) {
			t.Fatalf("ReadFrame = %v, want ErrFrameRefused wrapping the budget's error", err)
		}
		if b.held != 0 || b.peak > 200<<10 {
			t.Fatalf("after the refusal: %d bytes held (peak %d), want 0 (peak at most %d)", b.held, b.peak, 200<<10)
		}
	})
	t.Run("ReadMsg releases once decoded", func(t *testing.T) {
		b := &budget{left: 1 << 20}
		var buf bytes.Buffer
		w := wire.NewWriter(&buf)
		if err := w.WriteMsg(request(100 << 10)); err != nil {
			t.Fatal(err)
		}
		_ = w.Flush()
		r := wire.NewReader(&buf, 0)
		r.SetReserve(b.reserve, b.release)
		var got cortexv1.Envelope
		if err := r.ReadMsg(&got); err != nil {
			t.Fatal(err)
		}
		if b.calls == 0 || b.held != 0 {
			t.Fatalf("after ReadMsg: %d reservations, %d bytes held; want some, and 0 held", b.calls, b.held)
		}
	})
}
