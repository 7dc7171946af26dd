package grid

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	msmux "github.com/multiformats/go-multistream"

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// errStale is returned by outStream.send when the stream died between
// lookup and registration; Orchestrator.send then looks the peer up again.
var errStale = errors.New("stream went away")

// errDuplicate is wrapped when a task ID is already pending with a peer.
var errDuplicate = errors.New("task already pending with this peer")

// call is one pending delegation. Whoever takes it out of its stream's
// pending map (the reader with a result or a rejection, the stream's
// timer, its context, the lease check, or fail) owns its end and calls
// finish, once, outside the stream's lock. Calls are not pooled: their
// context callbacks may fire after they ended, and they tell a stale fire
// by the call's identity in the pending map.
type call struct {
	id      TaskID
	attempt uint32 // matched against the attempt of acks and results (0 there: any)
	peer    peer.ID
	acked   atomic.Bool
	heard   uint32     // guarded by the stream's mu: the lease check count when last heard of
	prog    progressIn // guarded by the stream's mu: the rate of its progress reports
	done    func(*RemoteResult, error)

	ackBy    time.Time
	resultBy time.Time
	due      time.Time // guarded by the stream's mu: when the stream's timer is to look at c
	hpos     int       // guarded by the stream's mu: 1 + c's index in the stream's timers, 0 if not there
	// Set under the stream's mu when c is registered, read by finish once
	// c has left the pending map.
	out     *outStream
	stopCtx func() bool
	hctx    HookContext // set instead of stopCtx when ctx is one: c is its hook
}

// finish ends c with res or err: it stops c's context watch and calls
// done. Only the goroutine that took c out of the pending map (or never
// put it there), and off the stream's timers, calls it.
func (c *call) finish(res *RemoteResult, err error) {
	if c.stopCtx != nil {
		c.stopCtx()
	}
	if c.hctx != nil {
		c.hctx.StopCancelHook(c)
	}
	if err != nil {
		res, err = nil, fmt.Errorf("delegate task %s to %s: %w", c.id.Short(), c.peer, err)
	}
	c.done(res, err)
}

// ended is a call taken out of the pending map with its terminal event,
// to be finished once the stream's lock is released.
type ended struct {
	res *RemoteResult
	err error
}

// syncWait turns DelegateAsync's callback into Delegate's return. Pooled:
// its callback is called exactly once and received before it is put back.
type syncWait struct {
	ch chan ended
	fn func(*RemoteResult, error)
}

var syncWaitPool = sync.Pool{New: func() any {
	w := &syncWait{ch: make(chan ended, 1)}
	w.fn = func(res *RemoteResult, err error) {
		if res != nil {
			r := *res // valid only during the callback
			res = &r
		}
		w.ch <- ended{res: res, err: err}
	}
	return w
}}

// outStream is this node's one task stream to a peer: requests and
// cancels go out, acks and results come back and are matched to pending
// calls by task ID.
type outStream struct {
	o     *Orchestrator
	peer  peer.ID
	ready chan struct{} // closed once the open attempt finished
	// Set before ready is closed, read-only after.
	s       network.Stream
	fw      *frameWriter
	openErr error
	done    chan struct{} // closed by fail: stops the writer

	mu        sync.Mutex
	pending   map[TaskID]*call
	dead      bool
	calls     uint64 // calls registered, for the idle check
	idleMark  uint64
	idleSince int    // sweeps without a call
	checks    uint32 // lease checks run so far: the lease clock
	heard     uint32 // checks when a frame last came from the peer
	lease     uint32 // lease checks a task may go unheard of

	expired []*call      // the writer's: calls whose lease a check found expired
	res     RemoteResult // the reader's: the result being given to its call's done

	// Ack timeouts and result deadlines, guarded by mu: see callHeap.
	timers  callHeap
	timer   *time.Timer // made by the first call; fires onTimers
	armedAt time.Time   // when timer is set to fire; zero: not set
}

