package test

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/command"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// TestCommandShimHelper is not a test: it is the shim of the command
// skills of this package's tests (commandSkill runs this binary with
// -test.run selecting it, then command.ShimArg).
func TestCommandShimHelper(t *testing.T) {
	i := slices.Index(os.Args, command.ShimArg)
	if i < 0 {
		t.Skip("the shim of command skills in these tests, run by them")
	}
	os.Exit(command.ShimMain(os.Args[i+1:]))
}

// commandSkill returns the command skill of spec, whose shim is this
// test binary.
func commandSkill(t testing.TB, spec command.Spec) *command.Skill {
	t.Helper()
	if spec.Version == "" {
		spec.Version = "1.0.0"
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	s, err := command.New(spec, command.Options{
		Shim: exe, ShimArgs: []string{"-test.run=^TestCommandShimHelper$"},
		KillGrace: 300 * time.Millisecond, TempDir: t.TempDir(),
	})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestACommandSkillRunsOnThePeerThatOffersIt(t *testing.T) {
	upper := commandSkill(t, command.Spec{Name: "cmd.upper", Argv: []string{"tr", "a-z", "A-Z"}})
	a := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	b := newHarnessNode(t, harnessConfig{skills: []skill.Skill{upper}, bootstrap: []*harnessNode{a}})
	a.awaitOffer(t, "cmd.upper", b.ID)

	res := a.run(t, skill.NewSkillTask("cmd.upper", skill.RawInput([]byte("run me on b")), ""))
	if res.ExecutedBy != b.ID || string(res.Output) != "RUN ME ON B" {
		t.Fatalf("executed by %s, output %q; want b (%s) and %q", res.ExecutedBy, res.Output, b.ID, "RUN ME ON B")
	}
}

// TestACommandThatForksAndIgnoresSIGTERMIsKilled is the bad input of
// issue 10: a program that ignores SIGTERM and leaves children behind
// fails at its timeout with every process gone, and the node runs the
// next task.
func TestACommandThatForksAndIgnoresSIGTERMIsKilled(t *testing.T) {
	pidFile := filepath.Join(t.TempDir(), "pids")
	hang := commandSkill(t, command.Spec{Name: "cmd.hang", Timeout: 500 * time.Millisecond, Argv: []string{"/bin/sh", "-c", `trap "" TERM
(sleep 1000 & echo $! >>"$0")
sleep 1000 & echo $! >>"$0"
echo $$ >>"$0"
wait`, pidFile}})
	upper := commandSkill(t, command.Spec{Name: "cmd.upper", Argv: []string{"tr", "a-z", "A-Z"}})
	a := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	b := newHarnessNode(t, harnessConfig{skills: []skill.Skill{hang, upper}, bootstrap: []*harnessNode{a}})
	a.awaitOffer(t, "cmd.hang", b.ID)
	a.awaitOffer(t, "cmd.upper", b.ID)

	res, err := a.wait(t, a.submit(t, skill.NewSkillTask("cmd.hang", skill.RawInput(nil), "").WithMaxRetries(0)))
	if err == nil || res == nil || res.Code != grid.CodeTimeout || !strings.Contains(res.Error, "process group was killed") {
		t.Fatalf("result %+v err %v; want a timeout that says the process group was killed", res, err)
	}
	b2, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pids := strings.Fields(string(b2))
	if len(pids) != 3 {
		t.Fatalf("PIDs %q; want 3", pids)
	}
	for _, s := range pids {
		pid, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		awaitCond(t, 2*time.Second, "process "+s+" of the command is gone", func() bool { return !running(pid) })
	}
	res = a.run(t, skill.NewSkillTask("cmd.upper", skill.RawInput([]byte("still here")), ""))
	if string(res.Output) != "STILL HERE" {
		t.Fatalf("the next task's output is %q", res.Output)
	}
}

// running reports whether pid is a live process: neither gone nor a
// zombie left for init to reap.
func running(pid int) bool {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return syscall.Kill(pid, 0) == nil
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}
