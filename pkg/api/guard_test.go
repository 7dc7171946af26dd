package api_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// TestBrowserGuard checks that a web page cannot drive the API: another
// origin, a form or text/plain body, and a rebound Host are refused.
func TestBrowserGuard(t *testing.T) {
	e := newEngine(t)
	l := loopbackListener(t)
	base := serve(t, server(t, e), l)
	port := l.Addr().String()
	port = port[strings.LastIndexByte(port, ':'):]
	const body = `{"skill":"echo","input":{"x":1}}`
	cases := []struct {
		name, method, path, body string
		hdr                      map[string]string
		status                   int
		code                     string
	}{
		{"form post", "POST", "/v1/tasks", body, map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415, apiv1.CodeUnsupportedType},
		{"text/plain post", "POST", "/v1/tasks", body, map[string]string{"Content-Type": "text/plain"}, 415, apiv1.CodeUnsupportedType},
		{"no content type with body", "POST", "/v1/tasks", body, nil, 415, apiv1.CodeUnsupportedType},
		{"foreign origin", "POST", "/v1/tasks", body, map[string]string{"Content-Type": "application/json", "Origin": "http://evil.example"}, 403, apiv1.CodeForbiddenOrigin},
		{"foreign origin deny", "POST", "/v1/peers/x/deny", "", map[string]string{"Origin": "http://evil.example"}, 403, apiv1.CodeForbiddenOrigin},
		{"null origin read", "GET", "/v1/tasks", "", map[string]string{"Origin": "null"}, 403, apiv1.CodeForbiddenOrigin},
		{"rebound host", "GET", "/v1/tasks", "", map[string]string{"Host": "evil.example" + port}, 403, apiv1.CodeForbiddenHost},
		{"loopback host other port", "GET", "/v1/tasks", "", map[string]string{"Host": "127.0.0.1:1"}, 403, apiv1.CodeForbiddenHost},
		{"localhost", "GET", "/v1/tasks", "", map[string]string{"Host": "localhost" + port}, 200, ""},
		{"ipv6 loopback", "GET", "/v1/tasks", "", map[string]string{"Host": "[::1]" + port}, 200, ""},
		{"own origin", "GET", "/v1/tasks", "", map[string]string{"Origin": "http://127.0.0.1" + port}, 200, ""},
		{"json post", "POST", "/v1/tasks", body, map[string]string{"Content-Type": "application/json; charset=utf-8"}, 202, ""},
		{"healthz any host", "GET", "/healthz", "", map[string]string{"Host": "evil.example"}, 200, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var rd io.Reader
			if c.body != "" {
				rd = strings.NewReader(c.body)
			}
			req, err := http.NewRequest(c.method, base+c.path, rd)
			if err != nil {
				t.Fatal(err)
			}
			for k, v := range c.hdr {
				if k == "Host" {
					req.Host = v
				} else {
					req.Header.Set(k, v)
				}
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			a := answer{resp.StatusCode, resp.Header, b}
			if a.status != c.status {
				t.Fatalf("status %d, want %d: %s", a.status, c.status, a.body)
			}
			if c.code != "" {
				if got := a.errorCode(t); got != c.code {
					t.Errorf("code %q, want %q", got, c.code)
				}
			}
		})
	}
}

// TestTokenSkipsHostCheck checks that a request with the right token is
// not bound to a loopback Host (a proxy may forward it).
func TestTokenSkipsHostCheck(t *testing.T) {
	e := newEngine(t)
	base := serve(t, server(t, e, api.WithToken("tok")), loopbackListener(t))
	req, _ := http.NewRequest("GET", base+"/v1/tasks", nil)
	req.Host = "cortexd.internal:5080"
	req.Header.Set("Authorization", "Bearer tok")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("status %d, want 200", resp.StatusCode)
	}
}
