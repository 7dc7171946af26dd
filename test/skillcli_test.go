package test

import (
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// cacheFiles lists the files of a wasm compilation cache with their size
// and modification time: a restart that compiles again writes new ones.
func cacheFiles(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	err := filepath.WalkDir(dir, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		st, err := e.Info()
		if err != nil {
			return err
		}
		out[p] = fmt.Sprintf("%d bytes, %s", st.Size(), st.ModTime().Format(time.RFC3339Nano))
		return nil
	})
	if err != nil {
		t.Fatalf("list the compilation cache %s: %v", dir, err)
	}
	return out
}

// stopDaemon sends SIGTERM and waits for a clean exit.
func stopDaemon(t *testing.T, p *daemonProc) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			t.Fatalf("daemon exited with %v after SIGTERM", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not exit within 30s of SIGTERM")
	}
}

// submitUpper runs text.upper through the CLI on repo and returns its
// output and the CLI's stderr (which names the node that ran it).
func submitUpper(t *testing.T, bin, repo, in string) (output, stderr string) {
	t.Helper()
	code, stdout, stderr := runCLI(t, bin, "--repo", repo, "--json", "task", "submit", "text.upper", "--input", `"`+in+`"`, "--wait")
	if code != 0 {
		t.Fatalf("task submit text.upper on %s: exit %d, stderr %s", repo, code, stderr)
	}
	var task apiv1.Task
	if err := json.Unmarshal([]byte(stdout), &task); err != nil || task.Result == nil {
		t.Fatalf("task submit --json printed %q (%v)", stdout, err)
	}
	return string(task.Result.Output), task.Result.ExecutedBy
}

// TestSkillCLIAddRunRestartRemove adds a Go-built wasm module as a skill
// of a running daemon with `cortexd skill add`, runs it there and, by
// delegation, from a second daemon; restarts the first and runs it again
// from the compilation cache (no new cache file); removes it with
// `cortexd skill rm`, after which a task for it is refused as unknown.
func TestSkillCLIAddRunRestartRemove(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	module := wasmGuestModule(t) // its default mode upper-cases stdin
	file := filepath.Join(t.TempDir(), "upper.wasm")
	if err := os.WriteFile(file, module, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := wasm.ModuleIDOf(module).String()
	bin := cortexdBinary(t)
	repo1 := initDaemonRepo(t, bin, "echo")
	p1 := startDaemon(t, bin, repo1)
	id1 := nodeID(t, repo1)

	code, stdout, stderr := runCLI(t, bin, "--repo", repo1, "skill", "add", file, "--name", "text.upper", "--version", "1.0.0",
		"--deterministic", "--memory", "128MiB", "--timeout", "20s")
	if code != 0 || !strings.Contains(stdout, "added wasm skill text.upper version 1.0.0 (module "+sum) {
		t.Fatalf("skill add: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if out, by := submitUpper(t, bin, repo1, "hello, grid"); out != `"HELLO, GRID"` || by != id1 {
		t.Fatalf("output %s from %s, want \"HELLO, GRID\" from node 1", out, by)
	}
	cacheDir := filepath.Join(repo1, "wasm", "cache")
	before := cacheFiles(t, cacheDir)
	if len(before) == 0 {
		t.Fatalf("skill add compiled the module but left nothing in %s", cacheDir)
	}

	stopDaemon(t, p1)
	p1 = startDaemon(t, bin, repo1)
	pollUntil(t, 10*time.Second, "the restarted daemon to say its wasm skills are ready", func() error {
		if !strings.Contains(p1.stderr.String(), "wasm skills ready") {
			return fmt.Errorf("no \"wasm skills ready\" line yet")
		}
		return nil
	})
	if log := p1.stderr.String(); !strings.Contains(log, "wasm skill loaded") || !strings.Contains(log, "skill=text.upper") {
		t.Fatalf("the restarted daemon did not load text.upper:\n%s", lastLines(log, 30))
	}
	if out, _ := submitUpper(t, bin, repo1, "again"); out != `"AGAIN"` {
		t.Fatalf("after the restart: output %s", out)
	}
	after := cacheFiles(t, cacheDir)
	if fmt.Sprint(after) != fmt.Sprint(before) {
		t.Fatalf("the restart compiled the module again: the cache was\n%v\nand is now\n%v", before, after)
	}
	for _, l := range strings.Split(p1.stderr.String(), "\n") {
		if strings.Contains(l, "wasm skills ready") {
			t.Logf("restart: %s", l)
		}
	}

	// A second node without the skill runs it by delegation to node 1.
	repo2 := initDaemonRepo(t, bin, "echo")
	startDaemon(t, bin, repo2, "--bootstrap", daemonLoopbackAddr(t, repoClient(t, repo1)))
	c2 := repoClient(t, repo2)
	pollUntil(t, 30*time.Second, "node 2 to learn that node 1 offers text.upper", func() error {
		skills, err := c2.Skills(context.Background())
		if err != nil {
			return err
		}
		for _, s := range skills {
			if s.ID == "text.upper" && !s.Local && len(s.Providers) == 1 && s.Providers[0] == id1 {
				return nil
			}
		}
		return fmt.Errorf("skills: %+v", skills)
	})
	if out, by := submitUpper(t, bin, repo2, "delegated"); out != `"DELEGATED"` || by != id1 {
		t.Fatalf("from node 2: output %s from %s, want \"DELEGATED\" from node 1 %s", out, by, id1)
	}

	code, stdout, stderr = runCLI(t, bin, "--repo", repo1, "skill", "rm", "text.upper")
	if code != 0 || !strings.Contains(stdout, "removed wasm skill text.upper version 1.0.0 (module "+sum+")") {
		t.Fatalf("skill rm: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	code, _, stderr = runCLI(t, bin, "--repo", repo1, "task", "submit", "text.upper", "--input", `"x"`, "--wait")
	if code != 1 || !strings.Contains(stderr, `unknown skill "text.upper"`) {
		t.Fatalf("task after skill rm: exit %d, stderr %q; want it refused as an unknown skill", code, stderr)
	}
	if ms, _ := filepath.Glob(filepath.Join(repo1, "wasm", "manifests", "*")); len(ms) != 0 {
		t.Errorf("skill rm left %v", ms)
	}
}

func nodeID(t *testing.T, repo string) string {
	t.Helper()
	id, err := repoClient(t, repo).ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return id.ID
}