// Delegate sends t to p and waits for its result. It returns a
// *RejectError if p rejected the task, an error wrapping ErrAckTimeout if
// p did not ack in time, an error wrapping context.DeadlineExceeded if the
// result did not come by t.Deadline (plus a short grace for its trip), an
// error wrapping ErrPeerGone if p was unreachable or its stream failed,
// one wrapping ErrNotProvider if p does not speak the task protocol (the
// task was not sent), and
// one wrapping ErrLeaseExpired if p accepted the task and then stopped
// reporting it (see the leases in Orchestrator's doc). Canceling ctx sends
// a TaskCancel to p and returns ctx's error. t must not be modified during
// the call. It is DelegateAsync, waited for.
func (o *Orchestrator) Delegate(ctx context.Context, p peer.ID, t *RemoteTask) (*RemoteResult, error) {
	w := syncWaitPool.Get().(*syncWait)
	o.DelegateAsync(ctx, p, t, w.fn)
	ev := <-w.ch
	syncWaitPool.Put(w)
	return ev.res, ev.err
}

// DelegateAsync sends t to p and returns without waiting: done is called
// exactly once with what Delegate would return. done runs on the
// goroutine that learns the outcome: the caller's, before DelegateAsync
// returns, if the task cannot be sent (invalid, ctx already done, this
// orchestrator closed, the stream failed to open); else the stream's
// reader (a result or a rejection), the stream's timer's (ack timeout,
// deadline), ctx's AfterFunc or, for a HookContext, its hook, the
// stream's writer (lease expiry) or whichever
// goroutine fails the stream. done must not block for long: it may hold up
// the stream's reader. It may call DelegateAsync again. The *RemoteResult
// done gets is valid only until done returns (the reader reuses it): copy
// what you keep, except its Output, which is done's own. t is not used
// after DelegateAsync returns. Waiting for a stream that is still opening
// happens on a goroutine of its own, not the caller's.
func (o *Orchestrator) DelegateAsync(ctx context.Context, p peer.ID, t *RemoteTask, done func(*RemoteResult, error)) {
	c := &call{id: t.ID, attempt: uint32(t.Attempt), peer: p, done: done}
	if err := validateOutgoing(t); err != nil {
		done(nil, fmt.Errorf("delegate task to %s: %w", p, err))
		return
	}
	if err := ctx.Err(); err != nil {
		c.finish(nil, err)
		return
	}
	f := getFrame()
	*f = appendRequestFrame((*f)[:0], t, o.requesterBytes(t.Requester))
	if len(*f) > o.cfg.maxMsg {
		err := fmt.Errorf("request frame of %d bytes (max %d): %w", len(*f), o.cfg.maxMsg, wire.ErrMessageTooLarge)
		putFrame(f)
		c.finish(nil, err)
		return
	}
	c.resultBy = t.Deadline.Add(o.cfg.resultGrace)
	// The fast path: the stream is open.
	o.mu.RLock()
	out, ok := o.out[p]
	o.mu.RUnlock()
	if ok {
		select {
		case <-out.ready:
			if out.openErr == nil {
				err := out.send(ctx, c, f)
				if err == nil {
					return
				}
				if !errors.Is(err, errStale) {
					c.finish(nil, err)
					return
				}
			}
		default:
		}
	}
	if err := o.sendOpening(ctx, c, f); err != nil {
		c.finish(nil, err)
	}
}

// sendOpening registers c and queues f with p's stream when that stream
// is open, or fails at once if it cannot be. While it is being opened,
// the wait and the rest are left to a goroutine, which finishes c on
// failure.
func (o *Orchestrator) sendOpening(ctx context.Context, c *call, f *[]byte) error {
	out, err := o.lookupStream(c.peer)
	if err != nil {
		putFrame(f)
		return err
	}
	select {
	case <-out.ready:
		return o.send(ctx, c.peer, c, f)
	default:
	}
	o.mu.RLock()
	if o.closed {
		o.mu.RUnlock()
		putFrame(f)
		return ErrClosed
	}
	o.wg.Add(1) // under mu: Close waits for it
	o.mu.RUnlock()
	go func() {
		defer o.wg.Done()
		if err := o.send(ctx, c.peer, c, f); err != nil {
			c.finish(nil, err)
		}
	}()
	return nil
}

// send registers c with the stream to p and queues its request frame f,
// taking ownership of f. A stream that dies in between is replaced. It
// waits for a stream that is opening.
func (o *Orchestrator) send(ctx context.Context, p peer.ID, c *call, f *[]byte) error {
	for try := 0; ; try++ {
		out, err := o.stream(ctx, p)
		if err != nil {
			putFrame(f)
			return err
		}
		err = out.send(ctx, c, f)
		if !errors.Is(err, errStale) {
			return err
		}
		if try == 2 {
			putFrame(f)
			return fmt.Errorf("%w: %w", ErrPeerGone, err)
		}
	}
}

