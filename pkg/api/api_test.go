package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

func newEngine(t testing.TB) *apitest.Engine { return apitest.NewEngine(t) }

// serve runs s on l and returns its base URL.
func server(t testing.TB, e *apitest.Engine, opts ...api.Option) *api.Server {
	t.Helper()
	s, err := api.New(e.Deps(), opts...)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func serve(t testing.TB, s *api.Server, l net.Listener) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		s.Shutdown(ctx)
		<-done
	})
	return "http://" + l.Addr().String()
}

func loopbackListener(t testing.TB) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// publicListener listens on loopback but reports an address beyond it, as
// a listener on 0.0.0.0 would, so the server requires a token.
type publicListener struct{ net.Listener }

func (publicListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4zero, Port: 5080} }

type answer struct {
	status int
	header http.Header
	body   []byte
}

func (a answer) errorCode(t testing.TB) string {
	t.Helper()
	var eb apiv1.ErrorBody
	if err := json.Unmarshal(a.body, &eb); err != nil {
		t.Fatalf("error body %q is not JSON: %v", a.body, err)
	}
	if eb.Error.Message == "" {
		t.Errorf("error body %s has no message", a.body)
	}
	return eb.Error.Code
}

func request(t testing.TB, h http.Handler, method, path, body string, hdr ...string) answer {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, rd)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return answer{rec.Code, rec.Header(), rec.Body.Bytes()}
}

func TestAPIErrors(t *testing.T) {
	e := newEngine(t)
	h := server(t, e, api.WithMaxBodyBytes(4096)).Handler()
	unknown := strings.Repeat("ab", 32)
	cases := []struct {
		name         string
		method, path string
		body         string
		status       int
		code         string
	}{
		{"malformed JSON is a 400 invalid_request", "POST", "/v1/tasks", `{"skill":`, 400, apiv1.CodeInvalidRequest},
		{"an unknown field is a 400 invalid_request", "POST", "/v1/tasks", `{"skill":"echo","colour":"red"}`, 400, apiv1.CodeInvalidRequest},
		{"an empty body is a 400 invalid_request", "POST", "/v1/tasks", ``, 400, apiv1.CodeInvalidRequest},
		{"a missing skill is a 400 invalid_request", "POST", "/v1/tasks", `{"input":1}`, 400, apiv1.CodeInvalidRequest},
		{"a bad priority name is a 400 invalid_request", "POST", "/v1/tasks", `{"skill":"echo","priority":"urgent"}`, 400, apiv1.CodeInvalidRequest},
		{"a bad timeout is a 400 invalid_request", "POST", "/v1/tasks", `{"skill":"echo","timeout":"soon"}`, 400, apiv1.CodeInvalidRequest},
		{"a min_trust above 1 is a 400 invalid_request", "POST", "/v1/tasks", `{"skill":"echo","min_trust":2}`, 400, apiv1.CodeInvalidRequest},
		{"both input kinds is a 400 invalid_request", "POST", "/v1/tasks", `{"skill":"echo","input":1,"input_base64":"AA=="}`, 400, apiv1.CodeInvalidRequest},
		{"input that fails the skill's schema is a 400 invalid_input", "POST", "/v1/tasks", `{"skill":"hash.sha256","input":{"data":7}}`, 400, apiv1.CodeInvalidInput},
		{"a body over the limit is a 413", "POST", "/v1/tasks", `{"skill":"echo","input":"` + strings.Repeat("x", 5000) + `"}`, 413, apiv1.CodeTooLarge},
		{"a skill no node offers is a 404 unknown_skill", "POST", "/v1/tasks", `{"skill":"no.such.skill"}`, 404, apiv1.CodeUnknownSkill},
		{"an unknown task is a 404 not_found", "GET", "/v1/tasks/" + unknown, "", 404, apiv1.CodeNotFound},
		{"waiting for an unknown task is a 404 not_found", "GET", "/v1/tasks/" + unknown + "/wait?timeout=1s", "", 404, apiv1.CodeNotFound},
		{"canceling an unknown task is a 404 not_found", "POST", "/v1/tasks/" + unknown + "/cancel", "", 404, apiv1.CodeNotFound},
		{"a malformed task ID is a 404 not_found", "GET", "/v1/tasks/xyz", "", 404, apiv1.CodeNotFound},
		{"a bad wait timeout is a 400", "GET", "/v1/tasks/" + unknown + "/wait?timeout=forever", "", 400, apiv1.CodeInvalidRequest},
		{"a bad list limit is a 400", "GET", "/v1/tasks?limit=-3", "", 400, apiv1.CodeInvalidRequest},
		{"a bad list state is a 400", "GET", "/v1/tasks?state=lost", "", 400, apiv1.CodeInvalidRequest},
		{"a bad peer ID is a 400", "GET", "/v1/trust/notapeer", "", 400, apiv1.CodeInvalidRequest},
		{"an unknown endpoint is a 404", "GET", "/v1/nothing", "", 404, apiv1.CodeNotFound},
		{"a wrong method is a 405", "PUT", "/v1/tasks", "", 405, "method_not_allowed"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a := request(t, h, tc.method, tc.path, tc.body)
			if a.status != tc.status {
				t.Errorf("status %d, want %d; body %s", a.status, tc.status, a.body)
			}
			if got := a.errorCode(t); got != tc.code {
				t.Errorf("code %q, want %q", got, tc.code)
			}
			if strings.Contains(string(a.body), `"message":"submit task: `) {
				t.Errorf("the message leaks the coordinator's prefix: %s", a.body)
			}
			if ct := a.header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type %q", ct)
			}
		})
	}
}

