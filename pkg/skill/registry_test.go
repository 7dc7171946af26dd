package skill

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// funcSkill is a Skill made of a descriptor and a function, for tests.
type funcSkill struct {
	desc Descriptor
	fn   func(ctx context.Context, in SkillInput) ([]byte, error)
}

func (s *funcSkill) Descriptor() Descriptor { return s.desc }

func (s *funcSkill) Execute(ctx context.Context, in SkillInput) ([]byte, error) {
	if s.fn == nil {
		return in.Data, nil
	}
	return s.fn(ctx, in)
}

func testSkill(id reputation.SkillID, version, schema string) *funcSkill {
	d := Descriptor{ID: id, Version: version}
	if schema != "" {
		d.InputSchema = json.RawMessage(schema)
	}
	return &funcSkill{desc: d}
}

func newTestRegistry(tb testing.TB, skills ...Skill) *Registry {
	tb.Helper()
	r := NewRegistry()
	for _, s := range skills {
		if err := r.Register(s); err != nil {
			tb.Fatalf("Register(%s): %v", s.Descriptor().ID, err)
		}
	}
	return r
}

func TestSkillIDValidateAcceptsLowercaseDottedNamesOnly(t *testing.T) {
	tests := []struct {
		name string
		id   reputation.SkillID
		ok   bool
	}{
		{"a single lowercase word is valid", "echo", true},
		{"a dotted name is valid", "hash.sha256", true},
		{"digits, dashes and underscores after the first letter are valid", "img-v2.re_size9", true},
		{"a 128-byte ID is valid", reputation.SkillID(strings.Repeat("a", 128)), true},
		{"an empty ID is rejected", "", false},
		{"a 129-byte ID is rejected", reputation.SkillID(strings.Repeat("a", 129)), false},
		{"uppercase letters are rejected", "Hash.sha256", false},
		{"a leading digit is rejected", "1hash", false},
		{"a part starting with a digit is rejected", "hash.256", false},
		{"a leading dot is rejected", ".hash", false},
		{"a trailing dot is rejected", "hash.", false},
		{"two dots in a row are rejected", "hash..sha", false},
		{"spaces are rejected", "hash sha", false},
		{"a slash is rejected", "hash/sha", false},
		{"non-ASCII is rejected", "hásh", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.id.Validate()
			if tt.ok && err != nil {
				t.Fatalf("Validate(%q) = %v, want nil", tt.id, err)
			}
			if !tt.ok && !errors.Is(err, ErrInvalidSkillID) {
				t.Fatalf("Validate(%q) = %v, want ErrInvalidSkillID", tt.id, err)
			}
		})
	}
}

func TestRegistryRejectsBadSkills(t *testing.T) {
	tests := []struct {
		name  string
		skill Skill
		want  error
	}{
		{"a bad ID is rejected", testSkill("Bad ID", "1.0.0", ""), ErrInvalidSkillID},
		{"an empty version is rejected", testSkill("ok", "", ""), ErrInvalidVersion},
		{"a version with letters is rejected", testSkill("ok", "latest", ""), ErrInvalidVersion},
		{"a version with four numbers is rejected", testSkill("ok", "1.2.3.4", ""), ErrInvalidVersion},
		{"a version with a leading zero is rejected", testSkill("ok", "01.0.0", ""), ErrInvalidVersion},
		{"a version with an empty pre-release is rejected", testSkill("ok", "1.0.0-", ""), ErrInvalidVersion},
		{"a v prefix is rejected", testSkill("ok", "v1.0.0", ""), ErrInvalidVersion},
		{"a schema that is not JSON is rejected", testSkill("ok", "1.0.0", `{"type":`), ErrInvalidSchema},
		{"a schema with a wrong keyword type is rejected", testSkill("ok", "1.0.0", `{"type": 5}`), ErrInvalidSchema},
		{"a schema with a bad pattern is rejected", testSkill("ok", "1.0.0", `{"pattern": "("}`), ErrInvalidSchema},
		{"a schema referring to a file is rejected", testSkill("ok", "1.0.0", `{"$ref": "file:///etc/passwd"}`), ErrInvalidSchema},
		{"a schema referring to a URL is rejected", testSkill("ok", "1.0.0", `{"$ref": "https://example.com/s.json"}`), ErrInvalidSchema},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := NewRegistry()
			err := r.Register(tt.skill)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Register = %v, want %v", err, tt.want)
			}
			if r.Has(tt.skill.Descriptor().ID) || len(r.List()) != 0 {
				t.Fatal("a rejected skill was registered")
			}
		})
	}
}

