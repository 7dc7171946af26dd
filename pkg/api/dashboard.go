package api

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/dashboard"
)

// The dashboard's session: beyond loopback a browser cannot send the
// bearer token, so POST /ui/login exchanges it for a cookie that stands for
// it. The cookie is HttpOnly (page scripts cannot read it) and
// SameSite=Strict (no other site's page makes the browser send it); its
// value is an HMAC of the token, so the token itself is not stored in the
// browser, and changing the token ends every session.
const (
	sessionCookie = "cortexd_session"
	sessionMaxAge = 12 * time.Hour
	loginRate     = 1 // POST /ui/login attempts per second, over all clients
	loginBurst    = 5
)

// startTaskLog starts following the coordinator's events, once. s.mu must
// be held.
func (s *Server) startTaskLog() {
	if !s.logOn {
		s.logOn = true
		s.stopLog = s.tlog.start()
	}
}

// taskTrace answers GET /v1/tasks/{id}/trace.
func (s *Server) taskTrace(w http.ResponseWriter, r *http.Request) {
	id, err := s.taskID(r)
	if err == nil {
		if _, err = s.deps.Tasks.Status(id); err == nil {
			writeJSON(w, http.StatusOK, s.tlog.trace(id))
			return
		}
	}
	s.writeError(w, r, err)
}

// metricSeries answers GET /v1/metrics/series.
func (s *Server) metricSeries(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.tlog.series(time.Now()))
}

// sessionValue is the cookie value that stands for the token; empty
// without a token.
func (s *Server) sessionValue() string {
	if len(s.token) == 0 {
		return ""
	}
	m := hmac.New(sha256.New, s.token)
	m.Write([]byte("cortexd dashboard session v1"))
	return hex.EncodeToString(m.Sum(nil))
}

// session reports whether r carries a valid session cookie.
func (s *Server) session(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	want := s.sessionValue()
	return err == nil && want != "" && subtle.ConstantTimeCompare([]byte(c.Value), []byte(want)) == 1
}

// LoginRequest is the body of POST /ui/login.
type loginRequest struct {
	Token string `json:"token"`
}

// login answers POST /ui/login: the token in a JSON body, for the session
// cookie. It needs no token itself (it is how a browser gets one in), so
// its attempts are rate-limited; like every request it passes the browser
// guard: JSON only, from this origin only.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if len(s.token) == 0 {
		s.writeError(w, r, &httpError{http.StatusNotFound, apiv1.CodeNotFound,
			"this API has no token, so the dashboard needs no login: it answers on loopback only, at /ui/"})
		return
	}
	if !s.logins.Allow() {
		w.Header().Set("Retry-After", "1")
		s.writeError(w, r, &httpError{http.StatusTooManyRequests, "too_many_logins", "too many login attempts: wait a second and try again"})
		return
	}
	var req loginRequest
	dec := json.NewDecoder(r.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		s.writeError(w, r, badRequest("the login body must be JSON {\"token\": \"...\"}: %v", err))
		return
	}
	tok := strings.TrimSpace(req.Token)
	if subtle.ConstantTimeCompare([]byte(tok), s.token) != 1 {
		s.log.Info("dashboard login refused: wrong token", "remote", r.RemoteAddr)
		s.unauthorized(w, r, "the token is wrong: use the one `cortexd token` prints (the repo's api.token_file)")
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: s.sessionValue(), Path: "/",
		MaxAge: int(sessionMaxAge.Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode})
	s.log.Info("dashboard login", "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

// apiFetcher serves the dashboard's reads from the API's own handlers, in
// process: the dashboard shows what the API answers, converted once. The
// request that asks has passed authentication already.
type apiFetcher struct{ s *Server }

var _ dashboard.Fetcher = apiFetcher{}

// Fetch GETs path (with its query) from the API's routes into out.
func (f apiFetcher) Fetch(ctx context.Context, path string, out any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, path, nil)
	if err != nil {
		return fmt.Errorf("fetch %s: %w", path, err)
	}
	rec := &recorder{header: http.Header{}, status: http.StatusOK}
	f.s.mux.ServeHTTP(rec, req)
	if rec.status != http.StatusOK {
		var eb apiv1.ErrorBody
		if json.Unmarshal(rec.body.Bytes(), &eb) == nil && eb.Error.Code != "" {
			return &dashboard.APIError{Status: rec.status, Code: eb.Error.Code, Message: eb.Error.Message}
		}
		return &dashboard.APIError{Status: rec.status, Code: apiv1.CodeInternal, Message: clip(rec.body.String(), 200)}
	}
	if err := json.Unmarshal(rec.body.Bytes(), out); err != nil {
		return fmt.Errorf("fetch %s: decode: %w", path, err)
	}
	return nil
}

// recorder is the http.ResponseWriter of an in-process fetch.
type recorder struct {
	header http.Header
	status int
	wrote  bool
	body   bytes.Buffer
}

func (r *recorder) Header() http.Header { return r.header }

func (r *recorder) WriteHeader(code int) {
	if !r.wrote {
		r.status, r.wrote = code, true
	}
}

func (r *recorder) Write(b []byte) (int, error) {
	r.wrote = true
	return r.body.Write(b)
}
