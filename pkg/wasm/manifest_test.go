package wasm

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		bad  bool
	}{
		{in: "64MiB", want: 64 << 20},
		{in: "512KiB", want: 512 << 10},
		{in: "1GiB", want: 1 << 30},
		{in: "1.5GiB", want: 3 << 29},
		{in: "10MB", want: 10_000_000},
		{in: "2KB", want: 2000},
		{in: "100B", want: 100},
		{in: "100", want: 100},
		{in: " 64 MiB ", want: 64 << 20},
		{in: "0", want: 0},
		{in: "", bad: true},
		{in: "MiB", bad: true},
		{in: "-1MiB", bad: true},
		{in: "64mib", bad: true},
		{in: "64 megabytes", bad: true},
		{in: "9999999999GiB", bad: true},
		{in: "NaN", bad: true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if tt.bad {
			if err == nil {
				t.Errorf("ParseSize(%q) = %d, want an error", tt.in, got)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in, got, err, tt.want)
		}
	}
}

func TestSizeAndDurationRoundTripThroughJSON(t *testing.T) {
	l := Limits{Memory: 64 * MiB, Timeout: Duration(1500 * time.Millisecond), Input: 1536 * KiB, Output: 100}
	b, err := json.Marshal(l)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"memory":"64MiB","timeout":"1.5s","input":"1536KiB","output":"100B"}`; string(b) != want {
		t.Fatalf("marshal: %s, want %s", b, want)
	}
	var back Limits
	if err := json.Unmarshal(b, &back); err != nil || back != l {
		t.Fatalf("unmarshal: %+v, %v", back, err)
	}
	if err := json.Unmarshal([]byte(`{"memory":1048576}`), &back); err != nil || back.Memory != MiB {
		t.Fatalf("a number of bytes: %+v, %v", back, err)
	}
	for _, bad := range []string{`{"timeout":30}`, `{"timeout":"30 seconds"}`, `{"timeout":"-1s"}`, `{"memory":true}`, `{"memory":"lots"}`} {
		if err := json.Unmarshal([]byte(bad), &back); err == nil {
			t.Errorf("%s was accepted", bad)
		}
	}
}

func TestEngineClampsEveryLimitToTheNodeCaps(t *testing.T) {
	o, err := Options{
		Max:     Limits{Memory: 128 * MiB, Timeout: Duration(time.Minute), Input: MiB, Output: 2 * MiB},
		Default: Limits{Memory: 32 * MiB},
	}.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   Limits
		want Limits
	}{
		{name: "an empty manifest gets the defaults", in: Limits{},
			want: Limits{Memory: 32 * MiB, Timeout: DefaultTimeout, Input: MiB, Output: DefaultOutput}},
		{name: "a manifest asking for more than the caps gets the caps",
			in:   Limits{Memory: GiB, Timeout: Duration(time.Hour), Input: GiB, Output: GiB},
			want: Limits{Memory: 128 * MiB, Timeout: Duration(time.Minute), Input: MiB, Output: 2 * MiB}},
		{name: "a manifest under the caps gets what it asks for, memory in whole MiB",
			in:   Limits{Memory: 10*MiB + 1000*KiB, Timeout: Duration(time.Second), Input: 10, Output: 20},
			want: Limits{Memory: 10 * MiB, Timeout: Duration(time.Second), Input: 10, Output: 20}},
		{name: "memory under 1 MiB is kept in whole pages",
			in:   Limits{Memory: 200 * KiB},
			want: Limits{Memory: 192 * KiB, Timeout: DefaultTimeout, Input: MiB, Output: DefaultOutput}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := o.effective(tt.in); got != tt.want {
				t.Fatalf("effective(%+v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestNewEngineRefusesBadOptions(t *testing.T) {
	_, err := NewEngine("", Options{Max: Limits{Memory: 1000, Timeout: Duration(time.Microsecond)}, Default: Limits{Output: -1}})
	if err == nil {
		t.Fatal("bad options were accepted")
	}
	for _, want := range []string{"max memory 1000B", "max timeout 1µs", "default output -1"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}

const goodHash = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

func TestDecodeManifestReadsAGoodOne(t *testing.T) {
	m, err := DecodeManifest(strings.NewReader(`{
		"name": "text.upper", "version": "1.2.0-rc.1", "module": "` + strings.ToUpper(goodHash) + `",
		"description": "Upper-cases text.",
		"input_schema": {"type": "object", "properties": {"text": {"type": "string"}}},
		"limits": {"memory": "64MiB", "timeout": "30s", "output": "1MiB"},
		"deterministic": true, "args": ["--fast"], "env": {"LANG": "C"}
	}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "text.upper" || m.Module.String() != goodHash || m.Limits.Memory != 64*MiB ||
		m.Limits.Timeout != Duration(30*time.Second) || !m.Deterministic || m.Env["LANG"] != "C" {
		t.Fatalf("decoded %+v", m)
	}
}

