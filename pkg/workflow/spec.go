package workflow

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// Limits of a spec.
const (
	MaxSteps    = 256 // steps of one workflow
	MaxNameLen  = 64  // bytes of a step or workflow name
	MaxSpecSize = 22 << 20
)

// ErrInvalidSpec is wrapped by every error Parse and Validate return.
var ErrInvalidSpec = errors.New("invalid workflow")

// UnknownStepError is a dependency on a step the workflow does not have.
type UnknownStepError struct {
	Step string // the step that names it
	Ref  string // the name it gives
}

func (e *UnknownStepError) Error() string {
	return fmt.Sprintf("step %q depends on %q, which is not a step of this workflow", e.Step, e.Ref)
}

// Unwrap returns ErrInvalidSpec.
func (e *UnknownStepError) Unwrap() error { return ErrInvalidSpec }

// CycleError is a loop in the dependencies: Steps lists it in order, its
// first step again at the end ("a", "b", "a").
type CycleError struct {
	Steps []string
}

func (e *CycleError) Error() string {
	return fmt.Sprintf("steps %s form a cycle: a step may depend only on steps that do not depend on it", strings.Join(quoteAll(e.Steps), " -> "))
}

// Unwrap returns ErrInvalidSpec.
func (e *CycleError) Unwrap() error { return ErrInvalidSpec }

func quoteAll(ss []string) []string {
	out := make([]string, len(ss))
	for i, s := range ss {
		out[i] = fmt.Sprintf("%q", s)
	}
	return out
}

// invalid is an ErrInvalidSpec with a message.
func invalid(format string, args ...any) error {
	return &specError{fmt.Sprintf(format, args...)}
}

type specError struct{ msg string }

func (e *specError) Error() string { return e.msg }
func (e *specError) Unwrap() error { return ErrInvalidSpec }

// Spec is a workflow: named steps, each a task, with dependencies between
// them that form a DAG.
type Spec struct {
	Name  string `json:"name,omitempty"`
	Steps []Step `json:"steps"`
}

// Step is one task of a workflow. Task holds the fields of a task
// submission (skill, version, input, input_base64, priority, timeout,
// min_trust, max_retries, retry, no_cache), read as POST /v1/tasks reads
// them; DependsOn names the steps whose outputs it takes.
type Step struct {
	Name      string
	DependsOn []string
	Task      apiv1.SubmitRequest
}

// stepFields lists the fields of a step, for errors.
const stepFields = "name, depends_on, skill, version, input, input_base64, priority, timeout, min_trust, max_retries, retry, no_cache"

// MarshalJSON writes the step as one object: name, depends_on and the
// task's fields.
func (s Step) MarshalJSON() ([]byte, error) {
	b, err := json.Marshal(&s.Task)
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, err
	}
	m["name"], _ = json.Marshal(s.Name)
	if len(s.DependsOn) > 0 {
		m["depends_on"], _ = json.Marshal(s.DependsOn)
	}
	return json.Marshal(m)
}

// UnmarshalJSON reads a step, refusing unknown fields.
func (s *Step) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) == 0 || b[0] != '{' {
		return errors.New("a step must be an object such as {\"name\": \"a\", \"skill\": \"echo\"}")
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		return err
	}
	var out Step
	if v, ok := m["name"]; ok {
		if err := json.Unmarshal(v, &out.Name); err != nil {
			return errors.New(`"name" must be a string`)
		}
		delete(m, "name")
	}
	if v, ok := m["depends_on"]; ok {
		if err := json.Unmarshal(v, &out.DependsOn); err != nil {
			var one string
			if json.Unmarshal(v, &one) != nil {
				return errors.New(`"depends_on" must be a list of step names`)
			}
			out.DependsOn = []string{one}
		}
		delete(m, "depends_on")
	}
	rest, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(rest, &out.Task); err != nil {
		var fe *apiv1.FieldError
		if errors.As(err, &fe) && strings.HasPrefix(fe.Problem, "is not a field") {
			return fmt.Errorf("%q is not a field of a step: the fields are %s", fe.Field, stepFields)
		}
		return err
	}
	if out.Task.InputFrom != "" {
		return errors.New(`"input_from" is not taken in a step: name the steps whose outputs it takes in "depends_on"`)
	}
	*s = out
	return nil
}