func TestAPITokenRequiredBeyondLoopback(t *testing.T) {
	e := newEngine(t)
	const tok = "s3cret-token"
	l := loopbackListener(t)
	base := "http://" + l.Addr().String()
	serve(t, server(t, e, api.WithToken(tok)), publicListener{l})

	get := func(path, auth string) int {
		req, _ := http.NewRequest("GET", base+path, nil)
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cases := []struct {
		name, path, auth string
		status           int
	}{
		{"a request without a token is refused", "/v1/id", "", 401},
		{"a request with a wrong token is refused", "/v1/id", "Bearer wrong", 401},
		{"a request with a malformed header is refused", "/v1/id", "Basic abc", 401},
		{"a request with the token is served", "/v1/id", "Bearer " + tok, 200},
		{"the metrics need the token too", "/v1/metrics", "", 401},
		{"the health check needs no token", "/healthz", "", 200},
		{"the readiness check needs no token", "/readyz", "", 200},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := get(tc.path, tc.auth); got != tc.status {
				t.Errorf("GET %s with %q: %d, want %d", tc.path, tc.auth, got, tc.status)
			}
		})
	}
}

func TestAPITokenOnLoopback(t *testing.T) {
	e := newEngine(t)
	h := server(t, e, api.WithToken("tok")).Handler()
	if a := request(t, h, "GET", "/v1/id", ""); a.status != 200 {
		t.Errorf("loopback without a token: %d, want 200", a.status)
	}
	if a := request(t, h, "GET", "/v1/id", "", "Authorization", "Bearer tok"); a.status != 200 {
		t.Errorf("loopback with the token: %d, want 200 (a token is always accepted)", a.status)
	}
	if a := request(t, h, "GET", "/v1/id", "", "Authorization", "Bearer nope"); a.status != 401 {
		t.Errorf("loopback with a wrong token: %d, want 401", a.status)
	}
}

func TestAPIServeRefusesPublicListenerWithoutToken(t *testing.T) {
	e := newEngine(t)
	l := loopbackListener(t)
	defer l.Close()
	if err := server(t, e).Serve(publicListener{l}); err == nil || !strings.Contains(err.Error(), "token") {
		t.Fatalf("Serve beyond loopback without a token: %v, want an error about the token", err)
	}
}

func submit(t testing.TB, h http.Handler, body string) apiv1.Task {
	t.Helper()
	a := request(t, h, "POST", "/v1/tasks", body)
	if a.status != http.StatusAccepted {
		t.Fatalf("submit %s: %d %s", body, a.status, a.body)
	}
	var task apiv1.Task
	if err := json.Unmarshal(a.body, &task); err != nil {
		t.Fatal(err)
	}
	if loc := a.header.Get("Location"); loc != "/v1/tasks/"+task.ID {
		t.Errorf("Location %q", loc)
	}
	return task
}

