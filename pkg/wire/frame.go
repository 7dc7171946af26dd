package wire

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/proto"
)

// ProtocolTask is the libp2p protocol of task streams. One stream carries
// many tasks, matched by task ID: requests and cancels one way, acks and
// results the other.
const ProtocolTask protocol.ID = "/cortex/task/1.0.0"

// DefaultMaxMessageSize is the default cap on one frame's body, in bytes.
const DefaultMaxMessageSize = 16 << 20

// MaxTaskInput and MaxTaskOutput are the largest task input and output,
// in bytes, that fit in one frame of DefaultMaxMessageSize beside the
// other fields of a TaskRequest or TaskResult (4 KiB holds them all). The
// API, the coordinator and the executor refuse larger ones where they
// arise, before anything is sent, naming the limit.
const (
	MaxTaskInput  = DefaultMaxMessageSize - 4<<10
	MaxTaskOutput = DefaultMaxMessageSize - 4<<10
)

// ErrMessageTooLarge is returned when a frame's declared length exceeds
// the cap. The Reader returns it before allocating anything for the body.
var ErrMessageTooLarge = errors.New("message too large")

// ErrFrameTimeout is wrapped by a Reader's error when a frame that had
// started did not complete within the Reader's frame timeout.
var ErrFrameTimeout = errors.New("frame not completed in time")

// ErrFrameRefused is wrapped by a Reader's error when the memory of a
// large frame's body could not be reserved (see SetReserve): the budget it
// counts against is spent. The stream is in the middle of a frame and
// cannot be read further.
var ErrFrameRefused = errors.New("frame refused: no memory left for it")

// DefaultFrameTimeout is the default time a frame that has started may
// take to arrive whole. Idle time between frames is not limited.
const DefaultFrameTimeout = 30 * time.Second

// ErrMalformed is returned when a frame's length prefix or body cannot be
// decoded.
var ErrMalformed = errors.New("malformed frame")

const (
	// keepBuf is the largest body buffer a Reader or Writer keeps between
	// messages; a larger message gets a buffer of its own, so one large
	// message does not pin its size for the life of a stream.
	keepBuf = 64 << 10
	// readBufSize and writeBufSize size the bufio layers. The write buffer
	// is large enough to coalesce many small frames into one stream write
	// (one Noise record holds at most 64 KiB).
	readBufSize  = 8 << 10
	writeBufSize = 32 << 10
)

// Reader reads varint-delimited protobuf frames. It is not safe for
// concurrent use.
//
// Memory follows what has arrived, not what a frame declares: a body of
// up to 64 KiB is read into a reused buffer of at most 64 KiB, a larger
// one into 64 KiB chunks, each allocated only once the one before is
// full, and joined once the frame is whole. A peer that declares 16 MiB
// and sends 11 bytes costs at most 64 KiB. With SetReserve, the chunks of
// a large body are charged to a budget before they are allocated.
type Reader struct {
	br  *bufio.Reader
	max int
	buf []byte

	// Memory of large bodies (see SetReserve): held is what is reserved
	// for the last frame and not yet given back.
	reserve func(n int) error
	release func(n int)
	held    int

	// Frame timeout: once a frame's first byte has arrived, the rest must
	// come within timeout, enforced with the underlying reader's read
	// deadline (see SetFrameTimeout).
	timeout  time.Duration
	deadline func(time.Time) error
	armed    bool
}

// NewReader returns a Reader on r that refuses frames whose body is longer
// than max bytes (DefaultMaxMessageSize if max <= 0).
func NewReader(r io.Reader, max int) *Reader {
	if max <= 0 {
		max = DefaultMaxMessageSize
	}
	return &Reader{br: bufio.NewReaderSize(r, readBufSize), max: max}
}

// readDeadliner is the part of a stream (or net.Conn) that SetFrameTimeout
// needs.
type readDeadliner interface {
	SetReadDeadline(time.Time) error
}

// SetFrameTimeout makes the Reader give up on a frame that has started
// (its first length byte has arrived) and is not whole within d: the read
// then fails with an error wrapping ErrFrameTimeout. It needs an
// underlying reader with a SetReadDeadline method (a libp2p stream, a
// net.Conn) and reports whether r has one; d <= 0 turns the limit off.
// The deadline is set only when a frame does not arrive in one piece, and
// cleared when it is whole, so that a stream may stay idle between frames
// for as long as its owner lets it.
func (r *Reader) SetFrameTimeout(under io.Reader, d time.Duration) bool {
	rd, ok := under.(readDeadliner)
	if !ok || d <= 0 {
		r.timeout, r.deadline = 0, nil
		return ok
	}
	r.timeout, r.deadline = d, rd.SetReadDeadline
	return true
}

