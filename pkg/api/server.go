package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/dashboard"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// errDraining is answered to submissions while the daemon shuts down.
var errDraining = errors.New("the daemon is shutting down and accepts no new tasks")

// Network is what the API reads from the grid node. *grid.Node implements
// it.
type Network interface {
	ID() peer.ID
	Addrs() []multiaddr.Multiaddr
	Peers() []grid.PeerInfo
	OnPeerEvent(fn func(grid.PeerEvent)) (unsubscribe func())
}

// SkillLister lists the skills this node offers. *skill.Registry
// implements it.
type SkillLister interface {
	List() []skill.Descriptor
}

// TrustView reads the trust graph. *reputation.Graph implements it.
type TrustView interface {
	Trust(p peer.ID) float64
	Peers() []reputation.PeerTrust
}

// PeerGate is the node's connection gater: its allow and deny lists.
// *grid.Node implements it.
type PeerGate interface {
	DenyPeer(p peer.ID) error
	AllowPeer(p peer.ID) error
	AccessLists() (allow, deny []peer.ID)
}

var (
	_ PeerGate    = (*grid.Node)(nil)
	_ Network     = (*grid.Node)(nil)
	_ SkillLister = (*skill.Registry)(nil)
	_ TrustView   = (*reputation.Graph)(nil)
)

// Deps are what the server serves. Every field but Gatherer is required.
type Deps struct {
	Tasks  Tasks
	Node   Network
	Skills SkillLister
	Trust  TrustView
	// Gatherer is served at /metrics in the Prometheus text format; nil
	// turns /metrics off (404).
	Gatherer prometheus.Gatherer
	// Gate serves POST /v1/peers/{peer}/deny and /allow and the access
	// column of /v1/peers. If nil, Node is used when it implements
	// PeerGate; without one those endpoints answer 404 and every peer is
	// reported allowed.
	Gate PeerGate
	// Admission and Activity fill the admission fields of /v1/peers (see
	// peers_admission.go); either may be nil, and its fields are then left
	// out.
	Admission PeerAdmission
	Activity  PeerActivity
	// Installer serves POST /v1/skills and DELETE /v1/skills/{name} and
	// the kind and module of each local skill in GET /v1/skills. If nil,
	// those two endpoints answer 404 and skills are listed without kind.
	Installer SkillInstaller
	// Workflows, if set, serves /v1/workflows and input_from, and the task
	// endpoints see its waiting and dependency_failed tasks. If nil, those
	// endpoints answer 404 and input_from is refused.
	Workflows Workflows
}

// Option configures a Server.
type Option func(*Server)

// WithToken sets the bearer token. Requests that carry a token must carry
// this one; on a listener beyond loopback every request but /healthz and
// /readyz must.
func WithToken(tok string) Option { return func(s *Server) { s.token = []byte(tok) } }

// WithMaxBodyBytes sets the largest request body (default
// DefaultMaxBodyBytes).
func WithMaxBodyBytes(n int64) Option { return func(s *Server) { s.maxBody = n } }

// WithLogger sets the logger (default slog.Default()).
func WithLogger(l *slog.Logger) Option { return func(s *Server) { s.log = l } }

// WithVersion sets the version /v1/id reports.
func WithVersion(v string) Option { return func(s *Server) { s.version = v } }

// WithDefaults sets what a submission that leaves them out gets.
func WithDefaults(d TaskDefaults) Option { return func(s *Server) { s.defaults = d } }

// TaskDefaults are applied to submissions that leave a field out.
type TaskDefaults struct {
	Timeout    time.Duration
	MinTrust   float64
	MaxRetries int
}

// DefaultMaxBodyBytes is the default request body limit, 22 MiB: enough
// for a JSON submission whose input_base64 holds an input of
// apiv1.MaxInputBytes (base64 makes it 21.3 MiB).
const DefaultMaxBodyBytes = 22 << 20

