package api_test

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/wire"
)

func TestAPIMaxInputIsTheWireLimit(t *testing.T) {
	if apiv1.MaxInputBytes != wire.MaxTaskInput {
		t.Fatalf("apiv1.MaxInputBytes = %d, wire.MaxTaskInput = %d: they must agree", apiv1.MaxInputBytes, wire.MaxTaskInput)
	}
	// A JSON submission of the largest input, base64 in input_base64,
	// fits the default body limit with room for the other fields.
	if n := base64.StdEncoding.EncodedLen(apiv1.MaxInputBytes) + 64<<10; n > api.DefaultMaxBodyBytes {
		t.Fatalf("the largest input in base64 plus 64 KiB is %d bytes, over the default body limit %d", n, api.DefaultMaxBodyBytes)
	}
}

// rawRequest posts body as a raw submission with the query q.
func rawRequest(t testing.TB, h http.Handler, q string, body io.Reader, size int64) answer {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/tasks?"+q, body)
	req.Header.Set("Content-Type", "application/octet-stream")
	req.ContentLength = size
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}
}

func TestAPIRawSubmission(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()
	a := rawRequest(t, h, "skill=hash.sha256&priority=high&timeout=20s&min_trust=0.3&max_attempts=2&base_backoff=10ms&retry_on=execution_failed,timeout", strings.NewReader("hello"), 5)
	if a.status != http.StatusAccepted {
		t.Fatalf("raw submit: %d %s", a.status, a.body)
	}
	var task apiv1.Task
	if err := json.Unmarshal(a.body, &task); err != nil || task.Priority != 160 {
		t.Fatalf("raw submit answered %s (%v); want the task at priority 160", a.body, err)
	}
	w := request(t, h, "GET", "/v1/tasks/"+task.ID+"/wait?timeout=10s", "")
	var done apiv1.Task
	if err := json.Unmarshal(w.body, &done); err != nil || done.Result == nil ||
		!bytes.Contains(done.Result.Output, []byte("2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")) {
		t.Fatalf("the raw input was not hashed as sent: %s", w.body)
	}

	cases := []struct {
		name, query string
		status      int
		code, msg   string
	}{
		{"an unknown parameter is refused, naming the known ones", "skill=echo&colour=red", 400, apiv1.CodeInvalidRequest, `unknown parameter "colour": with a raw body the parameters are skill, version`},
		{"a parameter given twice is refused", "skill=echo&skill=hash.sha256", 400, apiv1.CodeInvalidRequest, "given 2 times"},
		{"a priority over 255 says the range", "skill=echo&priority=300", 400, apiv1.CodeInvalidRequest, "priority must be 0-255"},
		{"a timeout without a unit is refused", "skill=echo&timeout=5", 400, apiv1.CodeInvalidRequest, "timeout must be a duration with a unit"},
		{"a timeout over a day is refused", "skill=echo&timeout=25h", 400, apiv1.CodeInvalidRequest, "at most 24h"},
		{"a missing skill is refused", "priority=low", 400, apiv1.CodeInvalidRequest, `"skill" is required`},
		{"an empty retry_on is refused", "skill=echo&retry_on=", 400, apiv1.CodeInvalidRequest, "is empty"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := rawRequest(t, h, tc.query, strings.NewReader("x"), 1)
			if a.status != tc.status || a.errorCode(t) != tc.code || !strings.Contains(a.message(t), tc.msg) {
				t.Fatalf("%d %s; want %d %s saying %q", a.status, a.body, tc.status, tc.code, tc.msg)
			}
		})
	}
}

// message returns the message of an error answer.
func (a answer) message(t testing.TB) string {
	t.Helper()
	var eb apiv1.ErrorBody
	if err := json.Unmarshal(a.body, &eb); err != nil {
		t.Fatalf("error body %q is not JSON: %v", a.body, err)
	}
	return eb.Error.Message
}

// zeros reads n zero bytes.
func zeros(n int64) io.Reader { return io.LimitReader(zeroReader{}, n) }

type zeroReader struct{}

func (zeroReader) Read(p []byte) (int, error) { clear(p); return len(p), nil }

func TestAPIInputOverTheLimitIsA413NamingIt(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()
	over := int64(apiv1.MaxInputBytes + 1)
	for _, tc := range []struct {
		name string
		size int64 // the Content-Length sent
	}{
		{"a raw body declared over the limit is refused before it is read", over},
		{"a raw body of unknown length is refused once it passes the limit", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := rawRequest(t, h, "skill=echo", zeros(over), tc.size)
			if a.status != http.StatusRequestEntityTooLarge || a.errorCode(t) != apiv1.CodeInputTooLarge ||
				!strings.Contains(string(a.body), "16773120 bytes") {
				t.Fatalf("%d %s; want 413 %s naming the limit of %d bytes", a.status, a.body, apiv1.CodeInputTooLarge, apiv1.MaxInputBytes)
			}
		})
	}
	t.Run("a JSON input_base64 over the limit is refused naming the input limit, not the body's", func(t *testing.T) {
		raw, _ := io.ReadAll(zeros(over))
		body := `{"skill":"echo","input_base64":"` + base64.StdEncoding.EncodeToString(raw) + `"}`
		a := request(t, h, "POST", "/v1/tasks", body)
		if a.status != http.StatusRequestEntityTooLarge || a.errorCode(t) != apiv1.CodeInputTooLarge {
			t.Fatalf("%d %.300s; want 413 %s", a.status, a.body, apiv1.CodeInputTooLarge)
		}
	})
	t.Run("a raw body under a lower api.max_body_bytes names that key", func(t *testing.T) {
		h := server(t, e, api.WithMaxBodyBytes(4096)).Handler()
		a := rawRequest(t, h, "skill=echo", zeros(5000), -1)
		if a.status != http.StatusRequestEntityTooLarge || a.errorCode(t) != apiv1.CodeTooLarge || !strings.Contains(string(a.body), "api.max_body_bytes") {
			t.Fatalf("%d %s; want 413 %s naming api.max_body_bytes", a.status, a.body, apiv1.CodeTooLarge)
		}
	})
}

