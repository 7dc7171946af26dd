package grid

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// ErrPeerGone is wrapped by Delegate's error when the peer could not be
// reached, or its stream or connection failed while the task was pending.
// The task's fate on that peer is unknown; the caller should move on.
var ErrPeerGone = errors.New("peer gone")

// ErrLeaseExpired is wrapped by Delegate's error when the peer accepted
// the task and then went quiet about it for the lease (WithLeaseMisses
// heartbeat intervals) while its connection stayed up. Alone, it means the
// peer is alive (its heartbeats arrive) but no longer reports the task: it
// lost or dropped it. Together with ErrPeerGone, it means nothing at all
// came on the peer's task stream for the lease: the peer is unreachable or
// hung, and the stream was reset. Either way a TaskCancel went out and the
// caller should move the task elsewhere.
var ErrLeaseExpired = errors.New("task lease expired")

// ErrAckTimeout is wrapped by Delegate's error when the peer did not
// answer the request with a TaskAck within the ack timeout.
var ErrAckTimeout = errors.New("no ack from peer")

// Orchestrator defaults.
const (
	DefaultAckTimeout         = 10 * time.Second
	DefaultPeerRate           = rate.Limit(20000)
	DefaultPeerBurst          = 5000
	DefaultMaxInFlightPerPeer = 4096
	DefaultHeartbeatInterval  = 5 * time.Second
	DefaultLeaseMisses        = 3
	DefaultAckDelay           = time.Millisecond
	// DefaultPeerMaxBytes is a peer's byte budget here when no PeerPolicy
	// says otherwise.
	DefaultPeerMaxBytes = 256 << 20
	// DefaultNodeByteBudget is the byte budget of every peer together.
	DefaultNodeByteBudget = 1 << 30
)

// overBudgetRetry is the retry hint of an over-budget rejection: budgets
// free up as tasks finish, which the executor cannot foresee.
const overBudgetRetry = time.Second

// policyRefresh is how often, at most, a peer's limits are asked again of
// the PeerPolicy while it keeps sending.
const policyRefresh = time.Second

// Bounds of the heartbeat options. A peer that declares a longer interval
// than maxHeartbeatInterval is held to maxHeartbeatInterval.
const (
	minHeartbeatInterval = 10 * time.Millisecond
	maxHeartbeatInterval = time.Minute
	maxLeaseMisses       = 100
	minMaxMessageSize    = 1024
)

// taskServiceName is the resource-manager service of task streams.
const taskServiceName = "cortex.task"

// OrchestratorOption configures NewOrchestrator.
type OrchestratorOption func(*orchConfig)

type orchConfig struct {
	maxMsg       int
	frameTimeout time.Duration
	ackTimeout   time.Duration
	ackDelay     time.Duration
	policy       PeerPolicy
	nodeBudget   int64
	registerer   prometheus.Registerer
	heartbeat    time.Duration
	leaseMisses  int
	logger       *slog.Logger

	resultGrace       time.Duration // how long past a task's deadline Delegate still waits for its result
	openTimeout       time.Duration // opening an outbound stream
	writeTimeout      time.Duration // one flush of a stream's writer
	outIdle           time.Duration // an outbound stream with no task for this long is closed
	inIdle            time.Duration // an inbound stream with no task for this long is reset
	maxStreamsPerPeer int           // inbound task streams one peer may hold open
	maxQueuedAcks     int           // acks queued on an inbound stream before its reader waits
	closeFlush        time.Duration // how long Close lets inbound streams' writers send what they hold
}

func defaultOrchConfig() orchConfig {
	return orchConfig{
		maxMsg:            wire.DefaultMaxMessageSize,
		frameTimeout:      wire.DefaultFrameTimeout,
		ackTimeout:        DefaultAckTimeout,
		ackDelay:          DefaultAckDelay,
		nodeBudget:        DefaultNodeByteBudget,
		heartbeat:         DefaultHeartbeatInterval,
		leaseMisses:       DefaultLeaseMisses,
		resultGrace:       2 * time.Second,
		openTimeout:       10 * time.Second,
		writeTimeout:      10 * time.Second,
		outIdle:           2 * time.Minute,
		inIdle:            5 * time.Minute,
		maxStreamsPerPeer: 8,
		maxQueuedAcks:     8192,
		closeFlush:        time.Second,
	}
}

