package command_test

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/command"
)

// systemDirs are the dirs a program and its libraries need, those that
// exist here.
func systemDirs(t testing.TB) []string {
	t.Helper()
	var dirs []string
	for _, d := range []string{"/bin", "/usr", "/lib", "/lib64", "/etc/ld.so.cache"} {
		if _, err := os.Stat(d); err == nil {
			dirs = append(dirs, d)
		}
	}
	return dirs
}

// needLandlock skips t, with the reason, if the kernel lacks what it
// checks.
func needLandlock(t testing.TB, c command.Confinement, what string, has bool) {
	t.Helper()
	if !has {
		t.Skipf("this kernel's Landlock (ABI %d) does not enforce %s: %s", c.LandlockABI, what, c)
	}
}

func TestLandlockConfinesTheFilesystem(t *testing.T) {
	allowed, outside := t.TempDir(), t.TempDir()
	for _, f := range []string{filepath.Join(allowed, "ok.txt"), filepath.Join(outside, "secret.txt")} {
		if err := os.WriteFile(f, []byte("contents of "+filepath.Base(f)), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	fs := command.FSRules{ReadOnly: append(systemDirs(t), allowed)}
	tests := []struct {
		name, script string
		fails        string // in stderr; empty: it succeeds
	}{
		{name: "a file beneath read_only can be read", script: "cat " + filepath.Join(allowed, "ok.txt")},
		{name: "a file outside the rules cannot be read", script: "cat " + filepath.Join(outside, "secret.txt"), fails: "Permission denied"},
		{name: "a file beneath read_only cannot be written", script: "echo x >" + filepath.Join(allowed, "ok.txt"), fails: "Permission denied"},
		{name: "the fresh working dir can be written", script: "echo written >f && cat f"},
		{name: "a dir outside the rules cannot be listed", script: "ls " + outside, fails: "Permission denied"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSkill(t, command.Spec{Argv: sh(tt.script), FS: fs})
			needLandlock(t, s.Confinement(), "filesystem rules", s.Confinement().Filesystem)
			_, err := run(t, s, "")
			var ee *command.ExitError
			switch {
			case tt.fails == "" && err != nil:
				t.Fatal(err)
			case tt.fails != "" && !errors.As(err, &ee):
				t.Fatalf("err %v, want the program to fail", err)
			case tt.fails != "" && !strings.Contains(ee.Stderr, tt.fails):
				t.Errorf("stderr %q does not say %q", ee.Stderr, tt.fails)
			}
		})
	}
}

func TestLandlockWithoutTheProgramsDirIsErrStart(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: []string{"/bin/true"}, FS: command.FSRules{ReadOnly: []string{t.TempDir()}}})
	needLandlock(t, s.Confinement(), "filesystem rules", s.Confinement().Filesystem)
	_, err := run(t, s, "")
	if !errors.Is(err, command.ErrStart) || !strings.Contains(err.Error(), "fs.read_only") {
		t.Fatalf("err %v, want ErrStart saying to list the program in fs.read_only", err)
	}
}

func TestTheProgramCannotSignalTheDaemon(t *testing.T) {
	script := fmt.Sprintf("kill -0 %d", os.Getpid())
	s := newSkill(t, command.Spec{Argv: sh(script)})
	needLandlock(t, s.Confinement(), "the signal scope", s.Confinement().Signals)
	_, err := run(t, s, "")
	var ee *command.ExitError
	if !errors.As(err, &ee) || !strings.Contains(ee.Stderr, "not permitted") {
		t.Fatalf("err %v, want kill to be refused", err)
	}
}

func TestDenyNetwork(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash (for /dev/tcp) is not installed")
	}
	var lc net.ListenConfig
	lc.SetMultipathTCP(false)
	ln, err := lc.Listen(t.Context(), "tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	script := fmt.Sprintf("exec 3<>/dev/tcp/127.0.0.1/%d && echo connected", ln.Addr().(*net.TCPAddr).Port)
	for _, deny := range []bool{false, true} {
		t.Run(fmt.Sprintf("deny_network %v", deny), func(t *testing.T) {
			s := newSkill(t, command.Spec{Argv: []string{bash, "-c", script}, DenyNetwork: deny})
			if deny {
				needLandlock(t, s.Confinement(), "network rules", s.Confinement().Network)
			}
			out, err := run(t, s, "")
			var ee *command.ExitError
			switch {
			case !deny && (err != nil || string(out) != "connected\n"):
				t.Fatalf("output %q err %v, want connected", out, err)
			case deny && !errors.As(err, &ee):
				t.Fatalf("output %q err %v, want the connect to fail", out, err)
			case deny && !strings.Contains(ee.Stderr, "Permission denied"):
				t.Errorf("stderr %q does not say permission denied", ee.Stderr)
			}
		})
	}
}
