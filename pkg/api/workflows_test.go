package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

func workflowServer(t *testing.T, o workflow.Options) http.Handler {
	t.Helper()
	e := apitest.NewEngine(t)
	w := workflow.New(e.Coordinator, o)
	if err := w.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	deps := e.Deps()
	deps.Workflows = w
	s, err := api.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	return s.Handler()
}

func decode[T any](t *testing.T, a answer) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(a.body, &v); err != nil {
		t.Fatalf("answer %d %s: %v", a.status, a.body, err)
	}
	return v
}

func TestWorkflowEndpoints(t *testing.T) {
	h := workflowServer(t, workflow.Options{})
	a := request(t, h, "POST", "/v1/workflows", `{"name":"pair","steps":[
		{"name":"a","skill":"echo","input":{"n":1}},
		{"name":"b","skill":"echo","depends_on":["a"],"priority":"high"}]}`)
	if a.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", a.status, a.body)
	}
	wf := decode[apiv1.Workflow](t, a)
	if a.header.Get("Location") != "/v1/workflows/"+wf.ID || wf.Name != "pair" || len(wf.Steps) != 2 || wf.Steps[1].DependsOn[0] != "a" {
		t.Fatalf("submit answered %s (Location %q)", a.body, a.header.Get("Location"))
	}
	a = request(t, h, "GET", "/v1/workflows/"+wf.ID+"/wait?timeout=20s", "")
	wf = decode[apiv1.Workflow](t, a)
	if a.status != 200 || wf.State != apiv1.WorkflowSucceeded || wf.FinishedAt == nil {
		t.Fatalf("wait: %d %s", a.status, a.body)
	}
	for _, s := range wf.Steps {
		if s.State != apiv1.StateSucceeded || len(s.TaskID) != 64 || s.Node == "" {
			t.Errorf("step %+v", s)
		}
	}
	task := decode[apiv1.Task](t, request(t, h, "GET", "/v1/tasks/"+wf.Steps[1].TaskID, ""))
	if task.Priority != 160 || task.Result == nil || string(task.Result.Output) != `{"n":1}` {
		t.Errorf("step b's task: priority %d result %+v", task.Priority, task.Result)
	}
	if got := decode[apiv1.Workflow](t, request(t, h, "GET", "/v1/workflows/"+wf.ID, "")); got.ID != wf.ID || got.State != apiv1.WorkflowSucceeded {
		t.Errorf("get: %+v", got)
	}
	list := decode[apiv1.WorkflowList](t, request(t, h, "GET", "/v1/workflows?state=succeeded&limit=5", ""))
	if len(list.Workflows) != 1 || list.Workflows[0].ID != wf.ID {
		t.Errorf("list: %+v", list)
	}
	if list := decode[apiv1.WorkflowList](t, request(t, h, "GET", "/v1/workflows?state=running", "")); len(list.Workflows) != 0 {
		t.Errorf("running list: %+v", list)
	}
	if a := request(t, h, "POST", "/v1/workflows/"+wf.ID+"/cancel", ""); a.status != http.StatusConflict || a.errorCode(t) != apiv1.CodeFinished {
		t.Errorf("cancel of a finished workflow: %d %s", a.status, a.body)
	}
}