// SetReserve makes the Reader charge the memory of frame bodies over 64
// KiB, the ones that get buffers of their own: reserve is called with the
// size of each chunk before it is allocated, and if it fails, the read
// fails with an error wrapping ErrFrameRefused and reserve's error. What a
// frame reserved is given back with one call of release: when the caller
// calls ReleaseFrame (once it has copied what it keeps out of the body),
// when the next frame is read, or at once if the frame fails. A body
// joined from its chunks is charged once, though for a moment, until the
// garbage collector takes the chunks, it takes twice its size. Bodies of
// up to 64 KiB, read into the Reader's reused buffer, are not charged.
func (r *Reader) SetReserve(reserve func(n int) error, release func(n int)) {
	r.ReleaseFrame()
	r.reserve, r.release = reserve, release
}

// ReleaseFrame gives back the memory reserved for the last frame read (see
// SetReserve). The body ReadFrame returned must no longer be used, though
// it stays valid until the next read. It is idempotent.
func (r *Reader) ReleaseFrame() {
	if r.held > 0 {
		n := r.held
		r.held = 0
		r.release(n)
	}
}

// ReadMsg reads one frame into m, which it resets first. It returns io.EOF
// if the stream ended cleanly between frames, ErrMessageTooLarge if the
// declared length exceeds the cap (checked before allocating), and an
// error wrapping ErrMalformed if the prefix or body cannot be decoded.
// Bytes fields of m do not alias the Reader's buffer.
func (r *Reader) ReadMsg(m proto.Message) error {
	body, err := r.ReadFrame()
	if err != nil {
		return err
	}
	err = proto.Unmarshal(body, m)
	r.ReleaseFrame() // m holds copies
	if err != nil {
		return fmt.Errorf("decode frame of %d bytes: %w: %w", len(body), ErrMalformed, err)
	}
	return nil
}

// ReadFrame reads one frame and returns its body, for callers that decode
// it themselves. The body is valid only until the next read. Errors are as
// for ReadMsg, except that the body is not decoded, plus ErrFrameTimeout
// (see SetFrameTimeout) and ErrFrameRefused (see SetReserve). Every error
// but io.EOF leaves the stream in the middle of a frame: it cannot be read
// further. It first gives back what the previous frame reserved.
func (r *Reader) ReadFrame() ([]byte, error) {
	r.ReleaseFrame()
	b, err := r.readFrame()
	if err != nil {
		r.ReleaseFrame()
	}
	if !r.armed {
		return b, err
	}
	r.armed = false
	if err != nil {
		if isTimeout(err) {
			err = fmt.Errorf("frame not whole after %s: %w: %w", r.timeout, ErrFrameTimeout, err)
		}
		return nil, err
	}
	if err := r.deadline(time.Time{}); err != nil {
		return nil, fmt.Errorf("clear frame read deadline: %w", err)
	}
	return b, nil
}

func (r *Reader) readFrame() ([]byte, error) {
	// The first byte may wait as long as the stream is idle.
	_, err := r.br.ReadByte()
	if err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.EOF
		}
		return nil, fmt.Errorf("read frame length: %w", err)
	}
	_ = r.br.UnreadByte()
	if r.deadline != nil && !r.whole() {
		if err := r.deadline(time.Now().Add(r.timeout)); err != nil {
			return nil, fmt.Errorf("set frame read deadline: %w", err)
		}
		r.armed = true
	}
	n, err := r.length()
	if err != nil {
		return nil, err
	}
	return r.body(n)
}

// whole reports whether the next frame is all in the read buffer already.
func (r *Reader) whole() bool {
	b, _ := r.br.Peek(r.br.Buffered())
	n, k := binary.Uvarint(b)
	return k > 0 && n <= uint64(len(b)-k)
}

// isTimeout reports whether err is a read deadline's error.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.As(err, &te) && te.Timeout()
}

// body reads the next n bytes into the reused buffer, or, if n is larger
// than keepBuf, into chunks allocated as the bytes arrive. A peek of what
// bufio already holds avoids the copy for small frames.
func (r *Reader) body(n int) ([]byte, error) {
	if n <= r.br.Buffered() {
		b, _ := r.br.Peek(n)
		_, _ = r.br.Discard(n)
		return b, nil
	}
	if n > keepBuf {
		return r.large(n)
	}
	if cap(r.buf) < n {
		r.buf = make([]byte, n, max(n, 1024))
	}
	b := r.buf[:n]
	if _, err := io.ReadFull(r.br, b); err != nil {
		return nil, bodyErr(n, err)
	}
	return b, nil
}

