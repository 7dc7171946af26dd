package workflow

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/internal/eventhub"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/store"
)

// Coordinator is what the engine needs of the delegation coordinator: its
// public task API. *skill.DelegationCoordinator implements it.
type Coordinator interface {
	SubmitTask(ctx context.Context, t *skill.SkillTask) (skill.TaskID, error)
	Status(id skill.TaskID) (skill.TaskStatus, error)
	Wait(ctx context.Context, id skill.TaskID) (*skill.SkillResult, error)
	Cancel(id skill.TaskID) error
	List(f skill.ListFilter) []skill.TaskStatus
}

var _ Coordinator = (*skill.DelegationCoordinator)(nil)

// Store keeps workflows across restarts; *store.Store implements it. Keys
// and values are the engine's own.
type Store interface {
	WriteWorkflows(ctx context.Context, ops []store.WorkflowOp) error
	EachWorkflow(fn func(key, value []byte) error) error
}

var _ Store = (*store.Store)(nil)

// progressLinger is how long the writer gathers progress before it writes
// it in one transaction.
const progressLinger = 50 * time.Millisecond

// Errors of the engine.
var (
	// ErrTooMany: the engine runs as many workflows (or chained tasks) as
	// it may.
	ErrTooMany = errors.New("too many workflows")
	// ErrNotFound: no workflow with that ID.
	ErrNotFound = errors.New("workflow not found")
	// ErrFinished: cancel of a finished workflow.
	ErrFinished = errors.New("workflow finished")
	// ErrClosed: the engine is closed, or not started.
	ErrClosed = errors.New("workflow engine closed")
)

// Defaults of Options.
const (
	DefaultMaxWorkflows = 1000
	DefaultMaxChains    = 10000
	DefaultKeepFinished = 1000
)

// Options configure an Engine.
type Options struct {
	// MaxWorkflows caps the workflows running at once (0: DefaultMaxWorkflows).
	MaxWorkflows int
	// MaxChains caps the chained tasks not yet finished (0: DefaultMaxChains).
	MaxChains int
	// KeepFinished is how many finished workflows and chains are kept, the
	// oldest forgotten first (0: DefaultKeepFinished).
	KeepFinished int
	// Store, if set, keeps workflows across restarts.
	Store  Store
	Logger *slog.Logger
}

// ID identifies a workflow: 16 bytes, the first 8 its creation time.
type ID [16]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// ParseID parses the hex form of an ID.
func ParseID(s string) (ID, error) {
	var id ID
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != len(id) {
		return id, fmt.Errorf("workflow ID %.70q: want 32 hex digits: %w", s, ErrNotFound)
	}
	return ID(b), nil
}

// State of a workflow.
type State string

// Workflow states.
const (
	StateRunning   State = "running"
	StateSucceeded State = "succeeded"
	StateFailed    State = "failed" // a step did not succeed
	StateCanceled  State = "canceled"
)

// Status is a copy of what the engine knows of a workflow.
type Status struct {
	ID         ID
	Name       string
	State      State
	CreatedAt  time.Time
	FinishedAt time.Time
	Steps      []StepStatus
}

// StepStatus is one step of a Status.
type StepStatus struct {
	Name      string
	DependsOn []string
	Skill     string
	TaskID    skill.TaskID
	// State is skill.StateWaiting until the step is submitted, then its
	// task's; skill.StateDependencyFailed if it never will be.
	State skill.TaskState
	Node  peer.ID // of its task's current or last attempt
	Error string
}

