package modules

import (
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/wasm"
	"github.com/cortexgrid/cortexd/pkg/wire"
)

// ErrClosed is returned by a Server or Fetcher used after Close.
var ErrClosed = errors.New("module service closed")

// Source is what a Server serves: the modules of the wasm skills this
// node runs. Module returns the manifest (JSON) and the module's bytes,
// or ok false if the node does not serve id. It must be safe for
// concurrent use.
type Source interface {
	Module(id wasm.ModuleID) (manifest, module []byte, ok bool)
}

// Server defaults.
const (
	DefaultServerRate      = rate.Limit(2) // fetches per second per peer
	DefaultServerBurst     = 4
	DefaultMaxTransfers    = 4
	DefaultRequestTimeout  = 10 * time.Second
	DefaultTransferTimeout = 2 * time.Minute
	maxLimitedPeers        = 4096
)

// ServerOptions configures a Server; zero fields take the defaults above.
type ServerOptions struct {
	Rate            rate.Limit    // fetches per second per peer
	Burst           int           // per peer
	MaxTransfers    int           // responses being written at once, over all peers
	RequestTimeout  time.Duration // for the request to arrive
	TransferTimeout time.Duration // for the response to be written
	Logger          *slog.Logger
}

func (o ServerOptions) withDefaults() ServerOptions {
	if o.Rate <= 0 {
		o.Rate = DefaultServerRate
	}
	if o.Burst <= 0 {
		o.Burst = DefaultServerBurst
	}
	if o.MaxTransfers <= 0 {
		o.MaxTransfers = DefaultMaxTransfers
	}
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = DefaultRequestTimeout
	}
	if o.TransferTimeout <= 0 {
		o.TransferTimeout = DefaultTransferTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Server answers module fetches on a host. Start registers the stream
// handler; Close removes it and waits for the transfers running. It is
// safe for concurrent use.
type Server struct {
	h    host.Host
	src  Source
	opts ServerOptions
	log  *slog.Logger
	sem  chan struct{}

	mu      sync.Mutex
	closed  bool
	limits  map[peer.ID]*rate.Limiter
	started bool
	wg      sync.WaitGroup
}

// NewServer returns a server of src's modules on h. It starts nothing.
func NewServer(h host.Host, src Source, opts ServerOptions) (*Server, error) {
	if h == nil || src == nil {
		return nil, errors.New("new module server: host and source are required")
	}
	o := opts.withDefaults()
	return &Server{h: h, src: src, opts: o, log: o.Logger.With("subsystem", "modules"),
		sem: make(chan struct{}, o.MaxTransfers), limits: map[peer.ID]*rate.Limiter{}}, nil
}

// Start registers the handler of ProtocolModule.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	if !s.started {
		s.started = true
		s.h.SetStreamHandler(ProtocolModule, s.handle)
	}
	return nil
}

// Close removes the handler and waits for the transfers in progress (each
// is bounded by the transfer timeout). It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	started := s.started
	s.mu.Unlock()
	if started {
		s.h.RemoveStreamHandler(ProtocolModule)
	}
	s.wg.Wait()
	return nil
}

// allow takes a token from p's limiter. The map is bounded: when full, it
// is cleared (a peer gains at most a fresh burst from it).
func (s *Server) allow(p peer.ID) (bool, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l := s.limits[p]
	if l == nil {
		if len(s.limits) >= maxLimitedPeers {
			clear(s.limits)
		}
		l = rate.NewLimiter(s.opts.Rate, s.opts.Burst)
		s.limits[p] = l
	}
	if l.Allow() {
		return true, 0
	}
	return false, time.Duration(float64(time.Second) / float64(s.opts.Rate))
}

// enter registers a handler on the wait group unless the server closed.
func (s *Server) enter() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	return true
}

func (s *Server) handle(st network.Stream) {
	if !s.enter() {
		_ = st.Reset()
		return
	}
	defer s.wg.Done()
	from := st.Conn().RemotePeer()
	if err := s.serve(st, from); err != nil {
		s.log.Debug("module fetch from a peer failed", "peer", from, "err", err) // the peer's fault, or its link's
		_ = st.Reset()
		return
	}
	_ = st.Close()
}

func (s *Server) serve(st network.Stream, from peer.ID) error {
	_ = st.SetReadDeadline(time.Now().Add(s.opts.RequestTimeout))
	r := wire.NewReader(st, maxRequestFrame)
	body, err := r.ReadFrame()
	if err != nil {
		return fmt.Errorf("read module request: %w", err)
	}
	id, err := DecodeRequest(body)
	_ = st.CloseRead()
	_ = st.SetDeadline(time.Now().Add(s.opts.TransferTimeout))
	if err != nil {
		return s.write(st, &Response{Status: StatusMalformed, Message: err.Error()})
	}
	if ok, wait := s.allow(from); !ok {
		return s.write(st, &Response{Status: StatusRateLimited, Message: "over the module fetch rate", RetryAfterMs: uint32(min(wait.Milliseconds()+1, maxRetryAfterMs))})
	}
	select {
	case s.sem <- struct{}{}:
		defer func() { <-s.sem }()
	default:
		return s.write(st, &Response{Status: StatusBusy, Message: "too many module transfers at once", RetryAfterMs: 1000})
	}
	man, mod, ok := s.src.Module(id)
	if !ok {
		return s.write(st, &Response{Status: StatusNotFound, Message: "module " + id.Short() + " is not served here"})
	}
	return s.write(st, &Response{Status: StatusOK, Manifest: man, Module: mod})
}

// write sends r as one frame.
func (s *Server) write(st network.Stream, r *Response) error {
	body := AppendResponse(nil, r)
	w := wire.NewWriter(st)
	if err := w.WriteFrame(appendLen(nil, len(body))); err != nil {
		return err
	}
	if err := w.WriteFrame(body); err != nil {
		return err
	}
	return w.Flush()
}
