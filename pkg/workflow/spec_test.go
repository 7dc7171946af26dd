package workflow

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"
)

const diamondYAML = `
name: diamond
steps:
  - name: a
    skill: echo
    input: hello
  - name: b
    skill: echo
    depends_on: [a]
    priority: high
    timeout: 30s
  - name: c
    skill: hash.sha256
    depends_on: a
    input: {data: aGVsbG8=}
    no_cache: true
    retry: {max_attempts: 2}
  - name: d
    skill: echo
    depends_on: [b, c]
`

func TestParseYAML(t *testing.T) {
	s, err := Parse([]byte(diamondYAML))
	if err != nil {
		t.Fatal(err)
	}
	if s.Name != "diamond" || len(s.Steps) != 4 {
		t.Fatalf("parsed %+v", s)
	}
	a, b, c, d := s.Steps[0], s.Steps[1], s.Steps[2], s.Steps[3]
	if string(a.Task.Input) != `"hello"` || a.Task.Skill != "echo" {
		t.Errorf("a: input %s skill %q", a.Task.Input, a.Task.Skill)
	}
	if b.Task.Priority == nil || *b.Task.Priority != 160 || time.Duration(b.Task.Timeout) != 30*time.Second {
		t.Errorf("b: priority %v timeout %v", b.Task.Priority, b.Task.Timeout)
	}
	if string(c.Task.Input) != `{"data":"aGVsbG8="}` || !c.Task.NoCache || c.Task.Retry == nil || c.Task.Retry.MaxAttempts != 2 {
		t.Errorf("c: %+v input %s", c.Task, c.Task.Input)
	}
	if strings.Join(c.DependsOn, ",") != "a" || strings.Join(d.DependsOn, ",") != "b,c" {
		t.Errorf("deps: c %v d %v", c.DependsOn, d.DependsOn)
	}
	if got := fmt.Sprint(s.Order()); got != "[0 1 2 3]" {
		t.Errorf("order %s", got)
	}
	if got := fmt.Sprint(s.Deps(3)); got != "[1 2]" {
		t.Errorf("deps of d %s", got)
	}
}

func TestParseJSONRoundTrip(t *testing.T) {
	s, err := Parse([]byte(diamondYAML))
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := Parse(b)
	if err != nil {
		t.Fatalf("%v in %s", err, b)
	}
	b2, _ := json.Marshal(s2)
	if string(b) != string(b2) {
		t.Errorf("round trip differs:\n%s\n%s", b, b2)
	}
	if string(s2.Steps[2].Task.Input) != `{"data":"aGVsbG8="}` {
		t.Errorf("input %s", s2.Steps[2].Task.Input)
	}
}

func TestParseOrderPutsDependenciesFirst(t *testing.T) {
	s, err := Parse([]byte(`{"steps":[{"name":"z","skill":"echo","depends_on":["y"]},{"name":"y","skill":"echo","depends_on":["x"]},{"name":"x","skill":"echo"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(s.Order()); got != "[2 1 0]" {
		t.Errorf("order %s, want [2 1 0]", got)
	}
}

func TestParseRefuses(t *testing.T) {
	many := "steps:\n"
	for i := range MaxSteps + 1 {
		many += fmt.Sprintf("  - {name: s%d, skill: echo}\n", i)
	}
	for _, tc := range []struct {
		name, spec, want string
	}{
		{"unknown workflow field", "steps: [{name: a, skill: echo}]\nfoo: 1", `"foo" is not a field of a workflow`},
		{"unknown step field", "steps: [{name: a, skill: echo, sklil: x}]", `"sklil" is not a field of a step`},
		{"unknown step field json", `{"steps":[{"name":"a","skill":"echo","bogus":1}]}`, `"bogus" is not a field of a step`},
		{"no steps", "name: x", "no steps"},
		{"empty", "  \n", "empty"},
		{"too many", many, "257 steps, more than 256"},
		{"no name", "steps: [{skill: echo}]", "step 1 has no name"},
		{"bad name", "steps: [{name: 'a b', skill: echo}]", `step name "a b": byte 2 is not allowed`},
		{"long name", "steps: [{name: " + strings.Repeat("a", 65) + ", skill: echo}]", "65 bytes, more than 64"},
		{"duplicate name", "steps: [{name: a, skill: echo}, {name: a, skill: echo}]", `two steps are named "a"`},
		{"no skill", "steps: [{name: a}]", `step "a" has no skill`},
		{"duplicate dep", "steps: [{name: a, skill: echo}, {name: b, skill: echo, depends_on: [a, a]}]", `lists "a" twice`},
		{"bad priority", "steps: [{name: a, skill: echo, priority: urgent}]", `"priority" must be 0-255`},
		{"bare timeout", "steps: [{name: a, skill: echo, timeout: 30}]", `"timeout" must be a duration string`},
		{"two documents", "steps: [{name: a, skill: echo}]\n---\nsteps: []", "more than one YAML document"},
		{"duplicate key", "steps: [{name: a, skill: echo}]\nsteps: []", "steps"},
		{"not yaml", "steps: [", "not valid YAML"},
		{"input_from in a step", "steps: [{name: a, skill: echo, input_from: '" + strings.Repeat("0", 64) + "'}]", "depends_on"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.spec))
			if err == nil {
				t.Fatalf("accepted %q", tc.spec)
			}
			if !errors.Is(err, ErrInvalidSpec) {
				t.Errorf("%v does not wrap ErrInvalidSpec", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
}

func TestParseUnknownStep(t *testing.T) {
	_, err := Parse([]byte("steps: [{name: a, skill: echo}, {name: b, skill: echo, depends_on: [a, nope]}]"))
	var ue *UnknownStepError
	if !errors.As(err, &ue) || ue.Step != "b" || ue.Ref != "nope" || !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("got %v, want an UnknownStepError of b naming nope", err)
	}
	if want := `step "b" depends on "nope", which is not a step of this workflow`; err.Error() != want {
		t.Errorf("message %q, want %q", err, want)
	}
}

func TestParseCycles(t *testing.T) {
	for _, tc := range []struct{ spec, want string }{
		{"steps: [{name: a, skill: echo, depends_on: [a]}]", `"a" -> "a"`},
		{"steps: [{name: a, skill: echo, depends_on: [b]}, {name: b, skill: echo, depends_on: [a]}]", `"a" -> "b" -> "a"`},
		{`steps:
  - {name: root, skill: echo}
  - {name: x, skill: echo, depends_on: [root, z]}
  - {name: y, skill: echo, depends_on: [x]}
  - {name: z, skill: echo, depends_on: [y]}
  - {name: leaf, skill: echo, depends_on: [z]}`, `"x" -> "z" -> "y" -> "x"`},
	} {
		_, err := Parse([]byte(tc.spec))
		var ce *CycleError
		if !errors.As(err, &ce) || !errors.Is(err, ErrInvalidSpec) {
			t.Errorf("%q: got %v, want a CycleError", tc.spec, err)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: message %q does not name %s", tc.spec, err, tc.want)
		}
	}
}

func TestParseTheExampleInConfigs(t *testing.T) {
	b, err := os.ReadFile("../../configs/workflow-example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s, err := Parse(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(s.Steps) != 3 || strings.Join(s.Steps[2].DependsOn, ",") != "nap,digest" {
		t.Errorf("parsed %+v", s)
	}
}
