package grid

import (
	"errors"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// errWriterClosed is returned by frameWriter.push after close.
var errWriterClosed = errors.New("stream writer closed")

// maxPooledFrame is the largest frame buffer returned to framePool.
const maxPooledFrame = 64 << 10

// framePool holds frame buffers: callers encode a frame on their own
// goroutine into one, the stream's writer copies it out and returns it.
var framePool = sync.Pool{New: func() any {
	b := make([]byte, 0, 512)
	return &b
}}

func getFrame() *[]byte { return framePool.Get().(*[]byte) }

func putFrame(f *[]byte) {
	if cap(*f) > maxPooledFrame {
		return
	}
	*f = (*f)[:0]
	framePool.Put(f)
}

// frameWriter owns the write side of one stream: frames pushed from any
// goroutine queue up, and its run loop writes them into a buffered
// wire.Writer, flushing only when the queue has run empty, so that under
// load many frames share one stream write (one yamux frame, one Noise
// message, one syscall). Woken for a push, it yields once before it
// drains, so that the goroutines about to push (other callers, workers,
// the reader) run first and their frames join the same write. Pushing never blocks on the
// stream. It is safe for concurrent use.
type frameWriter struct {
	s            network.Stream
	w            *wire.Writer
	writeTimeout time.Duration
	// account, if set, is told the bytes of every frame queued (positive)
	// and of every frame written or dropped (negative).
	account func(int64)

	mu     sync.Mutex
	frames []*[]byte
	closed bool

	spare    []*[]byte     // owned by run
	deadline time.Time     // owned by run: the write deadline last set
	wake     chan struct{} // cap 1: frames were pushed onto an empty queue
	space    chan struct{} // cap 1: a batch left the queue

	flushing  atomic.Bool   // set by startFlush: the deadline is no longer extended
	flushOnce sync.Once     // guards flushReq
	flushReq  chan struct{} // closed by startFlush: write what is queued, then return
}

func newFrameWriter(s network.Stream, writeTimeout time.Duration) *frameWriter {
	return &frameWriter{
		s:            s,
		w:            wire.NewWriter(s),
		writeTimeout: writeTimeout,
		wake:         make(chan struct{}, 1),
		space:        make(chan struct{}, 1),
		flushReq:     make(chan struct{}),
	}
}

// enqueue queues f, taking ownership of it, and returns the queue length.
func (fw *frameWriter) enqueue(f *[]byte) (int, error) {
	fw.mu.Lock()
	if fw.closed {
		fw.mu.Unlock()
		putFrame(f)
		return 0, errWriterClosed
	}
	size := int64(len(*f)) // f is the writer's once queued
	fw.frames = append(fw.frames, f)
	n := len(fw.frames)
	fw.mu.Unlock()
	if fw.account != nil {
		fw.account(size)
	}
	return n, nil
}

// enqueueIf queues f, taking ownership of it, if ok returns true when
// called under the queue's lock: a frame queued with a state change made
// by ok comes before any frame pushed by a goroutine that saw that change.
// It does not wake the writer (see signal). It returns whether f was
// queued, and errWriterClosed (recycling f) after close.
func (fw *frameWriter) enqueueIf(f *[]byte, ok func() bool) (bool, error) {
	fw.mu.Lock()
	if fw.closed {
		fw.mu.Unlock()
		putFrame(f)
		return false, errWriterClosed
	}
	if !ok() {
		fw.mu.Unlock()
		putFrame(f)
		return false, nil
	}
	size := int64(len(*f))
	fw.frames = append(fw.frames, f)
	fw.mu.Unlock()
	if fw.account != nil {
		fw.account(size)
	}
	return true, nil
}

func (fw *frameWriter) signal() {
	select {
	case fw.wake <- struct{}{}:
	default:
	}
}

// push queues f and takes ownership of it. It returns the queue length
// after the push, or errWriterClosed (and recycles f) after close.
func (fw *frameWriter) push(f *[]byte) (int, error) {
	n, err := fw.enqueue(f)
	if n == 1 {
		fw.signal()
	}
	return n, err
}

// queued returns the number of frames waiting.
func (fw *frameWriter) queued() int {
	fw.mu.Lock()
	defer fw.mu.Unlock()
	return len(fw.frames)
}

// close drops whatever is queued; later pushes fail. It does not stop run:
// the stream's done channel does.
func (fw *frameWriter) close() {
	fw.mu.Lock()
	frames := fw.frames
	fw.frames = nil
	fw.closed = true
	fw.mu.Unlock()
	var n int64
	for _, f := range frames {
		n += int64(len(*f))
		putFrame(f)
	}
	if fw.account != nil && n > 0 {
		fw.account(-n)
	}
}

// startFlush asks run to write what is queued and return, all by the
// given time: the stream's write deadline is moved to it now, so that a
// write blocked on a peer that does not read gives up then. Frames pushed
// after run has returned stay queued until close drops them.
func (fw *frameWriter) startFlush(by time.Time) {
	fw.flushOnce.Do(func() {
		fw.flushing.Store(true)
		_ = fw.s.SetWriteDeadline(by)
		close(fw.flushReq)
	})
}

// run writes queued frames until done is closed, a flush completes, or a
// write fails, and returns the write error (nil when done closed or the
// flush completed). Each receive from tick calls onTick on run's goroutine
// (which may enqueue frames) before the queue is drained; a nil tick never
// fires.
func (fw *frameWriter) run(done <-chan struct{}, tick <-chan time.Time, onTick func()) error {
	for {
		select {
		case <-fw.wake:
			// Let the goroutines that are about to push (callers, workers,
			// the reader) run first: their frames then share this write.
			runtime.Gosched()
		case <-tick:
			onTick()
		case <-fw.flushReq:
			return fw.drain()
		case <-done:
			return nil
		}
		if err := fw.drain(); err != nil {
			return err
		}
	}
}

// extendDeadline keeps the stream's write deadline between half and all
// of the write timeout ahead. Setting it costs a timer in the muxer, so it
// is moved only once it is less than half the timeout away. During a
// flush it stays where startFlush put it.
func (fw *frameWriter) extendDeadline() {
	if fw.flushing.Load() {
		return
	}
	now := time.Now()
	if fw.deadline.Sub(now) < fw.writeTimeout/2 {
		fw.deadline = now.Add(fw.writeTimeout)
		_ = fw.s.SetWriteDeadline(fw.deadline)
	}
}

// drain writes batches until the queue is empty, then flushes once.
func (fw *frameWriter) drain() error {
	fw.extendDeadline()
	for {
		fw.mu.Lock()
		batch := fw.frames
		fw.frames = fw.spare[:0]
		fw.mu.Unlock()
		if len(batch) == 0 {
			fw.spare = batch
			break
		}
		select {
		case fw.space <- struct{}{}:
		default:
		}
		var err error
		var n int64
		for i, f := range batch {
			if err == nil {
				err = fw.w.WriteFrame(*f)
			}
			n += int64(len(*f))
			putFrame(f)
			batch[i] = nil
		}
		fw.spare = batch[:0]
		if fw.account != nil {
			fw.account(-n)
		}
		if err != nil {
			return err
		}
	}
	if fw.w.Buffered() == 0 {
		return nil
	}
	return fw.w.Flush()
}
