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
	streams  int // guarded by Orchestrator.mu
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
	hbIDs      []TaskID      // the writer's: tasks listed in a heartbeat

	mu    sync.Mutex
	tasks map[TaskID]*inTask // admitted and not yet replied; nil once dead
	dead  bool
	// Admitted tasks whose ack is held back, until ackTimer fires.
	deferred []*inTask
	ackSpare []*inTask // a spent deferred list, for reuse
	ackArmed bool
	ackTimer *time.Timer

	idleMark  uint64 // janitor only
	idleSince int

	strs strCache // the reader's
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

// inTask is one admitted task; its reply method is what HandleTask gets.
type inTask struct {
	task    RemoteTask // what HandleTask gets, allocated along with the rest
	st      *inStream
	id      TaskID
	state   atomic.Int32
	replied atomic.Bool
	early   *[]byte // the result frame, when reply came first
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
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.closed {
		return nil, ErrClosed
	}
	ip := o.inPeers[from]
	if ip == nil {
		ip = &inPeer{lim: rate.NewLimiter(o.cfg.peerRate, o.cfg.peerBurst)}
		o.inPeers[from] = ip
	}
	if ip.streams >= o.cfg.maxStreamsPerPeer {
		return nil, fmt.Errorf("%w (max %d)", errTooManyStreams, o.cfg.maxStreamsPerPeer)
	}
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
	}
}

// heartbeat queues TaskHeartbeat frames listing the tasks accepted from
// this stream and not yet answered; it queues nothing when there are none.
// Tasks whose HandleTask has not returned are left out: their ack follows.
// It runs on the writer's goroutine, once per heartbeat interval.
func (st *inStream) heartbeat() {
	ids := st.hbIDs[:0]
	st.mu.Lock()
	for id, it := range st.tasks {
		if it.state.Load() == taskAcked {
			ids = append(ids, id)
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
	if cap(ids) > 1024 && cap(ids) > 4*len(ids) {
		ids = nil // a burst is over: do not pin its memory
	}
	st.hbIDs = ids
}

func (st *inStream) readLoop() {
	defer st.o.wg.Done()
	r := wire.NewReader(st.s, st.o.cfg.maxMsg)
	r.SetFrameTimeout(st.s, st.o.cfg.frameTimeout)
	var env envelope
	for {
		frame, err := r.ReadFrame()
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, network.ErrReset) {
				st.o.log.Debug("resetting task stream after a bad frame", "peer", st.from, "err", err)
			}
			st.fail(fmt.Errorf("read task stream: %w", err))
			return
		}
		st.msgs.Add(1)
		if err = decodeEnvelope(frame, &env); err == nil {
			switch env.kind {
			case envRequest:
				err = st.onRequest(&env)
			case envCancel:
				err = st.onCancel(&env)
			default:
				err = fmt.Errorf("%w: unexpected envelope body %d on an incoming task stream", errInvalidMessage, env.kind)
			}
		}
		if err != nil {
			st.o.log.Debug("resetting task stream after a bad frame", "peer", st.from, "err", err)
			st.fail(err)
			return
		}
	}
}

