package api

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

// Event stream limits.
const (
	eventBuffer   = 256 // events queued per client; more are dropped
	eventKeepMsg  = 15 * time.Second
	eventsMaxConn = 64 // concurrent streams
)

// eventQuery is what a client of /v1/events asked for.
type eventQuery struct {
	tasks, peers, checks bool
	progress             bool          // progress events of tasks
	workflows            bool          // workflow events
	only                 *skill.TaskID // just this task's events
}

func parseEventQuery(r *http.Request) (eventQuery, error) {
	q := r.URL.Query()
	eq := eventQuery{tasks: true, peers: true, checks: true, progress: true, workflows: true}
	if v := q.Get("types"); v != "" {
		eq.tasks, eq.peers, eq.checks, eq.progress, eq.workflows = false, false, false, false, false
		for _, t := range strings.Split(v, ",") {
			switch strings.TrimSpace(t) {
			case "task":
				eq.tasks = true
			case "peer":
				eq.peers = true
			case "spot_check":
				eq.checks = true
			case "progress":
				eq.progress = true
			case "workflow":
				eq.workflows = true
			default:
				return eq, badRequest("types %q: want a comma-separated list of task, progress, peer, spot_check and workflow", v)
			}
		}
	}
	if v := q.Get("task"); v != "" {
		id, err := grid.ParseTaskID(v)
		if err != nil {
			return eq, badRequest("task %q: want a task ID", v)
		}
		eq.only, eq.tasks, eq.peers, eq.checks, eq.progress, eq.workflows = &id, true, false, false, true, false
	}
	return eq, nil
}

// eventSink queues events for one stream without ever blocking the
// publisher: when the client lags, events are dropped and counted. A
// task's final event is never dropped: it waits in final, since a
// single-task stream ends only after writing it.
type eventSink struct {
	ch      chan apiv1.Event
	dropped atomic.Uint64
	final   atomic.Pointer[apiv1.Event]
	gotFin  chan struct{} // signaled when final is set
}

func newEventSink(n int) *eventSink {
	return &eventSink{ch: make(chan apiv1.Event, n), gotFin: make(chan struct{}, 1)}
}

func (k *eventSink) push(ev apiv1.Event) {
	select {
	case k.ch <- ev:
	default:
		if ev.Task != nil && apiv1.Terminal(ev.Task.State) {
			if k.final.Swap(&ev) != nil { // another task's, in a stream of all tasks
				k.dropped.Add(1)
			}
			select {
			case k.gotFin <- struct{}{}:
			default:
			}
			return
		}
		k.dropped.Add(1)
	}
}

// events streams task, peer, spot-check and workflow events as
// server-sent events: each is "event: task" (chained tasks and workflow
// steps entering waiting, and ending without being submitted, included),
// "event: progress" (a task's skill reported how far it is, at most 10 a
// second per task), "event: peer", "event: spot_check" or "event:
// workflow" and a data line with an apiv1.Event. With ?task=ID only that
// task's events come, its progress included, starting with its current
// status, and the stream ends after its final state. With
// ?types=task,peer (any of task, progress, peer, spot_check and workflow)
// only those kinds come. A client too slow to keep up loses
// events; a comment line says how many.
func (s *Server) events(w http.ResponseWriter, r *http.Request) {
	eq, err := parseEventQuery(r)
	if err != nil {
		s.writeError(w, r, err)
		return
	}
	if n := s.streams.Add(1); n > eventsMaxConn {
		s.streams.Add(-1)
		s.writeError(w, r, &httpError{http.StatusServiceUnavailable, "too_many_streams", fmt.Sprintf("at most %d event streams at once", eventsMaxConn)})
		return
	}
	defer s.streams.Add(-1)

	sink := newEventSink(eventBuffer)
	if eq.tasks || eq.progress {
		defer s.deps.Tasks.Subscribe(func(e skill.Event) {
			typ, want := "task", eq.tasks
			if e.Progress != nil {
				typ, want = "progress", eq.progress // the state is unchanged: t.Progress is new
			}
			if want && (eq.only == nil || e.TaskID == *eq.only) {
				t := s.eventTask(e)
				sink.push(apiv1.Event{Type: typ, Time: e.At, Task: &t})
			}
		})()
	}
	if we, ok := s.deps.Workflows.(workflowEvents); ok && (eq.tasks || eq.workflows) {
		defer we.Subscribe(func(e workflow.Event) {
			switch {
			case e.Task != nil && eq.tasks && (eq.only == nil || e.Task.TaskID == *eq.only):
				t := s.eventTask(*e.Task)
				sink.push(apiv1.Event{Type: "task", Time: e.Task.At, Task: &t})
			case e.Workflow != nil && eq.workflows:
				sink.push(apiv1.Event{Type: "workflow", Time: e.Workflow.At, Workflow: workflowEventOf(e.Workflow)})
			}
		})()
	}
	if eq.peers {
		defer s.deps.Node.OnPeerEvent(func(e grid.PeerEvent) {
			sink.push(apiv1.Event{Type: "peer", Time: e.Time, Peer: &apiv1.PeerEvent{ID: e.Peer.String(), Kind: e.Kind.String()}})
		})()
	}
	if sc, ok := s.deps.Tasks.(spotCheckEvents); ok && eq.checks {
		defer sc.OnSpotCheck(func(e skill.SpotCheck) {
			sink.push(apiv1.Event{Type: "spot_check", Time: e.At, SpotCheck: spotCheckOf(e)})
		})()
	}
	if eq.only != nil {
		st, err := s.deps.Tasks.Status(*eq.only)
		if err != nil {
			s.writeError(w, r, err)
			return
		}
		t := taskOf(st)
		sink.push(apiv1.Event{Type: "task", Time: time.Now(), Task: &t})
	}
	s.stream(w, r, sink, eq.only != nil)
}

