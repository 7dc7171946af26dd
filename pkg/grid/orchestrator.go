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
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// ErrPeerGone is wrapped by Delegate's error when the peer could not be
// reached, or its stream or connection failed while the task was pending.
// The task's fate on that peer is unknown; the caller should move on.
var ErrPeerGone = errors.New("peer gone")

// ErrAckTimeout is wrapped by Delegate's error when the peer did not
// answer the request with a TaskAck within the ack timeout.
var ErrAckTimeout = errors.New("no ack from peer")

// Orchestrator defaults.
const (
	DefaultAckTimeout         = 10 * time.Second
	DefaultPeerRate           = rate.Limit(20000)
	DefaultPeerBurst          = 5000
	DefaultMaxInFlightPerPeer = 4096
)

// taskServiceName is the resource-manager service of task streams.
const taskServiceName = "cortex.task"

// OrchestratorOption configures NewOrchestrator.
type OrchestratorOption func(*orchConfig)

type orchConfig struct {
	maxMsg      int
	ackTimeout  time.Duration
	peerRate    rate.Limit
	peerBurst   int
	maxInFlight int
	logger      *slog.Logger

	resultGrace       time.Duration // how long past a task's deadline Delegate still waits for its result
	openTimeout       time.Duration // opening an outbound stream
	writeTimeout      time.Duration // one flush of a stream's writer
	outIdle           time.Duration // an outbound stream with no task for this long is closed
	inIdle            time.Duration // an inbound stream with no task for this long is reset
	maxStreamsPerPeer int           // inbound task streams one peer may hold open
	maxQueuedAcks     int           // acks queued on an inbound stream before its reader waits
}

func defaultOrchConfig() orchConfig {
	return orchConfig{
		maxMsg:            wire.DefaultMaxMessageSize,
		ackTimeout:        DefaultAckTimeout,
		peerRate:          DefaultPeerRate,
		peerBurst:         DefaultPeerBurst,
		maxInFlight:       DefaultMaxInFlightPerPeer,
		resultGrace:       2 * time.Second,
		openTimeout:       10 * time.Second,
		writeTimeout:      10 * time.Second,
		outIdle:           2 * time.Minute,
		inIdle:            5 * time.Minute,
		maxStreamsPerPeer: 8,
		maxQueuedAcks:     8192,
	}
}

// WithMaxMessageSize caps the size of one frame, in either direction
// (default wire.DefaultMaxMessageSize). A peer that declares a longer
// frame has its stream reset; Delegate refuses a task that would not fit.
func WithMaxMessageSize(n int) OrchestratorOption {
	return func(c *orchConfig) { c.maxMsg = n }
}

// WithAckTimeout sets how long Delegate waits for the peer's TaskAck
// (default 10 s).
func WithAckTimeout(d time.Duration) OrchestratorOption {
	return func(c *orchConfig) { c.ackTimeout = d }
}

// WithPeerRateLimit limits the task requests each peer may send: r per
// second with bursts of burst (default 20000/s, burst 5000). A request over
// the limit is rejected with RejectRateLimited. rate.Inf disables it.
func WithPeerRateLimit(r rate.Limit, burst int) OrchestratorOption {
	return func(c *orchConfig) { c.peerRate, c.peerBurst = r, burst }
}

// WithMaxInFlightPerPeer caps the tasks one peer may have running here at
// once (default 4096); a request over the cap is rejected with
// RejectRateLimited.
func WithMaxInFlightPerPeer(n int) OrchestratorOption {
	return func(c *orchConfig) { c.maxInFlight = n }
}

// WithOrchLogger sets the logger (default slog.Default()).
func WithOrchLogger(l *slog.Logger) OrchestratorOption {
	return func(c *orchConfig) { c.logger = l }
}

func (c *orchConfig) validate() error {
	var errs []error
	if c.maxMsg < 1024 || c.maxMsg > 1<<30 {
		errs = append(errs, fmt.Errorf("max message size %d is outside 1 KiB to 1 GiB", c.maxMsg))
	}
	if c.ackTimeout <= 0 {
		errs = append(errs, fmt.Errorf("ack timeout %s must be positive", c.ackTimeout))
	}
	if c.peerRate != rate.Inf && (c.peerRate <= 0 || c.peerBurst < 1) {
		errs = append(errs, fmt.Errorf("peer rate limit %v/s with burst %d: want a positive rate and burst (or rate.Inf)", float64(c.peerRate), c.peerBurst))
	}
	if c.maxInFlight < 1 {
		errs = append(errs, fmt.Errorf("max in-flight per peer %d must be at least 1", c.maxInFlight))
	}
	return errors.Join(errs...)
}

// Orchestrator carries tasks between this node and its peers over the
// /cortex/task/1.0.0 protocol. Outgoing, Delegate multiplexes every task
// for a peer over one long-lived stream, opened on first use and reopened
// after a failure. Incoming, it admits tasks from peers' streams (rate and
// in-flight limits per peer), hands them to its TaskHandler and sends
// their results back. All methods are safe for concurrent use.
//
// On the wire, each request is answered by a TaskAck and, if accepted, a
// TaskResult later. An executor that already holds the result when it
// would send the accepting ack sends only the result: a result implies
// acceptance. Frames that cannot be decoded, or that the receiving side
// never expects (a request on a requester's stream, say), reset the
// stream; a well-formed request with bad fields is rejected as malformed.
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

	mu      sync.RWMutex
	started bool
	closed  bool
	out     map[peer.ID]*outStream
	in      map[*inStream]struct{}
	inPeers map[peer.ID]*inPeer

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
	o.started = true
	o.host.SetStreamHandler(wire.ProtocolTask, o.handleStream)
	o.wg.Add(1)
	go o.janitor()
	return nil
}

// Close removes the stream handler, resets every task stream, fails
// pending Delegate calls with ErrClosed and waits for the goroutines it
// owns. It does not wait for tasks running in the TaskHandler; their
// results are dropped. Close is idempotent.
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
	}
	o.cancel()
	for _, out := range outs {
		out.fail(ErrClosed)
	}
	for _, st := range ins {
		st.fail(ErrClosed)
	}
	o.wg.Wait()
	return nil
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
// task running and a full rate-limit bucket: a fresh entry would be the
// same.
func (o *Orchestrator) forgetIdlePeers() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for p, ip := range o.inPeers {
		full := o.cfg.peerRate == rate.Inf || ip.lim.Tokens() >= float64(o.cfg.peerBurst)
		if ip.streams == 0 && ip.inflight.Load() == 0 && full {
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
