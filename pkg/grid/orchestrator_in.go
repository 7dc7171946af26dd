package grid

import (
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// errTooManyStreams is why a peer's extra task stream is reset.
var errTooManyStreams = errors.New("too many task streams from one peer")

// inPeer is the admission state of one remote peer, shared by its
// incoming streams and kept (for its rate limiter's sake) until the
// janitor finds it unused.
type inPeer struct {
	lim      *rate.Limiter
	inflight atomic.Int32
	bytes    atomic.Int64 // input and unwritten output bytes held here
	streams  int          // guarded by Orchestrator.mu

	// The peer's limits, as the policy last gave them.
	maxTasks atomic.Int64
	maxBytes atomic.Int64
	askedAt  atomic.Int64 // unix nanoseconds of the last answer
}

// setLimits applies l, the policy's answer at now.
func (ip *inPeer) setLimits(l PeerLimits, now time.Time) {
	if ip.lim.Limit() != l.Rate {
		ip.lim.SetLimitAt(now, l.Rate)
	}
	if ip.lim.Burst() != l.Burst {
		ip.lim.SetBurstAt(now, l.Burst)
	}
	ip.maxTasks.Store(int64(l.MaxTasks))
	ip.maxBytes.Store(l.MaxBytes)
	ip.askedAt.Store(now.UnixNano())
}

// charge adds n bytes to what the peer, and so the node, holds.
func (st *inStream) charge(n int64) {
	st.peer.bytes.Add(n)
	st.o.nodeBytes.Add(n)
}

// inStream is a task stream a peer opened to this node: requests and
// cancels come in, acks and results go back.
type inStream struct {
	o    *Orchestrator
	s    network.Stream
	from peer.ID
	peer *inPeer
	fw   *frameWriter
	done chan struct{} // closed by fail: stops the writer
	msgs atomic.Uint64 // frames read, for the idle check

	writerDone chan struct{} // closed when the writer has returned
	hbIDs      [][]byte      // the writer's: tasks listed in a heartbeat

	// Half-close: once the peer has closed its side (eof), the stream is
	// closed when no task is left and no reply is being queued.
	eof       atomic.Bool
	answering atomic.Int32 // replies between leaving tasks and queuing their result

	mu        sync.Mutex
	tasks     map[TaskID]*inTask // admitted and not yet replied; nil once dead
	dead      bool
	finishing bool // every task answered after eof: the writer flushes and closes
	// Admitted tasks whose ack is held back, until ackTimer fires.
	deferred []*inTask
	ackSpare []*inTask // a spent deferred list, for reuse
	ackArmed bool
	ackTimer *time.Timer

	idleMark  uint64 // janitor only
	idleSince int

	strs strCache     // the reader's
	r    *wire.Reader // the reader's
}

// inTask states: the order of HandleTask returning and reply being called
// decides who sends the result, so that the ack always goes first.
const (
	taskHandling int32 = iota // HandleTask has not returned
	taskAcked                 // accepting ack queued; reply sends the result
	taskRejected              // rejecting ack queued; a result is dropped
	taskEarly                 // reply came first; the reader sends it (without an ack if it can)
	taskDeferred              // admitted, its ack held back (see WithAckDelay)
	taskAnswered              // reply came while the ack was held back: the result went alone
)

// inTask is one admitted task; its Reply method is what HandleTask gets.
type inTask struct {
	task    RemoteTask // what HandleTask gets, allocated along with the rest
	st      *inStream
	id      TaskID
	attempt uint32 // the request's, echoed in its ack and result
	charged int64  // input bytes charged to the peer and the node
	state   atomic.Int32
	replied atomic.Bool
	early   *[]byte // the result frame, when reply came first
	prog    atomic.Pointer[progressOut]
}

// handleStream serves one incoming task stream until it fails or closes.
func (o *Orchestrator) handleStream(s network.Stream) {
	from := s.Conn().RemotePeer()
	if err := s.Scope().SetService(taskServiceName); err != nil {
		o.log.Debug("cannot attach task stream to its service", "peer", from, "err", err)
		resetStream(s)
		return
	}
	st, err := o.addInStream(s, from)
	if err != nil {
		o.log.Debug("refusing task stream", "peer", from, "err", err)
		resetStream(s)
		return
	}
	o.streamsAccepted.Add(1)
	go st.writeLoop()
	st.readLoop()
}

func (o *Orchestrator) addInStream(s network.Stream, from peer.ID) (*inStream, error) {
	limits, now := o.cfg.policy.PeerLimits(from), time.Now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	ip := o.inPeers[from]
	if ip == nil {
		ip = &inPeer{lim: rate.NewLimiter(limits.Rate, limits.Burst)}
		o.inPeers[from] = ip
	}
	if ip.streams >= o.cfg.maxStreamsPerPeer {
		return nil, fmt.Errorf("%w (max %d)", errTooManyStreams, o.cfg.maxStreamsPerPeer)
	}
	ip.setLimits(limits, now)
	ip.streams++
	st := &inStream{
		o:     o,
		s:     s,
		from:  from,
		peer:  ip,
		fw:    newFrameWriter(s, o.cfg.writeTimeout),
		done:  make(chan struct{}),
		tasks: make(map[TaskID]*inTask),

		writerDone: make(chan struct{}),
	}
	st.fw.account = st.charge
	o.in[st] = struct{}{}
	o.wg.Add(2)
	return st, nil
}

// writeLoop runs the stream's writer, with the heartbeat ticker. After a
// flush Close asked for, it half-closes the stream: the peer reads every
// frame sent, then EOF, even though Close resets the stream right after.
func (st *inStream) writeLoop() {
	defer st.o.wg.Done()
	defer close(st.writerDone)
	tick := time.NewTicker(st.o.cfg.heartbeat)
	defer tick.Stop()
	err := st.fw.run(st.done, tick.C, st.heartbeat)
	if err != nil {
		st.fail(fmt.Errorf("write task stream: %w", err))
		return
	}
	if st.fw.flushing.Load() {
		_ = st.s.CloseWrite()
		st.mu.Lock()
		finishing := st.finishing
		st.mu.Unlock()
		if finishing {
			st.end(errHalfClosed, true)
		}
	}
}

// errHalfClosed is why a stream whose peer closed its side ends once every
// task on it is answered.
var errHalfClosed = errors.New("peer closed its side and every task is answered")

// maybeFinish starts closing the stream once the peer has closed its side
// and every task on it is answered: the writer sends what it holds, closes
// its side and ends the stream.
func (st *inStream) maybeFinish() {
	st.mu.Lock()
	ok := !st.dead && !st.finishing && len(st.tasks) == 0 && st.answering.Load() == 0
	if ok {
		st.finishing = true
	}
	st.mu.Unlock()
	if ok {
		st.flushAcks()
		st.fw.startFlush(time.Now().Add(st.o.cfg.writeTimeout))
	}
}

// answered ends a reply begun with answering.Add(1), once its result is
// queued.
func (st *inStream) answered() {
	if st.answering.Add(-1) == 0 && st.eof.Load() {
		st.maybeFinish()
	}
}

// heartbeat queues TaskHeartbeat frames listing the tasks accepted from
// this stream and not yet answered; it queues nothing when there are none.
// Tasks whose HandleTask has not returned are left out: their ack follows.
// It runs on the writer's goroutine, once per heartbeat interval.
func (st *inStream) heartbeat() {
	ids := st.hbIDs[:0]
	st.mu.Lock()
	for _, it := range st.tasks {
		if it.state.Load() == taskAcked {
			ids = append(ids, it.id[:])
		}
	}
	st.mu.Unlock()
	interval := uint32(st.o.cfg.heartbeat.Milliseconds())
	for rest := ids; len(rest) > 0; {
		n := min(len(rest), maxHeartbeatIDs)
		f := getFrame()
		*f = appendHeartbeatFrame((*f)[:0], rest[:n], interval)
		if _, err := st.fw.enqueue(f); err != nil {
			break
		}
		rest = rest[n:]
	}
	clear(ids) // do not pin the tasks
	if cap(ids) > 1024 && cap(ids) > 4*len(ids) {
		ids = nil // a burst is over: do not pin its memory
	}
	st.hbIDs = ids
}

func (st *inStream) readLoop() {
	defer st.o.wg.Done()
	o := st.o
	r := wire.NewReader(st.s, o.cfg.maxMsg)
	r.SetFrameTimeout(st.s, o.cfg.frameTimeout)
	r.SetReserve(st.reserveFrame, st.releaseFrame)
	defer r.ReleaseFrame()
	st.r = r
	var env wire.Envelope
	for {
		frame, err := r.ReadFrame()
		if err != nil {
			switch {
			case errors.Is(err, io.EOF):
				// Half-closed: the answers still go out.
				st.eof.Store(true)
				st.maybeFinish()
				return
			case errors.Is(err, wire.ErrFrameRefused):
				o.log.Debug("resetting task stream: no memory for the frame arriving on it", "peer", st.from, "err", err)
			case !errors.Is(err, network.ErrReset):
				o.log.Debug("resetting task stream after a bad frame", "peer", st.from, "err", err)
			}
			st.fail(fmt.Errorf("read task stream: %w", err))
			return
		}
		st.msgs.Add(1)
		err = wire.DecodeEnvelope(frame, &env)
		if env.Unknown > 0 {
			o.stats.unknown.Add(uint64(env.Unknown))
		}
		switch {
		case err != nil:
			err = st.onMalformed(&env, err)
		case env.Kind == wire.KindRequest:
			err = st.onRequest(&env.Request)
		case env.Kind == wire.KindCancel:
			st.onCancel(&env.Cancel)
		case env.Kind == wire.KindNone:
			if env.Unknown == 0 {
				o.stats.unknown.Add(1) // an empty envelope
			}
			o.log.Debug("skipping a task message of a type this version does not know", "peer", st.from)
		default:
			o.stats.dropped.Add(1)
			o.log.Debug("dropping a task message only an executor sends", "peer", st.from, "kind", env.Kind)
		}
		r.ReleaseFrame()
		if len(frame) > bigFrame {
			env = wire.Envelope{} // do not pin the frame while the stream idles
		}
		if err != nil {
			// Only a failure to queue an answer gets here.
			st.fail(err)
			return
		}
	}
}

// bigFrame is the frame size above which the reader's buffer is the
// frame's own (see wire.Reader): the reader charges it while it arrives and
// drops every reference to it once handled.
const bigFrame = 64 << 10

// frameReservePriority is the resource-manager priority of a frame's
// memory. It is ReservationPriorityAlways because go-libp2p's default
// stream and protocol-peer scopes hold 16 MiB, the size of the largest
// frame: any lower priority (a share of the scope) would refuse every
// task input over 6.4 MiB (low) to 12.8 MiB (high) on a default host. The
// system scope, which network.resources.max_memory_mb sets, still bounds
// all of them together, and the node byte budget comes first.
const frameReservePriority = network.ReservationPriorityAlways

// reserveFrame charges n bytes of a frame arriving on the stream, before
// the reader allocates them, to the node's byte budget and to the
// stream's resource-manager scope. Its error makes the reader refuse the
// frame, which resets the stream: a framing-level refusal, charged to no
// one's trust.
func (st *inStream) reserveFrame(n int) error {
	o := st.o
	if held := o.nodeBytes.Add(int64(n)); held > o.cfg.nodeBudget {
		o.nodeBytes.Add(-int64(n))
		return fmt.Errorf("this node's byte budget of %d is spent", o.cfg.nodeBudget)
	}
	if err := st.s.Scope().ReserveMemory(n, frameReservePriority); err != nil {
		o.nodeBytes.Add(-int64(n))
		return fmt.Errorf("resource manager: %w", err)
	}
	return nil
}

// releaseFrame gives back what reserveFrame charged.
func (st *inStream) releaseFrame(n int) {
	st.s.Scope().ReleaseMemory(n)
	st.o.nodeBytes.Add(-int64(n))
}

// usableID returns b as a task ID an answer can name: 32 bytes. (A zero
// ID is named in its rejection, and refused as malformed.)
func usableID(b []byte) (TaskID, bool) {
	id, err := TaskIDFromBytes(b)
	return id, err == nil
}

// onMalformed drops a frame that did not decode; a request whose task ID
// came through is rejected as malformed.
func (st *inStream) onMalformed(e *wire.Envelope, cause error) error {
	st.o.stats.malformed.Add(1)
	st.o.log.Debug("dropping a task message that does not decode", "peer", st.from, "err", cause)
	if e.Kind != wire.KindRequest {
		return nil
	}
	id, ok := usableID(e.Request.TaskID)
	if !ok {
		return nil
	}
	return st.reject(&id, e.Request.Attempt, &RejectError{Reason: RejectMalformed, Message: cause.Error()})
}

// onRequest admits or rejects one request. It returns an error only when
// the stream must be reset: its answer could not be queued.
func (st *inStream) onRequest(req *wire.Request) error {
	o := st.o
	id, ok := usableID(req.TaskID)
	if !ok {
		o.stats.malformed.Add(1)
		o.log.Debug("dropping a task request without a usable task ID", "peer", st.from, "id_bytes", len(req.TaskID))
		return nil
	}
	attempt := req.Attempt
	if o.draining.Load() {
		return st.reject(&id, attempt, &RejectError{Reason: RejectShuttingDown, Message: "node is shutting down"})
	}
	now := time.Now()
	st.refreshLimits(now)
	if !st.peer.lim.AllowN(now, 1) { // before anything else costs us
		return st.reject(&id, attempt, &RejectError{Reason: RejectRateLimited, Message: "request rate limit", RetryAfter: st.rateRetry()})
	}
	it := &inTask{st: st, id: id, attempt: attempt}
	t := &it.task
	reason, err := decodeRequest(req, &st.strs, now, st.from, t)
	st.r.ReleaseFrame() // t holds a copy of the input: admit charges that
	t.in = it
	if err != nil {
		if reason == RejectMalformed {
			o.stats.malformed.Add(1)
		}
		return st.reject(&id, attempt, &RejectError{Reason: reason, Message: err.Error()})
	}
	if o.handler == nil {
		return st.reject(&id, attempt, &RejectError{Reason: RejectUnknownSkill, Message: "this node runs no tasks"})
	}
	if rej := st.admit(it); rej != nil {
		return st.reject(&id, attempt, rej)
	}
	if err := st.track(it); err != nil {
		st.release(it)
		if errors.Is(err, errDuplicate) {
			return st.reject(&id, attempt, &RejectError{Reason: RejectDuplicate, Message: err.Error()})
		}
		return err
	}
	if err = o.handler.HandleTask(st.from, t, it); err != nil {
		return st.rejected(it, err)
	}
	// A result that is ready already answers the request by itself.
	if it.state.Load() != taskEarly {
		if o.cfg.ackDelay > 0 {
			if it.state.CompareAndSwap(taskHandling, taskDeferred) {
				return st.deferAck(it)
			}
		} else {
			if err := st.pushAck(&id, attempt, nil); err != nil {
				return err
			}
			if it.state.CompareAndSwap(taskHandling, taskAcked) {
				return nil
			}
		}
	}
	_, err = st.fw.push(it.early)
	return err
}

// refreshLimits asks the policy for the peer's limits again if its last
// answer is over policyRefresh old.
func (st *inStream) refreshLimits(now time.Time) {
	ip := st.peer
	at := ip.askedAt.Load()
	if now.UnixNano()-at < int64(policyRefresh) || !ip.askedAt.CompareAndSwap(at, now.UnixNano()) {
		return
	}
	ip.setLimits(st.o.cfg.policy.PeerLimits(st.from), now)
}

// admit charges it to the peer's and the node's budgets, or returns why
// it does not fit.
func (st *inStream) admit(it *inTask) *RejectError {
	o, ip := st.o, st.peer
	n := int64(len(it.task.Input))
	maxTasks, maxBytes := ip.maxTasks.Load(), ip.maxBytes.Load()
	if n > maxBytes || n > o.cfg.nodeBudget {
		return &RejectError{Reason: RejectTooLarge, Message: fmt.Sprintf(
			"input of %d bytes is more than this node lets you hold at once (%d bytes)", n, min(maxBytes, o.cfg.nodeBudget))}
	}
	if tasks := int64(ip.inflight.Add(1)); tasks > maxTasks {
		ip.inflight.Add(-1)
		return &RejectError{Reason: RejectOverBudget, RetryAfter: overBudgetRetry, Message: fmt.Sprintf(
			"%d of your tasks are running here already (max %d)", tasks-1, maxTasks)}
	}
	if held := ip.bytes.Add(n); held > maxBytes {
		ip.bytes.Add(-n)
		ip.inflight.Add(-1)
		return &RejectError{Reason: RejectOverBudget, RetryAfter: overBudgetRetry, Message: fmt.Sprintf(
			"%d bytes of yours are held here already; %d more is over your budget of %d", held-n, n, maxBytes)}
	}
	if held := o.nodeBytes.Add(n); held > o.cfg.nodeBudget {
		o.nodeBytes.Add(-n)
		ip.bytes.Add(-n)
		ip.inflight.Add(-1)
		return &RejectError{Reason: RejectOverBudget, RetryAfter: overBudgetRetry, Message: fmt.Sprintf(
			"this node's byte budget of %d is spent", o.cfg.nodeBudget)}
	}
	it.charged = n
	return nil
}

// release gives back what admit charged for it.
func (st *inStream) release(it *inTask) {
	st.peer.inflight.Add(-1)
	if it.charged != 0 {
		st.charge(-it.charged)
	}
}

// deferAck holds back the ack of it, which is in taskDeferred, for up to
// the ack delay: a result that comes first answers the request alone. If
// the peer is not reading what we send, the reader waits, as in pushAck.
func (st *inStream) deferAck(it *inTask) error {
	st.mu.Lock()
	if st.dead {
		st.mu.Unlock()
		return errWriterClosed
	}
	st.deferred = append(st.deferred, it)
	if !st.ackArmed {
		st.ackArmed = true
		if st.ackTimer == nil {
			st.ackTimer = time.AfterFunc(st.o.cfg.ackDelay, st.flushAcks)
		} else {
			st.ackTimer.Reset(st.o.cfg.ackDelay)
		}
	}
	st.mu.Unlock()
	if st.fw.queued() <= st.o.cfg.maxQueuedAcks {
		return nil
	}
	return st.awaitSpace()
}

// flushAcks queues the acks held back for tasks that have not been
// answered meanwhile. A task is marked acked in the same critical section
// of the writer's queue that takes its ack, so that its result, which its
// reply pushes once it sees taskAcked, always follows its ack.
func (st *inStream) flushAcks() {
	st.mu.Lock()
	list := st.deferred
	st.deferred, st.ackSpare = st.ackSpare[:0], nil
	st.ackArmed = false
	st.mu.Unlock()
	queued := false
	for i, it := range list {
		list[i] = nil
		if it.state.Load() != taskDeferred {
			continue
		}
		f := getFrame()
		*f = appendAckFrame((*f)[:0], &it.id, it.attempt, nil)
		ok, err := st.fw.enqueueIf(f, func() bool { return it.state.CompareAndSwap(taskDeferred, taskAcked) })
		if err != nil {
			break // the stream is gone
		}
		queued = queued || ok
	}
	if queued {
		st.fw.signal()
	}
	st.mu.Lock()
	if st.ackSpare == nil {
		st.ackSpare = list[:0]
	}
	st.mu.Unlock()
}

// rejected handles HandleTask's refusal of it.
func (st *inStream) rejected(it *inTask, err error) error {
	if !it.replied.Swap(true) {
		st.untrack(it)
		st.release(it)
	}
	if !it.state.CompareAndSwap(taskHandling, taskRejected) {
		st.o.log.Warn("task handler replied to a task it rejected; dropping the result", "task", it.id.Short())
		putFrame(it.early)
	}
	var rej *RejectError
	if !errors.As(err, &rej) {
		rej = &RejectError{Reason: RejectUnspecified, Message: err.Error()}
	}
	return st.reject(&it.id, it.attempt, rej)
}

// rateRetry is the hint sent with a rate-limit rejection: the time one
// token takes to come back at the peer's rate.
func (st *inStream) rateRetry() time.Duration {
	r := st.peer.lim.Limit()
	if r == rate.Inf || r <= 0 {
		return 10 * time.Millisecond
	}
	return max(time.Duration(float64(time.Second)/float64(r)), time.Millisecond)
}

func (st *inStream) reject(id *TaskID, attempt uint32, rej *RejectError) error {
	return st.pushAck(id, attempt, rej)
}

// pushAck queues an ack. If the peer is not reading what we send, the
// reader stops reading its requests too, and gives up after the write
// timeout.
func (st *inStream) pushAck(id *TaskID, attempt uint32, rej *RejectError) error {
	f := getFrame()
	*f = appendAckFrame((*f)[:0], id, attempt, rej)
	n, err := st.fw.push(f)
	if err != nil || n <= st.o.cfg.maxQueuedAcks {
		return err
	}
	return st.awaitSpace()
}

// awaitSpace waits until at most maxQueuedAcks frames are queued, up to
// the write timeout.
func (st *inStream) awaitSpace() error {
	timer := time.NewTimer(st.o.cfg.writeTimeout)
	defer timer.Stop()
	for st.fw.queued() > st.o.cfg.maxQueuedAcks {
		select {
		case <-st.fw.space:
		case <-st.done:
			return errWriterClosed
		case <-timer.C:
			return fmt.Errorf("peer is not reading its acks: %d frames queued", st.fw.queued())
		}
	}
	return nil
}

// onCancel stops the task a cancel names, if it runs for this stream
// and the attempt matches (0 matches any).
func (st *inStream) onCancel(c *wire.Cancel) {
	id, ok := usableID(c.TaskID)
	if !ok {
		st.o.stats.malformed.Add(1)
		return
	}
	st.mu.Lock()
	it, ok := st.tasks[id]
	st.mu.Unlock()
	switch {
	case !ok:
		// Answered already, most likely: the cancel crossed the result.
	case c.Attempt != 0 && c.Attempt != it.attempt:
		st.o.stats.dropped.Add(1)
		st.o.log.Debug("dropping a cancel for another attempt", "peer", st.from, "task", id.Short(), "attempt", c.Attempt, "running", it.attempt)
	default:
		st.o.handler.CancelTask(st.from, id)
	}
}

// track registers it. The same task ID may run again only for a newer
// attempt, which then takes the old one's place here (the handler decides
// what to do with both); the same or an older attempt is a duplicate.
func (st *inStream) track(it *inTask) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.dead {
		return errWriterClosed
	}
	if old, dup := st.tasks[it.id]; dup && (it.attempt == 0 || it.attempt <= old.attempt) {
		return fmt.Errorf("task %s attempt %d: attempt %d is running here: %w", it.id.Short(), it.attempt, old.attempt, errDuplicate)
	}
	st.tasks[it.id] = it
	return nil
}

