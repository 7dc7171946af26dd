package workflow

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Event is a change the engine reports to Subscribe: either Task, a task
// the engine holds back (a chained task or a workflow step not yet
// submitted) that entered skill.StateWaiting or ended without being
// submitted (skill.StateDependencyFailed, canceled, failed), or Workflow.
// A submitted task's changes are the coordinator's events.
type Event struct {
	Task     *skill.Event
	Workflow *WorkflowEvent
}

// WorkflowEvent is a change of a workflow or of one of its steps.
type WorkflowEvent struct {
	ID    ID
	Name  string
	State State // the workflow's, after the change
	// Step is the name of the step that changed (was submitted, or
	// ended); empty for a change of the workflow's own state (its
	// submission and its end).
	Step string
	// StepState is the step's state: at its submission its task's then
	// (queued or delegated; queued if the task has ended already, whose
	// end comes next), else the terminal state it ended in.
	StepState skill.TaskState
	TaskID    skill.TaskID
	Node      peer.ID
	Error     string
	At        time.Time
}

// Limits of events.
const (
	subBuffer = 1024 // events a subscriber may lag behind before newer ones are dropped
	// A workflow's step events: at most stepEventRate a second, in
	// bursts of stepEventBurst; more are dropped (counted in
	// DroppedEvents). Its own state changes are never limited.
	stepEventRate  = 10
	stepEventBurst = 20
)

// Subscribe calls fn with every event from now on, from one goroutine per
// subscription, in order; the engine never waits for fn: if fn falls more
// than 1024 events behind, newer events are dropped for it. The returned
// function ends the subscription; Close ends them all.
func (e *Engine) Subscribe(fn func(Event)) (unsubscribe func()) { return e.events.Subscribe(fn) }

// DroppedEvents returns how many events were dropped: step events over
// a workflow's rate, and events to current subscribers that lagged.
func (e *Engine) DroppedEvents() uint64 {
	e.mu.Lock()
	n := e.limited
	e.mu.Unlock()
	return n + e.events.Dropped()
}

// publishLocked hands ev to every subscriber without blocking; e.mu is
// held, so events come in the order of the changes.
func (e *Engine) publishLocked(ev Event) { e.events.Publish(ev) }

// taskEventLocked publishes the state of a step the coordinator does not
// have.
func (e *Engine) taskEventLocked(s *step, at time.Time) {
	if !e.events.Has() {
		return
	}
	ev := &skill.Event{TaskID: s.task.ID, Skill: s.task.Skill, State: s.state, Peer: s.node, Error: s.err, At: at}
	if !s.state.Terminal() {
		ev.State, ev.Error = skill.StateWaiting, ""
	}
	e.publishLocked(Event{Task: ev})
}

// workflowEventLocked publishes a change of r (s nil) or of its step s,
// whose state is state. Step events are rate-limited per workflow.
func (e *Engine) workflowEventLocked(r *run, s *step, state skill.TaskState, at time.Time) {
	if r.chain || !e.events.Has() {
		return
	}
	ev := &WorkflowEvent{ID: r.id, Name: r.name, State: r.state, At: at}
	if s != nil {
		// A token bucket: stepEventBurst tokens, refilled stepEventRate a second.
		if r.evAt.IsZero() {
			r.evTokens = stepEventBurst
		} else {
			r.evTokens = min(stepEventBurst, r.evTokens+at.Sub(r.evAt).Seconds()*stepEventRate)
		}
		r.evAt = at
		if r.evTokens < 1 {
			e.limited++
			return
		}
		r.evTokens--
		ev.Step, ev.StepState, ev.TaskID, ev.Node, ev.Error = s.name, state, s.task.ID, s.node, s.err
	}
	e.publishLocked(Event{Workflow: ev})
}