func TestRegistryAcceptsSemverLikeVersions(t *testing.T) {
	for _, v := range []string{"1", "1.2", "1.0.0", "0.0.1", "10.20.30", "2.1.0-rc.1", "1.0.0+build.5", "1.0.0-alpha-1+x"} {
		if err := NewRegistry().Register(testSkill("ok", v, "")); err != nil {
			t.Errorf("Register version %q: %v", v, err)
		}
	}
}

func TestRegistryRejectsDuplicateIDs(t *testing.T) {
	r := newTestRegistry(t, testSkill("dup", "1.0.0", ""))
	err := r.Register(testSkill("dup", "2.0.0", ""))
	if !errors.Is(err, ErrDuplicateSkill) {
		t.Fatalf("second Register = %v, want ErrDuplicateSkill", err)
	}
	s, err := r.Lookup("dup", "")
	if err != nil || s.Descriptor().Version != "1.0.0" {
		t.Fatalf("Lookup after duplicate = %v, %v; want the first skill", s, err)
	}
}

func TestRegistryLookupMatchesVersion(t *testing.T) {
	r := newTestRegistry(t, testSkill("a.b", "1.2.0", ""))
	tests := []struct {
		name    string
		id      reputation.SkillID
		version string
		found   bool
	}{
		{"any version finds the skill", "a.b", "", true},
		{"the exact version finds the skill", "a.b", "1.2.0", true},
		{"another version is unknown", "a.b", "1.3.0", false},
		{"another ID is unknown", "a.c", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := r.Lookup(tt.id, tt.version)
			if tt.found {
				if err != nil || s == nil {
					t.Fatalf("Lookup = %v, %v; want the skill", s, err)
				}
				return
			}
			if !errors.Is(err, ErrUnknownSkill) {
				t.Fatalf("Lookup = %v; want ErrUnknownSkill", err)
			}
			if !strings.Contains(err.Error(), string(tt.id)) || !strings.Contains(err.Error(), tt.version) {
				t.Errorf("error %q does not name the ID and version", err)
			}
		})
	}
}

func TestRegistryListIsSortedAndUnregisterRemoves(t *testing.T) {
	r := newTestRegistry(t, testSkill("zeta", "1.0.0", ""), testSkill("alpha", "1.0.0", `{"type":"object"}`), testSkill("mid.x", "1.0.0", ""))
	var ids []string
	for _, d := range r.List() {
		ids = append(ids, string(d.ID))
	}
	if got := strings.Join(ids, ","); got != "alpha,mid.x,zeta" {
		t.Fatalf("List IDs = %s, want alpha,mid.x,zeta", got)
	}
	r.List()[0].InputSchema[0] = 'X' // the caller owns the copy
	if string(r.List()[0].InputSchema) != `{"type":"object"}` {
		t.Fatal("modifying List's result changed the registry")
	}
	if !r.Unregister("mid.x") || r.Unregister("mid.x") {
		t.Fatal("Unregister should report true once, then false")
	}
	if r.Has("mid.x") || !r.Has("alpha") || len(r.List()) != 2 {
		t.Fatalf("after Unregister: List = %v", r.List())
	}
}