func TestAPITaskLifecycle(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()

	task := submit(t, h, `{"skill":"hash.sha256","input":{"data":"aGVsbG8="},"priority":"high","timeout":"20s","min_trust":0.4}`)
	if task.Priority != 160 || task.Level != "high" || task.Skill != "hash.sha256" {
		t.Errorf("submitted task %+v: want priority 160 (high)", task)
	}
	a := request(t, h, "GET", "/v1/tasks/"+task.ID+"/wait?timeout=10s", "")
	var done apiv1.Task
	if err := json.Unmarshal(a.body, &done); err != nil || a.status != 200 {
		t.Fatalf("wait: %d %s", a.status, a.body)
	}
	if done.State != apiv1.StateSucceeded || done.Result == nil ||
		string(done.Result.Output) != `{"sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}` {
		t.Fatalf("task ended %+v (result %+v)", done, done.Result)
	}
	if done.Result.ExecutedBy != e.Node.ID().String() || done.FinishedAt == nil {
		t.Errorf("result %+v: want executed by this node, with a finish time", done.Result)
	}

	raw := submit(t, h, `{"skill":"echo","input_base64":"AAEC/w=="}`)
	a = request(t, h, "GET", "/v1/tasks/"+raw.ID+"/wait?timeout=10s", "")
	var echoed apiv1.Task
	json.Unmarshal(a.body, &echoed)
	if echoed.Result == nil || string(echoed.Result.OutputBase64) != "\x00\x01\x02\xff" || echoed.Result.Output != nil {
		t.Errorf("raw echo: %s; want the bytes back base64-encoded", a.body)
	}

	slow := submit(t, h, `{"skill":"debug.sleep","input":{"ms":60000}}`)
	a = request(t, h, "GET", "/v1/tasks/"+slow.ID+"/wait?timeout=50ms", "")
	var pending apiv1.Task
	json.Unmarshal(a.body, &pending)
	if a.status != 200 || apiv1.Terminal(pending.State) {
		t.Errorf("a wait that times out: %d %s; want 200 and a state that is not terminal", a.status, a.body)
	}
	a = request(t, h, "POST", "/v1/tasks/"+slow.ID+"/cancel", "")
	if a.status != 200 {
		t.Fatalf("cancel: %d %s", a.status, a.body)
	}
	a = request(t, h, "GET", "/v1/tasks/"+slow.ID+"/wait?timeout=10s", "")
	var canceled apiv1.Task
	json.Unmarshal(a.body, &canceled)
	if canceled.State != apiv1.StateCanceled || canceled.Error == nil {
		t.Errorf("after cancel: %s; want state canceled with an error", a.body)
	}
	a = request(t, h, "POST", "/v1/tasks/"+slow.ID+"/cancel", "")
	var eb apiv1.ErrorBody
	json.Unmarshal(a.body, &eb)
	if want := "task " + slow.ID + " was already canceled"; a.status != 409 || eb.Error.Code != apiv1.CodeFinished || eb.Error.Message != want {
		t.Errorf("second cancel: %d %s; want 409 %s %q", a.status, a.body, apiv1.CodeFinished, want)
	}

	a = request(t, h, "GET", "/v1/tasks?limit=2", "")
	var page apiv1.TaskList
	if err := json.Unmarshal(a.body, &page); err != nil || len(page.Tasks) != 2 || page.Next == "" {
		t.Fatalf("first page: %s; want 2 tasks and a next cursor", a.body)
	}
	a = request(t, h, "GET", "/v1/tasks?limit=2&after="+page.Next, "")
	var page2 apiv1.TaskList
	if err := json.Unmarshal(a.body, &page2); err != nil || len(page2.Tasks) != 1 || page2.Next != "" {
		t.Fatalf("second page: %s; want the 1 remaining task and no cursor", a.body)
	}
	seen := map[string]bool{}
	for _, tk := range append(page.Tasks, page2.Tasks...) {
		seen[tk.ID] = true
	}
	if !seen[task.ID] || !seen[raw.ID] || !seen[slow.ID] {
		t.Errorf("the pages do not list every task once: %v", seen)
	}
	a = request(t, h, "GET", "/v1/tasks?state=canceled", "")
	var cl apiv1.TaskList
	json.Unmarshal(a.body, &cl)
	if len(cl.Tasks) != 1 || cl.Tasks[0].ID != slow.ID {
		t.Errorf("state=canceled: %s; want only the canceled task", a.body)
	}
}

