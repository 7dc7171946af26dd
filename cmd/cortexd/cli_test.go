package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/client"
)

// cli runs the command line in-process and returns its exit code and
// output, as the process would produce them.
func cli(t testing.TB, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	code = report(err, &errb)
	return code, out.String(), errb.String()
}

func TestCLIExitCodes(t *testing.T) {
	repo := t.TempDir()
	if code, _, stderr := cli(t, "--repo", repo, "init"); code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	// A port that nothing listens on: listen, note it, close.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dead := "http://" + l.Addr().String()
	l.Close()

	cases := []struct {
		name string
		args []string
		code int
		msg  string // in stderr's first line
	}{
		{"a client command without a running daemon exits 3", []string{"--repo", repo, "peers"}, exitUnreachable, "no daemon is running"},
		{"a daemon address that refuses connections exits 3", []string{"--repo", repo, "--api", dead, "id"}, exitUnreachable, "does not answer"},
		{"an unknown flag exits 2", []string{"--repo", repo, "peers", "--bogus"}, exitUsage, "unknown flag: --bogus"},
		{"an unknown command exits 2", []string{"frobnicate"}, exitUsage, `unknown command "frobnicate"`},
		{"a missing argument exits 2", []string{"--repo", repo, "task", "get"}, exitUsage, "task get: missing ID"},
		{"a bad priority exits 2", []string{"--repo", repo, "task", "submit", "echo", "--priority", "urgent"}, exitUsage, "--priority"},
		{"inline input that is not JSON exits 2", []string{"--repo", repo, "task", "submit", "echo", "--input", "hello"}, exitUsage, "not valid JSON"},
		{"a bad task state filter exits 2", []string{"--repo", repo, "task", "list", "--state", "lost"}, exitUsage, "--state"},
		{"a daemon on an uninitialized repo fails with advice", []string{"--repo", t.TempDir(), "daemon"}, exitFailed, "cortexd init"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d; stderr: %s", code, tc.code, stderr)
			}
			first, _, _ := strings.Cut(stderr, "\n")
			if !strings.HasPrefix(first, "cortexd: ") || !strings.Contains(first, tc.msg) {
				t.Errorf("first stderr line %q does not say %q", first, tc.msg)
			}
			if strings.Contains(stderr, "goroutine ") || strings.Contains(stderr, "panic") {
				t.Errorf("stderr has a stack trace: %s", stderr)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n > 2 {
				t.Errorf("stderr has %d lines, want at most 3 (the error, the usage line and a help hint): %s", n+1, stderr)
			}
		})
	}
}