// WithMaxMessageSize caps the size of one frame, in either direction
// (default wire.DefaultMaxMessageSize). A peer that declares a longer
// frame has its stream reset; Delegate refuses a task that would not fit.
func WithMaxMessageSize(n int) OrchestratorOption {
	return func(c *orchConfig) { c.maxMsg = n }
}

// WithFrameTimeout sets how long a frame that has started arriving on a
// task stream may take to arrive whole (default wire.DefaultFrameTimeout,
// 30 s); a frame that takes longer resets the stream. Idle time between
// frames is not limited by it.
func WithFrameTimeout(d time.Duration) OrchestratorOption {
	return func(c *orchConfig) { c.frameTimeout = d }
}

// WithAckTimeout sets how long Delegate waits for the peer's TaskAck
// (default 10 s).
func WithAckTimeout(d time.Duration) OrchestratorOption {
	return func(c *orchConfig) { c.ackTimeout = d }
}

// WithPeerPolicy sets who may hold what here: the orchestrator asks p for
// a peer's PeerLimits when the peer opens a task stream and again at most
// once a second while it keeps sending, and enforces them on its requests
// (see PeerLimits). Without a policy every peer gets DefaultPeerLimits.
func WithPeerPolicy(p PeerPolicy) OrchestratorOption {
	return func(c *orchConfig) { c.policy = p }
}

// WithNodeByteBudget caps the bytes every peer together may hold here:
// the inputs of the tasks running for peers and the frames (results,
// acks) not yet written back to them (default DefaultNodeByteBudget, 1
// GiB). A request that would go over it is rejected RejectOverBudget.
func WithNodeByteBudget(n int64) OrchestratorOption {
	return func(c *orchConfig) { c.nodeBudget = n }
}

// WithOrchRegisterer registers the orchestrator's counter of skipped task
// messages, cortex_task_messages_skipped_total{why="unknown|malformed|dropped"}
// (see OrchestratorStats), on r at Start; Close unregisters it. With nil
// (the default) it is only readable through Stats.
func WithOrchRegisterer(r prometheus.Registerer) OrchestratorOption {
	return func(c *orchConfig) { c.registerer = r }
}

// WithAckDelay sets how long this node, as an executor, may hold back the
// accepting TaskAck of a task it admitted (default 1 ms; 0 sends it at
// once). A result ready within the delay answers the request by itself, so
// that a short task costs one frame each way instead of two; a task still
// running then is acked, together with the others held back meanwhile. It
// must be less than half the ack timeout and less than the heartbeat
// interval.
func WithAckDelay(d time.Duration) OrchestratorOption {
	return func(c *orchConfig) { c.ackDelay = d }
}

// WithHeartbeatInterval sets how often this node, as an executor, sends a
// TaskHeartbeat on each incoming task stream that has tasks it accepted
// and has not answered, and how often, as a requester, it checks the
// leases of its pending tasks (default 5 s, 10 ms to 1 min). Nodes of one
// grid should use the same interval: a requester holds a peer to the
// longer of its own interval and the one the peer's heartbeats declare,
// but the first heartbeat must come within the requester's own lease.
func WithHeartbeatInterval(d time.Duration) OrchestratorOption {
	return func(c *orchConfig) { c.heartbeat = d }
}

// WithLeaseMisses sets how many heartbeat intervals a requester waits
// without hearing about an accepted task (no ack, heartbeat or result)
// before Delegate gives up with ErrLeaseExpired (default 3, 1 to 100).
func WithLeaseMisses(k int) OrchestratorOption {
	return func(c *orchConfig) { c.leaseMisses = k }
}

