package command_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/command"
)

func TestStdinToStdout(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: sh("tr a-z A-Z")})
	out, err := run(t, s, "hello, grid")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "HELLO, GRID" {
		t.Fatalf("output %q, want %q", out, "HELLO, GRID")
	}
}

func TestEachTaskGetsAFreshWorkingDirRemovedAfter(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: sh(`pwd; ls -A; touch left-behind`)})
	var dirs []string
	for range 2 {
		out, err := run(t, s, "")
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		if len(lines) != 1 {
			t.Fatalf("working dir was not empty: %q", out)
		}
		dirs = append(dirs, lines[0])
		if _, err := os.Stat(lines[0]); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("working dir %s still exists after the task: %v", lines[0], err)
		}
	}
	if dirs[0] == dirs[1] {
		t.Errorf("two tasks ran in the same dir %s", dirs[0])
	}
}

func TestEnvironmentIsScrubbedExceptTheAllowList(t *testing.T) {
	t.Setenv("CMDTEST_KEEP", "kept value")
	t.Setenv("CMDTEST_SECRET", "must not leak")
	s := newSkill(t, command.Spec{Argv: []string{"env"}, Env: []string{"CMDTEST_KEEP", "CMDTEST_UNSET"}})
	out, err := run(t, s, "")
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != "CMDTEST_KEEP=kept value\n" {
		t.Fatalf("environment %q, want only CMDTEST_KEEP", out)
	}
}

func TestOutputOverTheCapKillsTheProgram(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	s := newSkill(t, command.Spec{Argv: sh(`echo $$ >"$0"; exec yes`, pidFile), MaxOutput: 1000})
	start := time.Now()
	_, err := run(t, s, "")
	if !errors.Is(err, command.ErrOutputTooLarge) {
		t.Fatalf("err %v, want ErrOutputTooLarge", err)
	}
	if !strings.Contains(err.Error(), "more than 1000 bytes") {
		t.Errorf("error %q does not give the cap", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("took %s to stop a program over its output cap", d)
	}
	assertGone(t, readPIDs(t, pidFile)...)
}

func TestNonZeroExitKeepsTheStderrTail(t *testing.T) {
	tests := []struct {
		name, script string
		code         int
		want         string
	}{
		{name: "a short stderr is kept whole", script: `echo "bad input" >&2; exit 3`, code: 3, want: "bad input"},
		{name: "a long stderr keeps its last 4 KiB", script: `head -c 100000 /dev/zero | tr '\0' x >&2; echo THE-END >&2; exit 1`, code: 1, want: "THE-END"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSkill(t, command.Spec{Argv: sh(tt.script)})
			_, err := run(t, s, "")
			var ee *command.ExitError
			if !errors.As(err, &ee) || !errors.Is(err, command.ErrFailed) {
				t.Fatalf("err %v, want an *ExitError", err)
			}
			if ee.ExitCode != tt.code || !strings.HasSuffix(ee.Stderr, tt.want) {
				t.Errorf("exit %d stderr %q, want exit %d and stderr ending %q", ee.ExitCode, ee.Stderr, tt.code, tt.want)
			}
			if len(ee.Stderr) > command.StderrTail+64 {
				t.Errorf("stderr kept is %d bytes, more than the %d-byte tail", len(ee.Stderr), command.StderrTail)
			}
		})
	}
}

// groupScript ignores SIGTERM, as do the processes it starts: a sleep in
// a subshell that exits (so it is orphaned) and one it waits for. It
// writes their PIDs and its own to $0.
const groupScript = `trap "" TERM
(sleep 1000 & echo $! >>"$0")
sleep 1000 & echo $! >>"$0"
echo $$ >>"$0"
wait`

func TestTheWholeGroupIsKilled(t *testing.T) {
	tests := []struct {
		name string
		stop func(cancel context.CancelFunc)
		want error
	}{
		{name: "at the task's deadline", stop: func(context.CancelFunc) {}, want: context.DeadlineExceeded},
		{name: "on cancel", stop: func(cancel context.CancelFunc) { cancel() }, want: context.Canceled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pids")
			s := newSkill(t, command.Spec{Argv: sh(groupScript, pidFile)})
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			if tt.want == context.DeadlineExceeded {
				ctx, cancel = context.WithTimeout(context.Background(), 500*time.Millisecond)
				defer cancel()
			}
			go func() { waitLines(t, pidFile, 3); tt.stop(cancel) }()
			start := time.Now()
			_, err := s.Execute(ctx, rawInput(""))
			took := time.Since(start)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err %v, want %v", err, tt.want)
			}
			if !strings.Contains(err.Error(), "process group was killed") {
				t.Errorf("error %q does not say the group was killed", err)
			}
			pids := readPIDs(t, pidFile)
			if len(pids) != 3 {
				t.Fatalf("PIDs %v, want 3", pids)
			}
			assertGone(t, pids...)
			if _, alive := procState(pids[2]); alive {
				t.Errorf("the program's own process %d was not reaped", pids[2])
			}
			if took > 10*time.Second {
				t.Errorf("took %s to kill the group", took)
			}
		})
	}
}