func TestWorkflowCancelEndpoint(t *testing.T) {
	h := workflowServer(t, workflow.Options{MaxWorkflows: 1})
	a := request(t, h, "POST", "/v1/workflows", `{"steps":[{"name":"nap","skill":"debug.sleep","input":{"ms":20000}},{"name":"after","skill":"echo","depends_on":["nap"]}]}`)
	wf := decode[apiv1.Workflow](t, a)
	if a.status != http.StatusAccepted {
		t.Fatalf("submit: %d %s", a.status, a.body)
	}
	if a := request(t, h, "POST", "/v1/workflows", `{"steps":[{"name":"x","skill":"echo"}]}`); a.status != http.StatusTooManyRequests ||
		a.errorCode(t) != apiv1.CodeTooManyWorkflows || !strings.Contains(string(a.body), "workflow.max_workflows") {
		t.Errorf("second workflow past the cap: %d %s", a.status, a.body)
	}
	waiting := decode[apiv1.Task](t, request(t, h, "GET", "/v1/tasks/"+wf.Steps[1].TaskID, ""))
	if waiting.State != apiv1.StateWaiting {
		t.Errorf("the step after a running one is %q, want waiting", waiting.State)
	}
	a = request(t, h, "POST", "/v1/workflows/"+wf.ID+"/cancel", "")
	if a.status != 200 {
		t.Fatalf("cancel: %d %s", a.status, a.body)
	}
	wf = decode[apiv1.Workflow](t, request(t, h, "GET", "/v1/workflows/"+wf.ID+"/wait?timeout=10s", ""))
	if wf.State != apiv1.WorkflowCanceled || wf.Steps[0].State != apiv1.StateCanceled || wf.Steps[1].State != apiv1.StateCanceled {
		t.Errorf("after cancel: %+v", wf)
	}
}

func TestWorkflowSubmitRefusals(t *testing.T) {
	h := workflowServer(t, workflow.Options{})
	for _, tc := range []struct{ name, body, want string }{
		{"cycle", `{"steps":[{"name":"a","skill":"echo","depends_on":["b"]},{"name":"b","skill":"echo","depends_on":["a"]}]}`, `steps \"a\" -> \"b\" -> \"a\" form a cycle`},
		{"unknown step", `{"steps":[{"name":"a","skill":"echo","depends_on":["zz"]}]}`, `depends on \"zz\", which is not a step`},
		{"unknown field", `{"steps":[{"name":"a","skill":"echo"}],"extra":1}`, `\"extra\" is not a field of a workflow`},
		{"bad step field", `{"steps":[{"name":"a","skill":"echo","timeout":"-5s"}]}`, `step \"a\": \"timeout\" must be positive`},
		{"bad skill", `{"steps":[{"name":"a","skill":"no such skill!"}]}`, `step \"a\"`},
		{"yaml", "steps:\n  - {name: a, skill: echo}", "JSON object"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := request(t, h, "POST", "/v1/workflows", tc.body)
			if a.status != http.StatusBadRequest || a.errorCode(t) != apiv1.CodeInvalidRequest || !strings.Contains(string(a.body), tc.want) {
				t.Errorf("got %d %s, want 400 invalid_request saying %s", a.status, a.body, tc.want)
			}
		})
	}
	if a := request(t, h, "GET", "/v1/workflows/nope", ""); a.status != 404 || a.errorCode(t) != apiv1.CodeNotFound {
		t.Errorf("bad ID: %d %s", a.status, a.body)
	}
	if a := request(t, h, "GET", "/v1/workflows/"+strings.Repeat("0", 32), ""); a.status != 404 || a.errorCode(t) != apiv1.CodeNotFound {
		t.Errorf("unknown ID: %d %s", a.status, a.body)
	}
	if a := request(t, h, "GET", "/v1/workflows?state=bogus", ""); a.status != 400 {
		t.Errorf("bad state filter: %d %s", a.status, a.body)
	}
}

