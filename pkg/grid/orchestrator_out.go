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

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// errStale is returned by outStream.send when the stream died between
// lookup and registration; Orchestrator.send then looks the peer up again.
var errStale = errors.New("stream went away")

// errDuplicate is wrapped when a task ID is already pending with a peer.
var errDuplicate = errors.New("task already pending with this peer")

// call is one pending Delegate. Calls are pooled: the reader only reaches
// a call through its stream's pending map, and Delegate takes it out of
// the map before it returns the call to the pool.
type call struct {
	id    TaskID
	acked atomic.Bool
	ch    chan callEvent // cap 1: the one terminal event
	timer *time.Timer
	heard uint32 // guarded by the stream's mu: the lease check count when last heard of
}

// callEvent ends a call: a result, or an error (a *RejectError, or a
// failure wrapping ErrPeerGone or ErrClosed).
type callEvent struct {
	res *RemoteResult
	err error
}

var callPool = sync.Pool{New: func() any {
	t := time.NewTimer(time.Hour)
	t.Stop()
	return &call{ch: make(chan callEvent, 1), timer: t}
}}

func getCall(id TaskID) *call {
	c := callPool.Get().(*call)
	c.id = id
	c.acked.Store(false)
	return c
}

func putCall(c *call) {
	c.timer.Stop()
	callPool.Put(c)
}

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

	expired []TaskID // the writer's: tasks whose lease a check found expired
}