// WithOrchLogger sets the logger (default slog.Default()).
func WithOrchLogger(l *slog.Logger) OrchestratorOption {
	return func(c *orchConfig) { c.logger = l }
}

func (c *orchConfig) validate() error {
	var errs []error
	if c.maxMsg < minMaxMessageSize || c.maxMsg > 1<<30 {
		errs = append(errs, fmt.Errorf("max message size %d is outside 1 KiB to 1 GiB", c.maxMsg))
	}
	if c.frameTimeout <= 0 {
		errs = append(errs, fmt.Errorf("frame timeout %s must be positive", c.frameTimeout))
	}
	if c.ackTimeout <= 0 {
		errs = append(errs, fmt.Errorf("ack timeout %s must be positive", c.ackTimeout))
	}
	if c.nodeBudget < 1 {
		errs = append(errs, fmt.Errorf("node byte budget %d must be at least 1", c.nodeBudget))
	}
	if c.ackDelay < 0 || c.ackDelay >= c.ackTimeout/2 || c.ackDelay >= c.heartbeat {
		errs = append(errs, fmt.Errorf("ack delay %s must be 0 or more, less than half the ack timeout %s and less than the heartbeat interval %s", c.ackDelay, c.ackTimeout, c.heartbeat))
	}
	if c.heartbeat < minHeartbeatInterval || c.heartbeat > maxHeartbeatInterval {
		errs = append(errs, fmt.Errorf("heartbeat interval %s is outside %s to %s", c.heartbeat, minHeartbeatInterval, maxHeartbeatInterval))
	}
	if c.leaseMisses < 1 || c.leaseMisses > maxLeaseMisses {
		errs = append(errs, fmt.Errorf("lease misses %d is outside 1 to %d", c.leaseMisses, maxLeaseMisses))
	}
	return errors.Join(errs...)
}

// Orchestrator carries tasks between this node and its peers over the
// /cortex/task/1.0.0 protocol. Outgoing, Delegate multiplexes every task
// for a peer over one long-lived stream, opened on first use and reopened
// after a failure. Incoming, it admits tasks from peers' streams (rate,
// task and byte limits per peer from its PeerPolicy, and a byte budget
// for the node), hands them to its TaskHandler and sends
// their results back; when an incoming stream fails, the tasks still
// running for it are stopped through the handler, with AbandonTask if it
// is a TaskAbandoner, else CancelTask. All methods are safe for concurrent
// use. DelegateAsync is Delegate without a goroutine waiting per task: the
// outcome is handed to a callback on the goroutine that learns it.
//
// On the wire, each request is answered by a TaskAck and, if accepted, a
// TaskResult later. An executor that already holds the result when it
// would send the accepting ack sends only the result: a result implies
// acceptance. It holds the accepting ack back for up to the ack delay
// (WithAckDelay), so that a short task costs one frame each way: the ack
// is only sent for a task still running then, and always before its
// result. Only framing errors reset a stream (a bad length, a frame over
// the cap, a frame not whole within the frame timeout). A message that
// does not decode or validate, that the receiving side never expects (a
// request on a requester's stream, say), or that answers an attempt not
// pending is dropped and counted (see Stats); a request among them with a
// usable task ID is rejected, a bad result fails its task with
// ErrInvalidResult. Unknown fields and message types are skipped and
// counted. Acks, results and cancels are matched by task ID and attempt.
// Between the ack and the result an executor may send TaskProgress
// reports (see RemoteTask.ReportProgress and ProgressSink).
// A peer that half-closes its stream still gets every answer; the stream
// is closed once they are all sent. proto/cortex/v1/task.proto and
// docs/protocol.md specify the protocol.
//
// Leases. While an executor holds tasks it accepted from a stream and has
// not answered, it sends a TaskHeartbeat listing them on that stream every
// heartbeat interval: one ticker per stream, in the stream's writer, and
// nothing per task. The requester remembers, per pending task, the last
// time it heard about it (the ack, a heartbeat listing it, a progress
// report for it, the result),
// counted in lease checks that each outgoing stream's writer runs twice per
// interval under the stream's own lock. Delegate then tells apart:
//   - dead: the connection closed or the stream was reset or ended. Every
//     task pending on it fails at once with ErrPeerGone.
//   - alive but not working on it: heartbeats arrive on the stream but have
//     not listed the task for the lease (WithLeaseMisses intervals). The
//     task fails with ErrLeaseExpired and a TaskCancel goes out; the
//     stream stays.
//   - unreachable: the connection is up but nothing at all came on the
//     stream for the lease while a task waited. The stream is reset and
//     every task pending on it fails with ErrLeaseExpired and ErrPeerGone.
//   - slow: the task's heartbeats keep coming. Delegate waits until the
//     task's deadline (plus a short grace), as before.
//
// Each case is logged at Debug. A task not yet acked is bounded by the ack
// timeout, which is shorter than the lease by default.
type Orchestrator struct {
	host      host.Host
	handler   TaskHandler
	cfg       orchConfig
	log       *slog.Logger
	self      peer.ID
	selfBytes []byte

	// lifetime is canceled by Close; it bounds stream opening. It is the
	// service's own lifetime, never a caller's context.
	lifetime context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup

	// draining is set by Close while inbound streams flush: new requests
	// are rejected as shutting down.
	draining atomic.Bool

	collectors []prometheus.Collector // registered by Start

	mu      sync.RWMutex
	started bool
	closed  bool
	out     map[peer.ID]*outStream
	in      map[*inStream]struct{}
	inPeers map[peer.ID]*inPeer

	nodeBytes atomic.Int64 // bytes every peer holds here (see WithNodeByteBudget)
	stats     orchCounters

	streamsOpened   atomic.Int64 // outbound streams opened, for tests
	streamsAccepted atomic.Int64 // inbound streams accepted, for tests
}