func TestInputFrom(t *testing.T) {
	h := workflowServer(t, workflow.Options{})
	first := decode[apiv1.Task](t, request(t, h, "POST", "/v1/tasks", `{"skill":"debug.sleep","input":{"ms":300}}`))
	a := request(t, h, "POST", "/v1/tasks", `{"skill":"echo","input_from":"`+first.ID+`"}`)
	next := decode[apiv1.Task](t, a)
	if a.status != http.StatusAccepted || next.State != apiv1.StateWaiting || a.header.Get("Location") != "/v1/tasks/"+next.ID {
		t.Fatalf("chained submit: %d %s", a.status, a.body)
	}
	list := decode[apiv1.TaskList](t, request(t, h, "GET", "/v1/tasks?state=waiting", ""))
	if len(list.Tasks) != 1 || list.Tasks[0].ID != next.ID {
		t.Errorf("state=waiting lists %+v", list)
	}
	done := decode[apiv1.Task](t, request(t, h, "GET", "/v1/tasks/"+next.ID+"/wait?timeout=20s", ""))
	firstDone := decode[apiv1.Task](t, request(t, h, "GET", "/v1/tasks/"+first.ID, ""))
	if done.State != apiv1.StateSucceeded || done.Result == nil || string(done.Result.Output) != string(firstDone.Result.Output) {
		t.Errorf("chained task ended %+v, want the first's output %s", done, firstDone.Result.Output)
	}

	bad := decode[apiv1.Task](t, request(t, h, "POST", "/v1/tasks", `{"skill":"image.resize","input":{"image":"AAAA","width":1,"height":1},"max_retries":0}`))
	after := decode[apiv1.Task](t, request(t, h, "POST", "/v1/tasks", `{"skill":"echo","input_from":"`+bad.ID+`"}`))
	ended := decode[apiv1.Task](t, request(t, h, "GET", "/v1/tasks/"+after.ID+"/wait?timeout=20s", ""))
	if ended.State != apiv1.StateDependencyFailed || ended.Error == nil || ended.Error.Code != apiv1.CodeDependencyFailed || !strings.Contains(ended.Error.Message, bad.ID) {
		t.Errorf("after a failed task: %+v (error %+v)", ended, ended.Error)
	}
	list = decode[apiv1.TaskList](t, request(t, h, "GET", "/v1/tasks?state=dependency_failed", ""))
	if len(list.Tasks) != 1 || list.Tasks[0].ID != after.ID {
		t.Errorf("state=dependency_failed lists %+v", list)
	}
	if a := request(t, h, "POST", "/v1/tasks/"+after.ID+"/cancel", ""); a.status != http.StatusConflict || a.errorCode(t) != apiv1.CodeFinished {
		t.Errorf("cancel of a dependency_failed task: %d %s", a.status, a.body)
	}

	for _, tc := range []struct {
		body   string
		status int
		code   string
	}{
		{`{"skill":"echo","input_from":"xyz"}`, 400, apiv1.CodeInvalidRequest},
		{`{"skill":"echo","input":1,"input_from":"` + first.ID + `"}`, 400, apiv1.CodeInvalidRequest},
		{`{"skill":"echo","input_from":"` + strings.Repeat("ab", 32) + `"}`, 404, apiv1.CodeNotFound},
	} {
		if a := request(t, h, "POST", "/v1/tasks", tc.body); a.status != tc.status || a.errorCode(t) != tc.code {
			t.Errorf("%s: %d %s, want %d %s", tc.body, a.status, a.body, tc.status, tc.code)
		}
	}
}

func TestInputFromWithoutEngine(t *testing.T) {
	e := apitest.NewEngine(t)
	h := server(t, e).Handler()
	first := decode[apiv1.Task](t, request(t, h, "POST", "/v1/tasks", `{"skill":"echo","input":1}`))
	if a := request(t, h, "POST", "/v1/tasks", `{"skill":"echo","input_from":"`+first.ID+`"}`); a.status != 400 || !strings.Contains(string(a.body), "workflow engine") {
		t.Errorf("input_from without an engine: %d %s", a.status, a.body)
	}
	if a := request(t, h, "GET", "/v1/workflows", ""); a.status != 404 {
		t.Errorf("GET /v1/workflows without an engine: %d", a.status)
	}
	if a := request(t, h, "GET", "/v1/tasks?state=waiting", ""); a.status != 200 {
		t.Errorf("state=waiting without an engine: %d %s", a.status, a.body)
	}
}
