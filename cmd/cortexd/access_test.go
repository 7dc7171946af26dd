package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
	"github.com/cortexgrid/cortexd/pkg/grid"
)

// testNodeConfig is a config.yaml for a daemon on loopback with kernel-
// chosen ports; extra is appended to its network section.
func testNodeConfig(skills, extraNetwork string) string {
	return "network:\n  listen_addrs: [/ip4/127.0.0.1/tcp/0]\n" + extraNetwork +
		"mdns:\n  enabled: false\npubsub:\n  announce_interval: 1s\n  capability_ttl: 5s\n" +
		"skills:\n  enabled: [" + skills + "]\napi:\n  listen: 127.0.0.1:0\nshutdown:\n  grace: 2s\n"
}

// testWarmUp is how long a test daemon's capability table is taken to be
// filling after it started (grid.Node.CapabilitiesWarming: twice the test
// config's announce_interval of 1s); until then a task for a skill no node
// offers waits for one instead of being refused.
const testWarmUp = 2 * time.Second

// pastWarmUp waits until a daemon that was up at up is past testWarmUp.
func pastWarmUp(up time.Time) { time.Sleep(time.Until(up.Add(testWarmUp))) }

// initTestRepo runs `cortexd init` with args and writes cfg as its config.
func initTestRepo(t testing.TB, cfg string, args ...string) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	if code, _, stderr := cli(t, append([]string{"--repo", repo, "init"}, args...)...); code != 0 {
		t.Fatalf("init: exit %d: %s", code, stderr)
	}
	if cfg != "" {
		if err := os.WriteFile(filepath.Join(repo, config.FileName), []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return repo
}

// startTestDaemon runs `cortexd daemon` on repo in this process until the
// test ends, and returns a client for it once it has written DIR/api.
func startTestDaemon(t testing.TB, repo string, args ...string) *client.Client {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncWriter
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, append([]string{"--repo", repo, "daemon", "--log-level", "warn"}, args...), &out, &errb)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("daemon %s stopped with %v", repo, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("daemon %s did not stop within 30s", repo)
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case err := <-done:
			done <- err
			t.Fatalf("daemon exited at start: %v\n%s", err, errb.String())
		default:
		}
		if c, err := client.FromRepo(repo, ""); err == nil {
			return c
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon wrote no %s within 30s:\n%s", client.APIFile, errb.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitFor polls cond every 20 ms until it holds or 20 s have passed.
func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: not after 20s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestCLIInitSwarmKey(t *testing.T) {
	first := initTestRepo(t, "", "--swarm-key")
	keyPath := filepath.Join(first, swarmKeyFileName)
	st, err := os.Stat(keyPath)
	if err != nil {
		t.Fatalf("init --swarm-key wrote no %s: %v", swarmKeyFileName, err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("%s has mode %04o, want 0600", keyPath, st.Mode().Perm())
	}
	psk, err := grid.LoadSwarmKey(keyPath)
	if err != nil {
		t.Fatalf("the generated key does not load: %v", err)
	}
	cfg, err := config.Load(filepath.Join(first, config.FileName), nil)
	if err != nil || cfg.Network.SwarmKeyFile != swarmKeyFileName {
		t.Fatalf("config after init --swarm-key: %+v, %v; want network.swarm_key_file %s", cfg, err, swarmKeyFileName)
	}

	second := initTestRepo(t, "", "--swarm-key-from", keyPath)
	psk2, err := grid.LoadSwarmKey(filepath.Join(second, swarmKeyFileName))
	if err != nil || !bytes.Equal(psk, psk2) {
		t.Fatalf("init --swarm-key-from did not copy the key (%v)", err)
	}
	if other := initTestRepo(t, "", "--swarm-key"); bytes.Equal(mustRead(t, filepath.Join(other, swarmKeyFileName)), mustRead(t, keyPath)) {
		t.Error("two init --swarm-key made the same key")
	}

	cases := []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"both key flags are a usage error", []string{"--swarm-key", "--swarm-key-from", keyPath}, exitUsage, "only one"},
		{"a missing key file is a usage error naming it", []string{"--swarm-key-from", filepath.Join(first, "nope.key")}, exitUsage, "nope.key"},
		{"a malformed key file is a usage error saying so", []string{"--swarm-key-from", filepath.Join(first, config.FileName)}, exitUsage, "malformed swarm key"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := filepath.Join(t.TempDir(), "r")
			code, _, stderr := cli(t, append([]string{"--repo", repo, "init"}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want exit %d saying %q", code, stderr, tc.code, tc.msg)
			}
			if _, err := os.Stat(filepath.Join(repo, config.FileName)); err == nil {
				t.Error("a failed init left a config behind")
			}
		})
	}
}

func mustRead(t testing.TB, p string) []byte {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestDaemonRefusesABadSwarmKeyFile(t *testing.T) {
	cases := []struct {
		name  string
		file  string // written to DIR/swarm.key unless empty
		wants []string
	}{
		{"a missing key file names the key and the path", "", []string{"network.swarm_key_file", filepath.Join("REPO", swarmKeyFileName), "does not exist", "cortexd init --swarm-key"}},
		{"a malformed key file names the key, the path and the fault", "/key/swarm/psk/1.0.0/\n/base16/\nabc\n",
			[]string{"network.swarm_key_file", filepath.Join("REPO", swarmKeyFileName), "malformed swarm key", "hex digits"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			repo := initTestRepo(t, testNodeConfig("echo", "  swarm_key_file: swarm.key\n"))
			if tc.file != "" {
				if err := os.WriteFile(filepath.Join(repo, swarmKeyFileName), []byte(tc.file), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			code, _, stderr := cli(t, "--repo", repo, "daemon")
			if code != exitFailed {
				t.Fatalf("exit %d, want %d; stderr %q", code, exitFailed, stderr)
			}
			if n := strings.Count(strings.TrimSpace(stderr), "\n"); n != 0 {
				t.Errorf("stderr has %d lines, want one: %q", n+1, stderr)
			}
			for _, w := range tc.wants {
				if w = strings.ReplaceAll(w, "REPO", repo); !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			if _, err := os.Stat(filepath.Join(repo, client.APIFile)); err == nil {
				t.Error("the daemon wrote its API file although it did not start")
			}
		})
	}
}

func TestCLIPeersDenyAndAllow(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two libp2p nodes")
	}
	repo1 := initTestRepo(t, testNodeConfig("echo", ""))
	c1 := startTestDaemon(t, repo1)
	up := time.Now()
	ctx := context.Background()
	id1, err := c1.ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	repo2 := initTestRepo(t, testNodeConfig("hash.sha256", ""))
	startTestDaemon(t, repo2, "--bootstrap", id1.Addrs[0])
	id2, err := repoClientOf(t, repo2).ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	peerOf := func() (apiv1.Peer, bool) {
		code, stdout, stderr := cli(t, "--repo", repo1, "--json", "peers")
		if code != 0 {
			t.Fatalf("peers: exit %d: %s", code, stderr)
		}
		var peers []apiv1.Peer
		if err := json.Unmarshal([]byte(stdout), &peers); err != nil {
			t.Fatalf("peers --json: %v: %s", err, stdout)
		}
		for _, p := range peers {
			if p.ID == id2.ID {
				return p, true
			}
		}
		return apiv1.Peer{}, false
	}
	waitFor(t, "node 1 to see node 2's skill", func() bool { p, ok := peerOf(); return ok && p.Connected && len(p.Skills) > 0 })
	if p, _ := peerOf(); p.Access != apiv1.AccessAllowed {
		t.Errorf("node 2's access before deny: %q, want allowed", p.Access)
	}

	code, stdout, stderr := cli(t, "--repo", repo1, "peers", "deny", id2.ID)
	if code != 0 || !strings.Contains(stdout, id2.ID+" denied") {
		t.Fatalf("peers deny: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	waitFor(t, "node 2 to be cut off", func() bool {
		p, ok := peerOf()
		return ok && !p.Connected && p.Access == apiv1.AccessDenied
	})
	pastWarmUp(up)
	code, _, stderr = cli(t, "--repo", repo1, "task", "submit", "hash.sha256", "--input", `{"data":"aGVsbG8="}`)
	if want := `cortexd: unknown skill "hash.sha256": no node on the grid offers it (see 'cortexd skills')`; code != exitFailed || strings.TrimSpace(stderr) != want {
		t.Errorf("submit for the denied peer's skill: exit %d, stderr %q; want exit 1 and %q", code, stderr, want)
	}
	code, stdout, _ = cli(t, "--repo", repo1, "peers")
	if code != 0 || !strings.Contains(stdout, "ACCESS") || !strings.Contains(stdout, "denied") {
		t.Errorf("peers table does not show the deny: %s", stdout)
	}

	code, stdout, stderr = cli(t, "--repo", repo1, "--json", "peers", "allow", id2.ID)
	var acc apiv1.PeerAccess
	if code != 0 || json.Unmarshal([]byte(stdout), &acc) != nil || acc.Access != apiv1.AccessAllowed || acc.Peer != id2.ID || acc.AllowList {
		t.Fatalf("peers allow: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Node 2 is listed again only once it reconnects; until then it is
	// simply not denied any more.
	if p, ok := peerOf(); ok && p.Access != apiv1.AccessAllowed {
		t.Errorf("node 2's access after allow: %q, want allowed", p.Access)
	}

	for _, tc := range []struct {
		name string
		args []string
		code int
		msg  string
	}{
		{"a malformed peer ID is a usage error", []string{"peers", "deny", "not-a-peer"}, exitUsage, `"not-a-peer" is not a peer ID`},
		{"a missing peer ID is a usage error", []string{"peers", "allow"}, exitUsage, "peers allow: missing PEER"},
		{"denying the node itself is refused", []string{"peers", "deny", id1.ID}, exitFailed, "cannot deny itself"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, append([]string{"--repo", repo1}, tc.args...)...)
			if code != tc.code || !strings.Contains(stderr, tc.msg) {
				t.Errorf("exit %d, stderr %q; want exit %d saying %q", code, stderr, tc.code, tc.msg)
			}
		})
	}
}

func repoClientOf(t testing.TB, repo string) *client.Client {
	t.Helper()
	c, err := client.FromRepo(repo, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}
