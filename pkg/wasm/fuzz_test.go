package wasm

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecodeManifest feeds arbitrary bytes to DecodeManifest: it must
// never panic, fail only with ErrInvalidManifest, and a manifest it
// accepts must survive a round trip through its own JSON.
func FuzzDecodeManifest(f *testing.F) {
	f.Add([]byte(`{"name":"text.upper","version":"1.0.0","module":"` + goodHash + `","limits":{"memory":"64MiB","timeout":"30s"},"deterministic":true}`))
	f.Add([]byte(`{"name":"a","version":"1","module":"` + goodHash + `","input_schema":{"type":"string"},"env":{"A":"1"},"args":["x"]}`))
	f.Add([]byte(`{"limits":{"memory":1.5e3,"output":"1.5GiB"}}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := DecodeManifest(bytes.NewReader(b))
		if err != nil {
			if !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("error %v does not wrap ErrInvalidManifest", err)
			}
			return
		}
		again, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		m2, err := DecodeManifest(bytes.NewReader(again))
		if err != nil {
			t.Fatalf("re-decoding %s: %v", again, err)
		}
		if !reflect.DeepEqual(normalize(m), normalize(m2)) {
			t.Fatalf("round trip changed %+v into %+v", m, m2)
		}
	})
}

// normalize re-encodes the schema, which a round trip may re-indent or
// re-escape ("&" as "\u0026").
func normalize(m Manifest) Manifest {
	if len(m.InputSchema) > 0 {
		var v any
		if json.Unmarshal(m.InputSchema, &v) == nil {
			m.InputSchema, _ = json.Marshal(v)
		}
	}
	if len(m.Env) == 0 {
		m.Env = nil
	}
	if len(m.Args) == 0 {
		m.Args = nil
	}
	return m
}
