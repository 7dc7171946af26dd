package command_test

import (
	"bytes"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/command"
)

// BenchmarkExecute measures one task of a command skill that copies 1 KiB
// from stdin to stdout, through the shim (this test binary, as the
// daemon's binary would be, and a binary of package shim alone), against
// the baseline of starting the same program with os/exec and nothing else.
//
//	go test -run XXX -bench Execute ./pkg/command/
func BenchmarkExecute(b *testing.B) {
	in := bytes.Repeat([]byte("x"), 1024)
	b.Run("baseline os/exec cat", func(b *testing.B) {
		for b.Loop() {
			cmd := exec.Command("/bin/cat")
			cmd.Stdin = bytes.NewReader(in)
			if out, err := cmd.Output(); err != nil || len(out) != len(in) {
				b.Fatal(err)
			}
		}
	})
	for _, c := range []struct {
		name string
		spec command.Spec
	}{
		{name: "command skill cat", spec: command.Spec{Argv: []string{"/bin/cat"}}},
		{name: "command skill cat with limits and fs rules", spec: command.Spec{Argv: []string{"/bin/cat"},
			Limits: command.Limits{Memory: 256 << 20, OpenFiles: 64}, FS: command.FSRules{ReadOnly: []string{"/bin", "/usr", "/lib"}}}},
	} {
		b.Run(c.name, func(b *testing.B) {
			s := newSkill(b, c.spec)
			for b.Loop() {
				if out, err := run(b, s, string(in)); err != nil || len(out) != len(in) {
					b.Fatal(err)
				}
			}
		})
	}
	b.Run("command skill cat, light shim", func(b *testing.B) {
		shim := buildShim(b)
		s, err := command.New(command.Spec{Name: "bench.cat", Version: "1", Argv: []string{"/bin/cat"}}, command.Options{Shim: shim, TempDir: b.TempDir()})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if out, err := run(b, s, string(in)); err != nil || len(out) != len(in) {
				b.Fatal(err)
			}
		}
	})
}

// buildShim builds internal/shimbin.
func buildShim(b *testing.B) string {
	b.Helper()
	out := filepath.Join(b.TempDir(), "cortexd-shim")
	goBin, err := exec.LookPath("go")
	if err != nil {
		b.Skip("no go command in PATH to build the light shim")
	}
	cmd := exec.Command(goBin, "build", "-o", out, "./internal/shimbin")
	if msg, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("build the shim: %v\n%s", err, msg)
	}
	return out
}
