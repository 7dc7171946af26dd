package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// hiModule is a hand-written WASI command that writes "hi" to stdout:
//
//	(module
//	  (import "wasi_snapshot_preview1" "fd_write" (func $w (param i32 i32 i32 i32) (result i32)))
//	  (memory (export "memory") 1)
//	  (data (i32.const 0) "\10\00\00\00\02\00\00\00\00\00\00\00\00\00\00\00hi") ; iovec {16, 2}, then "hi"
//	  (func (export "_start") (drop (call $w (i32.const 1) (i32.const 0) (i32.const 1) (i32.const 8)))))
var hiModule = func() []byte {
	var b bytes.Buffer
	b.WriteString("\x00asm\x01\x00\x00\x00")
	b.WriteString("\x01\x0c\x02\x60\x04\x7f\x7f\x7f\x7f\x01\x7f\x60\x00\x00")             // types
	b.WriteString("\x02\x23\x01\x16wasi_snapshot_preview1\x08fd_write\x00\x00")           // import
	b.WriteString("\x03\x02\x01\x01")                                                     // function
	b.WriteString("\x05\x03\x01\x00\x01")                                                 // memory
	b.WriteString("\x07\x13\x02\x06_start\x00\x01\x06memory\x02\x00")                     // exports
	b.WriteString("\x0a\x0f\x01\x0d\x00\x41\x01\x41\x00\x41\x01\x41\x08\x10\x00\x1a\x0b") // code
	b.WriteString("\x0b\x18\x01\x00\x41\x00\x0b\x12\x10\x00\x00\x00\x02\x00\x00\x00")     // data
	b.WriteString("\x00\x00\x00\x00\x00\x00\x00\x00hi")
	return b.Bytes()
}()

