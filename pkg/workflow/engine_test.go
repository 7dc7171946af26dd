package workflow_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/store"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

// gate is a skill whose runs block until the test opens the gate (or
// their context ends); it echoes its input, and counts the runs at once.
type gate struct {
	name    reputation.SkillID
	open    chan struct{}
	once    sync.Once
	running atomic.Int32
	peak    atomic.Int32
	runs    atomic.Int32
	started chan struct{} // one send per run, if not full
}

func newGate(name string) *gate {
	return &gate{name: reputation.SkillID(name), open: make(chan struct{}), started: make(chan struct{}, 64)}
}

func (g *gate) Descriptor() skill.Descriptor {
	return skill.Descriptor{ID: g.name, Version: "1.0.0", Description: "test gate"}
}

func (g *gate) Execute(ctx context.Context, in skill.SkillInput) ([]byte, error) {
	n := g.running.Add(1)
	defer g.running.Add(-1)
	for p := g.peak.Load(); n > p && !g.peak.CompareAndSwap(p, n); p = g.peak.Load() {
	}
	g.runs.Add(1)
	select {
	case g.started <- struct{}{}:
	default:
	}
	select {
	case <-g.open:
		return in.Data, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (g *gate) release() { g.once.Do(func() { close(g.open) }) }

// failing always fails; raw returns its input's length as raw bytes
// that are not JSON.
type failing struct{}

func (failing) Descriptor() skill.Descriptor {
	return skill.Descriptor{ID: "test.fail", Version: "1.0.0"}
}
func (failing) Execute(context.Context, skill.SkillInput) ([]byte, error) {
	return nil, errors.New("this skill always fails")
}

type raw struct{}

func (raw) Descriptor() skill.Descriptor { return skill.Descriptor{ID: "test.raw", Version: "1.0.0"} }
func (raw) Execute(context.Context, skill.SkillInput) ([]byte, error) {
	return []byte{0xff, 0x00, 'r'}, nil
}

// memStore is a workflow.Store in memory.
type memStore struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (s *memStore) WriteWorkflows(_ context.Context, ops []store.WorkflowOp) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.m == nil {
		s.m = map[string][]byte{}
	}
	for _, o := range ops {
		if o.Delete {
			for k := range s.m {
				if strings.HasPrefix(k, string(o.Key)) {
					delete(s.m, k)
				}
			}
			continue
		}
		s.m[string(o.Key)] = bytes.Clone(o.Value)
	}
	return nil
}

func (s *memStore) EachWorkflow(fn func(k, v []byte) error) error {
	s.mu.Lock()
	keys := slices.Sorted(maps.Keys(s.m))
	m := maps.Clone(s.m)
	s.mu.Unlock()
	for _, k := range keys {
		if err := fn([]byte(k), m[k]); err != nil {
			return err
		}
	}
	return nil
}

type env struct {
	t     *testing.T
	eng   *apitest.Engine
	coord *skill.DelegationCoordinator
	gates map[string]*gate
}

func newEnv(t *testing.T, gates ...string) *env {
	e := &env{t: t, eng: apitest.NewEngine(t), gates: map[string]*gate{}}
	e.coord = e.eng.Coordinator
	for _, s := range []skill.Skill{failing{}, raw{}} {
		if err := e.eng.Registry.Register(s); err != nil {
			t.Fatal(err)
		}
	}
	for _, g := range gates {
		e.gates[g] = newGate(g)
		if err := e.eng.Registry.Register(e.gates[g]); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(e.gates[g].release)
	}
	return e
}

func (e *env) engine(o workflow.Options) *workflow.Engine {
	w := workflow.New(e.coord, o)
	if err := w.Start(context.Background()); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { w.Close() })
	return w
}