// Engine runs workflows and chained tasks on a Coordinator.
type Engine struct {
	coord Coordinator
	opt   Options
	log   *slog.Logger

	ctx    context.Context
	stop   context.CancelFunc
	wg     sync.WaitGroup
	mu     sync.Mutex
	start  bool
	closed bool
	runs   map[ID]*run
	steps  map[skill.TaskID]*step // every step of every run kept, by task ID
	held   map[skill.TaskID]*step // those never submitted (waiting, or ended before): TaskList merges them
	active int                    // workflows not finished
	chains int                    // chained tasks not finished
	order  []ID                   // finished runs, oldest first

	events  *eventhub.Hub[Event] // of Subscribe
	limited uint64               // step events dropped by the rate limit

	// Progress (steps' and runs' ends) is written behind, in order, by
	// one goroutine: the coordinator's store has the tasks' states, so a
	// write lost to a crash is found again at Start, and a chain of steps
	// does not wait for a sync per step.
	wmu     sync.RWMutex            // senders hold it to read; Close to close wq
	wq      chan []store.WorkflowOp // nil without a store
	wclosed bool
	wdone   chan struct{}
}

type run struct {
	id       ID
	name     string
	chain    bool
	created  time.Time
	finished time.Time
	state    State
	canceled bool
	resumed  bool // loaded at Start: a step's task may have been submitted before
	left     int  // steps not terminal
	steps    []*step
	ctx      context.Context // canceled by Cancel: waiting steps end
	stop     context.CancelFunc
	done     chan struct{}
	evTokens float64   // step events it may publish now (see workflowEventLocked)
	evAt     time.Time // when evTokens was counted
}

type step struct {
	r        *run
	name     string
	deps     []int
	users    []int        // the steps that depend on this one
	after    skill.TaskID // a chained task's: the task it takes its input from
	task     skill.SkillTask
	hasInput bool // the step set its own input
	ctx      context.Context
	stop     context.CancelFunc

	// guarded by Engine.mu
	state     skill.TaskState // StateWaiting until submitted; then 0 until terminal (the coordinator has it)
	started   bool            // a goroutine runs it (or ran it)
	submitted bool
	canceled  bool // by TaskCancel or Cancel
	node      peer.ID
	err       string
	cause     error              // why it failed, if it failed here (not kept in the store)
	ended     time.Time          // when it ended here; zero if loaded from the store
	result    *skill.SkillResult // once succeeded, until the run finishes
	sent      chan struct{}      // closed once submitted or terminal
}

// New returns an engine on c. It does nothing until Start.
func New(c Coordinator, o Options) *Engine {
	if o.MaxWorkflows <= 0 {
		o.MaxWorkflows = DefaultMaxWorkflows
	}
	if o.MaxChains <= 0 {
		o.MaxChains = DefaultMaxChains
	}
	if o.KeepFinished <= 0 {
		o.KeepFinished = DefaultKeepFinished
	}
	log := o.Logger
	if log == nil {
		log = slog.Default()
	}
	e := &Engine{coord: c, opt: o, log: log, runs: map[ID]*run{}, steps: map[skill.TaskID]*step{}, held: map[skill.TaskID]*step{},
		events: eventhub.New[Event](subBuffer)}
	e.ctx, e.stop = context.WithCancel(context.Background())
	return e
}

// Start loads the workflows the store holds and resumes those not
// finished: a step whose task the coordinator knows is followed, one it
// does not know is submitted once its dependencies succeed (with the ID
// chosen when the workflow was submitted). Start the coordinator first.
func (e *Engine) Start(ctx context.Context) error {
	e.mu.Lock()
	if e.start || e.closed {
		e.mu.Unlock()
		return errors.New("workflow engine: Start called twice, or after Close")
	}
	e.start = true
	e.mu.Unlock()
	if e.opt.Store == nil {
		return nil
	}
	e.wq, e.wdone = make(chan []store.WorkflowOp, 256), make(chan struct{})
	go e.writeBehind()
	runs, err := e.load()
	if err != nil {
		return fmt.Errorf("load workflows: %w", err)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, r := range runs {
		if r.state == StateRunning && !slices.ContainsFunc(r.steps, func(s *step) bool { return !s.state.Terminal() }) {
			// Every step ended before the crash, the workflow's end was not written.
			r.state, r.finished = endState(r), time.Now()
		}
		e.addLocked(r)
		if r.state != StateRunning {
			e.order = append(e.order, r.id)
			continue
		}
		r.resumed = true
		e.startReadyLocked(r)
	}
	slices.SortFunc(e.order, func(a, b ID) int { return e.runs[a].finished.Compare(e.runs[b].finished) })
	e.trimLocked()
	return nil
}

// Close stops following workflows; the coordinator's tasks run on, and a
// new engine on the same store resumes them. It waits for its goroutines.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	e.stop()
	e.wg.Wait()
	e.events.Close()
	e.wmu.Lock()
	if e.wq != nil && !e.wclosed {
		e.wclosed = true
		close(e.wq)
	}
	e.wmu.Unlock()
	if e.wdone != nil {
		<-e.wdone
	}
	return nil
}