func writeFile(t *testing.T, name string, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// storedFiles lists what the wasm store of repo holds.
func storedFiles(t *testing.T, repo string) []string {
	t.Helper()
	var out []string
	for _, sub := range []string{"manifests", "modules"} {
		ents, _ := os.ReadDir(filepath.Join(repo, "wasm", sub))
		for _, e := range ents {
			out = append(out, sub+"/"+e.Name())
		}
	}
	return out
}

func TestCLISkillAddListRunRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a daemon")
	}
	repo := initTestRepo(t, testNodeConfig("echo", "")+"wasm:\n  max_module: 1KiB\n")
	startTestDaemon(t, repo)
	up := time.Now()
	r := func(args ...string) (int, string, string) {
		return cli(t, append([]string{"--repo", repo}, args...)...)
	}
	hi := writeFile(t, "hi.wasm", hiModule)
	sum := wasm.ModuleIDOf(hiModule).String()

	code, stdout, stderr := r("skill", "add", hi, "--name", "text.hi", "--version", "1.0.0", "--deterministic", "--memory", "2MiB", "--timeout", "5s")
	if code != 0 || !strings.Contains(stdout, "added wasm skill text.hi version 1.0.0 (module "+sum) || !strings.Contains(stdout, "memory 2MiB, timeout 5s") {
		t.Fatalf("skill add: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, stdout, _ = r("skill", "list")
	var row string
	for _, l := range strings.Split(stdout, "\n") {
		if strings.HasPrefix(l, "text.hi ") {
			row = strings.Join(strings.Fields(l), " ")
		}
	}
	if code != 0 || !strings.HasPrefix(row, "text.hi 1.0.0 wasm yes "+sum[:12]+" 1 ") || !strings.Contains(stdout, "builtin") {
		t.Fatalf("skill list: exit %d, row %q in:\n%s", code, row, stdout)
	}
	code, stdout, _ = r("--json", "skill", "list")
	var list []apiv1.Skill
	if err := json.Unmarshal([]byte(stdout), &list); code != 0 || err != nil {
		t.Fatalf("skill list --json: exit %d, %v: %s", code, err, stdout)
	}
	for _, s := range list {
		if s.ID == "text.hi" && (s.Kind != apiv1.SkillWasm || s.Module != sum || s.Limits == nil || s.Limits.Memory != "2MiB" || !s.Deterministic) {
			t.Errorf("listed %+v", s)
		}
		if s.ID == "echo" && s.Kind != apiv1.SkillBuiltin {
			t.Errorf("listed %+v", s)
		}
	}
	code, stdout, stderr = r("task", "submit", "text.hi", "--wait")
	if code != 0 || !strings.Contains(stdout, "hi") {
		t.Fatalf("task on text.hi: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// Refusals: each says why, stores nothing and leaves the skill as it was.
	stored := storedFiles(t, repo)
	if len(stored) != 2 {
		t.Fatalf("the store holds %v, want a manifest and a module", stored)
	}
	big := append(append([]byte{}, hiModule...), make([]byte, 2048)...)
	bad := append([]byte("\x00asm\x01\x00\x00\x00"), 0xff, 0xff, 0xff)
	refusals := []struct {
		name string
		args []string
		code int
		says []string
	}{
		{"a taken name", []string{"skill", "add", hi, "--name", "text.hi", "--version", "2.0.0"}, exitFailed,
			[]string{`wasm skill "text.hi" version "1.0.0" is registered here`, "cortexd skill rm text.hi", "(skill_exists)"}},
		{"a built-in's name", []string{"skill", "add", hi, "--name", "hash.sha256", "--version", "1"}, exitFailed,
			[]string{"built-in skill's name", "(skill_exists)"}},
		{"a file that is not wasm", []string{"skill", "add", writeFile(t, "x.wasm", []byte("#!/bin/sh\n")), "--name", "a.b", "--version", "1"}, exitFailed,
			[]string{"wasm magic", "(invalid_module)"}},
		{"a module over wasm.max_module", []string{"skill", "add", writeFile(t, "big.wasm", big), "--name", "a.b", "--version", "1"}, exitFailed,
			[]string{"limit of 1KiB", "wasm.max_module", "(module_too_large)"}},
		{"a large module over wasm.max_module", []string{"skill", "add", writeFile(t, "huge.wasm", append(append([]byte{}, hiModule...), make([]byte, 8<<20)...)), "--name", "a.b", "--version", "1"}, exitFailed,
			[]string{"limit of 1KiB", "wasm.max_module", "(module_too_large)"}},
		{"a module that does not compile", []string{"skill", "add", writeFile(t, "bad.wasm", bad), "--name", "a.b", "--version", "1"}, exitFailed,
			[]string{"does not compile", "(invalid_module)"}},
		{"a bad name", []string{"skill", "add", hi, "--name", "A B", "--version", "1"}, exitFailed, []string{"name", "(invalid_request)"}},
		{"no --name", []string{"skill", "add", hi, "--version", "1"}, exitUsage, []string{"--name and --version are required"}},
		{"no file", []string{"skill", "add", "--name", "a.b", "--version", "1"}, exitUsage, []string{"missing FILE.wasm"}},
		{"a missing file", []string{"skill", "add", filepath.Join(t.TempDir(), "nope.wasm"), "--name", "a.b", "--version", "1"}, exitUsage, []string{"does not exist"}},
		{"a bad --memory", []string{"skill", "add", hi, "--name", "a.b", "--version", "1", "--memory", "lots"}, exitUsage, []string{"--memory"}},
		{"a bad --timeout", []string{"skill", "add", hi, "--name", "a.b", "--version", "1", "--timeout", "soon"}, exitUsage, []string{"--timeout"}},
		{"a schema that is not JSON", []string{"skill", "add", hi, "--name", "a.b", "--version", "1", "--schema", writeFile(t, "s.json", []byte("{"))}, exitUsage, []string{"not JSON"}},
		{"removing a built-in", []string{"skill", "rm", "echo"}, exitFailed, []string{"built in", "skills.enabled", "(skill_not_removable)"}},
		{"removing a version that is not there", []string{"skill", "rm", "text.hi@9.9.9"}, exitFailed, []string{`"text.hi" version "9.9.9"`, "(not_found)"}},
		{"removing with an empty version", []string{"skill", "rm", "text.hi@"}, exitUsage, []string{"NAME@VERSION"}},
	}
	for _, tc := range refusals {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := r(tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr %q", code, tc.code, stderr)
			}
			first, _, _ := strings.Cut(stderr, "\n")
			for _, s := range tc.says {
				if !strings.Contains(first, s) {
					t.Errorf("stderr %q does not say %q", first, s)
				}
			}
			if got := storedFiles(t, repo); strings.Join(got, ",") != strings.Join(stored, ",") {
				t.Errorf("the store holds %v, want %v", got, stored)
			}
		})
	}

	code, stdout, stderr = r("skill", "rm", "text.hi")
	if code != 0 || !strings.Contains(stdout, "removed wasm skill text.hi version 1.0.0 (module "+sum+")") {
		t.Fatalf("skill rm: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if got := storedFiles(t, repo); len(got) != 0 {
		t.Errorf("after rm the store holds %v", got)
	}
	pastWarmUp(up)
	code, _, stderr = r("task", "submit", "text.hi", "--wait")
	if code != exitFailed || !strings.Contains(stderr, `unknown skill "text.hi"`) {
		t.Errorf("task on a removed skill: exit %d, stderr %q; want unknown_skill", code, stderr)
	}
	// The name is free again.
	if code, _, stderr := r("skill", "add", hi, "--name", "text.hi", "--version", "2.0.0"); code != 0 {
		t.Errorf("adding the name again: exit %d, %s", code, stderr)
	}
}