// submit parses spec and submits it with tasks built as the API builds
// them, with no retries.
func submit(t *testing.T, w *workflow.Engine, spec string) workflow.ID {
	t.Helper()
	id, err := trySubmit(w, spec)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func trySubmit(w *workflow.Engine, spec string) (workflow.ID, error) {
	s, err := workflow.Parse([]byte(spec))
	if err != nil {
		return workflow.ID{}, err
	}
	tasks := make([]*skill.SkillTask, len(s.Steps))
	for i, st := range s.Steps {
		in := skill.SkillInput{Kind: grid.InputJSON, Data: st.Task.Input}
		if in.Data == nil {
			in.Data = []byte("null")
		}
		tasks[i] = skill.NewSkillTask(reputation.SkillID(st.Task.Skill), in, "").WithMaxRetries(0).WithTimeout(30 * time.Second)
	}
	return w.Submit(context.Background(), s, tasks)
}

func wait(t *testing.T, w *workflow.Engine, id workflow.ID) workflow.Status {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := w.Wait(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if st.State == workflow.StateRunning {
		t.Fatalf("workflow still running after 20s: %+v", st)
	}
	return st
}

func step(t *testing.T, st workflow.Status, name string) workflow.StepStatus {
	t.Helper()
	for _, s := range st.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %q in %+v", name, st)
	return workflow.StepStatus{}
}

func output(t *testing.T, c *skill.DelegationCoordinator, id skill.TaskID) string {
	t.Helper()
	res, err := c.Wait(context.Background(), id)
	if err != nil {
		t.Fatalf("task %s: %v", id.Short(), err)
	}
	return string(res.Output)
}

func TestEngineRunsDiamondAndCombinesInputs(t *testing.T) {
	e := newEnv(t)
	w := e.engine(workflow.Options{})
	id := submit(t, w, `
steps:
  - {name: a, skill: echo, input: {"x": 1}}
  - {name: b, skill: echo, depends_on: [a]}
  - {name: r, skill: test.raw}
  - {name: c, skill: echo, depends_on: [a], input: own}
  - {name: d, skill: echo, depends_on: [b, c, r]}
`)
	st := wait(t, w, id)
	if st.State != workflow.StateSucceeded {
		t.Fatalf("state %s: %+v", st.State, st)
	}
	for _, s := range st.Steps {
		if s.State != skill.StateSucceeded || s.TaskID.IsZero() || s.Node != e.eng.Node.ID() {
			t.Errorf("step %+v", s)
		}
	}
	// One dependency, no input: the dependency's output as is.
	if got := output(t, e.coord, step(t, st, "b").TaskID); got != `{"x": 1}` && got != `{"x":1}` {
		t.Errorf("b got %s, want a's output", got)
	}
	// One dependency and an input: both.
	if got := output(t, e.coord, step(t, st, "c").TaskID); got != `{"input":"own","deps":{"a":{"x":1}}}` {
		t.Errorf("c got %s", got)
	}
	// Several: every output by step name, raw ones in base64.
	var d struct {
		Input json.RawMessage            `json:"input"`
		Deps  map[string]json.RawMessage `json:"deps"`
	}
	if err := json.Unmarshal([]byte(output(t, e.coord, step(t, st, "d").TaskID)), &d); err != nil {
		t.Fatal(err)
	}
	wantRaw, _ := json.Marshal(base64.StdEncoding.EncodeToString([]byte{0xff, 0, 'r'}))
	if d.Input != nil || string(d.Deps["r"]) != string(wantRaw) || len(d.Deps) != 3 {
		t.Errorf("d got input %s deps %s", d.Input, d.Deps)
	}
	if string(d.Deps["c"]) != `{"input":"own","deps":{"a":{"x":1}}}` {
		t.Errorf("d's c %s", d.Deps["c"])
	}
}

func TestCombineRawInput(t *testing.T) {
	in, err := workflow.Combine(skill.RawInput([]byte("hi")), true, []string{"a", "b"}, [][]byte{[]byte(`[1]`), []byte("not json")})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"input":"aGk=","deps":{"a":[1],"b":"bm90IGpzb24="}}`; string(in.Data) != want || in.Kind != grid.InputJSON {
		t.Errorf("got %s, want %s", in.Data, want)
	}
}

func TestEngineRunsIndependentStepsInParallel(t *testing.T) {
	e := newEnv(t, "test.gate")
	g := e.gates["test.gate"]
	w := e.engine(workflow.Options{})
	id := submit(t, w, `
steps:
  - {name: a, skill: test.gate, input: 1}
  - {name: b, skill: test.gate, input: 2}
  - {name: c, skill: test.gate, input: 3}
  - {name: after, skill: echo, depends_on: [a, b, c]}
`)
	for range 3 {
		select {
		case <-g.started:
		case <-time.After(10 * time.Second):
			t.Fatalf("only %d of 3 independent steps started", g.runs.Load())
		}
	}
	st, _ := w.Get(id)
	if s := step(t, st, "after"); s.State != skill.StateWaiting {
		t.Errorf("after is %s while its dependencies run, want waiting", s.State)
	}
	if _, err := e.coord.Status(step(t, st, "after").TaskID); !errors.Is(err, skill.ErrTaskNotFound) {
		t.Errorf("after was submitted before its dependencies finished: %v", err)
	}
	g.release()
	if st := wait(t, w, id); st.State != workflow.StateSucceeded {
		t.Fatalf("state %s", st.State)
	}
	if p := g.peak.Load(); p != 3 {
		t.Errorf("peak %d steps at once, want 3", p)
	}
}

func TestEngineFailurePropagates(t *testing.T) {
	e := newEnv(t)
	w := e.engine(workflow.Options{})
	id := submit(t, w, `
steps:
  - {name: bad, skill: test.fail}
  - {name: child, skill: echo, depends_on: [bad]}
  - {name: grandchild, skill: echo, depends_on: [child]}
  - {name: other, skill: echo, input: fine}
`)
	st := wait(t, w, id)
	if st.State != workflow.StateFailed {
		t.Fatalf("state %s", st.State)
	}
	if s := step(t, st, "bad"); s.State != skill.StateFailed || !strings.Contains(s.Error, "always fails") {
		t.Errorf("bad: %+v", s)
	}
	for _, n := range []string{"child", "grandchild"} {
		s := step(t, st, n)
		if s.State != skill.StateDependencyFailed || !strings.Contains(s.Error, "ended") {
			t.Errorf("%s: %+v, want dependency_failed", n, s)
		}
		if _, err := e.coord.Status(s.TaskID); !errors.Is(err, skill.ErrTaskNotFound) {
			t.Errorf("%s was submitted: %v", n, err)
		}
		ts, err := w.TaskStatus(s.TaskID)
		if err != nil || ts.State != skill.StateDependencyFailed || !errors.Is(ts.Err, skill.ErrDependencyFailed) {
			t.Errorf("%s: task status %v %v", n, ts.State, err)
		}
	}
	if s := step(t, st, "child"); !strings.Contains(s.Error, `step "bad"`) {
		t.Errorf("child's error %q does not name bad", s.Error)
	}
	if s := step(t, st, "other"); s.State != skill.StateSucceeded {
		t.Errorf("other: %+v", s)
	}
}

func TestEngineCancel(t *testing.T) {
	e := newEnv(t, "test.gate")
	g := e.gates["test.gate"]
	w := e.engine(workflow.Options{})
	id := submit(t, w, `
steps:
  - {name: slow, skill: test.gate}
  - {name: next, skill: echo, depends_on: [slow]}
`)
	select {
	case <-g.started:
	case <-time.After(10 * time.Second):
		t.Fatal("slow did not start")
	}
	if err := w.Cancel(id); err != nil {
		t.Fatal(err)
	}
	st := wait(t, w, id)
	if st.State != workflow.StateCanceled {
		t.Fatalf("state %s", st.State)
	}
	if s := step(t, st, "slow"); s.State != skill.StateCanceled {
		t.Errorf("slow: %+v", s)
	}
	if s := step(t, st, "next"); s.State != skill.StateCanceled && s.State != skill.StateDependencyFailed {
		t.Errorf("next: %+v", s)
	}
	if _, err := e.coord.Status(step(t, st, "next").TaskID); !errors.Is(err, skill.ErrTaskNotFound) {
		t.Errorf("next was submitted: %v", err)
	}
	if err := w.Cancel(id); !errors.Is(err, workflow.ErrFinished) {
		t.Errorf("second cancel: %v, want ErrFinished", err)
	}
	if err := w.Cancel(workflow.ID{1}); !errors.Is(err, workflow.ErrNotFound) {
		t.Errorf("cancel of nothing: %v", err)
	}
}

func TestEngineMaxWorkflows(t *testing.T) {
	e := newEnv(t, "test.gate")
	w := e.engine(workflow.Options{MaxWorkflows: 1})
	spec := "steps: [{name: a, skill: test.gate}]"
	id := submit(t, w, spec)
	_, err := trySubmit(w, spec)
	if !errors.Is(err, workflow.ErrTooMany) || !strings.Contains(err.Error(), "workflow.max_workflows") {
		t.Fatalf("second workflow: %v, want ErrTooMany naming workflow.max_workflows", err)
	}
	e.gates["test.gate"].release()
	wait(t, w, id)
	if _, err := trySubmit(w, spec); err != nil {
		t.Fatalf("after the first ended: %v", err)
	}
}

func TestEngineResumesAfterRestart(t *testing.T) {
	e := newEnv(t, "test.gate")
	g := e.gates["test.gate"]
	st := &memStore{}
	w1 := workflow.New(e.coord, workflow.Options{Store: st})
	if err := w1.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	id := submit(t, w1, `
steps:
  - {name: first, skill: echo, input: "1"}
  - {name: slow, skill: test.gate, depends_on: [first]}
  - {name: last, skill: echo, depends_on: [slow]}
`)
	select {
	case <-g.started:
	case <-time.After(10 * time.Second):
		t.Fatal("slow did not start")
	}
	before, _ := w1.Get(id)
	w1.Close() // the coordinator's task runs on
	g.release()

	w2 := e.engine(workflow.Options{Store: st})
	got := wait(t, w2, id)
	if got.State != workflow.StateSucceeded {
		t.Fatalf("after restart: %+v", got)
	}
	for i, s := range got.Steps {
		if s.TaskID != before.Steps[i].TaskID {
			t.Errorf("step %s has task %s after restart, %s before", s.Name, s.TaskID.Short(), before.Steps[i].TaskID.Short())
		}
	}
	if n := g.runs.Load(); n != 1 {
		t.Errorf("slow ran %d times, want 1", n)
	}
	if got := output(t, e.coord, step(t, got, "last").TaskID); got != `"1"` {
		t.Errorf("last got %s", got)
	}
	// A third start finds it finished.
	w2.Close()
	w3 := e.engine(workflow.Options{Store: st})
	if st, err := w3.Get(id); err != nil || st.State != workflow.StateSucceeded {
		t.Errorf("third start: %v %v", st.State, err)
	}
}

func TestChainedTask(t *testing.T) {
	e := newEnv(t, "test.gate")
	g := e.gates["test.gate"]
	w := e.engine(workflow.Options{})
	ctx := context.Background()
	in, _ := skill.JSONInput(map[string]string{"data": "aGVsbG8="})
	first, err := e.coord.SubmitTask(ctx, skill.NewSkillTask("test.gate", in, ""))
	if err != nil {
		t.Fatal(err)
	}
	next, err := w.SubmitChained(ctx, skill.NewSkillTask("hash.sha256", skill.SkillInput{}, ""), first)
	if err != nil {
		t.Fatal(err)
	}
	ts, err := w.TaskStatus(next)
	if err != nil || ts.State != skill.StateWaiting {
		t.Fatalf("chained task: %v %v, want waiting", ts.State, err)
	}
	if l := w.TaskList(skill.ListFilter{States: []skill.TaskState{skill.StateWaiting}}); len(l) != 1 || l[0].ID != next {
		t.Errorf("waiting list %v", l)
	}
	if l := w.TaskList(skill.ListFilter{}); len(l) != 2 || l[0].ID != next || l[1].ID != first {
		t.Errorf("full list: %d tasks", len(l))
	}
	g.release()
	res, err := w.TaskWait(ctx, next)
	if err != nil {
		t.Fatal(err)
	}
	// sha256("hello")
	if !strings.Contains(string(res.Output), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824") {
		t.Errorf("output %s", res.Output)
	}

	// A chain after a failed task ends dependency_failed.
	bad, err := e.coord.SubmitTask(ctx, skill.NewSkillTask("test.fail", in, "").WithMaxRetries(0))
	if err != nil {
		t.Fatal(err)
	}
	after, err := w.SubmitChained(ctx, skill.NewSkillTask("echo", skill.SkillInput{}, ""), bad)
	if err != nil {
		t.Fatal(err)
	}
	_, err = w.TaskWait(ctx, after)
	if !errors.Is(err, skill.ErrDependencyFailed) {
		t.Fatalf("wait: %v, want ErrDependencyFailed", err)
	}
	ts, _ = w.TaskStatus(after)
	if ts.State != skill.StateDependencyFailed || !strings.Contains(ts.Error, bad.String()) {
		t.Errorf("status %s %q", ts.State, ts.Error)
	}
	if l := w.TaskList(skill.ListFilter{States: []skill.TaskState{skill.StateDependencyFailed}}); len(l) != 1 || l[0].ID != after {
		t.Errorf("dependency_failed list %v", l)
	}
	if _, err := w.SubmitChained(ctx, skill.NewSkillTask("echo", skill.SkillInput{}, ""), skill.TaskID{9}); !errors.Is(err, skill.ErrTaskNotFound) {
		t.Errorf("chain after no task: %v", err)
	}
}

func TestChainedTaskCancel(t *testing.T) {
	e := newEnv(t, "test.gate")
	w := e.engine(workflow.Options{})
	ctx := context.Background()
	first, err := e.coord.SubmitTask(ctx, skill.NewSkillTask("test.gate", skill.SkillInput{Kind: grid.InputJSON, Data: []byte("1")}, ""))
	if err != nil {
		t.Fatal(err)
	}
	next, err := w.SubmitChained(ctx, skill.NewSkillTask("echo", skill.SkillInput{}, ""), first)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.TaskCancel(next); err != nil {
		t.Fatal(err)
	}
	if _, err := w.TaskWait(ctx, next); !errors.Is(err, skill.ErrCanceled) {
		t.Errorf("wait: %v, want canceled", err)
	}
	if st, _ := e.coord.Status(first); st.State.Terminal() {
		t.Errorf("the chain's cancel ended the task it waited for: %s", st.State)
	}
	if err := w.TaskCancel(next); !errors.Is(err, skill.ErrTaskFinished) {
		t.Errorf("second cancel: %v", err)
	}
}

func TestCancelOfAWaitingStepFailsItsDependents(t *testing.T) {
	e := newEnv(t, "test.gate")
	g := e.gates["test.gate"]
	w := e.engine(workflow.Options{})
	id := submit(t, w, `
steps:
  - {name: slow, skill: test.gate}
  - {name: mid, skill: echo, depends_on: [slow]}
  - {name: last, skill: echo, depends_on: [mid]}
  - {name: other, skill: echo, depends_on: [slow]}
`)
	st, _ := w.Get(id)
	if err := w.TaskCancel(step(t, st, "mid").TaskID); err != nil {
		t.Fatal(err)
	}
	if ts, _ := w.TaskStatus(step(t, st, "mid").TaskID); ts.State != skill.StateCanceled {
		t.Errorf("mid is %s right after its cancel, want canceled", ts.State)
	}
	g.release()
	st = wait(t, w, id)
	want := map[string]skill.TaskState{"slow": skill.StateSucceeded, "mid": skill.StateCanceled, "last": skill.StateDependencyFailed, "other": skill.StateSucceeded}
	for n, s := range want {
		if got := step(t, st, n).State; got != s {
			t.Errorf("%s ended %s, want %s", n, got, s)
		}
	}
	if st.State != workflow.StateFailed {
		t.Errorf("workflow %s, want failed", st.State)
	}
}

func TestChainOnAWaitingTask(t *testing.T) {
	e := newEnv(t, "test.gate")
	w := e.engine(workflow.Options{})
	ctx := context.Background()
	first, err := e.coord.SubmitTask(ctx, skill.NewSkillTask("test.gate", skill.SkillInput{Kind: grid.InputJSON, Data: []byte(`"x"`)}, ""))
	if err != nil {
		t.Fatal(err)
	}
	second, err := w.SubmitChained(ctx, skill.NewSkillTask("echo", skill.SkillInput{}, ""), first)
	if err != nil {
		t.Fatal(err)
	}
	third, err := w.SubmitChained(ctx, skill.NewSkillTask("echo", skill.SkillInput{}, ""), second)
	if err != nil {
		t.Fatalf("chain on a waiting task: %v", err)
	}
	e.gates["test.gate"].release()
	res, err := w.TaskWait(ctx, third)
	if err != nil || string(res.Output) != `"x"` {
		t.Fatalf("third: %v %+v", err, res)
	}
}

func TestEngineForgetsTheOldestFinishedAndSkipsUnreadableRecords(t *testing.T) {
	e := newEnv(t)
	st := &memStore{}
	// A record that cannot be read is skipped, not fatal.
	st.WriteWorkflows(context.Background(), []store.WorkflowOp{{Key: append(make([]byte, 16), 0), Value: []byte("{not json")}})
	w := e.engine(workflow.Options{Store: st, KeepFinished: 2})
	var ids []workflow.ID
	for i := range 3 {
		id := submit(t, w, fmt.Sprintf("steps: [{name: s, skill: echo, input: %d}]", i))
		wait(t, w, id)
		ids = append(ids, id)
	}
	if _, err := w.Get(ids[0]); !errors.Is(err, workflow.ErrNotFound) {
		t.Errorf("the oldest of 3 finished with KeepFinished 2: %v, want forgotten", err)
	}
	for _, id := range ids[1:] {
		if got, err := w.Get(id); err != nil || got.State != workflow.StateSucceeded {
			t.Errorf("workflow %s: %v %v", id, got.State, err)
		}
	}
	if l := w.List("", 0); len(l) != 2 || l[0].ID != ids[2] {
		t.Errorf("list: %d workflows, first %v", len(l), l)
	}
	w.Close() // writes what is behind
	st.mu.Lock()
	for k := range st.m {
		if strings.HasPrefix(k, string(ids[0][:])) {
			t.Errorf("the forgotten workflow's key %x is still stored", k)
		}
	}
	st.mu.Unlock()
	w2 := e.engine(workflow.Options{Store: st, KeepFinished: 2})
	if l := w2.List(workflow.StateSucceeded, 0); len(l) != 2 {
		t.Errorf("after a restart: %d finished workflows, want 2", len(l))
	}
}