func TestRegistryOnChangeRunsAfterEachChangeWithoutLocks(t *testing.T) {
	r := NewRegistry()
	var calls atomic.Int32
	r.OnChange(func() {
		calls.Add(1)
		_ = r.List() // must not deadlock: no lock is held
		_ = r.Has("x")
	})
	if err := r.Register(testSkill("x", "1.0.0", "")); err != nil {
		t.Fatal(err)
	}
	_ = r.Register(testSkill("x", "1.0.0", "")) // duplicate: no change
	r.Unregister("x")
	r.Unregister("x") // absent: no change
	if got := calls.Load(); got != 2 {
		t.Fatalf("OnChange called %d times, want 2", got)
	}
}

func TestRegistryValidateGivesReadableReasons(t *testing.T) {
	r := newTestRegistry(t, Builtins(BuiltinOptions{DebugSleep: true})...)
	tests := []struct {
		name     string
		skill    reputation.SkillID
		in       SkillInput
		wantErr  error
		contains []string
	}{
		{"a good hash input passes", "hash.sha256", mustJSON(t, `{"data":"aGVsbG8="}`), nil, nil},
		{"raw input skips the schema", "hash.sha256", RawInput([]byte("not json")), nil, nil},
		{"echo takes anything", "echo", mustJSON(t, `[1,2,3]`), nil, nil},
		{"a wrong type names the field and the types", "hash.sha256", mustJSON(t, `{"data":5}`), ErrInvalidInput, []string{"/data", "string", "number"}},
		{"a missing field is named", "hash.sha256", mustJSON(t, `{}`), ErrInvalidInput, []string{"data", "missing"}},
		{"an extra field is named", "hash.sha256", mustJSON(t, `{"data":"","x":1}`), ErrInvalidInput, []string{"x"}},
		{"an out-of-range number names the field and the bound", "debug.sleep", mustJSON(t, `{"ms":700000}`), ErrInvalidInput, []string{"/ms", "at most 600000", "not 700000"}},
		{"malformed JSON says so", "hash.sha256", SkillInput{Kind: 1, Data: []byte(`{"data":`)}, ErrInvalidInput, []string{"not valid JSON"}},
		{"an unknown skill is ErrUnknownSkill", "nope", mustJSON(t, `{}`), ErrUnknownSkill, []string{"nope"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := r.Validate(tt.skill, "", tt.in)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("Validate = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Validate = %v, want %v", err, tt.wantErr)
			}
			for _, s := range tt.contains {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not mention %q", err, s)
				}
			}
			if strings.Contains(err.Error(), "urn:cortexd") {
				t.Errorf("error %q shows the internal schema URL", err)
			}
		})
	}
}

func TestRegistryIsSafeForConcurrentUse(t *testing.T) {
	r := newTestRegistry(t, Builtins(BuiltinOptions{})...)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			id := reputation.SkillID("s" + string(rune('a'+i)))
			for range 50 {
				_ = r.Register(testSkill(id, "1.0.0", ""))
				r.Unregister(id)
			}
		})
		wg.Go(func() {
			for range 200 {
				if _, err := r.Lookup("echo", "1.0.0"); err != nil {
					t.Error(err)
					return
				}
				_ = r.List()
			}
		})
	}
	wg.Wait()
	if len(r.List()) != 3 {
		t.Fatalf("List after churn = %v, want the 3 built-ins", r.List())
	}
}

func mustJSON(tb testing.TB, s string) SkillInput {
	tb.Helper()
	in, err := JSONInput(json.RawMessage(s))
	if err != nil {
		tb.Fatal(err)
	}
	return in
}

// Schema errors print numbers in plain digits, not as x/text does
// (1×10⁰⁸, 4,096).
func TestRegistrySchemaErrorsPrintPlainNumbers(t *testing.T) {
	r := newTestRegistry(t, testSkill("num.check", "1.0.0", `{"type":"object","properties":{"n":{"type":"number","maximum":4096}}}`))
	err := r.Validate("num.check", "", SkillInput{Kind: grid.InputJSON, Data: []byte(`{"n":100000000}`)})
	if err == nil || !strings.Contains(err.Error(), "must be at most 4096, not 100000000") {
		t.Fatalf("Validate = %v, want a message with plain digits", err)
	}
}