func clip(s string, n int) string {
	if r := []rune(s); len(r) > n {
		return string(r[:n]) + "…"
	}
	return s
}

// Parse reads a spec from YAML or JSON (JSON is tried when the text begins
// with '{'), refusing unknown fields, and validates it. Its errors wrap
// ErrInvalidSpec.
func Parse(b []byte) (*Spec, error) {
	if len(b) > MaxSpecSize {
		return nil, invalid("the workflow is %d bytes, more than %d", len(b), MaxSpecSize)
	}
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 {
		return nil, invalid("the workflow is empty: it needs a list of steps")
	}
	var js []byte
	if trimmed[0] == '{' {
		js = trimmed
	} else {
		var err error
		if js, err = yamlToJSON(b); err != nil {
			return nil, invalid("%v", err)
		}
	}
	var s Spec
	dec := json.NewDecoder(bytes.NewReader(js))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&s); err != nil {
		return nil, invalid("%s", specDecodeError(err))
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, invalid("the workflow has data after its JSON object")
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

func specDecodeError(err error) string {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "json: unknown field "); ok {
		return fmt.Sprintf("%s is not a field of a workflow: the fields are name, steps", name)
	}
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		switch te.Field {
		case "steps":
			return `"steps" must be a list of steps`
		case "name":
			return `"name" must be a string`
		}
		return fmt.Sprintf("%q must be %s, not %s", te.Field, te.Type, te.Value)
	}
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("not valid JSON: %v (at byte %d)", se, se.Offset)
	}
	return strings.TrimPrefix(msg, "json: ")
}

// yamlToJSON reads one YAML document as JSON. Mapping keys must be
// strings; duplicate keys are refused (by yaml.v3).
func yamlToJSON(b []byte) ([]byte, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("the workflow is empty: it needs a list of steps")
		}
		return nil, fmt.Errorf("not valid YAML: %v", strings.TrimPrefix(err.Error(), "yaml: "))
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errors.New("the file holds more than one YAML document: put one workflow in it")
	}
	v, err := yamlValue(&doc)
	if err != nil {
		return nil, err
	}
	return json.Marshal(v)
}

// yamlValue converts a YAML node to a value json.Marshal writes.
func yamlValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return yamlValue(n.Content[0])
	case yaml.AliasNode:
		return nil, fmt.Errorf("line %d: YAML aliases are not taken in a workflow", n.Line)
	case yaml.MappingNode:
		m := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode || (k.Tag != "!!str" && k.Tag != "!!int" && k.Tag != "!!bool" && k.Tag != "!!float") {
				return nil, fmt.Errorf("line %d: a key must be a plain word", k.Line)
			}
			if _, dup := m[k.Value]; dup {
				return nil, fmt.Errorf("line %d: key %q is given twice", k.Line, k.Value)
			}
			v, err := yamlValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			m[k.Value] = v
		}
		return m, nil
	case yaml.SequenceNode:
		l := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := yamlValue(c)
			if err != nil {
				return nil, err
			}
			l = append(l, v)
		}
		return l, nil
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!null":
			return nil, nil
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return nil, fmt.Errorf("line %d: %v", n.Line, err)
			}
			return b, nil
		case "!!int", "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return nil, fmt.Errorf("line %d: %v", n.Line, err)
			}
			if math.IsInf(f, 0) || math.IsNaN(f) {
				return nil, fmt.Errorf("line %d: %s is not a number JSON can hold", n.Line, n.Value)
			}
			if n.Tag == "!!int" {
				var i int64
				if err := n.Decode(&i); err == nil {
					return i, nil
				}
			}
			return f, nil
		}
		return n.Value, nil // strings, timestamps, binary: as written
	}
	return nil, fmt.Errorf("line %d: unsupported YAML", n.Line)
}

