package grid

import (
	"math"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// Progress reports (TaskProgress, docs/protocol.md section 4.7): the
// executor tells the requester how far a delivery is, between its
// accepting ack and its result.
const (
	// ProgressInterval is the least time between two progress reports one
	// executor sends for one delivery: at most 10 a second.
	ProgressInterval = 100 * time.Millisecond
	// MaxProgressMessage is the most bytes of a progress report's message.
	MaxProgressMessage = wire.MaxProgressMessage
	// progressRate and progressBurst are the requester's token bucket per
	// delivery: reports beyond it are dropped.
	progressRate  = 10
	progressBurst = 5
)

// ProgressSink receives the progress reports of delegated tasks. A
// TaskHandler that implements it gets, from the orchestrator's stream
// readers, every report a peer sent for a pending delivery that passed
// the requester's checks: attempt is the delivery's, fraction is in [0, 1]
// and msg is valid UTF-8 of at most MaxProgressMessage bytes. It must not
// block.
type ProgressSink interface {
	TaskProgress(id TaskID, attempt int, fraction float64, msg string)
}

// ReportProgress tells the requester of t, a task this node runs for a
// peer, how far it is: fraction is clamped to [0, 1] (NaN is dropped),
// msg is cut to MaxProgressMessage bytes of valid UTF-8. Reports are
// coalesced to one per ProgressInterval, the latest value winning, and
// the last one is sent once the interval has passed; they go only after
// the task's accepting ack and never after its result. On any other
// RemoteTask (one this node delegates, or built by hand) it does nothing.
// It is safe for concurrent use.
func (t *RemoteTask) ReportProgress(fraction float64, msg string) {
	if t == nil || t.in == nil || math.IsNaN(fraction) {
		return
	}
	t.in.reportProgress(min(max(fraction, 0), 1), truncateUTF8(msg, MaxProgressMessage))
}

// progressOut is an executor's coalescing state for one delivery's
// progress reports, allocated at its first report.
type progressOut struct {
	mu      sync.Mutex
	frac    float64
	msg     string
	pending bool      // frac and msg are not sent yet
	last    time.Time // when a report was last queued
	timer   *time.Timer
	armed   bool // timer will fire and send what is pending
	stopped bool // the delivery is answered or its stream gone
}

// progressState returns it's coalescing state, creating it.
func (it *inTask) progressState() *progressOut {
	if p := it.prog.Load(); p != nil {
		return p
	}
	p := &progressOut{}
	if it.prog.CompareAndSwap(nil, p) {
		return p
	}
	return it.prog.Load()
}

func (it *inTask) reportProgress(frac float64, msg string) {
	if it.replied.Load() {
		return
	}
	p := it.progressState()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return
	}
	p.frac, p.msg, p.pending = frac, msg, true
	if p.armed {
		return // the trailing send takes the latest value
	}
	wait := ProgressInterval - time.Since(p.last)
	if wait <= 0 && it.state.Load() == taskAcked {
		it.sendProgressLocked(p)
		return
	}
	it.armLocked(p, max(wait, ProgressInterval/4))
}

func (it *inTask) armLocked(p *progressOut, d time.Duration) {
	p.armed = true
	if p.timer == nil {
		p.timer = time.AfterFunc(d, it.flushProgress)
	} else {
		p.timer.Reset(d)
	}
}

// flushProgress is the trailing send: the latest value, once the interval
// since the last one has passed. While the ack is still held back it
// waits again; once the task is answered it sends nothing.
func (it *inTask) flushProgress() {
	p := it.prog.Load()
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = false
	if p.stopped || !p.pending || it.replied.Load() {
		return
	}
	switch it.state.Load() {
	case taskAcked:
		it.sendProgressLocked(p)
	case taskHandling, taskDeferred:
		it.armLocked(p, ProgressInterval/4)
	}
}

// sendProgressLocked queues the pending report, if the task is acked and
// not answered when the writer's queue takes it: the result, pushed after
// replied is set, then always follows it, and the ack always precedes it.
func (it *inTask) sendProgressLocked(p *progressOut) {
	p.pending = false
	p.last = time.Now()
	f := getFrame()
	*f = wire.AppendProgressFrame((*f)[:0], &wire.Progress{
		TaskID: it.id[:], Attempt: it.attempt, Fraction: p.frac, Message: []byte(p.msg),
	})
	ok, err := it.st.fw.enqueueIf(f, it.progressSendable)
	if ok && err == nil {
		it.st.fw.signal()
	}
}

func (it *inTask) progressSendable() bool {
	return it.state.Load() == taskAcked && !it.replied.Load()
}

// stopProgress ends its reports: a pending one is not sent. Called once
// the task is answered or its stream is gone.
func (it *inTask) stopProgress() {
	p := it.prog.Load()
	if p == nil {
		return
	}
	p.mu.Lock()
	p.stopped = true
	if p.timer != nil {
		p.timer.Stop()
	}
	p.mu.Unlock()
}

// progressIn is a requester's token bucket for one pending delivery's
// reports, guarded by its stream's mu.
type progressIn struct {
	tokens float64
	at     time.Time
}

// allow takes a token at now, refilling at progressRate up to progressBurst.
func (b *progressIn) allow(now time.Time) bool {
	if b.at.IsZero() {
		b.tokens = progressBurst
	} else {
		b.tokens = min(progressBurst, b.tokens+now.Sub(b.at).Seconds()*progressRate)
	}
	b.at = now
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}

// onProgress checks a progress report and hands it to the handler's
// ProgressSink. A report for a delivery that is not pending or not acked,
// or for another attempt, is dropped; so is one with a fraction outside
// [0, 1] or not finite, or a message over MaxProgressMessage bytes, and
// one over the delivery's rate (10/s, burst 5). None of these costs the
// peer trust, and none fails the task. A report that passes the ID and
// value checks renews the delivery's lease, as a heartbeat listing it
// does, even when the rate drops it.
func (out *outStream) onProgress(e *wire.Progress) {
	o := out.o
	id, ok := usableID(e.TaskID)
	if !ok {
		o.stats.malformed.Add(1)
		o.log.Debug("dropping a progress report without a usable task ID", "peer", out.peer, "id_bytes", len(e.TaskID))
		return
	}
	if !(e.Fraction >= 0 && e.Fraction <= 1) || len(e.Message) > MaxProgressMessage || !utf8.Valid(e.Message) {
		o.stats.malformed.Add(1)
		o.log.Debug("dropping a progress report out of bounds", "peer", out.peer, "task", id.Short(), "fraction", e.Fraction, "message_bytes", len(e.Message))
		return
	}
	now := time.Now()
	out.mu.Lock()
	out.heard = out.checks
	c, ok := out.pending[id]
	if !ok || e.Attempt != c.attempt || !c.acked.Load() {
		out.mu.Unlock()
		o.stats.dropped.Add(1)
		o.log.Debug("dropping a progress report for a delivery not pending", "peer", out.peer, "task", id.Short(), "attempt", e.Attempt)
		return
	}
	c.heard = out.checks
	allowed := c.prog.allow(now)
	out.mu.Unlock()
	if !allowed {
		o.stats.dropped.Add(1)
		return
	}
	if sink, ok := o.handler.(ProgressSink); ok {
		sink.TaskProgress(id, int(c.attempt), e.Fraction, string(e.Message))
	}
}
