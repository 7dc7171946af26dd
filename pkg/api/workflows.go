package api

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

// Workflows is what the API needs of the workflow engine: workflows, and
// chained tasks (input_from) with the task endpoints seeing the tasks it
// holds back. *workflow.Engine implements it.
type Workflows interface {
	Submit(ctx context.Context, spec *workflow.Spec, tasks []*skill.SkillTask) (workflow.ID, error)
	SubmitChained(ctx context.Context, t *skill.SkillTask, from skill.TaskID) (skill.TaskID, error)
	Get(id workflow.ID) (workflow.Status, error)
	Wait(ctx context.Context, id workflow.ID) (workflow.Status, error)
	Cancel(id workflow.ID) error
	List(state workflow.State, limit int) []workflow.Status
	TaskStatus(id skill.TaskID) (skill.TaskStatus, error)
	TaskWait(ctx context.Context, id skill.TaskID) (*skill.SkillResult, error)
	TaskCancel(id skill.TaskID) error
	TaskList(f skill.ListFilter) []skill.TaskStatus
}

var _ Workflows = (*workflow.Engine)(nil)

// chainedTasks is Tasks with the workflow engine's held-back tasks
// (waiting, dependency_failed) folded into Status, Wait, Cancel and List.
type chainedTasks struct {
	Tasks
	w Workflows
}

func (c chainedTasks) Status(id skill.TaskID) (skill.TaskStatus, error) { return c.w.TaskStatus(id) }
func (c chainedTasks) Wait(ctx context.Context, id skill.TaskID) (*skill.SkillResult, error) {
	return c.w.TaskWait(ctx, id)
}
func (c chainedTasks) Cancel(id skill.TaskID) error               { return c.w.TaskCancel(id) }
func (c chainedTasks) List(f skill.ListFilter) []skill.TaskStatus { return c.w.TaskList(f) }

// parseChainable is parseSubmit that also returns the task named by
// input_from (zero if none).
func parseChainable(body io.Reader, d TaskDefaults, self peer.ID) (*skill.SkillTask, skill.TaskID, error) {
	var req apiv1.SubmitRequest
	if err := decodeBody(body, &req); err != nil {
		return nil, skill.TaskID{}, err
	}
	var from skill.TaskID
	if req.InputFrom != "" {
		var err error
		if from, err = grid.ParseTaskID(req.InputFrom); err != nil {
			return nil, from, badRequest(`"input_from" %.70q: want a task ID, 64 hex digits`, req.InputFrom)
		}
		if req.Input != nil || req.InputBase64 != nil {
			return nil, from, badRequest(`"input_from" takes the task's input from task %s: leave out "input" and "input_base64"`, from.Short())
		}
	}
	t, err := buildTask(&req, d, self)
	return t, from, err
}

// submitChained submits t to run on from's output.
func (s *Server) submitChained(ctx context.Context, t *skill.SkillTask, from skill.TaskID) (skill.TaskID, error) {
	if s.deps.Workflows == nil {
		return skill.TaskID{}, badRequest(`"input_from" is not served by this node: it runs no workflow engine`)
	}
	return s.deps.Workflows.SubmitChained(ctx, t, from)
}

func (s *Server) workflowID(r *http.Request) (workflow.ID, error) {
	id, err := workflow.ParseID(r.PathValue("id"))
	if err != nil {
		return id, &httpError{http.StatusNotFound, apiv1.CodeNotFound, fmt.Sprintf("no workflow %.70q: workflow IDs are 32 hex digits", r.PathValue("id"))}
	}
	return id, nil
}

// workflowError maps the engine's errors to answers.
func workflowError(err error) error {
	var he *httpError
	switch {
	case errors.As(err, &he):
		return err
	case errors.Is(err, workflow.ErrInvalidSpec):
		return badRequest("%s", clip(err.Error(), 500))
	case errors.Is(err, workflow.ErrTooMany):
		return &httpError{http.StatusTooManyRequests, apiv1.CodeTooManyWorkflows, err.Error()}
	case errors.Is(err, workflow.ErrNotFound):
		return &httpError{http.StatusNotFound, apiv1.CodeNotFound, err.Error()}
	case errors.Is(err, workflow.ErrFinished):
		return &httpError{http.StatusConflict, apiv1.CodeFinished, err.Error()}
	case errors.Is(err, workflow.ErrClosed):
		return &httpError{http.StatusServiceUnavailable, apiv1.CodeShuttingDown, err.Error()}
	}
	return err
}

