package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/dashboard"
)

// The dashboard's session: beyond loopback a browser cannot send the
// bearer token, so POST /ui/login exchanges it for a cookie that stands for
// it. The cookie is HttpOnly (page scripts cannot read it) and
// SameSite=Strict (no other site's page makes the browser send it); its
// value is a random session ID that the server keeps (at most maxSessions,
// each for sessionMaxAge), so the token is not stored in the browser, POST
// /ui/logout ends the session for good, and a restart ends every session.
const (
	sessionCookie = "cortexd_session"
	sessionMaxAge = 12 * time.Hour
	maxSessions   = 256 // past it, a login ends the session that would expire first
	loginRate     = 1   // POST /ui/login attempts per second, over all clients
	loginBurst    = 5
)

// sessionStore holds the live sessions, by the sha256 of their ID (so that
// a lookup's timing says nothing about the IDs), with their expiry.
type sessionStore struct {
	mu sync.Mutex
	m  map[[32]byte]time.Time
}

// add starts a session and returns its ID.
func (ss *sessionStore) add(now time.Time) (string, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new session: %w", err)
	}
	id := hex.EncodeToString(b[:])
	ss.mu.Lock()
	defer ss.mu.Unlock()
	if ss.m == nil {
		ss.m = make(map[[32]byte]time.Time)
	}
	var first [32]byte
	var firstAt time.Time
	for k, exp := range ss.m {
		switch {
		case !now.Before(exp):
			delete(ss.m, k)
		case firstAt.IsZero() || exp.Before(firstAt):
			first, firstAt = k, exp
		}
	}
	if len(ss.m) >= maxSessions {
		delete(ss.m, first)
	}
	ss.m[sha256.Sum256([]byte(id))] = now.Add(sessionMaxAge)
	return id, nil
}

// valid reports whether id is a live session.
func (ss *sessionStore) valid(id string, now time.Time) bool {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	exp, ok := ss.m[sha256.Sum256([]byte(id))]
	return ok && now.Before(exp)
}

// end ends the session id, if there is one; it reports whether there was.
func (ss *sessionStore) end(id string) bool {
	k := sha256.Sum256([]byte(id))
	ss.mu.Lock()
	defer ss.mu.Unlock()
	_, ok := ss.m[k]
	delete(ss.m, k)
	return ok
}

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

// session reports whether r carries the cookie of a live session (only a
// server with a token has any).
func (s *Server) session(r *http.Request) bool {
	c, err := r.Cookie(sessionCookie)
	return err == nil && len(s.token) > 0 && s.sessions.valid(c.Value, time.Now())
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
	id, err := s.sessions.add(time.Now())
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: id, Path: "/",
		MaxAge: int(sessionMaxAge.Seconds()), HttpOnly: true, SameSite: http.SameSiteStrictMode})
	s.log.Info("dashboard login", "remote", r.RemoteAddr)
	w.WriteHeader(http.StatusNoContent)
}

// logout answers POST /ui/logout: it ends the request's session, so that
// its cookie is no good anywhere from now on, and clears the cookie. It
// needs no token (ending a session gives nothing away) and answers 204
// whether or not there was a session; the browser guard still applies:
// only this origin's pages can send it.
func (s *Server) logout(w http.ResponseWriter, r *http.Request) {
	if c, err := r.Cookie(sessionCookie); err == nil && s.sessions.end(c.Value) {
		s.log.Info("dashboard logout", "remote", r.RemoteAddr)
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/", MaxAge: -1,
		HttpOnly: true, SameSite: http.SameSiteStrictMode})
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