var _ Delegator = (*Orchestrator)(nil)

// NewOrchestrator returns an orchestrator on h that runs incoming tasks
// through handler. A nil handler makes it delegate-only: it rejects every
// incoming task. It does no I/O; call Start.
func NewOrchestrator(h host.Host, handler TaskHandler, opts ...OrchestratorOption) (*Orchestrator, error) {
	cfg := defaultOrchConfig()
	for _, opt := range opts {
		opt(&cfg)
	}
	if h == nil {
		return nil, errors.New("new orchestrator: nil host")
	}
	if err := cfg.validate(); err != nil {
		return nil, fmt.Errorf("new orchestrator: %w", err)
	}
	logger := cfg.logger
	if logger == nil {
		logger = slog.Default()
	}
	if cfg.policy == nil {
		cfg.policy = FixedLimits(DefaultPeerLimits)
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Orchestrator{
		host:      h,
		handler:   handler,
		cfg:       cfg,
		log:       logger.With("subsystem", "orchestrator"),
		self:      h.ID(),
		selfBytes: []byte(h.ID()),
		lifetime:  ctx,
		cancel:    cancel,
		out:       make(map[peer.ID]*outStream),
		in:        make(map[*inStream]struct{}),
		inPeers:   make(map[peer.ID]*inPeer),
	}, nil
}

// Start registers the task protocol's stream handler and starts the
// janitor that closes idle streams. ctx bounds only Start itself; the
// orchestrator runs until Close.
func (o *Orchestrator) Start(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("start orchestrator: %w", err)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	switch {
	case o.closed:
		return fmt.Errorf("start orchestrator: %w", ErrClosed)
	case o.started:
		return errors.New("start orchestrator: already started")
	}
	if err := o.registerMetrics(); err != nil {
		return fmt.Errorf("start orchestrator: %w", err)
	}
	o.started = true
	o.host.SetStreamHandler(wire.ProtocolTask, o.handleStream)
	o.wg.Add(1)
	go o.janitor()
	return nil
}

// Close removes the stream handler, fails pending Delegate calls with
// ErrClosed and resets their streams, then gives the writers of incoming
// streams up to one second, together, to send the acks and results they
// hold (so a draining daemon delivers the results of the tasks it
// finished), half-closes those streams so the peers read it all, resets
// them and waits for the goroutines it owns. Requests arriving meanwhile
// are rejected as shutting down. Close does not wait for tasks running in
// the TaskHandler: they are canceled and their results dropped. Nor does
// it wait for the muxer to put flushed frames on the wire: closing the
// host right after may still lose them. Close is idempotent.
func (o *Orchestrator) Close() error {
	o.mu.Lock()
	if o.closed {
		o.mu.Unlock()
		return nil
	}
	o.closed = true
	started := o.started
	outs := make([]*outStream, 0, len(o.out))
	for _, out := range o.out {
		outs = append(outs, out)
	}
	ins := make([]*inStream, 0, len(o.in))
	for st := range o.in {
		ins = append(ins, st)
	}
	o.mu.Unlock()

	if started {
		o.host.RemoveStreamHandler(wire.ProtocolTask)
		for _, c := range o.collectors {
			o.cfg.registerer.Unregister(c)
		}
	}
	o.cancel()
	for _, out := range outs {
		out.fail(ErrClosed)
	}
	o.flushIncoming(ins)
	for _, st := range ins {
		st.fail(ErrClosed)
	}
	o.wg.Wait()
	return nil
}

// flushIncoming has the writers of ins send what they hold and waits for
// them, up to the close flush timeout in all.
func (o *Orchestrator) flushIncoming(ins []*inStream) {
	if len(ins) == 0 {
		return
	}
	o.draining.Store(true)
	by := time.Now().Add(o.cfg.closeFlush)
	for _, st := range ins {
		st.flushAcks() // the acks held back go first
		st.fw.startFlush(by)
	}
	timer := time.NewTimer(o.cfg.closeFlush)
	defer timer.Stop()
	for _, st := range ins {
		select {
		case <-st.writerDone:
		case <-timer.C:
			o.log.Debug("close: writers did not flush in time", "timeout", o.cfg.closeFlush)
			return
		}
	}
}

// janitor closes streams that stayed idle for a whole sweep period.
func (o *Orchestrator) janitor() {
	defer o.wg.Done()
	t := time.NewTicker(o.sweepPeriod())
	defer t.Stop()
	for {
		select {
		case <-o.lifetime.Done():
			return
		case <-t.C:
			o.sweepIdle()
		}
	}
}

func (o *Orchestrator) sweepIdle() {
	o.mu.RLock()
	outs := make([]*outStream, 0, len(o.out))
	for _, out := range o.out {
		outs = append(outs, out)
	}
	ins := make([]*inStream, 0, len(o.in))
	for st := range o.in {
		ins = append(ins, st)
	}
	o.mu.RUnlock()
	for _, out := range outs {
		if out.idle() {
			o.log.Debug("closing idle task stream", "peer", out.peer)
			out.fail(errIdle)
		}
	}
	for _, st := range ins {
		if st.idle() {
			o.log.Debug("resetting idle incoming task stream", "peer", st.from)
			st.fail(errIdle)
		}
	}
	o.forgetIdlePeers()
}

// forgetIdlePeers drops the admission state of peers with no stream, no
// task running, no bytes held and a full rate-limit bucket: a fresh entry
// would be the same.
func (o *Orchestrator) forgetIdlePeers() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for p, ip := range o.inPeers {
		full := ip.lim.Limit() == rate.Inf || ip.lim.Tokens() >= float64(ip.lim.Burst())
		if ip.streams == 0 && ip.inflight.Load() == 0 && ip.bytes.Load() == 0 && full {
			delete(o.inPeers, p)
		}
	}
}

