package dashboard

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"log/slog"
	"net/http"
	"strings"
)

// Paths of the dashboard.
const (
	// Prefix is where the dashboard is mounted.
	Prefix = "/ui/"
	// LoginPath is the login page (GET) beyond loopback; the API answers
	// POST LoginPath, the token for a session cookie.
	LoginPath = "/ui/login"
	// LogoutPath ends the session (POST, answered by the API): the
	// session cookie is cleared.
	LogoutPath   = "/ui/logout"
	staticPrefix = "/ui/static/"
	// fragmentHeader asks for a page's live part only.
	fragmentHeader = "X-Dashboard-Fragment"
)

// Public reports whether path is served without authentication: the login
// page, the logout (which only clears a cookie) and the embedded script,
// stylesheet and icons.
func Public(path string) bool {
	return path == LoginPath || path == LogoutPath || strings.HasPrefix(path, staticPrefix)
}

// Page reports whether path is a dashboard path, where a browser without a
// session is sent to the login page rather than answered 401.
func Page(path string) bool { return path == "/ui" || strings.HasPrefix(path, Prefix) }

// Fetcher reads the API: Fetch GETs path (with its query, such as
// "/v1/tasks?limit=50") and decodes the JSON answer into out. An answer
// that is not 200 is returned as an *APIError.
type Fetcher interface {
	Fetch(ctx context.Context, path string, out any) error
}

// APIError is an API answer that was not 200.
type APIError struct {
	Status  int
	Code    string
	Message string
}

func (e *APIError) Error() string { return fmt.Sprintf("%s (%d %s)", e.Message, e.Status, e.Code) }

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// pageNames are the pages, each a template file beside layout.html.
var pageNames = []string{"overview", "tasks", "task", "workflows", "workflow", "peers", "skills", "login"}

// Handler serves the dashboard. It is safe for concurrent use.
type Handler struct {
	f       Fetcher
	session func(*http.Request) bool // nil: no session ever
	log     *slog.Logger
	pages   map[string]*template.Template
	mux     *http.ServeMux
	static  http.Handler
}

// Option configures a Handler.
type Option func(*Handler)

// WithSession tells the pages whether a request comes with a login
// session (the cookie of POST LoginPath): the pages then offer to log out.
func WithSession(fn func(*http.Request) bool) Option {
	return func(h *Handler) { h.session = fn }
}

// New returns the dashboard, reading the API through f.
func New(f Fetcher, opts ...Option) (*Handler, error) {
	if f == nil {
		return nil, errors.New("dashboard: the Fetcher is nil")
	}
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		return nil, fmt.Errorf("dashboard: static files: %w", err)
	}
	h := &Handler{f: f, log: slog.Default(), pages: map[string]*template.Template{},
		static: http.StripPrefix(staticPrefix, http.FileServerFS(sub))}
	for _, o := range opts {
		o(h)
	}
	for _, name := range pageNames {
		t, err := template.New("layout.html").Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("dashboard: parse template %s: %w", name, err)
		}
		h.pages[name] = t
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /ui/{$}", h.overview)
	mux.HandleFunc("GET /ui/tasks", h.tasks)
	mux.HandleFunc("GET /ui/tasks/{id}", h.task)
	mux.HandleFunc("GET /ui/tasks/{id}/output", h.download(false))
	mux.HandleFunc("GET /ui/tasks/{id}/input", h.download(true))
	mux.HandleFunc("GET /ui/workflows", h.workflows)
	mux.HandleFunc("GET /ui/workflows/{id}", h.workflow)
	mux.HandleFunc("GET /ui/peers", h.peers)
	mux.HandleFunc("GET /ui/skills", h.skills)
	mux.HandleFunc("GET /ui/login", h.login)
	mux.Handle("GET /ui/static/", h.static)
	mux.HandleFunc("/ui/", func(w http.ResponseWriter, r *http.Request) {
		h.render(w, r, "overview", &page{Title: "Not found", Status: http.StatusNotFound,
			Err: fmt.Sprintf("the dashboard has no page %s: pick one above", r.URL.Path)})
	})
	h.mux = mux
	return h, nil
}

// ServeHTTP serves the dashboard's pages and files.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	// Only this origin's script and styles, no framing (the pages have
	// buttons that act), no sniffing, and no referrer with task IDs.
	hd.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'")
	hd.Set("X-Frame-Options", "DENY")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	h.mux.ServeHTTP(w, r)
}

// page is what a template renders.
type page struct {
	Title   string
	Nav     string // the nav entry to highlight
	Events  string // the EventSource URL that keeps the page live; empty: none
	Refresh int    // also refresh every this many ms; 0: only on events
	Status  int    // HTTP status; 0: 200
	Err     string // shown at the top of the page
	Session bool   // the request came with a login session: offer to log out
	Data    any
}

// render writes a page, or only its live part when the script asks.
func (h *Handler) render(w http.ResponseWriter, r *http.Request, name string, p *page) {
	t := h.pages[name]
	p.Session = h.session != nil && h.session(r)
	var buf bytes.Buffer
	tmpl := "layout"
	if r.Header.Get(fragmentHeader) == "1" {
		tmpl = "live"
	}
	if err := t.ExecuteTemplate(&buf, tmpl, p); err != nil {
		h.log.Error("render dashboard page", "page", name, "err", err)
		http.Error(w, "the dashboard could not render this page; the daemon's log has why", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if p.Status != 0 {
		w.WriteHeader(p.Status)
	}
	_, _ = w.Write(buf.Bytes())
}

// fail renders a page that could not read what it shows.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, name string, p *page, err error) {
	p.Status = http.StatusBadGateway
	var ae *APIError
	if errors.As(err, &ae) {
		p.Status = ae.Status
	}
	p.Err = err.Error()
	p.Data = nil
	h.render(w, r, name, p)
}

func (h *Handler) login(w http.ResponseWriter, r *http.Request) {
	next := r.URL.Query().Get("next")
	if !strings.HasPrefix(next, Prefix) || strings.HasPrefix(next, "//") {
		next = Prefix // only a page of the dashboard: no open redirect
	}
	h.render(w, r, "login", &page{Title: "Log in", Data: next})
}