func (st *inStream) untrack(it *inTask) {
	st.mu.Lock()
	if st.tasks[it.id] == it {
		delete(st.tasks, it.id)
	}
	st.mu.Unlock()
}

// Reply is the callback HandleTask gets (it is the Replier itself): it
// sends the result back on the stream the request came on, or drops it if
// that stream died. Calls after the first are ignored.
func (it *inTask) Reply(r *RemoteResult) {
	if r == nil || it.replied.Swap(true) {
		return
	}
	st := it.st
	it.stopProgress()
	st.answering.Add(1)
	defer st.answered()
	st.untrack(it)
	st.release(it)
	if limit := min(wire.MaxTaskOutput, st.o.cfg.maxMsg-4<<10); len(r.Output) > limit {
		// A limit, not a fault of this node or the requester's: invalid
		// input, which is neither charged nor retried (as the executor
		// does for wire.MaxTaskOutput).
		st.o.log.Warn("task output over the wire limit; sending an invalid-input failure instead", "task", it.id.Short(), "bytes", len(r.Output), "max", limit)
		r = &RemoteResult{ErrorCode: CodeInvalidInput, ExecTime: r.ExecTime,
			ErrorMessage: fmt.Sprintf("output of %d bytes for this input is over the limit of %d bytes of one task result on this node; split the work into smaller tasks", len(r.Output), limit)}
	}
	f := getFrame()
	*f = appendResultFrame((*f)[:0], &it.id, it.attempt, r, st.o.selfBytes)
	it.early = f
	if it.state.CompareAndSwap(taskHandling, taskEarly) {
		return
	}
	// Its ack held back: the result answers the request alone.
	if !it.state.CompareAndSwap(taskDeferred, taskAnswered) && it.state.Load() != taskAcked {
		putFrame(f)
		return
	}
	if _, err := st.fw.push(f); err != nil {
		st.o.log.Debug("dropping result: its stream is gone", "peer", st.from, "task", it.id.Short())
	}
}