// Server is cortexd's HTTP API. Create it with New, run it with Serve,
// stop it with Drain and then Shutdown. It is safe for concurrent use.
type Server struct {
	deps     Deps
	token    []byte
	maxBody  int64
	log      *slog.Logger
	version  string
	defaults TaskDefaults

	handler      http.Handler
	mux          *http.ServeMux // the routes, without authentication: the dashboard's reads
	requireToken atomic.Bool
	port         atomic.Uint32 // the listener's port, 0 before Serve
	draining     atomic.Bool
	streams      atomic.Int64 // open event streams

	tlog     *taskLog      // attempts and series, following the coordinator from Serve to Shutdown
	ui       http.Handler  // the dashboard at /ui/
	logins   *rate.Limiter // POST /ui/login attempts
	sessions sessionStore  // the dashboard's login sessions

	// life is canceled by Shutdown: long waits and event streams end.
	life     context.Context
	stopLife context.CancelFunc

	mu      sync.Mutex
	srv     *http.Server
	stopLog func() // ends tlog's subscription; nil before Serve and after Shutdown
	logOn   bool   // tlog was started
}

// New returns a server for deps. It starts nothing.
func New(deps Deps, opts ...Option) (*Server, error) {
	s := &Server{
		deps:     deps,
		maxBody:  DefaultMaxBodyBytes,
		log:      slog.Default(),
		version:  "dev",
		defaults: TaskDefaults{Timeout: skill.DefaultTimeout, MinTrust: skill.DefaultMinTrust, MaxRetries: skill.DefaultMaxRetries},
	}
	if s.deps.Gate == nil {
		s.deps.Gate, _ = deps.Node.(PeerGate)
	}
	if deps.Workflows != nil && deps.Tasks != nil {
		s.deps.Tasks = chainedTasks{deps.Tasks, deps.Workflows}
	}
	s.life, s.stopLife = context.WithCancel(context.Background())
	for _, o := range opts {
		o(s)
	}
	var errs []error
	if deps.Tasks == nil {
		errs = append(errs, errors.New("api: Deps.Tasks is nil"))
	}
	if deps.Node == nil {
		errs = append(errs, errors.New("api: Deps.Node is nil"))
	}
	if deps.Skills == nil {
		errs = append(errs, errors.New("api: Deps.Skills is nil"))
	}
	if deps.Trust == nil {
		errs = append(errs, errors.New("api: Deps.Trust is nil"))
	}
	if err := checkDefaults(&s.defaults); err != nil {
		errs = append(errs, err)
	}
	if s.maxBody < 1024 {
		errs = append(errs, fmt.Errorf("api: body limit %d is below 1024 bytes", s.maxBody))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	s.tlog = newTaskLog(deps.Tasks, deps.Node.ID())
	s.logins = rate.NewLimiter(rate.Limit(loginRate), loginBurst)
	ui, err := dashboard.New(apiFetcher{s}, dashboard.WithSession(s.session))
	if err != nil {
		return nil, fmt.Errorf("api: build dashboard: %w", err)
	}
	s.ui = ui
	s.handler = s.routes()
	return s, nil
}

// Handler returns the API's handler, with authentication and the browser
// guard. A server that was never given a listener treats every request as
// coming over loopback and does not check the Host header.
func (s *Server) Handler() http.Handler { return s.handler }

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	s.mux = mux
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	if s.deps.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(s.deps.Gatherer, promhttp.HandlerOpts{
			ErrorLog:      slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
			ErrorHandling: promhttp.ContinueOnError,
		}))
	}
	mux.HandleFunc("POST /v1/tasks", s.submit)
	mux.HandleFunc("GET /v1/tasks", s.listTasks)
	mux.HandleFunc("GET /v1/tasks/{id}", s.getTask)
	mux.HandleFunc("GET /v1/tasks/{id}/wait", s.waitTask)
	mux.HandleFunc("POST /v1/tasks/{id}/cancel", s.cancelTask)
	mux.HandleFunc("DELETE /v1/tasks/{id}", s.cancelTask)
	if s.deps.Workflows != nil {
		mux.HandleFunc("POST /v1/workflows", s.submitWorkflow)
		mux.HandleFunc("GET /v1/workflows", s.listWorkflows)
		mux.HandleFunc("GET /v1/workflows/{id}", s.getWorkflow)
		mux.HandleFunc("GET /v1/workflows/{id}/wait", s.waitWorkflow)
		mux.HandleFunc("POST /v1/workflows/{id}/cancel", s.cancelWorkflow)
	}
	mux.HandleFunc("GET /v1/id", s.identity)
	mux.HandleFunc("GET /v1/peers", s.peers)
	if s.deps.Gate != nil {
		mux.HandleFunc("POST /v1/peers/{peer}/deny", s.denyPeer)
		mux.HandleFunc("POST /v1/peers/{peer}/allow", s.allowPeer)
	}
	mux.HandleFunc("GET /v1/skills", s.skills)
	if s.deps.Installer != nil {
		mux.HandleFunc("POST /v1/skills", s.installSkill)
		mux.HandleFunc("DELETE /v1/skills/{name}", s.removeSkill)
	}
	mux.HandleFunc("GET /v1/metrics", s.metrics)
	mux.HandleFunc("GET /v1/trust", s.trustAll)
	mux.HandleFunc("GET /v1/trust/{peer}", s.trustOne)
	mux.HandleFunc("GET /v1/events", s.events)
	mux.HandleFunc("GET /v1/tasks/{id}/trace", s.taskTrace)
	mux.HandleFunc("GET /v1/metrics/series", s.metricSeries)
	mux.HandleFunc("POST /ui/login", s.login)
	mux.HandleFunc("POST /ui/logout", s.logout)
	mux.Handle("GET /ui/", s.ui)
	mux.Handle("GET /ui", http.RedirectHandler("/ui/", http.StatusMovedPermanently))
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow := allowed(mux, r); len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			s.writeError(w, r, &httpError{http.StatusMethodNotAllowed, apiv1.CodeMethodNotAllowed,
				fmt.Sprintf("%s does not take %s; it takes %s", r.URL.Path, r.Method, strings.Join(allow, ", "))})
			return
		}
		s.writeError(w, r, &httpError{http.StatusNotFound, "not_found", fmt.Sprintf("no endpoint %s %s; see the API reference in the README", r.Method, r.URL.Path)})
	})
	return s.authenticate(s.limitBody(mux))
}

