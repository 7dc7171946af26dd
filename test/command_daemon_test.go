package test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// commandDaemonConfig is daemonConfig with echo and the command skills
// in commands (YAML list items, indented for skills.commands).
func commandDaemonConfig(commands string) string {
	return strings.Replace(daemonConfig("echo"), "skills:\n  enabled: [echo]\n",
		"skills:\n  enabled: [echo]\n  commands:\n"+commands, 1)
}

// TestDaemonCommandSkills runs command skills in a cortexd process: a
// round trip through the CLI, and the bad input of issue 10, a program
// that forks and ignores SIGTERM, stopped whole at its timeout with the
// daemon healthy after.
func TestDaemonCommandSkills(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "pids")
	repo := initDaemonRepo(t, bin, "echo")
	cfg := commandDaemonConfig(`    - name: text.upper
      version: 1.0.0
      argv: [tr, a-z, A-Z]
      limits: {memory: 256MiB, open_files: 64}
      fs: {read_only: [/usr, /bin, /lib]}
    - name: test.hang
      version: 1.0.0
      timeout: 1s
      argv: [/bin/sh, -c, 'trap "" TERM; (sleep 1000 & echo $! >>"$0"); sleep 1000 & echo $! >>"$0"; echo $$ >>"$0"; wait', ` + pidFile + `]
`)
	if err := os.WriteFile(filepath.Join(repo, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	startDaemon(t, bin, repo)
	in := filepath.Join(dir, "in.txt")
	if err := os.WriteFile(in, []byte("hello from a file"), 0o600); err != nil {
		t.Fatal(err)
	}
	upper := func() {
		t.Helper()
		code, out, stderr := runCLI(t, bin, "--repo", repo, "task", "submit", "text.upper", "--input", "@"+in, "--raw", "--wait")
		if code != 0 || strings.TrimSuffix(out, "\n") != "HELLO FROM A FILE" {
			t.Fatalf("text.upper: exit %d, stdout %q, stderr %q", code, out, stderr)
		}
	}
	upper()

	start := time.Now()
	code, _, stderr := runCLI(t, bin, "--repo", repo, "task", "submit", "test.hang", "--input", "{}", "--max-retries", "0", "--wait")
	if code != 4 || !strings.Contains(stderr, "process group was killed") {
		t.Fatalf("test.hang: exit %d, stderr %q; want 4 (timed out) saying the process group was killed", code, stderr)
	}
	if took := time.Since(start); took > 15*time.Second {
		t.Errorf("test.hang took %s; its timeout is 1s and the kill grace 2s", took)
	}
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Fatal(err)
	}
	pids := strings.Fields(string(b))
	if len(pids) != 3 {
		t.Fatalf("PIDs %q; want 3", pids)
	}
	for _, s := range pids {
		pid, err := strconv.Atoi(s)
		if err != nil {
			t.Fatal(err)
		}
		awaitCond(t, 2*time.Second, "process "+s+" of test.hang is gone", func() bool { return !running(pid) })
	}
	upper()
}

func TestDaemonRefusesABadCommandSkill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	tests := []struct {
		name, commands, want string
	}{
		{name: "an empty argv is named", commands: "    - {name: bad.cmd, version: 1.0.0, argv: []}\n", want: "skills.commands[0].argv"},
		{name: "a program not in PATH is named", commands: "    - {name: bad.cmd, version: 1.0.0, argv: [no-such-program-here]}\n", want: "argv[0]"},
		{name: "a relative fs path is named", commands: "    - {name: bad.cmd, version: 1.0.0, argv: [cat], fs: {read_only: [usr]}}\n", want: "skills.commands[0].fs.read_only[0]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			repo := initDaemonRepo(t, bin, "echo")
			if err := os.WriteFile(filepath.Join(repo, "config.yaml"), []byte(commandDaemonConfig(tt.commands)), 0o600); err != nil {
				t.Fatal(err)
			}
			code, _, stderr := runCLI(t, bin, "--repo", repo, "daemon")
			if code != 1 || !strings.Contains(stderr, tt.want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 naming %s", code, stderr, tt.want)
			}
		})
	}
}