// onRequest admits or rejects one request. It returns an error only when
// the stream must be reset.
func (st *inStream) onRequest(e *envelope) error {
	id, err := TaskIDFromBytes(e.taskID)
	if err != nil {
		return fmt.Errorf("%w: request task ID of %d bytes", errInvalidMessage, len(e.taskID))
	}
	o := st.o
	if o.draining.Load() {
		return st.reject(&id, &RejectError{Reason: RejectShuttingDown, Message: "node is shutting down"})
	}
	if !st.peer.lim.Allow() { // before anything else costs us
		return st.reject(&id, &RejectError{Reason: RejectRateLimited, Message: "request rate limit", RetryAfter: o.retryAfter()})
	}
	it := &inTask{st: st, id: id}
	t := &it.task
	if reason, err := decodeRequest(e, &st.strs, time.Now(), t); err != nil {
		return st.reject(&id, &RejectError{Reason: reason, Message: err.Error()})
	}
	if o.handler == nil {
		return st.reject(&id, &RejectError{Reason: RejectUnknownSkill, Message: "this node runs no tasks"})
	}
	if int(st.peer.inflight.Add(1)) > o.cfg.maxInFlight {
		st.peer.inflight.Add(-1)
		return st.reject(&id, &RejectError{Reason: RejectRateLimited, Message: fmt.Sprintf("%d tasks in flight already", o.cfg.maxInFlight), RetryAfter: o.retryAfter()})
	}
	if err := st.track(it); err != nil {
		st.peer.inflight.Add(-1)
		if errors.Is(err, errDuplicate) {
			return st.reject(&id, &RejectError{Reason: RejectMalformed, Message: err.Error()})
		}
		return err
	}
	if err := o.handler.HandleTask(st.from, t, it.reply); err != nil {
		return st.rejected(it, err)
	}
	// A result that is ready already answers the request by itself.
	if it.state.Load() != taskEarly {
		if o.cfg.ackDelay > 0 {
			if it.state.CompareAndSwap(taskHandling, taskDeferred) {
				return st.deferAck(it)
			}
		} else {
			if err := st.pushAck(&id, nil); err != nil {
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
		*f = appendAckFrame((*f)[:0], &it.id, nil)
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
		st.peer.inflight.Add(-1)
	}
	if !it.state.CompareAndSwap(taskHandling, taskRejected) {
		st.o.log.Warn("task handler replied to a task it rejected; dropping the result", "task", it.id.Short())
		putFrame(it.early)
	}
	var rej *RejectError
	if !errors.As(err, &rej) {
		rej = &RejectError{Reason: RejectUnspecified, Message: err.Error()}
	}
	return st.reject(&it.id, rej)
}

// retryAfter is the hint sent with a rate-limit rejection: the time one
// token takes to come back.
func (o *Orchestrator) retryAfter() time.Duration {
	if o.cfg.peerRate == rate.Inf || o.cfg.peerRate <= 0 {
		return 10 * time.Millisecond
	}
	return max(time.Duration(float64(time.Second)/float64(o.cfg.peerRate)), time.Millisecond)
}

func (st *inStream) reject(id *TaskID, rej *RejectError) error {
	return st.pushAck(id, rej)
}

// pushAck queues an ack. If the peer is not reading what we send, the
// reader stops reading its requests too, and gives up after the write
// timeout.
func (st *inStream) pushAck(id *TaskID, rej *RejectError) error {
	f := getFrame()
	*f = appendAckFrame((*f)[:0], id, rej)
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

func (st *inStream) onCancel(e *envelope) error {
	id, err := TaskIDFromBytes(e.taskID)
	if err != nil {
		return fmt.Errorf("%w: cancel task ID of %d bytes", errInvalidMessage, len(e.taskID))
	}
	st.mu.Lock()
	_, ok := st.tasks[id]
	st.mu.Unlock()
	if ok {
		st.o.handler.CancelTask(st.from, id)
	}
	return nil
}

func (st *inStream) track(it *inTask) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.dead {
		return errWriterClosed
	}
	if _, dup := st.tasks[it.id]; dup {
		return fmt.Errorf("task %s: %w", it.id.Short(), errDuplicate)
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

// reply is the callback HandleTask gets: it sends the result back on the
// stream the request came on, or drops it if that stream died. Calls
// after the first are ignored.
func (it *inTask) reply(r *RemoteResult) {
	if r == nil || it.replied.Swap(true) {
		return
	}
	st := it.st
	st.untrack(it)
	st.peer.inflight.Add(-1)
	f := getFrame()
	*f = appendResultFrame((*f)[:0], &it.id, r, st.o.selfBytes)
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
func (st *inStream) fail(cause error) {
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
	resetStream(st.s)
	if len(tasks) > 0 && o.handler != nil {
		o.log.Debug("task stream ended with tasks running; abandoning them", "peer", st.from, "tasks", len(tasks), "cause", cause)
		ab, _ := o.handler.(TaskAbandoner)
		for id, it := range tasks {
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