func TestAPIInfoEndpoints(t *testing.T) {
	e := newEngine(t)
	h := server(t, e, api.WithVersion("v9")).Handler()
	var id apiv1.Identity
	if a := request(t, h, "GET", "/v1/id", ""); a.status != 200 || json.Unmarshal(a.body, &id) != nil {
		t.Fatalf("/v1/id: %d %s", a.status, a.body)
	}
	if id.ID != e.Node.ID().String() || id.Version != "v9" || len(id.Addrs) == 0 || !strings.HasSuffix(id.Addrs[0], "/p2p/"+id.ID) {
		t.Errorf("/v1/id = %+v", id)
	}
	var skills []apiv1.Skill
	if a := request(t, h, "GET", "/v1/skills", ""); a.status != 200 || json.Unmarshal(a.body, &skills) != nil {
		t.Fatalf("/v1/skills: %d %s", a.status, a.body)
	}
	if len(skills) != 4 || !skills[0].Local || skills[0].Providers[0] != id.ID {
		t.Errorf("/v1/skills = %+v; want the 4 built-ins, local, provided by this node", skills)
	}
	for _, path := range []string{"/v1/peers", "/v1/metrics", "/v1/trust", "/v1/trust/" + id.ID, "/healthz", "/readyz"} {
		if a := request(t, h, "GET", path, ""); a.status != 200 || !json.Valid(a.body) {
			t.Errorf("GET %s: %d %s", path, a.status, a.body)
		}
	}
}

func TestAPIDrainRefusesNewTasks(t *testing.T) {
	e := newEngine(t)
	s := server(t, e)
	h := s.Handler()
	s.Drain()
	a := request(t, h, "POST", "/v1/tasks", `{"skill":"echo"}`)
	if a.status != 503 || a.errorCode(t) != apiv1.CodeShuttingDown {
		t.Errorf("submit while draining: %d %s", a.status, a.body)
	}
	if a := request(t, h, "GET", "/readyz", ""); a.status != 503 {
		t.Errorf("/readyz while draining: %d", a.status)
	}
	if a := request(t, h, "GET", "/healthz", ""); a.status != 200 {
		t.Errorf("/healthz while draining: %d", a.status)
	}
}

func TestAPIEventStreamFollowsATask(t *testing.T) {
	e := newEngine(t)
	s := server(t, e)
	task := submit(t, s.Handler(), `{"skill":"debug.sleep","input":{"ms":200}}`)
	base := serve(t, s, loopbackListener(t))

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", base+"/v1/events?task="+task.ID, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		t.Fatalf("Content-Type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var states []string
	progress := 0
	for sc.Scan() {
		line := sc.Text()
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		var ev apiv1.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Fatalf("event %q: %v", data, err)
		}
		if ev.Task == nil || ev.Task.ID != task.ID {
			t.Fatalf("event %+v is not about task %s", ev, task.ID)
		}
		switch ev.Type {
		case "progress":
			// debug.sleep reports every 100 ms.
			if p := ev.Task.Progress; p == nil || p.Fraction <= 0 || p.Fraction > 1 || ev.Task.State != apiv1.StateRunning {
				t.Fatalf("progress event %+v: progress %+v, want a fraction in (0, 1] of a running task", ev, ev.Task.Progress)
			}
			progress++
			continue
		case "task":
		default:
			t.Fatalf("event %+v: want type task or progress", ev)
		}
		states = append(states, ev.Task.State)
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("the stream did not end after the final state: %v (states %v)", err, states)
	}
	if progress == 0 {
		t.Fatal("no progress event for a 200 ms debug.sleep")
	}
	if len(states) < 2 || states[len(states)-1] != apiv1.StateSucceeded || apiv1.Terminal(states[0]) {
		t.Fatalf("states seen %v, want a live state first and succeeded last", states)
	}
}

func TestAPIShutdownEndsEventStreams(t *testing.T) {
	e := newEngine(t)
	s := server(t, e)
	l := loopbackListener(t)
	base := "http://" + l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- s.Serve(l) }()
	resp, err := http.Get(base + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown with an open event stream: %v", err)
	}
	if err := <-done; err != http.ErrServerClosed {
		t.Errorf("Serve returned %v", err)
	}
	if _, err := io.ReadAll(resp.Body); err != nil {
		t.Errorf("stream did not end cleanly: %v", err)
	}
}

