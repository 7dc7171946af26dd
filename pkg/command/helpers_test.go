package command_test

import (
	"bytes"
	"context"
	"errors"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/command"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// testGrace is the kill grace of the tests' skills.
const testGrace = 300 * time.Millisecond

// newSkill returns the skill of spec, with version 1.0.0 and name
// test.cmd unless spec sets them.
func newSkill(t testing.TB, spec command.Spec) *command.Skill {
	t.Helper()
	if spec.Name == "" {
		spec.Name = "test.cmd"
	}
	if spec.Version == "" {
		spec.Version = "1.0.0"
	}
	s, err := command.New(spec, command.Options{KillGrace: testGrace, TempDir: t.TempDir()})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// sh returns the argv that runs script with /bin/sh; args are $0, $1, ...
func sh(script string, args ...string) []string {
	return append([]string{"/bin/sh", "-c", script}, args...)
}

func run(t testing.TB, s *command.Skill, in string) ([]byte, error) {
	t.Helper()
	return s.Execute(context.Background(), skill.RawInput([]byte(in)))
}

// readPIDs reads the PIDs written one a line to path.
func readPIDs(t testing.TB, path string) []int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("read PIDs: %v", err)
	}
	var pids []int
	for _, f := range strings.Fields(string(b)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			t.Fatalf("PID file %s: %q: %v", path, f, err)
		}
		pids = append(pids, p)
	}
	return pids
}

// waitLines waits until path has n lines, or fails the test after 10 s.
func waitLines(t testing.TB, path string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(path); err == nil && bytes.Count(b, []byte("\n")) >= n {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Fatalf("%s did not get %d lines in 10 s", path, n)
}

// assertGone checks that no process of pids runs: each is gone or a
// zombie (dead, left for init to reap) within a second. kill(pid, 0)
// succeeds on a zombie, so the state comes from /proc.
func assertGone(t testing.TB, pids ...int) {
	t.Helper()
	if len(pids) == 0 {
		t.Fatal("no PIDs to check")
	}
	for _, pid := range pids {
		deadline := time.Now().Add(time.Second)
		for {
			state, alive := procState(pid)
			if !alive || state == "Z" {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("process %d still runs (state %s) after the task ended", pid, state)
				_ = syscall.Kill(pid, syscall.SIGKILL)
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// procState returns the state letter of pid from /proc, and whether it
// exists.
func procState(pid int) (string, bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
		return "", false
	}
	if err != nil {
		return "?", true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 >= len(s) {
		return "?", true
	}
	return s[i+2 : i+3], true
}

func rawInput(s string) skill.SkillInput { return skill.RawInput([]byte(s)) }

func killPID(pid int) { _ = syscall.Kill(pid, syscall.SIGKILL) }
