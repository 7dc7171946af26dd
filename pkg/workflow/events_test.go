package workflow_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

// recorder collects a subscription's events.
type recorder struct {
	mu  sync.Mutex
	evs []workflow.Event
}

func (r *recorder) add(ev workflow.Event) {
	r.mu.Lock()
	r.evs = append(r.evs, ev)
	r.mu.Unlock()
}

// waitFor waits until ok holds for the events so far.
func (r *recorder) waitFor(t *testing.T, what string, ok func([]workflow.Event) bool) []workflow.Event {
	t.Helper()
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		r.mu.Lock()
		evs := append([]workflow.Event(nil), r.evs...)
		r.mu.Unlock()
		if ok(evs) {
			return evs
		}
		if time.Now().After(end) {
			t.Fatalf("no %s in 10 s: %s", what, describe(evs))
		}
	}
}

func describe(evs []workflow.Event) string {
	var b strings.Builder
	for _, ev := range evs {
		switch {
		case ev.Task != nil:
			fmt.Fprintf(&b, "task %s %s; ", ev.Task.TaskID.Short(), ev.Task.State)
		case ev.Workflow != nil:
			fmt.Fprintf(&b, "workflow %s step %q %s; ", ev.Workflow.State, ev.Workflow.Step, ev.Workflow.StepState)
		}
	}
	return b.String()
}

func TestEngineEvents(t *testing.T) {
	e := newEnv(t)
	w := e.engine(workflow.Options{})
	var rec recorder
	defer w.Subscribe(rec.add)()
	id := submit(t, w, `
steps:
  - {name: bad, skill: test.fail}
  - {name: child, skill: echo, depends_on: [bad]}
  - {name: other, skill: echo, input: fine}
`)
	st := wait(t, w, id)
	child := step(t, st, "child").TaskID
	evs := rec.waitFor(t, "workflow end", func(evs []workflow.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Workflow != nil && evs[len(evs)-1].Workflow.State == workflow.StateFailed
	})
	// The workflow's start, each step entering waiting, child ending
	// dependency_failed; each step's submission and end; the workflow's end.
	if w0 := evs[0].Workflow; w0 == nil || w0.ID != id || w0.State != workflow.StateRunning || w0.Step != "" {
		t.Errorf("first event: %s", describe(evs[:1]))
	}
	waiting := map[skill.TaskID]bool{}
	var childEnd, childStep bool
	submitted, ended := map[string]bool{}, map[string]skill.TaskState{}
	for _, ev := range evs {
		if ev.Task != nil {
			switch {
			case ev.Task.State == skill.StateWaiting:
				waiting[ev.Task.TaskID] = true
			case ev.Task.TaskID == child && ev.Task.State == skill.StateDependencyFailed && strings.Contains(ev.Task.Error, `"bad"`):
				childEnd = true
			default:
				t.Errorf("task event %s %s: only held tasks' events are the engine's", ev.Task.TaskID.Short(), ev.Task.State)
			}
			continue
		}
		we := ev.Workflow
		switch {
		case we.Step == "":
		case we.StepState.Terminal():
			if _, twice := ended[we.Step]; twice {
				t.Errorf("step %s ended twice: %s", we.Step, describe(evs))
			}
			ended[we.Step] = we.StepState
			childStep = childStep || we.TaskID == child
		default:
			if _, late := ended[we.Step]; late || submitted[we.Step] {
				t.Errorf("step %s submitted twice, or after its end: %s", we.Step, describe(evs))
			}
			submitted[we.Step] = true
		}
	}
	if len(waiting) != 3 || !childEnd || !childStep {
		t.Errorf("waiting %d tasks (want 3), child's end %v and step event %v: %s", len(waiting), childEnd, childStep, describe(evs))
	}
	if !submitted["bad"] || !submitted["other"] || submitted["child"] {
		t.Errorf("submitted steps %v, want bad and other", submitted)
	}
	if ended["bad"] != skill.StateFailed || ended["child"] != skill.StateDependencyFailed || ended["other"] != skill.StateSucceeded {
		t.Errorf("ended steps %v", ended)
	}

	// A chained task: waiting, then (its input task failed) dependency_failed.
	rec.mu.Lock()
	rec.evs = nil
	rec.mu.Unlock()
	ctx := context.Background()
	bad, err := e.coord.SubmitTask(ctx, skill.NewSkillTask("test.fail", skill.SkillInput{}, "").WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	next, err := w.SubmitChained(ctx, skill.NewSkillTask("echo", skill.SkillInput{}, ""), bad)
	if err != nil {
		t.Fatal(err)
	}
	evs = rec.waitFor(t, "chained task's end", func(evs []workflow.Event) bool {
		return len(evs) == 2
	})
	if evs[0].Task == nil || evs[0].Task.TaskID != next || evs[0].Task.State != skill.StateWaiting ||
		evs[1].Task == nil || evs[1].Task.State != skill.StateDependencyFailed || !strings.Contains(evs[1].Task.Error, bad.String()) {
		t.Errorf("chained task's events: %s, want waiting, dependency_failed (no workflow events)", describe(evs))
	}
}

// A workflow's step events are rate-limited; its end is always sent.
func TestEngineStepEventsRateLimited(t *testing.T) {
	e := newEnv(t)
	w := e.engine(workflow.Options{})
	var rec recorder
	defer w.Subscribe(rec.add)()
	spec := "steps:\n  - {name: root, skill: test.fail}\n"
	const n = 60
	for i := range n {
		spec += fmt.Sprintf("  - {name: s%d, skill: echo, depends_on: [root]}\n", i)
	}
	id := submit(t, w, spec)
	wait(t, w, id)
	evs := rec.waitFor(t, "workflow end", func(evs []workflow.Event) bool {
		return len(evs) > 0 && evs[len(evs)-1].Workflow != nil && evs[len(evs)-1].Workflow.State == workflow.StateFailed
	})
	steps := 0
	for _, ev := range evs {
		if ev.Workflow != nil && ev.Workflow.Step != "" {
			steps++
		}
	}
	// 62 step changes (root's submission and end, 60 dependency_failed) at once.
	// The burst of 20, and 10 more a second however long the 62 take.
	if d := w.DroppedEvents(); steps < 20 || steps >= 62 || uint64(steps)+d != 62 {
		t.Errorf("%d step events, %d dropped: want the burst of 20 (and a few refilled), the rest of the 62 dropped", steps, d)
	}
}
