package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/store"
)

// daemonConfig is a test node's config with api.listen set to listen.
func daemonConfig(listen string) string {
	return strings.Replace(testNodeConfig("echo", ""), "listen: 127.0.0.1:0", "listen: "+listen, 1)
}

// noState fails the test if the daemon opened its store: a start that is
// refused must be refused before anything else starts.
func noState(t *testing.T, repo string) {
	t.Helper()
	if _, err := os.Stat(filepath.Join(repo, store.FileName)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the daemon opened its state store before failing (stat %s: %v)", store.FileName, err)
	}
}

func TestDaemonRefusesAnEmptyTokenBeyondLoopback(t *testing.T) {
	repo := initTestRepo(t, daemonConfig("0.0.0.0:0"))
	if err := os.WriteFile(filepath.Join(repo, "api-token"), []byte("\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := cli(t, "--repo", repo, "daemon", "--log-level", "error")
	if code != exitFailed || !strings.Contains(stderr, "api.token_file") || !strings.Contains(stderr, "is empty") {
		t.Errorf("exit %d, stderr %q; want a failure saying api.token_file is empty", code, stderr)
	}
	noState(t, repo)
}

func TestDaemonFailsFastWhenTheAPIPortIsTaken(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	repo := initTestRepo(t, daemonConfig(l.Addr().String()))
	code, _, stderr := cli(t, "--repo", repo, "daemon", "--log-level", "error")
	if code != exitFailed || !strings.Contains(stderr, "api.listen") || !strings.Contains(stderr, l.Addr().String()) {
		t.Errorf("exit %d, stderr %q; want a failure naming api.listen and the address", code, stderr)
	}
	noState(t, repo)
}

func TestDaemonDoesNotCreateAMissingIdentity(t *testing.T) {
	repo := initTestRepo(t, daemonConfig("127.0.0.1:0"))
	key := filepath.Join(repo, "identity.key")
	if err := os.Remove(key); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := cli(t, "--repo", repo, "daemon", "--log-level", "error")
	if code != exitFailed || !strings.Contains(stderr, "no identity in "+repo) || !strings.Contains(stderr, "cortexd init") {
		t.Errorf("exit %d, stderr %q; want a failure saying there is no identity and to run cortexd init", code, stderr)
	}
	if _, err := os.Stat(key); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the daemon created an identity (stat: %v)", err)
	}
}
