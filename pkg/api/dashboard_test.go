package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// TestDashboardLoginBeyondLoopback checks the dashboard's session beyond
// loopback: a page without one is sent to the login page, a wrong token
// gets no cookie, the right one gets an HttpOnly SameSite=Strict cookie
// that opens the pages and the API in the token's place, and the login
// refuses other origins and form bodies as the API does.
func TestDashboardLoginBeyondLoopback(t *testing.T) {
	e := newEngine(t)
	const tok = "s3cret-token"
	l := loopbackListener(t)
	base := "http://" + l.Addr().String()
	serve(t, server(t, e, api.WithToken(tok)), publicListener{l})
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	do := func(method, path, body, contentType string, cookie *http.Cookie, hdr ...string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if contentType != "" {
			req.Header.Set("Content-Type", contentType)
		}
		if cookie != nil {
			req.AddCookie(cookie)
		}
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp
	}

	if r := do("GET", "/ui/tasks", "", "", nil); r.StatusCode != http.StatusSeeOther || !strings.HasPrefix(r.Header.Get("Location"), "/ui/login?next=%2Fui%2Ftasks") {
		t.Errorf("a page without a session: %d to %q, want 303 to the login page", r.StatusCode, r.Header.Get("Location"))
	}
	if r := do("GET", "/v1/id", "", "", nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the API without a session: %d, want 401", r.StatusCode)
	}
	for _, path := range []string{"/ui/login", "/ui/static/app.js"} {
		if r := do("GET", path, "", "", nil); r.StatusCode != http.StatusOK {
			t.Errorf("GET %s without a session: %d, want 200 (the login page and its files are public)", path, r.StatusCode)
		}
	}
	if r := do("POST", "/ui/login", `{"token":"wrong"}`, "application/json", nil); r.StatusCode != http.StatusUnauthorized || len(r.Cookies()) != 0 {
		t.Errorf("login with a wrong token: %d with %d cookies, want 401 and none", r.StatusCode, len(r.Cookies()))
	}
	if r := do("POST", "/ui/login", "token="+tok, "application/x-www-form-urlencoded", nil); r.StatusCode != http.StatusUnsupportedMediaType {
		t.Errorf("login by a form post: %d, want 415", r.StatusCode)
	}
	if r := do("POST", "/ui/login", `{"token":"`+tok+`"}`, "application/json", nil, "Origin", "http://evil.example"); r.StatusCode != http.StatusForbidden || len(r.Cookies()) != 0 {
		t.Errorf("login from another origin: %d with %d cookies, want 403 and none", r.StatusCode, len(r.Cookies()))
	}
	r := do("POST", "/ui/login", `{"token":"`+tok+`"}`, "application/json", nil)
	if r.StatusCode != http.StatusNoContent || len(r.Cookies()) != 1 {
		t.Fatalf("login with the token: %d with %d cookies, want 204 and one", r.StatusCode, len(r.Cookies()))
	}
	c := r.Cookies()[0]
	if !c.HttpOnly || c.SameSite != http.SameSiteStrictMode || strings.Contains(c.Value, tok) {
		t.Errorf("session cookie %+v: want HttpOnly, SameSite=Strict, and not the token itself", c)
	}
	for _, path := range []string{"/ui/", "/ui/tasks", "/v1/id"} {
		if r := do("GET", path, "", "", c); r.StatusCode != http.StatusOK {
			t.Errorf("GET %s with the session: %d, want 200", path, r.StatusCode)
		}
	}
	if r := do("POST", "/v1/tasks", `{"skill":"echo","input":1}`, "application/json", c, "Origin", "http://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Errorf("a submission with the session from another origin: %d, want 403", r.StatusCode)
	}
	forged := &http.Cookie{Name: c.Name, Value: strings.Repeat("0", len(c.Value))}
	if r := do("GET", "/v1/id", "", "", forged); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("a forged session cookie: %d, want 401", r.StatusCode)
	}

	// The pages offer to log out; logging out ends the session for good.
	req, _ := http.NewRequest("GET", base+"/ui/", nil)
	req.AddCookie(c)
	page, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(page.Body)
	page.Body.Close()
	if !strings.Contains(string(body), `id="logout"`) {
		t.Errorf("the overview with a session has no logout button")
	}
	r2 := do("POST", "/ui/login", `{"token":"`+tok+`"}`, "application/json", nil)
	if len(r2.Cookies()) != 1 {
		t.Fatalf("a second login: %d cookies, want 1", len(r2.Cookies()))
	}
	other := r2.Cookies()[0]
	if r := do("POST", "/ui/logout", "", "", c, "Origin", "http://evil.example"); r.StatusCode != http.StatusForbidden {
		t.Errorf("a logout from another origin: %d, want 403", r.StatusCode)
	}
	r = do("POST", "/ui/logout", "", "", c)
	if r.StatusCode != http.StatusNoContent || len(r.Cookies()) != 1 || r.Cookies()[0].MaxAge >= 0 {
		t.Errorf("logout: %d with cookies %v, want 204 and the cookie cleared", r.StatusCode, r.Cookies())
	}
	if r := do("GET", "/v1/id", "", "", c); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("the API with the cookie of a session that logged out: %d, want 401", r.StatusCode)
	}
	if r := do("GET", "/v1/id", "", "", other); r.StatusCode != http.StatusOK {
		t.Errorf("the API with another, live session: %d, want 200", r.StatusCode)
	}
	if r := do("POST", "/ui/logout", "", "", nil); r.StatusCode != http.StatusNoContent {
		t.Errorf("logout without a session: %d, want 204", r.StatusCode)
	}
}

// TestTaskTraceRecordsAttempts checks GET /v1/tasks/{id}/trace: a task
// submitted through the API has its attempt (node, outcome) and its input,
// and the metric series counts it.
func TestTaskTraceRecordsAttempts(t *testing.T) {
	e := newEngine(t)
	base := serve(t, server(t, e), loopbackListener(t))
	resp, err := http.Post(base+"/v1/tasks", "application/json", strings.NewReader(`{"skill":"echo","input":{"x":1}}`))
	if err != nil {
		t.Fatal(err)
	}
	var task apiv1.Task
	if err := json.NewDecoder(resp.Body).Decode(&task); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	get := func(path string, out any) {
		t.Helper()
		r, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Body.Close()
		if r.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, r.Status)
		}
		if err := json.NewDecoder(r.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	var tr apiv1.TaskTrace
	deadline := time.Now().Add(10 * time.Second)
	for {
		get("/v1/tasks/"+task.ID+"/trace", &tr)
		if n := len(tr.Attempts); n > 0 && tr.Attempts[n-1].EndedAt != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the trace shows no ended attempt after 10 s: %+v", tr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	a := tr.Attempts[0]
	if !tr.Recorded || a.Number != 1 || a.Outcome != apiv1.StateSucceeded || a.Node == "" {
		t.Errorf("trace %+v: want one recorded attempt that succeeded on a node", tr)
	}
	if tr.Input == nil || string(tr.Input.JSON) != `{"x":1}` || tr.Input.Size != 7 {
		t.Errorf("trace input %+v: want the JSON {\"x\":1} of 7 bytes", tr.Input)
	}
	var s apiv1.Series
	get("/v1/metrics/series", &s)
	finished := 0
	for _, p := range s.Points {
		finished += p.Finished
	}
	if finished != 1 || s.IntervalMS != 5000 {
		t.Errorf("series: %d tasks finished in %d ms steps, want 1 in 5000", finished, s.IntervalMS)
	}
}