func (s *Server) submitWorkflow(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.writeError(w, r, errDraining)
		return
	}
	if r.URL.RawQuery != "" {
		s.writeError(w, r, badRequest("POST /v1/workflows takes no query parameters: the workflow is the JSON body"))
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if b := strings.TrimSpace(string(body)); b == "" || b[0] != '{' {
		s.writeError(w, r, badRequest(`the body must be a workflow as a JSON object such as {"steps":[{"name":"a","skill":"echo"}]} (cortexd workflow run reads YAML and sends it so)`))
		return
	}
	spec, err := workflow.Parse(body)
	if err != nil {
		s.writeError(w, r, workflowError(err))
		return
	}
	tasks := make([]*skill.SkillTask, len(spec.Steps))
	for i := range spec.Steps {
		st := &spec.Steps[i]
		t, err := buildTask(&st.Task, s.defaults, s.deps.Node.ID())
		if err != nil {
			var he *httpError
			if errors.As(err, &he) {
				he.msg = fmt.Sprintf("step %q: %s", st.Name, he.msg)
			}
			s.writeError(w, r, err)
			return
		}
		tasks[i] = t
	}
	id, err := s.deps.Workflows.Submit(r.Context(), spec, tasks)
	if err != nil {
		s.writeError(w, r, workflowError(err))
		return
	}
	st, err := s.deps.Workflows.Get(id)
	if err != nil {
		s.writeError(w, r, workflowError(err))
		return
	}
	w.Header().Set("Location", "/v1/workflows/"+id.String())
	writeJSON(w, http.StatusAccepted, workflowOf(st))
}

func (s *Server) getWorkflow(w http.ResponseWriter, r *http.Request) {
	id, err := s.workflowID(r)
	if err == nil {
		var st workflow.Status
		if st, err = s.deps.Workflows.Get(id); err == nil {
			writeJSON(w, http.StatusOK, workflowOf(st))
			return
		}
	}
	s.writeError(w, r, workflowError(err))
}

// waitWorkflow waits until the workflow has finished or the timeout
// parameter (default 30 s, at most 10 min) has passed, as waitTask does.
func (s *Server) waitWorkflow(w http.ResponseWriter, r *http.Request) {
	id, err := s.workflowID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	wait := defaultWait
	if v := r.URL.Query().Get("timeout"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 || wait > maxWait {
			s.writeError(w, r, badRequest("timeout %.40q: want a duration with a unit, such as 30s, of at most %s", v, maxWait))
			return
		}
	}
	if _, err := s.deps.Workflows.Get(id); err != nil {
		s.writeError(w, r, workflowError(err))
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + 30*time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	st, err := s.deps.Workflows.Wait(ctx, id)
	if err != nil {
		s.writeError(w, r, workflowError(err))
		return
	}
	writeJSON(w, http.StatusOK, workflowOf(st))
}

// cancelSettle is how long POST /v1/workflows/{id}/cancel waits for the
// workflow's steps to end before it answers.
const cancelSettle = 2 * time.Second

func (s *Server) cancelWorkflow(w http.ResponseWriter, r *http.Request) {
	id, err := s.workflowID(r)
	if err == nil {
		if err = s.deps.Workflows.Cancel(id); err == nil {
			// The cancel reaches the steps' tasks at once; answer once they
			// have ended, or after cancelSettle.
			ctx, cancel := context.WithTimeout(r.Context(), cancelSettle)
			defer cancel()
			var st workflow.Status
			if st, err = s.deps.Workflows.Wait(ctx, id); err == nil {
				writeJSON(w, http.StatusOK, workflowOf(st))
				return
			}
		}
	}
	s.writeError(w, r, workflowError(err))
}

func (s *Server) listWorkflows(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit := defaultLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.writeError(w, r, badRequest("limit %.40q: want a whole number from 1 to %d", v, apiv1.MaxWorkflowList))
			return
		}
		limit = min(n, apiv1.MaxWorkflowList)
	}
	state := q.Get("state")
	if state != "" && !slices.Contains(apiv1.WorkflowStates, state) {
		s.writeError(w, r, badRequest("state %.40q: want one of %s", state, strings.Join(apiv1.WorkflowStates, ", ")))
		return
	}
	sts := s.deps.Workflows.List(workflow.State(state), limit)
	out := apiv1.WorkflowList{Workflows: make([]apiv1.Workflow, 0, len(sts))}
	for _, st := range sts {
		out.Workflows = append(out.Workflows, workflowOf(st))
	}
	writeJSON(w, http.StatusOK, out)
}

func workflowOf(st workflow.Status) apiv1.Workflow {
	out := apiv1.Workflow{ID: st.ID.String(), Name: st.Name, State: string(st.State), CreatedAt: st.CreatedAt,
		Steps: make([]apiv1.WorkflowStep, len(st.Steps))}
	if !st.FinishedAt.IsZero() {
		f := st.FinishedAt
		out.FinishedAt = &f
	}
	for i, s := range st.Steps {
		ws := apiv1.WorkflowStep{Name: s.Name, Skill: s.Skill, DependsOn: s.DependsOn, TaskID: s.TaskID.String(),
			State: s.State.String(), Error: s.Error}
		if s.Node != "" {
			ws.Node = s.Node.String()
		}
		out.Steps[i] = ws
	}
	return out
}