// Delegate sends t to p and waits for its result. It returns a
// *RejectError if p rejected the task, an error wrapping ErrAckTimeout if
// p did not ack in time, an error wrapping context.DeadlineExceeded if the
// result did not come by t.Deadline (plus a short grace for its trip), an
// error wrapping ErrPeerGone if p was unreachable or its stream failed, and
// one wrapping ErrLeaseExpired if p accepted the task and then stopped
// reporting it (see the leases in Orchestrator's doc). Canceling ctx sends
// a TaskCancel to p and returns ctx's error. t must not be modified during
// the call.
func (o *Orchestrator) Delegate(ctx context.Context, p peer.ID, t *RemoteTask) (*RemoteResult, error) {
	if err := validateOutgoing(t); err != nil {
		return nil, fmt.Errorf("delegate task to %s: %w", p, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("delegate task %s to %s: %w", t.ID.Short(), p, err)
	}
	f := getFrame()
	*f = appendRequestFrame((*f)[:0], t, o.requesterBytes(t.Requester))
	if len(*f) > o.cfg.maxMsg {
		err := fmt.Errorf("request frame of %d bytes (max %d): %w", len(*f), o.cfg.maxMsg, wire.ErrMessageTooLarge)
		putFrame(f)
		return nil, fmt.Errorf("delegate task %s to %s: %w", t.ID.Short(), p, err)
	}
	c := getCall(t.ID)
	out, err := o.send(ctx, p, c, f)
	if err != nil {
		putCall(c)
		return nil, fmt.Errorf("delegate task %s to %s: %w", t.ID.Short(), p, err)
	}
	res, err := out.wait(ctx, c, t.Deadline)
	putCall(c)
	if err != nil {
		return nil, fmt.Errorf("delegate task %s to %s: %w", t.ID.Short(), p, err)
	}
	return res, nil
}

// send registers c with the stream to p and queues its request frame f,
// taking ownership of f. A stream that dies in between is replaced.
func (o *Orchestrator) send(ctx context.Context, p peer.ID, c *call, f *[]byte) (*outStream, error) {
	for try := 0; ; try++ {
		out, err := o.stream(ctx, p)
		if err != nil {
			putFrame(f)
			return nil, err
		}
		err = out.send(c, f)
		if !errors.Is(err, errStale) {
			return out, err
		}
		if try == 2 {
			putFrame(f)
			return nil, fmt.Errorf("%w: %w", ErrPeerGone, err)
		}
	}
}

// requesterBytes returns the peer ID bytes of a task's requester, without
// allocating when it is this node.
func (o *Orchestrator) requesterBytes(p peer.ID) []byte {
	if p == o.self {
		return o.selfBytes
	}
	return []byte(p)
}

// stream returns the live stream to p, opening one if there is none.
func (o *Orchestrator) stream(ctx context.Context, p peer.ID) (*outStream, error) {
	o.mu.RLock()
	out, ok := o.out[p]
	closed := o.closed
	o.mu.RUnlock()
	if closed {
		return nil, ErrClosed
	}
	if !ok {
		var err error
		if out, err = o.newOutStream(p); err != nil {
			return nil, err
		}
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
	s, err := o.host.NewStream(ctx, out.peer, wire.ProtocolTask)
	cancel()
	if err == nil {
		if err = s.Scope().SetService(taskServiceName); err != nil {
			resetStream(s)
		}
	}
	if err != nil {
		out.openErr = fmt.Errorf("%w: open task stream: %w", ErrPeerGone, err)
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
// unless it returns errStale.
func (out *outStream) send(c *call, f *[]byte) error {
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
	out.mu.Unlock()
	// If the stream died after registration, fail has given c its error,
	// which wait picks up.
	_, _ = out.fw.push(f)
	return nil
}

// wait waits for c's terminal event, ctx, the ack timeout, or the task's
// deadline plus the grace for the result's trip back, whichever is first.
func (out *outStream) wait(ctx context.Context, c *call, deadline time.Time) (*RemoteResult, error) {
	now := time.Now()
	ackBy := now.Add(out.o.cfg.ackTimeout)
	resultBy := deadline.Add(out.o.cfg.resultGrace)
	c.timer.Reset(min(ackBy.Sub(now), resultBy.Sub(now)))
	for {
		select {
		case ev := <-c.ch:
			return ev.res, ev.err
		case <-ctx.Done():
			return out.abandon(c, ctx.Err())
		case <-c.timer.C:
			now = time.Now()
			if !now.Before(resultBy) {
				return out.abandon(c, fmt.Errorf("no result by the task deadline: %w", context.DeadlineExceeded))
			}
			if !c.acked.Load() {
				return out.abandon(c, ErrAckTimeout)
			}
			c.timer.Reset(resultBy.Sub(now))
		}
	}
}

// abandon gives up on c with err and tells the peer to cancel the task.
// If c's terminal event won the race, abandon returns that instead.
func (out *outStream) abandon(c *call, err error) (*RemoteResult, error) {
	out.mu.Lock()
	_, ok := out.pending[c.id]
	if ok {
		delete(out.pending, c.id)
	}
	out.mu.Unlock()
	if !ok {
		ev := <-c.ch
		return ev.res, ev.err
	}
	f := getFrame()
	*f = appendCancelFrame((*f)[:0], &c.id)
	if _, pushErr := out.fw.push(f); pushErr != nil {
		out.o.log.Debug("cannot send task cancel", "peer", out.peer, "task", c.id.Short(), "err", pushErr)
	}
	return nil, err
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
	defer out.o.wg.Done()
	r := wire.NewReader(out.s, out.o.cfg.maxMsg)
	var env envelope
	for {
		frame, err := r.ReadFrame()
		if err != nil {
			out.fail(fmt.Errorf("%w: read task stream: %w", ErrPeerGone, err))
			return
		}
		if err = decodeEnvelope(frame, &env); err == nil {
			switch env.kind {
			case envAck:
				err = out.onAck(&env)
			case envResult:
				err = out.onResult(&env)
			case envHeartbt:
				err = out.onHeartbeat(&env)
			default:
				err = fmt.Errorf("%w: unexpected envelope body %d on an outgoing task stream", errInvalidMessage, env.kind)
			}
		}
		if err != nil {
			out.o.log.Debug("peer sent a bad frame", "peer", out.peer, "err", err)
			out.fail(fmt.Errorf("%w: %w", ErrPeerGone, err))
			return
		}
	}
}

func (out *outStream) onAck(e *envelope) error {
	id, rej, err := decodeAck(e)
	if err != nil {
		return err
	}
	out.mu.Lock()
	out.heard = out.checks
	c, ok := out.pending[id]
	if ok {
		c.heard = out.checks
		if rej != nil {
			delete(out.pending, id)
			c.ch <- callEvent{err: rej}
		} else {
			c.acked.Store(true)
		}
	}
	out.mu.Unlock()
	return nil
}

func (out *outStream) onResult(e *envelope) error {
	res, err := decodeResult(e, out.peer)
	if err != nil {
		return err
	}
	out.mu.Lock()
	out.heard = out.checks
	c, ok := out.pending[res.ID]
	if ok {
		delete(out.pending, res.ID)
		c.ch <- callEvent{res: res}
	}
	out.mu.Unlock()
	if !ok {
		out.o.log.Debug("dropping result for an unknown or finished task", "peer", out.peer, "task", res.ID.Short())
	}
	return nil
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
	for _, c := range pending {
		c.ch <- callEvent{err: cause}
	}
	out.mu.Unlock()
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
// timeout; the janitor calls it once per sweep period.
func (out *outStream) idle() bool {
	select {
	case <-out.ready:
	default:
		return false
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	if len(out.pending) > 0 || out.calls != out.idleMark {
		out.idleMark, out.idleSince = out.calls, 0
		return false
	}
	out.idleSince++
	return time.Duration(out.idleSince)*out.o.sweepPeriod() >= out.o.cfg.outIdle
}