func TestCLIInitCreatesRepoAndRefusesToOverwrite(t *testing.T) {
	repo := filepath.Join(t.TempDir(), "r")
	code, stdout, stderr := cli(t, "--repo", repo, "init")
	if code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	id := strings.TrimSpace(stdout)
	if !strings.HasPrefix(id, "12D3Koo") {
		t.Fatalf("init printed %q, want an Ed25519 peer ID", id)
	}
	for name, mode := range map[string]os.FileMode{"identity.key": 0o600, "api-token": 0o600, "config.yaml": 0o600} {
		st, err := os.Stat(filepath.Join(repo, name))
		if err != nil {
			t.Fatalf("init did not create %s: %v", name, err)
		}
		if st.Mode().Perm() != mode {
			t.Errorf("%s has mode %04o, want %04o", name, st.Mode().Perm(), mode)
		}
	}
	code, _, stderr = cli(t, "--repo", repo, "init")
	if code == 0 || !strings.Contains(stderr, "--force") {
		t.Fatalf("second init: exit %d, stderr %q; want a failure that mentions --force", code, stderr)
	}
	if err := os.WriteFile(filepath.Join(repo, "state.db"), []byte("old identity's state"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr = cli(t, "--repo", repo, "init", "--force")
	if code != 0 || strings.TrimSpace(stdout) == id {
		t.Fatalf("init --force: exit %d, printed %q; want success with a new peer ID", code, stdout)
	}
	if _, err := os.Stat(filepath.Join(repo, "state.db")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("init --force left the old identity's state.db in place (stat: %v)", err)
	}
	baks, _ := filepath.Glob(filepath.Join(repo, "state.db.bak-*"))
	if len(baks) != 1 || !strings.Contains(stderr, baks[0]) {
		t.Errorf("init --force: backups %q, stderr %q; want one state.db.bak-<time>, named on stderr", baks, stderr)
	} else if b, _ := os.ReadFile(baks[0]); string(b) != "old identity's state" {
		t.Errorf("backup holds %q", b)
	}
	t.Setenv("CORTEXD_PATH", repo)
	if code, _, stderr := cli(t, "peers"); code != exitUnreachable || !strings.Contains(stderr, repo) {
		t.Errorf("peers with $CORTEXD_PATH: exit %d, stderr %q; want exit 3 naming the repo from $CORTEXD_PATH", code, stderr)
	}
}

func TestCLIIdentitySeedIsDeterministic(t *testing.T) {
	var ids []string
	for range 2 {
		code, stdout, stderr := cli(t, "--repo", t.TempDir(), "init", "--identity-seed", "demo")
		if code != 0 {
			t.Fatalf("init: exit %d: %s", code, stderr)
		}
		ids = append(ids, strings.TrimSpace(stdout))
	}
	if ids[0] != ids[1] {
		t.Fatalf("the same seed gave %s and %s", ids[0], ids[1])
	}
}

func TestCLIExitCodeOfWrappedErrors(t *testing.T) {
	if got := exitCode(errors.Join(errors.New("x"), client.ErrUnreachable)); got != exitUnreachable {
		t.Errorf("exitCode(unreachable) = %d", got)
	}
	if got := exitCode(context.DeadlineExceeded); got != exitTimeout {
		t.Errorf("exitCode(deadline) = %d", got)
	}
	if got := exitCode(&silentError{exitFailed}); got != exitFailed {
		t.Errorf("exitCode(silent) = %d", got)
	}
}

func TestCLIDevnetDelegatesBetweenItsNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three libp2p nodes")
	}
	dir := t.TempDir()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var out, errb syncWriter
	done := make(chan error, 1)
	go func() { done <- run(ctx, []string{"devnet", "--dir", dir, "--log-level", "error"}, &out, &errb) }()

	// devnet prints its table once every node sees every skill.
	deadline := time.Now().Add(60 * time.Second)
	for !strings.Contains(out.String(), "export CORTEXD_PATH=") {
		select {
		case err := <-done:
			t.Fatalf("devnet exited early: %v\n%s", err, errb.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("devnet printed no instructions within 60s:\n%s\n%s", out.String(), errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	for i, skills := range []string{"echo", "hash.sha256", "image.resize,debug.sleep"} {
		if !strings.Contains(out.String(), skills) || !strings.Contains(out.String(), filepath.Join(dir, fmt.Sprintf("node%d", i+1))) {
			t.Errorf("devnet output does not list node %d with %s:\n%s", i+1, skills, out.String())
		}
	}
	code, stdout, stderr := cli(t, "--repo", filepath.Join(dir, "node1"), "task", "submit", "hash.sha256", "--input", `{"data":"aGVsbG8="}`, "--wait")
	if code != 0 || !strings.Contains(stdout, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824") {
		t.Fatalf("submit on node 1: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	n2, err := client.FromRepo(filepath.Join(dir, "node2"), "")
	if err != nil {
		t.Fatal(err)
	}
	id2, err := n2.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(stderr, id2.ID[len(id2.ID)-8:]) {
		t.Errorf("hash.sha256 did not run on node 2 (%s): %s", id2.ID, stderr)
	}
	// The README's example workflow runs its steps on the three nodes.
	code, stdout, stderr = cli(t, "--repo", filepath.Join(dir, "node1"), "workflow", "run", filepath.Join("..", "..", "configs", "workflow-example.yaml"), "--wait")
	if code != 0 || !strings.Contains(stdout, "(example) succeeded") || !strings.Contains(stdout, "both done") || !strings.Contains(stdout, "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824") {
		t.Fatalf("workflow run of the example on node 1: exit %d\n%s\n%s", code, stdout, stderr)
	}
	if !strings.Contains(stdout, id2.ID[len(id2.ID)-8:]) {
		t.Errorf("no step of the example ran on node 2 (%s):\n%s", id2.ID, stdout)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("devnet stopped with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("devnet did not stop within 30s of its context ending")
	}
	for i := 1; i <= 3; i++ {
		if _, err := os.Stat(filepath.Join(dir, fmt.Sprintf("node%d", i), client.APIFile)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("node %d left its api file (stat: %v)", i, err)
		}
	}
}

// syncWriter is a bytes.Buffer safe for one writer and one reader.
type syncWriter struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (w *syncWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *syncWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}
