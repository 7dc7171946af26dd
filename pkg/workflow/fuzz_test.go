package workflow

import (
	"encoding/json"
	"errors"
	"testing"
)

// FuzzParse checks that Parse never panics, that everything it refuses
// wraps ErrInvalidSpec, and that a spec it accepts is valid and reads
// back the same from its JSON (what the CLI sends the API).
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		diamondYAML,
		`{"steps":[{"name":"a","skill":"echo","input":{"x":[1,2]}},{"name":"b","skill":"echo","depends_on":"a"}]}`,
		"steps: [{name: a, skill: echo, depends_on: [b]}, {name: b, skill: echo, depends_on: [a]}]",
		"steps: [{name: a, skill: echo, input: &x [1]}, {name: b, skill: echo, input: *x}]",
		"steps:\n  - name: a\n    skill: echo\n    input: !!binary aGVsbG8=\n",
		"steps: [{name: a, skill: echo, timeout: 1h, retry: {max_attempts: 2, retry_on: [timeout]}}]",
		"{", "- a\n- b", "steps: 5", "name: [x]\nsteps: []", "? [a]\n: b",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrInvalidSpec) {
				t.Fatalf("error %v does not wrap ErrInvalidSpec", err)
			}
			return
		}
		if err := s.Validate(); err != nil {
			t.Fatalf("accepted an invalid spec: %v", err)
		}
		if len(s.Order()) != len(s.Steps) {
			t.Fatalf("order %v of %d steps", s.Order(), len(s.Steps))
		}
		js, err := json.Marshal(s)
		if err != nil {
			t.Fatalf("marshal an accepted spec: %v", err)
		}
		s2, err := Parse(js)
		if err != nil {
			t.Fatalf("its JSON %s is refused: %v", js, err)
		}
		js2, _ := json.Marshal(s2)
		if string(js) != string(js2) {
			t.Fatalf("round trip differs:\n%s\n%s", js, js2)
		}
	})
}