// fail ends the stream: it is reset, and tasks still running for it are
// stopped in the handler (see TaskAbandoner), since their results can no
// longer be sent. It is idempotent.
func (st *inStream) fail(cause error) { st.end(cause, false) }

// end is fail, or with graceful a close instead of a reset, for a stream
// whose frames have all been sent.
func (st *inStream) end(cause error, graceful bool) {
	st.mu.Lock()
	if st.dead {
		st.mu.Unlock()
		return
	}
	st.dead = true
	tasks := st.tasks
	st.tasks = nil
	st.deferred = nil
	if st.ackTimer != nil {
		st.ackTimer.Stop()
	}
	st.mu.Unlock()

	o := st.o
	o.mu.Lock()
	delete(o.in, st)
	st.peer.streams--
	o.mu.Unlock()
	st.fw.close()
	close(st.done)
	if graceful {
		_ = st.s.Close()
	} else {
		resetStream(st.s)
	}
	if len(tasks) > 0 && o.handler != nil {
		o.log.Debug("task stream ended with tasks running; abandoning them", "peer", st.from, "tasks", len(tasks), "cause", cause)
		ab, _ := o.handler.(TaskAbandoner)
		for id, it := range tasks {
			it.stopProgress()
			switch {
			case it.replied.Load():
				// Answered, or superseded by a request on another stream.
			case ab != nil:
				ab.AbandonTask(st.from, &it.task)
			default:
				o.handler.CancelTask(st.from, id)
			}
		}
	}
}

// TaskAbandoner is implemented by a TaskHandler that tells a task whose
// requester's connection was lost apart from one its requester canceled.
// When a task stream fails with tasks still running for it, the
// orchestrator calls AbandonTask for each of them if the handler
// implements it, and CancelTask otherwise.
type TaskAbandoner interface {
	// AbandonTask stops the task that request t (the one HandleTask got
	// from peer from) started: its result can no longer be delivered. It
	// leaves the task alone if it now answers a newer request for the same
	// ID (from re-sent it on another stream meanwhile). The stop must not
	// be remembered as the task's result: a later request for the same ID
	// runs it again.
	AbandonTask(from peer.ID, t *RemoteTask)
}

// idle reports whether the stream has had no frame and no running task
// for the inbound idle timeout; the janitor calls it once per sweep.
func (st *inStream) idle() bool {
	st.mu.Lock()
	running := len(st.tasks)
	st.mu.Unlock()
	msgs := st.msgs.Load()
	if running > 0 || msgs != st.idleMark {
		st.idleMark, st.idleSince = msgs, 0
		return false
	}
	st.idleSince++
	return time.Duration(st.idleSince)*st.o.sweepPeriod() >= st.o.cfg.inIdle
}