func TestAPIOutOfRangeParametersAreRefused(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()
	task := submit(t, h, `{"skill":"echo"}`)
	for _, tc := range []struct{ name, path, msg string }{
		{"a wait longer than 10m is refused with the bound", "/v1/tasks/" + task.ID + "/wait?timeout=11m", "longer than the most a wait may take, 10m0s"},
		{"a wait without a unit is refused", "/v1/tasks/" + task.ID + "/wait?timeout=30", "with a unit"},
		{"a list limit that is not a number is refused with the bound", "/v1/tasks?limit=lots", "from 1 to 999"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := request(t, h, "GET", tc.path, "")
			if a.status != 400 || a.errorCode(t) != apiv1.CodeInvalidRequest || !strings.Contains(string(a.body), tc.msg) {
				t.Fatalf("%d %s; want 400 saying %q", a.status, a.body, tc.msg)
			}
		})
	}
	a := request(t, h, "POST", "/v1/tasks?skill=echo", `{"skill":"echo"}`)
	if a.status != 400 || !strings.Contains(string(a.body), "application/octet-stream") {
		t.Fatalf("JSON submission with a query: %d %s; want 400 pointing to the raw form", a.status, a.body)
	}
}

func TestAPIMalformedAuthorizationSaysWhatIsWrong(t *testing.T) {
	e := newEngine(t)
	h := server(t, e, api.WithToken("s3cret")).Handler()
	for _, tc := range []struct{ name, header, msg string }{
		{"another scheme is named", "Basic dXNlcjpwYXNz", `starts "Basic", not Bearer`},
		{"a pasted error message is spotted", "Bearer OCI runtime exec failed: exec failed", "has 6 words, not one"},
		{"a missing token is spotted", "Bearer ", "no token after Bearer"},
		{"a wrong token points to cortexd token", "Bearer nope", "`cortexd token`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := request(t, h, "GET", "/v1/id", "", "Authorization", tc.header)
			if a.status != 401 || a.errorCode(t) != apiv1.CodeUnauthorized || !strings.Contains(a.message(t), tc.msg) {
				t.Fatalf("%d %s; want 401 %s saying %q", a.status, a.body, apiv1.CodeUnauthorized, tc.msg)
			}
			if strings.Contains(string(a.body), "dXNlcjpwYXNz") {
				t.Fatalf("the answer quotes the credentials: %s", a.body)
			}
		})
	}
}

// rawHTTP sends req as is on a new connection to addr and returns the
// answer.
func rawHTTP(t testing.TB, addr, req string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestAPIMalformedRequestsGetJSONErrors(t *testing.T) {
	e := newEngine(t)
	l := loopbackListener(t)
	serve(t, server(t, e), l)
	addr := l.Addr().String()
	for _, tc := range []struct{ name, req, msg string }{
		{"a header line without a colon (a pasted multi-line token)", "GET /v1/id HTTP/1.1\r\nHost: " + addr + "\r\nAuthorization: Bearer cat: not found\r\nexecutable file not found in $PATH\r\n\r\n", "a header line has no colon"},
		{"a request without Host", "GET /v1/id HTTP/1.1\r\n\r\n", "missing required Host header"},
		{"headers over the limit", "GET /v1/id HTTP/1.1\r\nHost: " + addr + "\r\nX-Big: " + strings.Repeat("a", 80<<10) + "\r\n\r\n", "larger than the limit of 64 KiB"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := rawHTTP(t, addr, tc.req)
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			var eb apiv1.ErrorBody
			if resp.StatusCode/100 != 4 || resp.Header.Get("Content-Type") != "application/json" || json.Unmarshal(b, &eb) != nil ||
				eb.Error.Code != apiv1.CodeInvalidRequest || !strings.Contains(eb.Error.Message, tc.msg) {
				t.Fatalf("%s %q %s; want a 4xx JSON %s saying %q", resp.Status, resp.Header.Get("Content-Type"), b, apiv1.CodeInvalidRequest, tc.msg)
			}
		})
	}
	// A well-formed request on the same server is answered as before.
	resp := rawHTTP(t, addr, "GET /healthz HTTP/1.1\r\nHost: "+addr+"\r\n\r\n")
	defer resp.Body.Close()
	if b, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || !strings.Contains(string(b), `"ok"`) {
		t.Fatalf("GET /healthz: %s %s", resp.Status, b)
	}
}