// sweepPeriod is how often the janitor looks for idle streams.
func (o *Orchestrator) sweepPeriod() time.Duration {
	return min(o.cfg.outIdle, o.cfg.inIdle) / 4
}

// errIdle is the cause given to streams the janitor closes.
var errIdle = errors.New("stream idle")

// resetStream resets s, ignoring the error: there is nothing to do about it.
func resetStream(s network.Stream) { _ = s.Reset() }

// FixedLimits is a PeerPolicy that gives every peer the same limits, for
// tests and benchmarks, and for a grid whose members all trust each other.
type FixedLimits PeerLimits

// PeerLimits returns l, whoever p is.
func (l FixedLimits) PeerLimits(peer.ID) PeerLimits { return PeerLimits(l) }

// DefaultPeerLimits are a peer's limits without a PeerPolicy:
// DefaultPeerRate, DefaultPeerBurst, DefaultMaxInFlightPerPeer and
// DefaultPeerMaxBytes.
var DefaultPeerLimits = PeerLimits{Rate: DefaultPeerRate, Burst: DefaultPeerBurst, MaxTasks: DefaultMaxInFlightPerPeer, MaxBytes: DefaultPeerMaxBytes}

// Usage returns what p holds on this node now: the tasks it has running
// here and the bytes of their inputs and of the frames not yet written
// back to it.
func (o *Orchestrator) Usage(p peer.ID) PeerUsage {
	o.mu.RLock()
	ip := o.inPeers[p]
	o.mu.RUnlock()
	if ip == nil {
		return PeerUsage{}
	}
	return PeerUsage{Tasks: int(ip.inflight.Load()), Bytes: ip.bytes.Load()}
}