func TestManifestErrorsNameEveryBadField(t *testing.T) {
	tests := []struct {
		name string
		json string
		says []string
	}{
		{name: "a name that is not a skill ID is refused", json: `{"name":"Text Upper","version":"1.0.0","module":"` + goodHash + `"}`,
			says: []string{"name:", "lowercase dotted"}},
		{name: "a version the registry would refuse is refused", json: `{"name":"a.b","version":"v1","module":"` + goodHash + `"}`,
			says: []string{"version:", `"v1"`}},
		{name: "a missing module hash is refused", json: `{"name":"a.b","version":"1.0.0"}`,
			says: []string{"module:", "missing"}},
		{name: "a module hash of the wrong length is refused", json: `{"name":"a.b","version":"1.0.0","module":"abc"}`,
			says: []string{"64 hex digits"}},
		{name: "an input schema that is not JSON Schema is refused", json: `{"name":"a.b","version":"1.0.0","module":"` + goodHash + `","input_schema":{"type":"strang"}}`,
			says: []string{"input_schema:"}},
		{name: "a misspelt field is refused rather than ignored", json: `{"name":"a.b","version":"1.0.0","module":"` + goodHash + `","limit":{}}`,
			says: []string{`unknown field "limit"`}},
		{name: "memory under one page is refused", json: `{"name":"a.b","version":"1.0.0","module":"` + goodHash + `","limits":{"memory":"1KiB"}}`,
			says: []string{"limits: memory 1KiB is under one wasm page"}},
		{name: "a timeout as a bare number is refused", json: `{"name":"a.b","version":"1.0.0","module":"` + goodHash + `","limits":{"timeout":30}}`,
			says: []string{`"30s"`}},
		{name: "env keys with '=' are refused", json: `{"name":"a.b","version":"1.0.0","module":"` + goodHash + `","env":{"A=B":"c"}}`,
			says: []string{`env "A=B"`}},
		{name: "every bad field is named at once", json: `{"name":"A","version":"","module":"` + goodHash + `","limits":{"memory":"100B"},"args":["a\u0000b"]}`,
			says: []string{"name:", "version:", "limits: memory", "args[0]"}},
		{name: "trailing data is refused", json: `{"name":"a.b","version":"1.0.0","module":"` + goodHash + `"} {}`,
			says: []string{"after its JSON object"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := DecodeManifest(strings.NewReader(tt.json))
			if !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("error %v, want ErrInvalidManifest", err)
			}
			for _, s := range tt.says {
				if !strings.Contains(err.Error(), s) {
					t.Errorf("error %q does not say %q", err, s)
				}
			}
		})
	}
}

func TestManifestValidationMatchesTheRegistry(t *testing.T) {
	// The version and schema rules are the registry's: a manifest passes
	// exactly when Register would take its descriptor.
	for _, v := range []string{"1", "1.2", "1.0.0", "1.0.0-rc.1+git.abc", "01.0", "1.0.0.0", "1.x", "", "1.0-"} {
		m := Manifest{Name: "a.b", Version: v, Module: ModuleIDOf(nil)}
		regErr := skill.NewRegistry().Register(descOnly{skill.Descriptor{ID: reputation.SkillID("a.b"), Version: v}})
		if (m.Validate() == nil) != (regErr == nil) {
			t.Errorf("version %q: manifest says %v, registry says %v", v, m.Validate(), regErr)
		}
	}
}
