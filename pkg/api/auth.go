package api

import (
	"crypto/subtle"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/dashboard"
)

// IsLoopback reports whether a listen address (host:port, or a
// net.Addr's String) only accepts connections from this machine.
func IsLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		host = addr
	}
	if host == "localhost" {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.IsLoopback()
}

// authenticate checks the bearer token. A request that carries a token must
// carry the right one. A request without one passes only when the server
// listens on loopback; /healthz and /readyz never need one, so that probes
// work without the secret.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" {
			next.ServeHTTP(w, r)
			return
		}
		if err := s.checkBrowser(r); err != nil {
			s.writeError(w, r, err)
			return
		}
		got, ok, malformed := bearer(r)
		if malformed != "" {
			s.unauthorized(w, r, malformed)
			return
		}
		if !ok && (dashboard.Public(r.URL.Path) || s.session(r)) {
			// The login page and its assets, and a browser whose session
			// cookie stands for the token (see dashboard.go).
			next.ServeHTTP(w, r)
			return
		}
		if !ok && !s.requireToken.Load() { // beyond loopback: 401 below
			if err := s.checkHost(r); err != nil {
				s.writeError(w, r, err)
				return
			}
		}
		switch {
		case ok && len(s.token) > 0 && subtle.ConstantTimeCompare([]byte(got), s.token) == 1:
		case ok:
			s.unauthorized(w, r, "the bearer token is wrong: use the one in the repo's api.token_file, which `cortexd token` prints")
			return
		case s.requireToken.Load() && r.Method == http.MethodGet && dashboard.Page(r.URL.Path):
			// A person at a browser: the login page, and back here after.
			http.Redirect(w, r, dashboard.LoginPath+"?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
			return
		case s.requireToken.Load():
			s.unauthorized(w, r, "this API listens beyond loopback: send Authorization: Bearer <token>, with the token `cortexd token` prints (the repo's api.token_file)")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// checkBrowser refuses what a web page could make a browser send: a
// request from another origin (the Origin header is not this API's own,
// http://<Host>), and a body that is not JSON (an HTML form or a
// text/plain fetch needs no CORS preflight, application/json does). A
// request with a body must say Content-Type: application/json, or
// application/octet-stream for a raw input to POST /v1/tasks, or
// application/wasm for a module to POST /v1/skills (both need a preflight
// too); one without a body (POST /v1/tasks/{id}/cancel) may
// leave it out.
func (s *Server) checkBrowser(r *http.Request) error {
	if o := r.Header.Get("Origin"); o != "" && !strings.EqualFold(o, "http://"+r.Host) {
		return &httpError{http.StatusForbidden, apiv1.CodeForbiddenOrigin,
			fmt.Sprintf("requests from origin %q are refused: the API answers only its own clients, not web pages", clip(o, 100))}
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	ct := r.Header.Get("Content-Type")
	if ct == "" && r.ContentLength == 0 {
		return nil
	}
	mt, _, err := mime.ParseMediaType(ct)
	switch {
	case err == nil && mt == "application/json":
		return nil
	case err == nil && mt == rawMediaType && r.Method == http.MethodPost && r.URL.Path == "/v1/tasks":
		return nil // not a type a web page may send without a CORS preflight
	case err == nil && mt == apiv1.WasmMediaType && r.Method == http.MethodPost && r.URL.Path == "/v1/skills":
		return nil // nor is this one
	case r.URL.Path == "/v1/skills" && r.Method == http.MethodPost:
		return &httpError{http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedType,
			fmt.Sprintf("Content-Type %q is refused: POST /v1/skills takes the module's bytes with Content-Type: %s (curl: -H 'Content-Type: %s' --data-binary @FILE.wasm), the manifest's fields in the query",
				clip(ct, 100), apiv1.WasmMediaType, apiv1.WasmMediaType)}
	case r.URL.Path == "/v1/tasks":
		return &httpError{http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedType,
			fmt.Sprintf("Content-Type %q is refused: send a JSON submission with Content-Type: application/json (curl: -H 'Content-Type: application/json'), or the raw input with Content-Type: %s and the other fields in the query", clip(ct, 100), rawMediaType)}
	}
	return &httpError{http.StatusUnsupportedMediaType, apiv1.CodeUnsupportedType,
		fmt.Sprintf("Content-Type %q is refused: send the body as JSON with Content-Type: application/json (curl: -H 'Content-Type: application/json')", clip(ct, 100))}
}

// checkHost guards a request without a token against DNS rebinding: once
// the server has a listener, its Host header must name loopback
// (localhost, 127.0.0.1, [::1]) and the listener's port.
func (s *Server) checkHost(r *http.Request) error {
	port := s.port.Load()
	if port == 0 { // no listener: Handler used directly
		return nil
	}
	host, p, err := net.SplitHostPort(r.Host)
	if err != nil {
		host, p = r.Host, "80"
	}
	ok := host == "localhost"
	if a, err := netip.ParseAddr(strings.Trim(host, "[]")); err == nil && a.IsLoopback() {
		ok = true
	}
	if !ok || p != strconv.Itoa(int(port)) {
		return &httpError{http.StatusForbidden, apiv1.CodeForbiddenHost,
			fmt.Sprintf("Host %q is refused: without a bearer token the API answers only localhost:%d, 127.0.0.1:%d or [::1]:%d", clip(r.Host, 100), port, port, port)}
	}
	return nil
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="cortexd"`)
	s.writeError(w, r, &httpError{http.StatusUnauthorized, apiv1.CodeUnauthorized, msg})
}

// bearer returns the token of the Authorization header and whether there
// is one. A header that is not "Bearer <token>" is malformed: then it
// returns what is wrong with it, without quoting the token.
func bearer(r *http.Request) (tok string, ok bool, malformed string) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false, ""
	}
	const want = "send Authorization: Bearer <token>, with the token `cortexd token` prints"
	scheme, tok, found := strings.Cut(strings.TrimSpace(h), " ")
	switch {
	case !strings.EqualFold(scheme, "Bearer"):
		return "", true, fmt.Sprintf("the Authorization header starts %q, not Bearer: %s", clip(scheme, 20), want)
	case !found || strings.TrimSpace(tok) == "":
		return "", true, "the Authorization header has no token after Bearer: " + want
	case strings.ContainsAny(strings.TrimSpace(tok), " \t"):
		return "", true, fmt.Sprintf("the bearer token has %d words, not one: was an error message pasted as the token? %s", len(strings.Fields(tok)), want)
	}
	return strings.TrimSpace(tok), true, ""
}