// Outstanding returns how many tasks this node delegated to p are still
// waiting for their result.
func (o *Orchestrator) Outstanding(p peer.ID) int {
	o.mu.RLock()
	out := o.out[p]
	o.mu.RUnlock()
	if out == nil {
		return 0
	}
	out.mu.Lock()
	defer out.mu.Unlock()
	return len(out.pending)
}

// OrchestratorStats counts the task messages peers sent that this node
// skipped. None of them cost the stream they came on, or the other tasks
// on it.
type OrchestratorStats struct {
	// Unknown is the fields and message types of a newer protocol version
	// that were skipped.
	Unknown uint64
	// Malformed is the messages that did not parse or failed validation:
	// a bad task ID, a string that is not UTF-8, a request with bad
	// fields (also answered with a rejection), a result over the output
	// cap (which fails its task with ErrInvalidResult).
	Malformed uint64
	// Dropped is the well-formed messages that had no place: sent by the
	// wrong side (an ack to an executor, a request to a requester), for a
	// stale attempt, or for a task not pending (any more).
	Dropped uint64
}

type orchCounters struct {
	unknown, malformed, dropped atomic.Uint64
}

// Stats returns the counts of skipped task messages since the start.
func (o *Orchestrator) Stats() OrchestratorStats {
	return OrchestratorStats{
		Unknown:   o.stats.unknown.Load(),
		Malformed: o.stats.malformed.Load(),
		Dropped:   o.stats.dropped.Load(),
	}
}

// registerMetrics registers the skipped-message counters, if there is a
// registerer.
func (o *Orchestrator) registerMetrics() error {
	reg := o.cfg.registerer
	if reg == nil {
		return nil
	}
	var all []prometheus.Collector
	for why, n := range map[string]*atomic.Uint64{"unknown": &o.stats.unknown, "malformed": &o.stats.malformed, "dropped": &o.stats.dropped} {
		all = append(all, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "cortex_task_messages_skipped_total",
			Help:        "Task stream messages skipped without harm to the stream: unknown (fields and message types of a newer version), malformed (did not parse or validate), dropped (wrong side, stale attempt, task not pending, progress over its rate).",
			ConstLabels: prometheus.Labels{"why": why},
		}, func() float64 { return float64(n.Load()) }))
	}
	for i, c := range all {
		if err := reg.Register(c); err != nil {
			for _, done := range all[:i] {
				reg.Unregister(done)
			}
			return fmt.Errorf("register task metrics: %w", err)
		}
	}
	o.collectors = all
	return nil
}