// requesterBytes returns the peer ID bytes of a task's requester, without
// allocating when it is this node (or none is set).
func (o *Orchestrator) requesterBytes(p peer.ID) []byte {
	if p == o.self || p == "" {
		return o.selfBytes
	}
	return []byte(p)
}

// lookupStream returns the stream to p, starting to open one if there is
// none; it may not be ready yet.
func (o *Orchestrator) lookupStream(p peer.ID) (*outStream, error) {
	o.mu.RLock()
	out, ok := o.out[p]
	closed := o.closed
	o.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if !ok {
		return o.newOutStream(p)
	}
	return out, nil
}

// stream returns the live stream to p, opening one if there is none.
func (o *Orchestrator) stream(ctx context.Context, p peer.ID) (*outStream, error) {
	out, err := o.lookupStream(p)
	if err != nil {
		return nil, err
	}
	select {
	case <-out.ready:
	default:
		select {
		case <-out.ready:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if out.openErr != nil {
		return nil, out.openErr
	}
	return out, nil
}

// newOutStream registers a stream to p and starts opening it, unless
// another caller got there first.
func (o *Orchestrator) newOutStream(p peer.ID) (*outStream, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	if out, ok := o.out[p]; ok {
		return out, nil
	}
	out := &outStream{
		o:       o,
		peer:    p,
		ready:   make(chan struct{}),
		done:    make(chan struct{}),
		pending: make(map[TaskID]*call),
		lease:   o.leaseChecks(0),
	}
	o.out[p] = out
	o.wg.Add(1)
	go out.open()
	return out, nil
}

// open opens the stream and starts its reader and writer. A failure is
// left in openErr for every caller waiting on ready.
func (out *outStream) open() {
	o := out.o
	defer o.wg.Done()
	ctx, cancel := context.WithTimeout(o.lifetime, o.cfg.openTimeout)
	// A peer behind NAT may be reachable through a relay only; the host
	// still picks a direct connection when there is one (after a hole
	// punch). A relayed stream lives within the relay's per-circuit
	// limits, and sweepIdle moves off it once a direct connection exists.
	ctx = network.WithAllowLimitedConn(ctx, "cortex task")
	s, err := o.host.NewStream(ctx, out.peer, wire.ProtocolTask)
	cancel()
	if err == nil {
		if err = s.Scope().SetService(taskServiceName); err != nil {
			resetStream(s)
		}
	}
	switch {
	case errors.Is(err, msmux.ErrNotSupported[protocol.ID]{}):
		err = fmt.Errorf("%w: %s does not speak %s: %w", ErrNotProvider, out.peer, wire.ProtocolTask, err)
	case err != nil:
		err = fmt.Errorf("%w: open task stream: %w", ErrPeerGone, err)
	}
	if err != nil {
		out.openErr = err
		out.markDead()
		o.removeOut(out)
		close(out.ready)
		return
	}
	o.streamsOpened.Add(1)
	out.s = s
	out.fw = newFrameWriter(s, o.cfg.writeTimeout)
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		resetStream(s)
		out.openErr = ErrClosed
		out.markDead()
		close(out.ready)
		return
	}
	o.wg.Add(2)
	o.mu.Unlock()
	close(out.ready)
	go out.readLoop()
	go out.writeLoop()
}

func (o *Orchestrator) removeOut(out *outStream) {
	o.mu.Lock()
	if o.out[out.peer] == out {
		delete(o.out, out.peer)
	}
	o.mu.Unlock()
}

func (out *outStream) markDead() {
	out.mu.Lock()
	out.dead = true
	out.mu.Unlock()
}

// send registers c and queues its request frame f, taking ownership of f
// unless it returns errStale. Once c is registered, its timer (the ack
// timeout and the result deadline) and the watch on ctx run.
func (out *outStream) send(ctx context.Context, c *call, f *[]byte) error {
	out.mu.Lock()
	if out.dead {
		out.mu.Unlock()
		return errStale
	}
	if _, dup := out.pending[c.id]; dup {
		out.mu.Unlock()
		putFrame(f)
		return fmt.Errorf("task %s: %w", c.id.Short(), errDuplicate)
	}
	out.pending[c.id] = c
	out.calls++
	c.heard = out.checks
	c.out = out
	now := time.Now()
	c.ackBy = now.Add(out.o.cfg.ackTimeout)
	ended := false
	if hc, ok := ctx.(HookContext); ok && hc.SetCancelHook(c) {
		// Its cancel calls ContextCanceled, and its deadline is c's
		// timer's to keep.
		c.hctx = hc
		if d, ok := hc.Deadline(); ok && d.Before(c.resultBy) {
			c.resultBy = d
		}
	} else if ok && ctx.Err() != nil {
		ended = true // since DelegateAsync looked
	} else if ctx.Done() != nil {
		c.stopCtx = context.AfterFunc(ctx, func() { c.onCtx(ctx) })
	}
	out.watchLocked(c, now)
	out.mu.Unlock()
	// If the stream died after registration, fail has finished c.
	_, _ = out.fw.push(f)
	if ended {
		c.onCtx(ctx)
	}
	return nil
}

// ContextCanceled is c's hook in its HookContext.
func (c *call) ContextCanceled() { c.onCtx(c.hctx) }

// onCtx gives up on c when ctx, its context, ends.
func (c *call) onCtx(ctx context.Context) {
	out := c.out
	out.mu.Lock()
	if out.pending[c.id] != c {
		out.mu.Unlock()
		return
	}
	delete(out.pending, c.id)
	out.unwatchLocked(c)
	out.mu.Unlock()
	out.sendCancel(c)
	c.finish(nil, ctx.Err())
}

// sendCancel tells the peer to cancel c's attempt of its task.
func (out *outStream) sendCancel(c *call) {
	f := getFrame()
	*f = appendCancelFrame((*f)[:0], &c.id, c.attempt)
	if _, pushErr := out.fw.push(f); pushErr != nil {
		out.o.log.Debug("cannot send task cancel", "peer", out.peer, "task", c.id.Short(), "err", pushErr)
	}
}

// writeLoop runs the stream's writer, with the lease checks.
func (out *outStream) writeLoop() {
	defer out.o.wg.Done()
	tick := time.NewTicker(out.o.leaseCheckPeriod())
	defer tick.Stop()
	if err := out.fw.run(out.done, tick.C, out.checkLeases); err != nil {
		out.fail(fmt.Errorf("%w: write to task stream: %w", ErrPeerGone, err))
	}
}

func (out *outStream) readLoop() {
	o := out.o
	defer o.wg.Done()
	r := wire.NewReader(out.s, o.cfg.maxMsg)
	r.SetFrameTimeout(out.s, o.cfg.frameTimeout)
	var env wire.Envelope
	for {
		frame, err := r.ReadFrame()
		if err != nil {
			out.fail(fmt.Errorf("%w: read task stream: %w", ErrPeerGone, err))
			return
		}
		err = wire.DecodeEnvelope(frame, &env)
		if env.Unknown > 0 {
			o.stats.unknown.Add(uint64(env.Unknown))
		}
		switch {
		case err != nil:
			out.onMalformed(&env, err)
		case env.Kind == wire.KindAck:
			out.onAck(&env.Ack)
		case env.Kind == wire.KindResult:
			out.onResult(&env.Result)
		case env.Kind == wire.KindHeartbeat:
			out.onHeartbeat(&env.Heartbeat)
		case env.Kind == wire.KindProgress:
			out.onProgress(&env.Progress)
		case env.Kind == wire.KindNone:
			if env.Unknown == 0 {
				o.stats.unknown.Add(1) // an empty envelope
			}
			o.log.Debug("skipping a task message of a type this version does not know", "peer", out.peer)
		default:
			o.stats.dropped.Add(1)
			o.log.Debug("dropping a task message only a requester sends", "peer", out.peer, "kind", env.Kind)
		}
	}
}

// onMalformed drops a frame that did not decode. If it is a result for a
// pending task, that task fails with ErrInvalidResult.
func (out *outStream) onMalformed(e *wire.Envelope, cause error) {
	o := out.o
	o.stats.malformed.Add(1)
	o.log.Debug("dropping a task message that does not decode", "peer", out.peer, "err", cause)
	if e.Kind != wire.KindResult {
		return
	}
	if id, ok := usableID(e.Result.TaskID); ok {
		if c := out.take(id, e.Result.Attempt); c != nil {
			c.finish(nil, fmt.Errorf("%w: %w", ErrInvalidResult, cause))
		}
	}
}

// take removes and returns the pending call for attempt of task id (0:
// any attempt), nil if there is none. A call for another attempt stays;
// the message is counted as dropped.
func (out *outStream) take(id TaskID, attempt uint32) *call {
	out.mu.Lock()
	out.heard = out.checks
	c, ok := out.pending[id]
	if ok && (attempt == 0 || attempt == c.attempt) {
		delete(out.pending, id)
		out.unwatchLocked(c)
		out.mu.Unlock()
		return c
	}
	out.mu.Unlock()
	out.o.stats.dropped.Add(1)
	if ok {
		out.o.log.Debug("dropping an answer for a stale attempt", "peer", out.peer, "task", id.Short(), "attempt", attempt, "pending", c.attempt)
	} else {
		out.o.log.Debug("dropping an answer for an unknown or finished task", "peer", out.peer, "task", id.Short())
	}
	return nil
}

func (out *outStream) onAck(a *wire.Ack) {
	id, rej, err := decodeAck(a)
	if err != nil {
		out.o.stats.malformed.Add(1)
		out.o.log.Debug("dropping a bad ack", "peer", out.peer, "err", err)
		return
	}
	if rej != nil {
		if c := out.take(id, a.Attempt); c != nil {
			c.finish(nil, rej)
		}
		return
	}
	out.mu.Lock()
	out.heard = out.checks
	c, ok := out.pending[id]
	match := ok && (a.Attempt == 0 || a.Attempt == c.attempt)
	if match {
		c.heard = out.checks
		c.acked.Store(true)
	}
	out.mu.Unlock()
	if !match {
		out.o.stats.dropped.Add(1)
		out.o.log.Debug("dropping an ack for an unknown task or another attempt", "peer", out.peer, "task", id.Short(), "attempt", a.Attempt)
	}
}

func (out *outStream) onResult(r *wire.Result) {
	res := &out.res
	defer func() { *res = RemoteResult{} }() // done has copied what it keeps; pin nothing
	ok, err := decodeResult(r, out.peer, res)
	if !ok {
		out.o.stats.malformed.Add(1)
		out.o.log.Debug("dropping a bad result", "peer", out.peer, "err", err)
		return
	}
	c := out.take(res.ID, r.Attempt)
	if c == nil {
		return
	}
	if err != nil {
		out.o.stats.malformed.Add(1)
		out.o.log.Debug("peer sent an invalid result", "peer", out.peer, "task", res.ID.Short(), "err", err)
		c.finish(nil, err)
		return
	}
	c.finish(res, nil)
}

// fail ends the stream: every pending call gets cause, the stream is
// reset and forgotten, and the next Delegate to the peer opens a new one.
// It is idempotent.
func (out *outStream) fail(cause error) {
	select {
	case <-out.ready:
	default:
		// Still opening, so no call is pending: open sees the
		// orchestrator closed, or fails by itself.
		return
	}
	out.o.removeOut(out)
	out.mu.Lock()
	if out.dead && out.s == nil {
		out.mu.Unlock()
		return
	}
	wasDead := out.dead
	out.dead = true
	pending := out.pending
	out.pending = make(map[TaskID]*call)
	out.stopTimersLocked()
	out.mu.Unlock()
	for _, c := range pending {
		c.finish(nil, cause)
	}
	if len(pending) > 0 && !errors.Is(cause, ErrClosed) {
		out.o.log.Debug("task stream to peer failed with tasks pending", "peer", out.peer, "tasks", len(pending), "cause", cause)
	}
	if wasDead {
		return
	}
	out.fw.close()
	close(out.done)
	resetStream(out.s)
}

// idle reports whether the stream has had no call for the outbound idle
// timeout, or is on a relayed connection with nothing pending while a
// direct one exists; the janitor calls it once per sweep period.
func (out *outStream) idle() bool {
	select {
	case <-out.ready:
	default:
		return false
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if out.s != nil && len(out.pending) == 0 && out.s.Conn().Stat().Limited && !IsRelayed(out.o.host, out.peer) {
		return true // relayed, and a direct connection came since: reopen over it
	}
	if len(out.pending) > 0 || out.calls != out.idleMark {
		out.idleMark, out.idleSince = out.calls, 0
		return false
	}
	out.idleSince++
	return time.Duration(out.idleSince)*out.o.sweepPeriod() >= out.o.cfg.outIdle
}