// writeBehind writes what enqueue hands it, gathering for progressLinger
// into one transaction, until Close closes the queue.
func (e *Engine) writeBehind() {
	defer close(e.wdone)
	t := time.NewTimer(time.Hour)
	t.Stop()
	for ws := range e.wq {
		t.Reset(progressLinger)
		open := true
	gather:
		for open {
			select {
			case more, ok := <-e.wq:
				ws, open = append(ws, more...), ok
			case <-t.C:
				break gather
			}
		}
		t.Stop()
		e.flush(ws)
		if !open {
			return
		}
	}
}

// enqueue hands ws to the writer (after Close: writes them now).
func (e *Engine) enqueue(ws []store.WorkflowOp) {
	if len(ws) == 0 {
		return
	}
	e.wmu.RLock()
	if e.wq != nil && !e.wclosed {
		e.wq <- ws
		e.wmu.RUnlock()
		return
	}
	e.wmu.RUnlock()
	e.flush(ws)
}

func newID() [24]byte {
	var b [24]byte
	_, _ = crand.Read(b[:])
	return b
}

// taskID returns a time-ordered task ID, as the coordinator makes them.
func taskID(now time.Time) skill.TaskID {
	var id skill.TaskID
	binary.BigEndian.PutUint64(id[:8], uint64(now.UnixNano()))
	r := newID()
	copy(id[8:], r[:])
	return id
}

func runID(now time.Time) ID {
	var id ID
	binary.BigEndian.PutUint64(id[:8], uint64(now.UnixNano()))
	r := newID()
	copy(id[8:], r[:8])
	return id
}

// Submit starts a workflow: tasks[i] is the task of spec.Steps[i] (its ID,
// if zero, is chosen here). It returns once the workflow is stored. The
// spec must be valid.
func (e *Engine) Submit(ctx context.Context, spec *Spec, tasks []*skill.SkillTask) (ID, error) {
	if err := spec.Validate(); err != nil {
		return ID{}, err
	}
	if len(tasks) != len(spec.Steps) {
		return ID{}, fmt.Errorf("submit workflow: %d tasks for %d steps", len(tasks), len(spec.Steps))
	}
	now := time.Now()
	r := &run{id: runID(now), name: spec.Name, created: now, state: StateRunning}
	for i := range spec.Steps {
		t := *tasks[i]
		if t.ID.IsZero() {
			t.ID = taskID(now)
		}
		t.CreatedAt = time.Time{}
		hasInput := !(t.Input.Kind == grid.InputJSON && (len(t.Input.Data) == 0 || string(t.Input.Data) == "null"))
		r.steps = append(r.steps, &step{r: r, name: spec.Steps[i].Name, deps: spec.Deps(i), task: t, hasInput: hasInput, state: skill.StateWaiting})
	}
	return r.id, e.begin(ctx, r)
}

// SubmitChained submits t to run once the task from succeeds, with its
// output as input (JSON if it is JSON, raw bytes otherwise); t's own input
// is ignored. Until then t is skill.StateWaiting; if from does not
// succeed, t ends skill.StateDependencyFailed and is never submitted. It
// returns t's ID (chosen here if zero).
func (e *Engine) SubmitChained(ctx context.Context, t *skill.SkillTask, from skill.TaskID) (skill.TaskID, error) {
	if _, err := e.TaskStatus(from); err != nil {
		return skill.TaskID{}, fmt.Errorf("input from task %s: %w", from, err)
	}
	now := time.Now()
	tt := *t
	if tt.ID.IsZero() {
		tt.ID = taskID(now)
	}
	tt.CreatedAt = time.Time{}
	r := &run{id: runID(now), chain: true, created: now, state: StateRunning}
	r.steps = []*step{{r: r, name: "task", after: from, task: tt, state: skill.StateWaiting}}
	return tt.ID, e.begin(ctx, r)
}