func TestProcessesLeftBehindOnSuccessAreKilled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	s := newSkill(t, command.Spec{Argv: sh(`(trap "" TERM; sleep 1000) >/dev/null 2>&1 & echo $! >>"$0"; echo done`, pidFile)})
	out, err := run(t, s, "")
	if err != nil || string(out) != "done\n" {
		t.Fatalf("output %q err %v, want done", out, err)
	}
	assertGone(t, readPIDs(t, pidFile)...)
}

func TestAProcessThatLeavesTheGroupIsReported(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	s := newSkill(t, command.Spec{Argv: sh(`setsid sh -c 'echo $$ >"$0"; exec sleep 30' "$0" & sleep 0.2; echo done`, pidFile)})
	_, err := run(t, s, "")
	t.Cleanup(func() {
		for _, p := range readPIDs(t, pidFile) {
			killPID(p)
		}
	})
	if !errors.Is(err, command.ErrEscaped) {
		t.Fatalf("err %v, want ErrEscaped", err)
	}
}

func TestAProgramThatDoesNotStartIsErrStart(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: []string{"/nonexistent/program"}})
	_, err := run(t, s, "")
	if !errors.Is(err, command.ErrStart) || !strings.Contains(err.Error(), "/nonexistent/program") {
		t.Fatalf("err %v, want ErrStart naming the program", err)
	}
}

func TestOwnTimeoutStopsTheProgram(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: sh("sleep 1000"), Timeout: 200 * time.Millisecond})
	_, err := run(t, s, "")
	if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "timeout of 200ms") {
		t.Fatalf("err %v, want its timeout of 200ms", err)
	}
}

func TestInvalidSpecsNameTheField(t *testing.T) {
	tests := []struct {
		name string
		spec command.Spec
		want string
	}{
		{name: "a bad name", spec: command.Spec{Name: "Bad Name", Version: "1", Argv: []string{"true"}}, want: "name:"},
		{name: "no version", spec: command.Spec{Name: "a.b", Argv: []string{"true"}}, want: "version"},
		{name: "no argv", spec: command.Spec{Name: "a.b", Version: "1"}, want: "argv"},
		{name: "a program not in PATH", spec: command.Spec{Name: "a.b", Version: "1", Argv: []string{"no-such-program-here"}}, want: "argv[0]"},
		{name: "output over one task's", spec: command.Spec{Name: "a.b", Version: "1", Argv: []string{"true"}, MaxOutput: 1 << 40}, want: "max_output"},
		{name: "a bad env name", spec: command.Spec{Name: "a.b", Version: "1", Argv: []string{"true"}, Env: []string{"A=B"}}, want: "env[0]"},
		{name: "a relative fs path", spec: command.Spec{Name: "a.b", Version: "1", Argv: []string{"true"}, FS: command.FSRules{ReadOnly: []string{"usr"}}}, want: "fs.read_only[0]"},
		{name: "a missing fs path", spec: command.Spec{Name: "a.b", Version: "1", Argv: []string{"true"}, FS: command.FSRules{ReadWrite: []string{"/nonexistent"}}}, want: "fs.read_write[0]"},
		{name: "a tiny memory limit", spec: command.Spec{Name: "a.b", Version: "1", Argv: []string{"true"}, Limits: command.Limits{Memory: 1000}}, want: "limits.memory"},
		{name: "a missing dir", spec: command.Spec{Name: "a.b", Version: "1", Argv: []string{"true"}, Dir: "/nonexistent"}, want: "dir:"},
		{name: "a missing schema file", spec: command.Spec{Name: "a.b", Version: "1", Argv: []string{"true"}, SchemaFile: "/nonexistent.json"}, want: "schema_file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := command.New(tt.spec, command.Options{})
			if !errors.Is(err, command.ErrInvalidSpec) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err %v, want ErrInvalidSpec naming %q", err, tt.want)
			}
		})
	}
}

func TestAGibibyteToStdoutStopsAtTheDefaultCap(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: []string{"head", "-c", "1G", "/dev/zero"}})
	start := time.Now()
	_, err := run(t, s, "")
	if !errors.Is(err, command.ErrOutputTooLarge) {
		t.Fatalf("err %v, want ErrOutputTooLarge", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("took %s to stop at the cap", d)
	}
}
