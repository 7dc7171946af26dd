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