// begin stores r and starts its steps.
func (e *Engine) begin(ctx context.Context, r *run) error {
	e.mu.Lock()
	switch {
	case !e.start || e.closed:
		e.mu.Unlock()
		return fmt.Errorf("submit workflow: %w", ErrClosed)
	case r.chain && e.chains >= e.opt.MaxChains:
		e.mu.Unlock()
		return fmt.Errorf("%d chained tasks are waiting or running, the most this node keeps: wait for some to finish: %w", e.chains, ErrTooMany)
	case !r.chain && e.active >= e.opt.MaxWorkflows:
		e.mu.Unlock()
		return fmt.Errorf("%d workflows are running, the most workflow.max_workflows allows: wait for one to finish, or raise it: %w", e.active, ErrTooMany)
	}
	for _, s := range r.steps {
		if _, dup := e.steps[s.task.ID]; dup {
			e.mu.Unlock()
			return fmt.Errorf("submit workflow: task ID %s is in use: %w", s.task.ID, grid.ErrDuplicateTask)
		}
	}
	e.addLocked(r) // counted now, so that concurrent submissions respect the cap
	e.mu.Unlock()
	if st := e.opt.Store; st != nil {
		if err := st.WriteWorkflows(ctx, []store.WorkflowOp{{Key: specKey(r.id), Value: encodeRun(r)}}); err != nil {
			e.mu.Lock()
			e.removeLocked(r)
			e.mu.Unlock()
			return fmt.Errorf("store workflow: %w", err)
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return fmt.Errorf("submit workflow: %w", ErrClosed)
	}
	if e.events.Has() {
		now := time.Now()
		e.workflowEventLocked(r, nil, 0, now)
		for _, s := range r.steps {
			e.taskEventLocked(s, now)
		}
	}
	e.startReadyLocked(r)
	return nil
}

// startReadyLocked starts the steps of r that are not started and whose
// dependencies have all ended.
func (e *Engine) startReadyLocked(r *run) {
	for _, s := range r.steps {
		if !s.started && !s.state.Terminal() && e.readyLocked(s) {
			s.started = true
			e.wg.Add(1)
			go e.runSteps(s)
		}
	}
}

// readyLocked reports whether every step s depends on has ended.
func (e *Engine) readyLocked(s *step) bool {
	for _, d := range s.deps {
		if !s.r.steps[d].state.Terminal() {
			return false
		}
	}
	return true
}

// addLocked makes r known. Its steps' states must be set.
func (e *Engine) addLocked(r *run) {
	r.ctx, r.stop = context.WithCancel(e.ctx)
	r.done = make(chan struct{})
	if r.canceled {
		r.stop()
	}
	r.left = 0
	for i, s := range r.steps {
		for _, d := range s.deps {
			r.steps[d].users = append(r.steps[d].users, i)
		}
		if s.after.IsZero() {
			s.ctx, s.stop = r.ctx, func() {}
		} else { // a chained task waits for its input with a context of its own
			s.ctx, s.stop = context.WithCancel(r.ctx)
		}
		s.sent = make(chan struct{})
		if s.state.Terminal() {
			close(s.sent)
		} else {
			r.left++
			if s.submitted {
				close(s.sent)
			}
		}
		e.steps[s.task.ID] = s
		if !s.submitted {
			e.held[s.task.ID] = s
		}
	}
	e.runs[r.id] = r
	if r.state == StateRunning {
		if r.chain {
			e.chains++
		} else {
			e.active++
		}
	} else {
		close(r.done)
	}
}

func (e *Engine) removeLocked(r *run) {
	if r.state == StateRunning {
		if r.chain {
			e.chains--
		} else {
			e.active--
		}
	}
	r.stop()
	for _, s := range r.steps {
		if e.steps[s.task.ID] == s {
			delete(e.steps, s.task.ID)
			delete(e.held, s.task.ID)
		}
	}
	delete(e.runs, r.id)
}

// runSteps runs s, then, in the same goroutine, the first of the steps
// that its end made ready (the others in goroutines of their own), and so
// on: a chain of steps runs without handing over between goroutines.
func (e *Engine) runSteps(s *step) {
	defer e.wg.Done()
	for s != nil {
		next := e.runStep(s)
		s = nil
		for i, x := range next {
			if i == 0 {
				s = x
				continue
			}
			e.wg.Add(1)
			go e.runSteps(x)
		}
	}
}

// runStep runs one step whose dependencies have ended: it submits its
// task with the input they give and waits for the task. It returns the
// steps its end made ready, marked started.
func (e *Engine) runStep(s *step) []*step {
	r := s.r
	if r.resumed {
		if _, err := e.coord.Status(s.task.ID); err == nil {
			return e.follow(s)
		}
	}
	var from *skill.SkillResult
	var fromErr error
	if !s.after.IsZero() {
		from, fromErr = e.TaskWait(s.ctx, s.after)
	}
	e.mu.Lock()
	if s.canceled { // set before the contexts are canceled
		msg := "canceled before it was submitted"
		if r.canceled && !r.chain {
			msg = "the workflow was canceled before this step was submitted"
		}
		return e.finishLocked(s, skill.StateCanceled, "", msg)
	}
	if e.ctx.Err() != nil {
		e.mu.Unlock()
		return nil // Close: resumed at the next Start
	}
	var why string
	if !s.after.IsZero() {
		switch {
		case fromErr == nil && from != nil && from.Success:
		case errors.Is(fromErr, skill.ErrTaskNotFound):
			why = fmt.Sprintf("task %s it takes its input from is no longer known", s.after)
		default:
			e.mu.Unlock()
			st, err := e.TaskStatus(s.after)
			e.mu.Lock()
			if err != nil {
				why = fmt.Sprintf("task %s it takes its input from did not succeed", s.after)
			} else {
				why = fmt.Sprintf("task %s it takes its input from ended %s", s.after, st.State)
				if st.Error != "" {
					why += ": " + st.Error
				}
			}
		}
	}
	for _, d := range s.deps {
		if ds := r.steps[d]; ds.state != skill.StateSucceeded && why == "" {
			why = fmt.Sprintf("step %q it depends on ended %s", ds.name, ds.state)
		}
	}
	if why != "" {
		return e.finishLocked(s, skill.StateDependencyFailed, "", why)
	}
	t := s.task
	in, err := e.inputLocked(s, from)
	e.mu.Unlock()
	if err != nil {
		e.mu.Lock()
		s.cause = err
		return e.finishLocked(s, skill.StateFailed, "", err.Error())
	}
	t.Input = in
	_, err = e.coord.SubmitTask(e.ctx, &t)
	if err != nil && !errors.Is(err, grid.ErrDuplicateTask) {
		if e.ctx.Err() != nil {
			return nil // resumed at the next start
		}
		e.mu.Lock()
		s.cause = err
		return e.finishLocked(s, skill.StateFailed, "", err.Error())
	}
	return e.follow(s)
}

// follow waits for a submitted step's task and records how it ended.
func (e *Engine) follow(s *step) []*step {
	e.mu.Lock()
	if !s.submitted {
		s.submitted = true
		delete(e.held, s.task.ID)
		close(s.sent)
		if e.events.Has() && !s.r.chain {
			e.mu.Unlock()
			// Its state then: queued or delegated (queued if it has
			// ended already: its end is the next event).
			state := skill.StateQueued
			if ts, err := e.coord.Status(s.task.ID); err == nil && !ts.State.Terminal() {
				state = ts.State
			}
			e.mu.Lock()
			e.workflowEventLocked(s.r, s, state, time.Now())
		}
	}
	// A cancel that came while it was submitted: from now on, Cancel and
	// TaskCancel see it submitted and cancel its task themselves.
	canceled := s.canceled
	e.mu.Unlock()
	if canceled {
		_ = e.coord.Cancel(s.task.ID)
	}
	res, err := e.coord.Wait(e.ctx, s.task.ID)
	if e.ctx.Err() != nil {
		return nil
	}
	st, serr := e.coord.Status(s.task.ID)
	e.mu.Lock()
	switch {
	case serr == nil && st.State.Terminal():
		msg := st.Error
		if msg == "" && st.Result != nil && !st.Result.Success {
			msg = st.Result.Error
		}
		if st.State == skill.StateSucceeded {
			s.result = st.Result
			if s.result == nil {
				s.result = res
			}
		}
		return e.finishLocked(s, st.State, st.Peer, msg)
	case err != nil:
		return e.finishLocked(s, skill.StateFailed, "", err.Error())
	}
	return e.finishLocked(s, skill.StateFailed, "", fmt.Sprintf("task %s: its state is no longer known", s.task.ID))
}

// finishLocked ends step s in state (terminal) as endLocked does, hands
// the writes to the writer and unlocks e.mu. It returns the steps s's end
// made ready.
func (e *Engine) finishLocked(s *step, state skill.TaskState, node peer.ID, msg string) []*step {
	ready, ws := e.endLocked(s, state, node, msg)
	e.enqueue(ws) // under e.mu: writes come in the order of the changes
	e.mu.Unlock()
	return ready
}

// endLocked ends step s in state (terminal) and, with its last step, its
// run. It returns the steps that depended on s and may now start (marked
// started; none of a canceled run) and what to write to the store.
func (e *Engine) endLocked(s *step, state skill.TaskState, node peer.ID, msg string) ([]*step, []store.WorkflowOp) {
	r := s.r
	s.state, s.node, s.err, s.ended = state, node, msg, time.Now()
	if !s.submitted {
		close(s.sent)
		e.taskEventLocked(s, s.ended)
	}
	r.left--
	var ws []store.WorkflowOp
	if e.opt.Store != nil {
		ws = append(ws, store.WorkflowOp{Key: stepKey(r.id, s.index()), Value: encodeStep(s)})
	}
	e.workflowEventLocked(r, s, state, s.ended)
	var ready []*step
	for _, u := range s.users {
		x := r.steps[u]
		if !x.started && !x.state.Terminal() && !x.canceled && e.readyLocked(x) {
			x.started = true
			ready = append(ready, x)
		}
	}
	if r.left == 0 {
		r.finished = time.Now()
		r.state = endState(r)
		if r.chain {
			e.chains--
		} else {
			e.active--
		}
		for _, x := range r.steps {
			x.result = nil
			x.task.Input.Data = nil // kept in the store; only the status is served now
		}
		e.order = append(e.order, r.id)
		close(r.done)
		e.workflowEventLocked(r, nil, 0, r.finished)
		if e.opt.Store != nil {
			ws = append(ws, store.WorkflowOp{Key: endKey(r.id), Value: encodeEnd(r)})
		}
		for _, id := range e.trimLocked() {
			if e.opt.Store != nil {
				ws = append(ws, store.WorkflowOp{Key: bytes.Clone(id[:]), Delete: true})
			}
		}
	}
	return ready, ws
}

// flush writes ws in one transaction, logging a failure.
func (e *Engine) flush(ws []store.WorkflowOp) {
	if len(ws) == 0 {
		return
	}
	if err := e.opt.Store.WriteWorkflows(context.WithoutCancel(e.ctx), ws); err != nil {
		e.log.Warn("cannot store the progress of workflows", "writes", len(ws), "err", err)
	}
}

// endState is the state of a run whose steps have all ended.
func endState(r *run) State {
	if r.canceled {
		return StateCanceled
	}
	for _, x := range r.steps {
		if x.state != skill.StateSucceeded {
			return StateFailed
		}
	}
	return StateSucceeded
}

func (s *step) index() int { return slices.Index(s.r.steps, s) }

// trimLocked forgets the oldest finished runs beyond KeepFinished and
// returns their IDs.
func (e *Engine) trimLocked() []ID {
	n := len(e.order) - e.opt.KeepFinished
	if n <= 0 {
		return nil
	}
	drop := slices.Clone(e.order[:n])
	e.order = slices.Delete(e.order, 0, n)
	for _, id := range drop {
		if r := e.runs[id]; r != nil {
			e.removeLocked(r)
		}
	}
	return drop
}

// inputLocked builds a step's input: its own with no dependencies; the
// dependency's output with one and no input of its own; otherwise
// {"input": its input, "deps": {"step": output, ...}} with outputs that
// are not JSON as base64 strings.
func (e *Engine) inputLocked(s *step, from *skill.SkillResult) (skill.SkillInput, error) {
	if !s.after.IsZero() {
		return outputInput(from.Output), nil
	}
	if len(s.deps) == 0 {
		return s.task.Input, nil
	}
	outs := make([][]byte, len(s.deps))
	for i, d := range s.deps {
		ds := s.r.steps[d]
		if ds.result == nil {
			// Finished before a restart: the coordinator has its result.
			res, err := e.coord.Wait(e.ctx, ds.task.ID)
			if err != nil || res == nil || !res.Success {
				return skill.SkillInput{}, fmt.Errorf("the output of step %q (task %s) is no longer kept: %v", ds.name, ds.task.ID, err)
			}
			ds.result = res
		}
		outs[i] = ds.result.Output
	}
	if len(s.deps) == 1 && !s.hasInput {
		return outputInput(outs[0]), nil
	}
	return Combine(s.task.Input, s.hasInput, names(s), outs)
}

func names(s *step) []string {
	out := make([]string, len(s.deps))
	for i, d := range s.deps {
		out[i] = s.r.steps[d].name
	}
	return out
}

// outputInput is a task's output as another's input: JSON if it is JSON.
func outputInput(b []byte) skill.SkillInput {
	if json.Valid(b) {
		return skill.SkillInput{Kind: grid.InputJSON, Data: b}
	}
	return skill.RawInput(b)
}

// Combine builds {"input": own, "deps": {names[i]: outputs[i]}}: "input"
// only if hasInput (a raw input as a base64 string), each output as is if
// it is JSON, as a base64 string if not.
func Combine(own skill.SkillInput, hasInput bool, names []string, outputs [][]byte) (skill.SkillInput, error) {
	deps := make(map[string]json.RawMessage, len(names))
	for i, n := range names {
		if json.Valid(outputs[i]) {
			deps[n] = outputs[i]
		} else {
			deps[n], _ = json.Marshal(base64.StdEncoding.EncodeToString(outputs[i]))
		}
	}
	v := struct {
		Input json.RawMessage            `json:"input,omitempty"`
		Deps  map[string]json.RawMessage `json:"deps"`
	}{Deps: deps}
	if hasInput {
		if own.Kind == grid.InputJSON {
			v.Input = own.Data
		} else {
			v.Input, _ = json.Marshal(base64.StdEncoding.EncodeToString(own.Data))
		}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return skill.SkillInput{}, fmt.Errorf("combine the inputs: %w", err)
	}
	return skill.SkillInput{Kind: grid.InputJSON, Data: b}, nil
}

// Cancel cancels a workflow: steps not yet submitted end canceled, the
// tasks of those running are canceled.
func (e *Engine) Cancel(id ID) error {
	e.mu.Lock()
	r := e.runs[id]
	switch {
	case r == nil || r.chain:
		e.mu.Unlock()
		return fmt.Errorf("no workflow %s: %w", id, ErrNotFound)
	case r.state != StateRunning:
		st := r.state
		e.mu.Unlock()
		return fmt.Errorf("workflow %s already %s: %w", id, st, ErrFinished)
	}
	if r.canceled {
		e.mu.Unlock()
		return nil
	}
	r.canceled = true
	for _, s := range r.steps {
		s.canceled = true
	}
	var ws []store.WorkflowOp
	var running []skill.TaskID
	for _, s := range r.steps {
		switch {
		case s.state.Terminal():
		case !s.started:
			s.started = true // never: it ends here
			_, w := e.endLocked(s, skill.StateCanceled, "", "the workflow was canceled before this step was submitted")
			ws = append(ws, w...)
		case s.submitted:
			running = append(running, s.task.ID)
		}
	}
	e.enqueue(ws)
	e.mu.Unlock()
	for _, id := range running {
		_ = e.coord.Cancel(id) // one that has just finished says so: nothing to do
	}
	if e.opt.Store != nil { // before the answer: a restart must not run the steps
		e.flush([]store.WorkflowOp{{Key: cancelKey(r.id), Value: []byte{1}}})
	}
	r.stop() // chained waits end; steps about to be submitted see canceled
	return nil
}

// Get returns a workflow's status.
func (e *Engine) Get(id ID) (Status, error) {
	e.mu.Lock()
	r := e.runs[id]
	if r == nil || r.chain {
		e.mu.Unlock()
		return Status{}, fmt.Errorf("no workflow %s: %w", id, ErrNotFound)
	}
	st := e.statusLocked(r)
	e.mu.Unlock()
	for i := range st.Steps {
		ss := &st.Steps[i]
		if ss.State != 0 {
			continue
		}
		if ts, err := e.coord.Status(ss.TaskID); err == nil {
			ss.State, ss.Node, ss.Error = ts.State, ts.Peer, ts.Error
		} else {
			ss.State = skill.StateQueued // submitted, not listed yet
		}
	}
	return st, nil
}

// statusLocked copies r; submitted steps not finished have State 0.
func (e *Engine) statusLocked(r *run) Status {
	st := Status{ID: r.id, Name: r.name, State: r.state, CreatedAt: r.created, FinishedAt: r.finished, Steps: make([]StepStatus, len(r.steps))}
	for i, s := range r.steps {
		ss := StepStatus{Name: s.name, Skill: string(s.task.Skill), TaskID: s.task.ID, Node: s.node, Error: s.err}
		for _, d := range s.deps {
			ss.DependsOn = append(ss.DependsOn, r.steps[d].name)
		}
		switch {
		case s.state.Terminal():
			ss.State = s.state
		case !s.submitted:
			ss.State = skill.StateWaiting
		}
		st.Steps[i] = ss
	}
	return st
}

// Wait waits until the workflow has finished or ctx is done, and returns
// its status then.
func (e *Engine) Wait(ctx context.Context, id ID) (Status, error) {
	e.mu.Lock()
	r := e.runs[id]
	e.mu.Unlock()
	if r == nil || r.chain {
		return Status{}, fmt.Errorf("no workflow %s: %w", id, ErrNotFound)
	}
	select {
	case <-r.done:
	case <-ctx.Done():
	case <-e.ctx.Done():
	}
	return e.Get(id)
}

// List returns the workflows known, newest first, those in state only if
// state is not empty, at most limit.
func (e *Engine) List(state State, limit int) []Status {
	e.mu.Lock()
	var rs []*run
	for _, r := range e.runs {
		if !r.chain && (state == "" || r.state == state) {
			rs = append(rs, r)
		}
	}
	slices.SortFunc(rs, func(a, b *run) int {
		if c := b.created.Compare(a.created); c != 0 {
			return c
		}
		return slices.Compare(b.id[:], a.id[:])
	})
	if limit > 0 && len(rs) > limit {
		rs = rs[:limit]
	}
	out := make([]Status, len(rs))
	for i, r := range rs {
		out[i] = e.statusLocked(r)
	}
	e.mu.Unlock()
	for i := range out {
		for j := range out[i].Steps {
			if ss := &out[i].Steps[j]; ss.State == 0 {
				ss.State = skill.StateRunning // listed without asking the coordinator
				if ts, err := e.coord.Status(ss.TaskID); err == nil {
					ss.State, ss.Node = ts.State, ts.Peer
				}
			}
		}
	}
	return out
}

// Active returns the number of workflows running and chained tasks not
// finished.
func (e *Engine) Active() (workflows, chains int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.active, e.chains
}
