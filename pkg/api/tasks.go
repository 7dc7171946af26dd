package api

import (
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Tasks is what the API needs from the delegation coordinator.
// *skill.Coordinator implements it.
type Tasks interface {
	SubmitTask(ctx context.Context, t *skill.SkillTask) (skill.TaskID, error)
	Status(id skill.TaskID) (skill.TaskStatus, error)
	Wait(ctx context.Context, id skill.TaskID) (*skill.SkillResult, error)
	Cancel(id skill.TaskID) error
	List(f skill.ListFilter) []skill.TaskStatus
	Subscribe(fn func(skill.Event)) (unsubscribe func())
	StatsSource
}

var _ Tasks = (*skill.DelegationCoordinator)(nil)

// Limits of the task endpoints.
const (
	defaultWait  = 30 * time.Second
	maxWait      = apiv1.MaxWait
	defaultLimit = 50
	maxLimit     = apiv1.MaxListLimit // skill.MaxListLimit less the one more asked for, to know whether a next page exists
)

func (s *Server) submit(w http.ResponseWriter, r *http.Request) {
	if s.draining.Load() {
		s.writeError(w, r, errDraining)
		return
	}
	var t *skill.SkillTask
	var from skill.TaskID // input_from
	var err error
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt == rawMediaType {
		t, err = parseRawSubmit(r.URL.Query(), r.Body, r.ContentLength, s.defaults, s.deps.Node.ID())
	} else if r.URL.RawQuery != "" {
		err = badRequest("a JSON submission takes no query parameters: put the fields in the body, or send the input raw with Content-Type: %s", rawMediaType)
	} else {
		t, from, err = parseChainable(r.Body, s.defaults, s.deps.Node.ID())
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	var id skill.TaskID
	if from.IsZero() {
		id, err = s.deps.Tasks.SubmitTask(r.Context(), t)
	} else {
		id, err = s.submitChained(r.Context(), t, from)
	}
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	s.tlog.submitted(id, t)
	st, err := s.deps.Tasks.Status(id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	w.Header().Set("Location", "/v1/tasks/"+id.String())
	writeJSON(w, http.StatusAccepted, taskOf(st))
}

func (s *Server) taskID(r *http.Request) (skill.TaskID, error) {
	id, err := grid.ParseTaskID(r.PathValue("id"))
	if err != nil {
		return id, &httpError{http.StatusNotFound, apiv1.CodeNotFound, fmt.Sprintf("no task %q: task IDs are 64 hex digits", r.PathValue("id"))}
	}
	return id, nil
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request) {
	id, err := s.taskID(r)
	if err == nil {
		var st skill.TaskStatus
		if st, err = s.deps.Tasks.Status(id); err == nil {
			writeJSON(w, http.StatusOK, taskOf(st))
			return
		}
	}
	s.writeError(w, r, err)
}

// waitTask waits until the task is finished or the timeout parameter
// (default 30 s, at most 10 min) has passed, and answers the task's status
// then: a status that is not terminal means the wait timed out.
func (s *Server) waitTask(w http.ResponseWriter, r *http.Request) {
	id, err := s.taskID(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	wait := defaultWait
	if v := r.URL.Query().Get("timeout"); v != "" {
		if wait, err = time.ParseDuration(v); err != nil || wait < 0 {
			s.writeError(w, r, badRequest("timeout %.40q: want a duration with a unit, such as 30s, of at most %s", v, maxWait))
			return
		}
		if wait > maxWait {
			s.writeError(w, r, badRequest("timeout %s is longer than the most a wait may take, %s: wait in rounds of at most %s", wait, maxWait, maxWait))
			return
		}
	}
	if _, err := s.deps.Tasks.Status(id); err != nil {
		s.writeError(w, r, err)
		return
	}
	_ = http.NewResponseController(w).SetWriteDeadline(time.Now().Add(wait + 30*time.Second))
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	stop := context.AfterFunc(s.life, cancel)
	defer stop()
	_, _ = s.deps.Tasks.Wait(ctx, id) // the status below says how it ended
	st, err := s.deps.Tasks.Status(id)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, taskOf(st))
}

func (s *Server) cancelTask(w http.ResponseWriter, r *http.Request) {
	id, err := s.taskID(r)
	if err == nil {
		if err = s.deps.Tasks.Cancel(id); err == nil {
			var st skill.TaskStatus
			if st, err = s.deps.Tasks.Status(id); err == nil {
				writeJSON(w, http.StatusOK, taskOf(st))
				return
			}
		} else if errors.Is(err, skill.ErrTaskFinished) {
			if st, serr := s.deps.Tasks.Status(id); serr == nil {
				err = &httpError{http.StatusConflict, apiv1.CodeFinished,
					fmt.Sprintf("task %s was already %s", id, strings.ReplaceAll(taskOf(st).State, "_", " "))}
			}
		}
	}
	s.writeError(w, r, err)
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	f := skill.ListFilter{Limit: defaultLimit}
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			s.writeError(w, r, badRequest("limit %.40q: want a whole number from 1 to %d", v, maxLimit))
			return
		}
		// A page holds at most maxLimit tasks; next says that more follow.
		f.Limit = min(n, maxLimit)
	}
	if v := q.Get("state"); v != "" {
		st, ok := stateFilter(v)
		if !ok {
			s.writeError(w, r, badRequest("state %q: want one of %s", v, strings.Join(apiv1.States, ", ")))
			return
		}
		f.States = st
	}
	if v := q.Get("after"); v != "" {
		id, err := grid.ParseTaskID(v)
		if err != nil {
			s.writeError(w, r, badRequest("after %q: want a task ID", v))
			return
		}
		f.After = id
	}
	want := f.Limit
	f.Limit++ // one more tells whether there is a next page
	sts := s.deps.Tasks.List(f)
	out := apiv1.TaskList{Tasks: make([]apiv1.Task, 0, min(len(sts), want))}
	for i, st := range sts {
		if i == want {
			out.Next = sts[i-1].ID.String()
			break
		}
		out.Tasks = append(out.Tasks, taskOf(st))
	}
	writeJSON(w, http.StatusOK, out)
}
