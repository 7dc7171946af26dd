package command_test

import (
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/command"
)

func TestLimitsApplyToTheProgram(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: []string{"cat", "/proc/self/limits"}, Limits: command.Limits{
		Memory: 256 << 20, CPUTime: 1500 * time.Millisecond, OpenFiles: 32, Processes: 77,
	}})
	out, err := run(t, s, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range [][]string{
		{"Max cpu time", "2", "3", "seconds"}, // rounded up; SIGKILL a second after SIGXCPU
		{"Max processes", "77", "77", "processes"},
		{"Max open files", "32", "32", "files"},
		{"Max address space", "268435456", "268435456", "bytes"},
		{"Max core file size", "0", "0", "bytes"},
	} {
		if !hasLimit(string(out), want) {
			t.Errorf("/proc/self/limits has no line %q:\n%s", want, out)
		}
	}
}

// hasLimit reports whether limits has the line want: a name, then values.
func hasLimit(limits string, want []string) bool {
	for _, line := range strings.Split(limits, "\n") {
		if rest, ok := strings.CutPrefix(line, want[0]); ok && strings.Join(strings.Fields(rest), " ") == strings.Join(want[1:], " ") {
			return true
		}
	}
	return false
}

func TestOpenFilesLimit(t *testing.T) {
	// paste opens all its files at once.
	script := `paste` + strings.Repeat(" /dev/null", 40)
	tests := []struct {
		name  string
		limit int
		fails bool
	}{
		{name: "40 files open at once fail under a limit of 16", limit: 16, fails: true},
		{name: "40 files open at once pass under a limit of 64", limit: 64},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSkill(t, command.Spec{Argv: sh(script), Limits: command.Limits{OpenFiles: tt.limit}})
			_, err := run(t, s, "")
			var ee *command.ExitError
			switch {
			case !tt.fails && err != nil:
				t.Fatal(err)
			case tt.fails && !errors.As(err, &ee):
				t.Fatalf("err %v, want an *ExitError", err)
			case tt.fails && !strings.Contains(ee.Stderr, "Too many open files"):
				t.Errorf("stderr %q does not say too many open files", ee.Stderr)
			}
		})
	}
}

func TestMemoryLimit(t *testing.T) {
	// dd allocates its 128 MiB block at once.
	argv := []string{"dd", "if=/dev/zero", "of=/dev/null", "bs=128M", "count=1"}
	s := newSkill(t, command.Spec{Argv: argv, Limits: command.Limits{Memory: 64 << 20}})
	_, err := run(t, s, "")
	var ee *command.ExitError
	if !errors.As(err, &ee) || !strings.Contains(ee.Stderr, "memory exhausted") {
		t.Fatalf("err %v, want dd to fail with memory exhausted", err)
	}
	s = newSkill(t, command.Spec{Argv: argv, Limits: command.Limits{Memory: 512 << 20}})
	if _, err := run(t, s, ""); err != nil {
		t.Fatalf("with room for the block: %v", err)
	}
}

func TestCPUTimeLimit(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: sh("while :; do :; done"), Limits: command.Limits{CPUTime: time.Second}})
	_, err := run(t, s, "")
	var ee *command.ExitError
	if !errors.As(err, &ee) || ee.Signal != "SIGXCPU" || !strings.Contains(err.Error(), "limits.cpu_time 1s") {
		t.Fatalf("err %v, want a kill by SIGXCPU naming limits.cpu_time", err)
	}
}

// TestProcessesLimit forks 10 sleeps under a limit of 4 processes. The
// limit counts every process of the user, and Linux does not apply it
// to root: as root the program runs as nobody (65534) through setpriv;
// as another user, a limit of 1 is already reached by the test itself.
func TestProcessesLimit(t *testing.T) {
	script := `for i in 1 2 3 4 5 6 7 8 9 10; do sleep 0.2 & done; wait`
	argv, limit := sh(script), 1
	if os.Geteuid() == 0 {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Skip("as root the limit needs another user, and setpriv (util-linux) is not installed")
		}
		argv = append([]string{setpriv, "--reuid=65534", "--regid=65534", "--clear-groups"}, argv...)
		limit = 4
	}
	s := newSkill(t, command.Spec{Argv: argv, Limits: command.Limits{Processes: limit}})
	_, err := run(t, s, "")
	var ee *command.ExitError
	if !errors.As(err, &ee) || !strings.Contains(ee.Stderr, "fork") {
		t.Fatalf("err %v, want sh to fail to fork", err)
	}
	t.Logf("under a limit of %d: %v", limit, err)
	if os.Geteuid() == 0 {
		s = newSkill(t, command.Spec{Argv: argv, Limits: command.Limits{Processes: 64}})
		if _, err := run(t, s, ""); err != nil {
			t.Fatalf("under a limit of 64: %v", err)
		}
	}
}