// Validate checks the spec: 1 to MaxSteps steps with distinct valid names
// and a skill each, dependencies on steps it has, without duplicates or
// cycles. Its errors wrap ErrInvalidSpec; an unknown dependency is an
// *UnknownStepError and a loop a *CycleError.
func (s *Spec) Validate() error {
	if s.Name != "" {
		if err := checkName(s.Name); err != nil {
			return invalid("workflow name %q: %v", clip(s.Name, 40), err)
		}
	}
	switch {
	case len(s.Steps) == 0:
		return invalid(`the workflow has no steps: "steps" lists them`)
	case len(s.Steps) > MaxSteps:
		return invalid("the workflow has %d steps, more than %d", len(s.Steps), MaxSteps)
	}
	index := make(map[string]int, len(s.Steps))
	for i := range s.Steps {
		st := &s.Steps[i]
		if st.Name == "" {
			return invalid("step %d has no name", i+1)
		}
		if err := checkName(st.Name); err != nil {
			return invalid("step name %q: %v", clip(st.Name, 40), err)
		}
		if _, dup := index[st.Name]; dup {
			return invalid("two steps are named %q: step names must be distinct", st.Name)
		}
		index[st.Name] = i
		if st.Task.Skill == "" {
			return invalid("step %q has no skill", st.Name)
		}
	}
	for i := range s.Steps {
		st := &s.Steps[i]
		for j, d := range st.DependsOn {
			if d == st.Name {
				return &CycleError{Steps: []string{d, d}}
			}
			if _, ok := index[d]; !ok {
				return &UnknownStepError{Step: st.Name, Ref: clip(d, 64)}
			}
			if slices.Contains(st.DependsOn[:j], d) {
				return invalid("step %q lists %q twice in depends_on", st.Name, d)
			}
		}
	}
	if _, err := s.order(index); err != nil {
		return err
	}
	return nil
}

// checkName accepts 1 to MaxNameLen bytes of letters, digits, '_', '-'
// and '.', beginning with a letter or digit.
func checkName(n string) error {
	if len(n) > MaxNameLen {
		return fmt.Errorf("%d bytes, more than %d", len(n), MaxNameLen)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		alnum := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9'
		if !alnum && (i == 0 || c != '_' && c != '-' && c != '.') {
			return fmt.Errorf("byte %d is not allowed: names are letters, digits, '_', '-' and '.', beginning with a letter or digit", i+1)
		}
	}
	return nil
}

// Order returns the indexes of the steps in an order where each comes
// after the steps it depends on (among steps free to go, in spec order).
// The spec must be valid.
func (s *Spec) Order() []int {
	index := make(map[string]int, len(s.Steps))
	for i := range s.Steps {
		index[s.Steps[i].Name] = i
	}
	o, _ := s.order(index)
	return o
}

// Deps returns the indexes of the steps step i depends on.
func (s *Spec) Deps(i int) []int {
	out := make([]int, 0, len(s.Steps[i].DependsOn))
	for _, d := range s.Steps[i].DependsOn {
		for j := range s.Steps {
			if s.Steps[j].Name == d {
				out = append(out, j)
				break
			}
		}
	}
	return out
}

// order is Kahn's algorithm; on a cycle it returns a *CycleError naming one.
func (s *Spec) order(index map[string]int) ([]int, error) {
	n := len(s.Steps)
	indeg := make([]int, n)
	users := make([][]int, n)
	for i := range s.Steps {
		for _, d := range s.Steps[i].DependsOn {
			j, ok := index[d]
			if !ok {
				return nil, &UnknownStepError{Step: s.Steps[i].Name, Ref: d}
			}
			indeg[i]++
			users[j] = append(users[j], i)
		}
	}
	out := make([]int, 0, n)
	for i := range indeg {
		if indeg[i] == 0 {
			out = append(out, i)
		}
	}
	for k := 0; k < len(out); k++ {
		for _, u := range users[out[k]] {
			if indeg[u]--; indeg[u] == 0 {
				out = append(out, u)
			}
		}
	}
	if len(out) == n {
		return out, nil
	}
	// Every step left has a dependency left: walk them until one repeats.
	at := slices.IndexFunc(indeg, func(d int) bool { return d > 0 })
	seen := map[int]int{}
	var path []int
	for {
		if k, ok := seen[at]; ok {
			names := make([]string, 0, len(path)-k+1)
			for _, i := range path[k:] {
				names = append(names, s.Steps[i].Name)
			}
			names = append(names, s.Steps[at].Name)
			return nil, &CycleError{Steps: names}
		}
		seen[at] = len(path)
		path = append(path, at)
		for _, d := range s.Steps[at].DependsOn {
			if j := index[d]; indeg[j] > 0 {
				at = j
				break
			}
		}
	}
}
