package dashboard

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

func TestReachabilityFromAddresses(t *testing.T) {
	cases := []struct {
		name  string
		addrs []string
		want  string
	}{
		{"a node with a public address may be dialed from anywhere", []string{"/ip4/127.0.0.1/tcp/1", "/ip4/8.8.8.8/tcp/4001"}, "public"},
		{"a node with private addresses only is behind a NAT to the world", []string{"/ip4/192.168.1.5/tcp/4001"}, "private"},
		{"a node on loopback only is reachable from this machine alone", []string{"/ip4/127.0.0.1/tcp/1"}, "loopback"},
		{"a node without addresses cannot be dialed", nil, "no addresses"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := reachOf(c.addrs).Summary; !strings.HasPrefix(got, c.want) {
				t.Errorf("reachOf(%v) = %q, want it to start %q", c.addrs, got, c.want)
			}
		})
	}
}

func TestNiceCeilRoundsUp(t *testing.T) {
	for in, want := range map[float64]float64{0: 1, 0.3: 0.5, 1: 1, 1.2: 2, 3: 5, 7: 10, 420: 500} {
		if got := niceCeil(in); got != want {
			t.Errorf("niceCeil(%v) = %v, want %v", in, got, want)
		}
	}
}

// fakeAPI answers the dashboard's reads from fixed values.
type fakeAPI map[string]any

func (f fakeAPI) Fetch(_ context.Context, path string, out any) error {
	v, ok := f[path]
	if !ok {
		return &APIError{Status: 404, Code: apiv1.CodeNotFound, Message: "no " + path}
	}
	b, _ := json.Marshal(v)
	return json.Unmarshal(b, out)
}

// TestTaskListFiltersBySkillAndNode checks that the list shows only the
// tasks of the skill and node asked for, and escapes what it shows.
func TestTaskListFiltersBySkillAndNode(t *testing.T) {
	tasks := apiv1.TaskList{Tasks: []apiv1.Task{
		{ID: "aaaa1111", Skill: "echo", State: "succeeded", Node: "12D3KooWnodeA"},
		{ID: "bbbb2222", Skill: "hash.sha256", State: "failed", Node: "12D3KooWnodeB", Tried: []string{"12D3KooWnodeA", "12D3KooWnodeB"}},
		{ID: "cccc3333", Skill: "<script>", State: "queued"},
	}}
	h, err := New(fakeAPI{"/v1/tasks?limit=999": tasks, "/v1/tasks?limit=25": tasks})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, query string
		want, not   []string
	}{
		{"no filter lists every task", "", []string{"aaaa1111", "bbbb2222", "cccc3333"}, nil},
		{"a skill filter keeps that skill's tasks", "?skill=hash", []string{"bbbb2222"}, []string{"aaaa1111", "cccc3333"}},
		{"a node filter keeps the tasks tried on it", "?node=nodeA", []string{"aaaa1111", "bbbb2222"}, []string{"cccc3333"}},
		{"a skill name is escaped", "", []string{"&lt;script&gt;"}, []string{"<script>"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest("GET", "/ui/tasks"+c.query, nil)
			req.Header.Set(fragmentHeader, "1")
			h.ServeHTTP(rec, req)
			body := rec.Body.String()
			if rec.Code != http.StatusOK {
				t.Fatalf("GET /ui/tasks%s: %d\n%s", c.query, rec.Code, body)
			}
			for _, w := range c.want {
				if !strings.Contains(body, w) {
					t.Errorf("the list lacks %q", w)
				}
			}
			for _, n := range c.not {
				if strings.Contains(body, n) {
					t.Errorf("the list shows %q", n)
				}
			}
			if csp := rec.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors 'none'") {
				t.Errorf("CSP %q does not forbid framing", csp)
			}
		})
	}
}

// TestTaskPageShowsProgress checks that a running task's page shows its
// last progress report, escaped.
func TestTaskPageShowsProgress(t *testing.T) {
	task := apiv1.Task{ID: "dddd4444", Skill: "debug.sleep", State: "delegated",
		Progress: &apiv1.Progress{Fraction: 0.42, Message: "<b>slept</b> 630 of 1500 ms", UpdatedAt: time.Now()}}
	h, err := New(fakeAPI{"/v1/tasks/dddd4444": task, "/v1/tasks/dddd4444/trace": apiv1.TaskTrace{}, "/v1/id": apiv1.Identity{ID: "12D3KooWself"}})
	if err != nil {
		t.Fatal(err)
	}
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/ui/tasks/dddd4444", nil)
	req.Header.Set(fragmentHeader, "1")
	h.ServeHTTP(rec, req)
	body := rec.Body.String()
	if rec.Code != http.StatusOK {
		t.Fatalf("GET /ui/tasks/dddd4444: %d\n%s", rec.Code, body)
	}
	for _, w := range []string{`<progress id="task-progress" max="1" value="0.42">`, "42.0%", "&lt;b&gt;slept&lt;/b&gt; 630 of 1500 ms"} {
		if !strings.Contains(body, w) {
			t.Errorf("the task page lacks %q:\n%s", w, body)
		}
	}
}

// TestWorkflowPages checks that the list links each workflow and that a
// workflow's page shows its steps (state, node, task link, deps), escaped,
// and follows events only while it runs.
func TestWorkflowPages(t *testing.T) {
	wf := apiv1.Workflow{ID: "eeee5555", Name: "<i>pair</i>", State: "running", Steps: []apiv1.WorkflowStep{
		{Name: "a", Skill: "echo", TaskID: "ta11", State: "succeeded", Node: "12D3KooWself"},
		{Name: "b", Skill: "echo", TaskID: "tb22", State: "waiting", DependsOn: []string{"a", "<x>"}},
	}}
	done := wf
	done.ID, done.State = "ffff6666", "failed"
	f := fakeAPI{"/v1/workflows?limit=50": apiv1.WorkflowList{Workflows: []apiv1.Workflow{wf, done}},
		"/v1/workflows/eeee5555": wf, "/v1/workflows/ffff6666": done, "/v1/id": apiv1.Identity{ID: "12D3KooWself"}}
	h, err := New(f)
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != http.StatusOK {
			t.Fatalf("GET %s: %d\n%s", path, rec.Code, rec.Body)
		}
		return rec.Body.String()
	}
	list := get("/ui/workflows")
	for _, w := range []string{`href="/ui/workflows/eeee5555"`, `href="/ui/workflows/ffff6666"`, "&lt;i&gt;pair&lt;/i&gt;", "2: 1 succeeded", `data-events="/v1/events?types=workflow"`} {
		if !strings.Contains(list, w) {
			t.Errorf("the list lacks %q:\n%s", w, list)
		}
	}
	page := get("/ui/workflows/eeee5555")
	for _, w := range []string{`id="workflow-state" class="state running"`, `<tr data-step="b">`, `href="/ui/tasks/tb22"`, "a, &lt;x&gt;",
		`<span class="state waiting" data-state="waiting">waiting</span>`, `<span class="tag">this node</span>`, `data-events="/v1/events?types=task,progress,workflow"`, `id="cancel"`} {
		if !strings.Contains(page, w) {
			t.Errorf("the running workflow's page lacks %q:\n%s", w, page)
		}
	}
	if page := get("/ui/workflows/ffff6666"); strings.Contains(page, "data-events") || strings.Contains(page, `id="cancel"`) {
		t.Errorf("a finished workflow's page follows events or offers cancel:\n%s", page)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/ui/workflows/0000", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("an unknown workflow: %d", rec.Code)
	}
}
