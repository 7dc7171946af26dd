package api

import (
	"crypto/subtle"
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
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
		got, ok := bearer(r)
		switch {
		case ok && len(s.token) > 0 && subtle.ConstantTimeCompare([]byte(got), s.token) == 1:
		case ok:
			s.unauthorized(w, r, "the bearer token is wrong: use the token in the repo's api.token_file")
			return
		case s.requireToken.Load():
			s.unauthorized(w, r, "this API listens beyond loopback: send Authorization: Bearer <token from the repo's api.token_file>")
			return
		}
		next.ServeHTTP(w, r)
	})
}

func (s *Server) unauthorized(w http.ResponseWriter, r *http.Request, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="cortexd"`)
	s.writeError(w, r, &httpError{http.StatusUnauthorized, apiv1.CodeUnauthorized, msg})
}

func bearer(r *http.Request) (string, bool) {
	h := r.Header.Get("Authorization")
	if h == "" {
		return "", false
	}
	scheme, tok, found := strings.Cut(h, " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return "", true // present but malformed: treated as a wrong token
	}
	return strings.TrimSpace(tok), true
}
