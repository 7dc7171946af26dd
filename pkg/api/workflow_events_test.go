package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

// workflowBase serves the API with a workflow engine and returns its URL.
func workflowBase(t *testing.T) string {
	t.Helper()
	e := apitest.NewEngine(t)
	w := workflow.New(e.Coordinator, workflow.Options{})
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
	return serve(t, s, loopbackListener(t))
}

func post[T any](t *testing.T, url, body string) T {
	t.Helper()
	resp, err := http.Post(url, "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v T
	if resp.StatusCode >= 300 || json.NewDecoder(resp.Body).Decode(&v) != nil {
		t.Fatalf("POST %s: %d", url, resp.StatusCode)
	}
	return v
}

// TestAPIWorkflowEvents: ?types=workflow has the workflow's start, its
// steps' submissions and ends and its end; ?types=task has the steps
// entering waiting and the one never submitted ending dependency_failed.
func TestAPIWorkflowEvents(t *testing.T) {
	base := workflowBase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	flows, tasks := make(chan []apiv1.Event, 1), make(chan []apiv1.Event, 1)
	go func() {
		flows <- readEvents(t, ctx, base+"/v1/events?types=workflow", func(ev apiv1.Event) bool {
			return ev.Workflow != nil && ev.Workflow.State == apiv1.WorkflowFailed
		})
	}()
	go func() {
		tasks <- readEvents(t, ctx, base+"/v1/events?types=task", func(ev apiv1.Event) bool {
			return ev.Task != nil && ev.Task.State == apiv1.StateDependencyFailed
		})
	}()
	time.Sleep(200 * time.Millisecond) // both streams subscribed
	wf := post[apiv1.Workflow](t, base+"/v1/workflows", `{"name":"ev","steps":[
		{"name":"a","skill":"debug.sleep","input":{"ms":"not a number"}},
		{"name":"b","skill":"echo","depends_on":["a"]}]}`)
	evs := <-flows
	if len(evs) < 4 {
		t.Fatalf("workflow events %+v", evs)
	}
	first, last := evs[0].Workflow, evs[len(evs)-1].Workflow
	if evs[0].Type != "workflow" || first.ID != wf.ID || first.Name != "ev" || first.State != apiv1.WorkflowRunning || first.Step != "" {
		t.Errorf("first workflow event %+v", first)
	}
	if last.Step != "" || last.ID != wf.ID {
		t.Errorf("last workflow event %+v", last)
	}
	steps := map[string]string{}
	for _, ev := range evs[1 : len(evs)-1] {
		if ev.Type != "workflow" || ev.Workflow.Step == "" || ev.Workflow.TaskID == "" {
			t.Errorf("event %s %+v, want a step's", ev.Type, ev.Workflow)
			continue
		}
		steps[ev.Workflow.Step] = ev.Workflow.StepState
	}
	if steps["a"] != apiv1.StateFailed || steps["b"] != apiv1.StateDependencyFailed {
		t.Errorf("the steps' last states %v", steps)
	}
	waiting := 0
	evs = <-tasks
	for _, ev := range evs {
		if ev.Type != "task" {
			t.Errorf("types=task stream got %s", ev.Type)
		}
		if ev.Task.State == apiv1.StateWaiting {
			waiting++
		}
	}
	if end := evs[len(evs)-1].Task; waiting != 2 || end.ID != wf.Steps[1].TaskID || end.Skill != "echo" || end.Error == nil || end.Error.Code != apiv1.CodeDependencyFailed || !strings.Contains(end.Error.Message, `"a"`) {
		t.Errorf("%d waiting events (want 2), last %+v", waiting, end)
	}
}

// TestAPIChainedTaskStreamEnds: ?task= of a chained task starts waiting
// and ends with its dependency_failed.
func TestAPIChainedTaskStreamEnds(t *testing.T) {
	base := workflowBase(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	first := post[apiv1.Task](t, base+"/v1/tasks", `{"skill":"debug.sleep","input":{"ms":5000}}`)
	next := post[apiv1.Task](t, base+"/v1/tasks", `{"skill":"echo","input_from":"`+first.ID+`"}`)
	got := make(chan []apiv1.Event, 1)
	go func() {
		got <- readEvents(t, ctx, base+"/v1/events?task="+next.ID, func(ev apiv1.Event) bool {
			if ev.Task.State == apiv1.StateWaiting {
				post[apiv1.Task](t, base+"/v1/tasks/"+first.ID+"/cancel", "")
			}
			return apiv1.Terminal(ev.Task.State)
		})
	}()
	evs := <-got
	if len(evs) != 2 || evs[0].Task.State != apiv1.StateWaiting || evs[1].Task.State != apiv1.StateDependencyFailed || evs[1].Task.ID != next.ID {
		t.Errorf("events %+v, want waiting then dependency_failed", evs)
	}
}