func TestAPITaskLatencyHistogram(t *testing.T) {
	e := newEngine(t)
	reg := prometheus.NewRegistry()
	lat := api.NewTaskLatency(e.Coordinator, e.Node.ID())
	reg.MustRegister(lat, api.NewCollector(e.Coordinator, e.Node, e.Trust))
	stop := lat.Start()
	defer stop()
	h := server(t, e).Handler()
	for range 3 {
		task := submit(t, h, `{"skill":"echo","input":1}`)
		if a := request(t, h, "GET", "/v1/tasks/"+task.ID+"/wait?timeout=10s", ""); a.status != 200 {
			t.Fatalf("wait: %d", a.status)
		}
	}
	// Events reach the histogram on the coordinator's subscriber goroutine.
	count := func() uint64 {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatal(err)
		}
		for _, mf := range mfs {
			if mf.GetName() == "cortex_task_duration_seconds" {
				return mf.GetMetric()[0].GetHistogram().GetSampleCount()
			}
		}
		return 0
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("cortex_task_duration_seconds counted %d tasks, want 3", count())
		}
		time.Sleep(10 * time.Millisecond)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		switch mf.GetName() {
		case "cortex_tasks_finished_total":
			for _, m := range mf.GetMetric() {
				if l := m.GetLabel()[0]; l.GetValue() == "completed" && m.GetCounter().GetValue() != 3 {
					t.Errorf("cortex_tasks_finished_total{outcome=completed} = %v, want 3", m.GetCounter().GetValue())
				}
			}
		case "cortex_task_duration_seconds":
			if len(mf.GetMetric()) != 1 {
				t.Errorf("cortex_task_duration_seconds has %d series, want 1", len(mf.GetMetric()))
			}
			for _, l := range mf.GetMetric()[0].GetLabel() {
				if l.GetName() == "where" && l.GetValue() != "local" || l.GetName() == "outcome" && l.GetValue() != "succeeded" {
					t.Errorf("label %s=%s", l.GetName(), l.GetValue())
				}
			}
		}
	}
}

// TestCollectorMetricNames checks that every metric the collector exports
// follows cortex_<subsystem>_<what>[_<unit>].
func TestCollectorMetricNames(t *testing.T) {
	e := newEngine(t)
	reg := prometheus.NewRegistry()
	reg.MustRegister(api.NewCollector(e.Coordinator, e.Node, e.Trust))
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	subsystems := []string{"queue", "tasks", "task", "grid", "trust"}
	names := map[string]bool{}
	for _, mf := range mfs {
		name := mf.GetName()
		names[name] = true
		parts := strings.Split(name, "_")
		if len(parts) < 3 || parts[0] != "cortex" || !slices.Contains(subsystems, parts[1]) {
			t.Errorf("metric %s is not named cortex_<subsystem>_<what>_<unit>", name)
		}
	}
	for _, want := range []string{"cortex_grid_peers", "cortex_trust_peers_score"} {
		if !names[want] {
			t.Errorf("no metric %s among %v", want, names)
		}
	}
}

func TestAPITrustOfAPeerShowsLocalEvidenceAndOthersOpinions(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()
	ids := make([]peer.ID, 2)
	for i := range ids {
		ids[i] = test.RandPeerIDFatal(t)
	}
	friend, subject := ids[0], ids[1]
	for range 3 {
		e.Trust.Record(friend, "", reputation.OutcomeSuccess)
	}
	e.Trust.Record(subject, "echo", reputation.OutcomeSuccess)
	e.Trust.Record(subject, "echo", reputation.OutcomeWrongResult)
	e.Trust.SetPeerOpinions(friend, map[peer.ID]float64{subject: 1})
	e.Trust.Recompute()
	var got apiv1.TrustEntry
	if a := request(t, h, "GET", "/v1/trust/"+subject.String(), ""); a.status != 200 || json.Unmarshal(a.body, &got) != nil {
		t.Fatalf("/v1/trust/{peer}: %d %s", a.status, a.body)
	}
	if got.Successes != 1 || got.WrongResults != 1 || got.Unsatisfaction < 3.9 || got.Satisfaction < 0.9 {
		t.Errorf("local evidence %+v; want 1 success and 1 wrong result, weighing 1 and 4", got)
	}
	if len(got.Opinions) != 1 || got.Opinions[0].From != friend.String() || got.Opinions[0].Share != 1 || got.Opinions[0].FromGlobal <= 0 {
		t.Errorf("opinions %+v; want the friend's, with its share and weight", got.Opinions)
	}
	if got.Global <= 0 {
		t.Errorf("global %v; want the subject's share of the EigenTrust vector", got.Global)
	}
}