// large reads a body of n > keepBuf bytes in chunks of keepBuf, so that
// what is allocated stays within keepBuf of what has arrived, then joins
// them into a buffer of its own. Each chunk is reserved before it is
// allocated; the joined buffer takes over their reservation.
func (r *Reader) large(n int) ([]byte, error) {
	var chunks [][]byte
	for got := 0; got < n; {
		size := min(n-got, keepBuf)
		if r.reserve != nil {
			if err := r.reserve(size); err != nil {
				return nil, fmt.Errorf("read frame body of %d bytes, %d in: %w: %w", n, got, ErrFrameRefused, err)
			}
			r.held += size
		}
		c := make([]byte, size)
		if _, err := io.ReadFull(r.br, c); err != nil {
			return nil, bodyErr(n, err)
		}
		chunks = append(chunks, c)
		got += len(c)
	}
	b := make([]byte, 0, n)
	for i, c := range chunks {
		b = append(b, c...)
		chunks[i] = nil
	}
	return b, nil
}

func bodyErr(n int, err error) error {
	if errors.Is(err, io.EOF) {
		err = io.ErrUnexpectedEOF
	}
	return fmt.Errorf("read frame body of %d bytes: %w", n, err)
}

// length reads a frame's uvarint length prefix and checks it against the
// cap. It stops as soon as the value exceeds the cap, so a long or
// overflowing varint costs nothing.
func (r *Reader) length() (int, error) {
	var n uint64
	for i := 0; ; i++ {
		c, err := r.br.ReadByte()
		if err != nil {
			if i > 0 && errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			if errors.Is(err, io.EOF) {
				return 0, io.EOF
			}
			return 0, fmt.Errorf("read frame length: %w", err)
		}
		if i == binary.MaxVarintLen64-1 && c > 1 {
			return 0, fmt.Errorf("read frame length: varint overflows 64 bits: %w", ErrMessageTooLarge)
		}
		n |= uint64(c&0x7f) << (7 * i)
		if n > uint64(r.max) {
			return 0, fmt.Errorf("read frame of %d+ bytes (max %d): %w", n, r.max, ErrMessageTooLarge)
		}
		if c < 0x80 {
			return int(n), nil
		}
	}
}

// Writer writes varint-delimited protobuf frames into a buffer that goes
// to the underlying writer on Flush (or when it fills). It is not safe for
// concurrent use.
type Writer struct {
	bw  *bufio.Writer
	buf []byte
}

// NewWriter returns a Writer on w.
func NewWriter(w io.Writer) *Writer {
	return &Writer{bw: bufio.NewWriterSize(w, writeBufSize)}
}

// WriteMsg appends m as one frame to the buffer. Nothing reaches the
// underlying writer before Flush unless the buffer fills.
func (w *Writer) WriteMsg(m proto.Message) error {
	b, err := AppendFrame(w.buf[:0], m)
	if err != nil {
		return err
	}
	if cap(b) <= keepBuf {
		w.buf = b
	}
	return w.WriteFrame(b)
}

// WriteFrame appends one whole frame, length prefix included (as
// AppendFrame builds it), to the buffer.
func (w *Writer) WriteFrame(frame []byte) error {
	if _, err := w.bw.Write(frame); err != nil {
		return fmt.Errorf("write frame: %w", err)
	}
	return nil
}

// Flush writes everything buffered to the underlying writer.
func (w *Writer) Flush() error {
	if err := w.bw.Flush(); err != nil {
		return fmt.Errorf("flush frames: %w", err)
	}
	return nil
}

// Buffered returns the number of bytes waiting for Flush.
func (w *Writer) Buffered() int { return w.bw.Buffered() }

// AppendFrame appends m to dst as one frame (a uvarint length, then the
// marshaled message) and returns the extended slice. It lets callers
// marshal on their own goroutine and hand finished frames to a writer.
func AppendFrame(dst []byte, m proto.Message) ([]byte, error) {
	orig := len(dst)
	n := proto.MarshalOptions{}.Size(m)
	dst = binary.AppendUvarint(dst, uint64(n))
	start := len(dst)
	dst, err := proto.MarshalOptions{UseCachedSize: true}.MarshalAppend(dst, m)
	if err != nil {
		return dst[:orig], fmt.Errorf("encode frame: %w", err)
	}
	if len(dst)-start != n {
		return dst[:orig], fmt.Errorf("encode frame: size changed from %d to %d bytes during marshal", n, len(dst)-start)
	}
	return dst, nil
}