// allowed returns the methods that have a route for r's path.
func allowed(mux *http.ServeMux, r *http.Request) []string {
	var out []string
	for _, m := range []string{http.MethodGet, http.MethodPost, http.MethodDelete} {
		probe := &http.Request{Method: m, URL: r.URL, Host: r.Host}
		if _, pattern := mux.Handler(probe); pattern != "/" && pattern != "" {
			out = append(out, m)
		}
	}
	return out
}

func (s *Server) limitBody(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			limit := s.maxBody
			if s.deps.Installer != nil && r.Method == http.MethodPost && r.URL.Path == "/v1/skills" {
				limit = s.deps.Installer.MaxModule() // a module, not a submission
			}
			r.Body = http.MaxBytesReader(w, r.Body, limit)
		}
		next.ServeHTTP(w, r)
	})
}

// Serve answers requests on l until Shutdown. It requires a token if l
// listens beyond loopback and returns an error at once if there is none.
// Like http.Server.Serve it returns http.ErrServerClosed after Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if !IsLoopback(l.Addr().String()) {
		if len(s.token) == 0 {
			return fmt.Errorf("serve API on %s: beyond loopback a bearer token is required, and none is set", l.Addr())
		}
		s.requireToken.Store(true)
	}
	if ta, ok := l.Addr().(*net.TCPAddr); ok {
		s.port.Store(uint32(ta.Port))
	}
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       2 * time.Minute,
		WriteTimeout:      time.Minute, // long waits and event streams lift it
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
	}
	s.mu.Lock()
	if s.life.Err() != nil {
		s.mu.Unlock()
		return http.ErrServerClosed
	}
	s.srv = srv
	s.startTaskLog()
	s.mu.Unlock()
	return srv.Serve(jsonErrorListener{l})
}

// Drain makes the server refuse new tasks (503 shutting_down) and report
// not ready, while everything else keeps working.
func (s *Server) Drain() { s.draining.Store(true) }

// Shutdown ends long waits and event streams, then stops the server as
// http.Server.Shutdown does, waiting for requests in progress until ctx is
// done.
func (s *Server) Shutdown(ctx context.Context) error {
	s.draining.Store(true)
	s.mu.Lock()
	s.stopLife()
	srv := s.srv
	stopLog := s.stopLog
	s.stopLog = nil
	s.mu.Unlock()
	if stopLog != nil {
		stopLog()
	}
	if srv == nil {
		return nil
	}
	if err := srv.Shutdown(ctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("shut down API: %w", err)
	}
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.writeError(w, r, errDraining)
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}
