package workflow

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// A workflow is kept under keys that begin with its ID: the ID and
// keySpec holds what was submitted (written once), keyStep and a 2-byte
// step index how a step ended, keyCancel that it was canceled, keyEnd
// how it ended. Steps still running are not written: at Start their
// tasks' states come from the coordinator.
const (
	keySpec   = 0
	keyStep   = 1
	keyCancel = 2
	keyEnd    = 3
)

func specKey(id ID) []byte   { return append(id[:len(id):len(id)], keySpec) }
func cancelKey(id ID) []byte { return append(id[:len(id):len(id)], keyCancel) }
func endKey(id ID) []byte    { return append(id[:len(id):len(id)], keyEnd) }
func stepKey(id ID, i int) []byte {
	return binary.BigEndian.AppendUint16(append(id[:len(id):len(id)], keyStep), uint16(i))
}

type runRec struct {
	V       int       `json:"v"`
	Name    string    `json:"name,omitempty"`
	Chain   bool      `json:"chain,omitempty"`
	Created time.Time `json:"created"`
	Steps   []stepRec `json:"steps"`
}

type stepRec struct {
	Name       string            `json:"name"`
	Deps       []int             `json:"deps,omitempty"`
	After      *skill.TaskID     `json:"after,omitempty"`
	HasInput   bool              `json:"has_input,omitempty"`
	ID         skill.TaskID      `json:"id"`
	Skill      string            `json:"skill"`
	Version    string            `json:"version,omitempty"`
	InputKind  grid.InputKind    `json:"input_kind"`
	Input      []byte            `json:"input,omitempty"`
	Requester  peer.ID           `json:"requester,omitempty"`
	Priority   uint8             `json:"priority"`
	Timeout    time.Duration     `json:"timeout"`
	MinTrust   float64           `json:"min_trust"`
	MaxRetries int               `json:"max_retries"`
	Retry      skill.RetryPolicy `json:"retry"`
	NoCache    bool              `json:"no_cache,omitempty"`
}

type stepEnd struct {
	State     string  `json:"state"`
	Submitted bool    `json:"submitted,omitempty"` // its task was submitted: the coordinator has it
	Node      peer.ID `json:"node,omitempty"`
	Error     string  `json:"error,omitempty"`
}

type runEnd struct {
	State    State     `json:"state"`
	Finished time.Time `json:"finished"`
}

func encodeRun(r *run) []byte {
	rec := runRec{V: 1, Name: r.name, Chain: r.chain, Created: r.created}
	for _, s := range r.steps {
		t := &s.task
		sr := stepRec{Name: s.name, Deps: s.deps, HasInput: s.hasInput, ID: t.ID, Skill: string(t.Skill), Version: t.Version,
			InputKind: t.Input.Kind, Input: t.Input.Data, Requester: t.Requester, Priority: t.Priority, Timeout: t.Timeout,
			MinTrust: t.MinTrust, MaxRetries: t.MaxRetries, Retry: t.Retry, NoCache: t.NoCache}
		if !s.after.IsZero() {
			a := s.after
			sr.After = &a
		}
		rec.Steps = append(rec.Steps, sr)
	}
	b, _ := json.Marshal(rec) // plain fields: never fails
	return b
}

func encodeStep(s *step) []byte {
	b, _ := json.Marshal(stepEnd{State: s.state.String(), Submitted: s.submitted, Node: s.node, Error: s.err})
	return b
}

func encodeEnd(r *run) []byte {
	b, _ := json.Marshal(runEnd{State: r.state, Finished: r.finished})
	return b
}

// load reads every stored workflow. One that cannot be read is logged and
// skipped.
func (e *Engine) load() ([]*run, error) {
	var runs []*run
	byID := map[ID]*run{}
	bad := map[ID]bool{}
	err := e.opt.Store.EachWorkflow(func(k, v []byte) error {
		if len(k) < len(ID{})+1 {
			return nil
		}
		id := ID(k[:len(ID{})])
		if bad[id] {
			return nil
		}
		fail := func(err error) error {
			e.log.Warn("cannot read a stored workflow: skipped", "workflow", id, "err", err)
			bad[id] = true
			return nil
		}
		kind := k[len(ID{})]
		r := byID[id]
		if kind != keySpec && r == nil {
			return fail(fmt.Errorf("key kind %d before its spec", kind))
		}
		switch kind {
		case keySpec:
			var rec runRec
			if err := json.Unmarshal(v, &rec); err != nil {
				return fail(err)
			}
			r = &run{id: id, name: rec.Name, chain: rec.Chain, created: rec.Created, state: StateRunning}
			for _, sr := range rec.Steps {
				s := &step{r: r, name: sr.Name, deps: sr.Deps, hasInput: sr.HasInput, state: skill.StateWaiting}
				if sr.After != nil {
					s.after = *sr.After
				}
				s.task = skill.SkillTask{ID: sr.ID, Skill: reputation.SkillID(sr.Skill), Version: sr.Version,
					Input: skill.SkillInput{Kind: sr.InputKind, Data: sr.Input}, Requester: sr.Requester, Priority: sr.Priority,
					Timeout: sr.Timeout, MinTrust: sr.MinTrust, MaxRetries: sr.MaxRetries, Retry: sr.Retry, NoCache: sr.NoCache}
				for _, d := range s.deps {
					if d < 0 || d >= len(rec.Steps) {
						return fail(fmt.Errorf("step %q depends on step %d of %d", s.name, d, len(rec.Steps)))
					}
				}
				r.steps = append(r.steps, s)
			}
			if len(r.steps) == 0 {
				return fail(fmt.Errorf("no steps"))
			}
			byID[id] = r
			runs = append(runs, r)
		case keyStep:
			if len(k) != len(ID{})+3 {
				return fail(fmt.Errorf("step key of %d bytes", len(k)))
			}
			i := int(binary.BigEndian.Uint16(k[len(ID{})+1:]))
			var se stepEnd
			if err := json.Unmarshal(v, &se); err != nil || i >= len(r.steps) {
				return fail(fmt.Errorf("step %d: %v", i, err))
			}
			st, err := skill.ParseTaskState(se.State)
			if err != nil || !st.Terminal() {
				return fail(fmt.Errorf("step %d: state %q", i, se.State))
			}
			s := r.steps[i]
			s.state, s.submitted, s.node, s.err = st, se.Submitted, se.Node, se.Error
		case keyCancel:
			r.canceled = true
		case keyEnd:
			var re runEnd
			if err := json.Unmarshal(v, &re); err != nil {
				return fail(err)
			}
			r.state, r.finished = re.State, re.Finished
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	out := runs[:0]
	for _, r := range runs {
		if bad[r.id] {
			continue
		}
		if r.state != StateRunning {
			for _, s := range r.steps {
				s.task.Input.Data = nil // only the status is served now
				if !s.state.Terminal() {
					// Its end was not written before the crash: the run's was.
					s.state, s.submitted, s.err = skill.StateFailed, true, "its end was not recorded"
				}
			}
		}
		out = append(out, r)
	}
	return out, nil
}