// stream writes the sink's events until the client goes, the server shuts
// down or, if untilFinal, a task event with a final state was written.
func (s *Server) stream(w http.ResponseWriter, r *http.Request, sink *eventSink, untilFinal bool) {
	rc := http.NewResponseController(w)
	_ = rc.SetWriteDeadline(time.Time{})
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	bw := bufio.NewWriter(w)
	fmt.Fprint(bw, ": cortexd events\n\n")
	if bw.Flush() != nil || rc.Flush() != nil {
		return
	}
	keep := time.NewTicker(eventKeepMsg)
	defer keep.Stop()
	var reported uint64
	for {
		final := false
		select {
		case <-r.Context().Done():
			return
		case <-s.life.Done():
			return
		case <-keep.C:
			fmt.Fprint(bw, ": ping\n\n")
		case ev := <-sink.ch:
			final = writeEvent(bw, ev)
			for n := len(sink.ch); n > 0 && !final; n-- { // coalesce what is queued into one flush
				final = writeEvent(bw, <-sink.ch)
			}
		case <-sink.gotFin:
			for n := len(sink.ch); n > 0 && !final; n-- { // what came before it
				final = writeEvent(bw, <-sink.ch)
			}
			if ev := sink.final.Swap(nil); ev != nil && !final {
				final = writeEvent(bw, *ev)
			}
		}
		if d := sink.dropped.Load(); d != reported {
			fmt.Fprintf(bw, ": dropped %d events: this client reads too slowly\n\n", d-reported)
			reported = d
		}
		if bw.Flush() != nil || rc.Flush() != nil || final && untilFinal {
			return
		}
	}
}

// writeEvent writes one event and reports whether it is a task's final
// state.
func writeEvent(bw *bufio.Writer, ev apiv1.Event) bool {
	b, err := json.Marshal(ev)
	if err != nil {
		return false
	}
	fmt.Fprintf(bw, "event: %s\ndata: %s\n\n", ev.Type, b)
	return ev.Task != nil && apiv1.Terminal(ev.Task.State)
}

// eventTask describes the task of an event: its full status, with the
// state the event reports (the status may have moved on since).
func (s *Server) eventTask(e skill.Event) apiv1.Task {
	st, err := s.deps.Tasks.Status(e.TaskID)
	if err != nil { // already forgotten
		st = skill.TaskStatus{ID: e.TaskID, Skill: e.Skill, Peer: e.Peer, Attempts: e.Attempt, Error: e.Error}
	}
	st.State = e.State
	if !e.State.Terminal() {
		// A retrying event keeps the error that ended the attempt before.
		st.Result, st.Err, st.Error, st.FinishedAt = nil, nil, e.Error, time.Time{}
	}
	if e.Peer != "" {
		st.Peer = e.Peer
	}
	if e.Attempt > 0 {
		st.Attempts = e.Attempt
	}
	if e.Progress != nil {
		st.Progress = e.Progress
	}
	return taskOf(st)
}

// workflowEvents is a Workflows that reports its events (*workflow.Engine).
type workflowEvents interface {
	Subscribe(fn func(workflow.Event)) (unsubscribe func())
}

var _ workflowEvents = (*workflow.Engine)(nil)

func workflowEventOf(e *workflow.WorkflowEvent) *apiv1.WorkflowEvent {
	out := &apiv1.WorkflowEvent{ID: e.ID.String(), Name: e.Name, State: string(e.State), Step: e.Step, Error: e.Error}
	if e.Step != "" {
		out.StepState, out.TaskID = e.StepState.String(), e.TaskID.String()
	}
	if e.Node != "" {
		out.Node = e.Node.String()
	}
	return out
}

// spotCheckEvents is a Tasks that reports spot checks
// (*skill.DelegationCoordinator).
type spotCheckEvents interface {
	OnSpotCheck(fn func(skill.SpotCheck)) (unsubscribe func())
}

var _ spotCheckEvents = (*skill.DelegationCoordinator)(nil)

func spotCheckOf(e skill.SpotCheck) *apiv1.SpotCheck {
	out := &apiv1.SpotCheck{TaskID: e.TaskID.String(), Skill: string(e.Skill), First: e.First.String(),
		Checkers: make([]string, len(e.Checkers)), Result: string(e.Result), Reason: e.Reason}
	for i, p := range e.Checkers {
		out.Checkers[i] = p.String()
	}
	if e.Wrong != "" {
		out.Wrong = e.Wrong.String()
	}
	return out
}
