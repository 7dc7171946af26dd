package test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// withFetching returns daemonConfig("echo") with skills.fetch_modules set
// to mode.
func withFetching(mode string) string {
	return strings.Replace(daemonConfig("echo"), "skills:\n", "skills:\n  fetch_modules: "+mode+"\n", 1)
}

// publisherConfig is withFetching("any") for a node that serves its
// modules but runs no peer's tasks: every peer's trust is below 1.
func publisherConfig() string {
	return strings.Replace(withFetching("any"), "admission:\n  mode: open\n", "admission:\n  mode: open\n  known_trust: 1\n", 1) +
		"trust:\n  accept_threshold: 1\n"
}

func writeConfig(t *testing.T, repo, cfg string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(repo, "config.yaml"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// skillOf returns node repo's view of skill id (zero if it has none).
func skillOf(t *testing.T, repo, id string) apiv1.Skill {
	t.Helper()
	skills, err := repoClient(t, repo).Skills(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range skills {
		if s.ID == id {
			return s
		}
	}
	return apiv1.Skill{}
}

// TestDaemonWasmSkillAddedOnOneNodeRunsOnTwoOthersThatFetchIt is the
// issue's acceptance, with three cortexd processes, all with
// skills.fetch_modules any: a Go-built wasm skill added on node 1 with
// `cortexd skill add` runs on node 2 and on node 3, each of which fetches
// its module.
//
// Routing is made exact with operator settings only. Node 1 publishes the
// module but runs no peer's tasks: trust.accept_threshold 1 refuses every
// peer (a refusal never uses up an attempt; the task moves on). So a task
// from a node lacking the skill can run only on the other node, a module
// fetcher:
//
//   - node 3 (no skill) submits: node 1 refuses it if tried, and node 2
//     fetches the module (node 3 has none to give; node 1 announces it)
//     and runs it. The task names the module only because node 3's
//     coordinator fills it from what node 1 announces: node 3 lacks the
//     skill, and node 2 would otherwise not know what to fetch.
//   - node 2 removes the fetched skill (`cortexd skill rm`; the module
//     stays in its fetched cache) and submits: node 3 fetches the module
//     (from node 2, the requester, or node 1) and runs it.
//
// Each run is checked by ExecutedBy, by the fetcher's log ("wasm skill
// fetched") and by the module in its DIR/wasm/fetched. Before any run,
// `cortexd skill list` on node 3 shows the module node 1 announces. Last,
// a fourth daemon with fetch_modules off refuses a task naming the module
// with an error that says so, and still runs what it has.
func TestDaemonWasmSkillAddedOnOneNodeRunsOnTwoOthersThatFetchIt(t *testing.T) {
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

	repo1, repo2, repo3 := initDaemonRepo(t, bin, "echo"), initDaemonRepo(t, bin, "echo"), initDaemonRepo(t, bin, "echo")
	writeConfig(t, repo1, publisherConfig())
	writeConfig(t, repo2, withFetching("any"))
	writeConfig(t, repo3, withFetching("any"))
	startDaemon(t, bin, repo1)
	boot := daemonLoopbackAddr(t, repoClient(t, repo1))
	p2 := startDaemon(t, bin, repo2, "--bootstrap", boot)
	p3 := startDaemon(t, bin, repo3, "--bootstrap", boot)
	id1, id2, id3 := nodeID(t, repo1), nodeID(t, repo2), nodeID(t, repo3)

	code, stdout, stderr := runCLI(t, bin, "--repo", repo1, "skill", "add", file, "--name", "text.upper", "--version", "1.0.0",
		"--deterministic", "--memory", "128MiB", "--timeout", "20s")
	if code != 0 || !strings.Contains(stdout, "(module "+sum) {
		t.Fatalf("skill add on node 1: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}

	// Each of nodes 2 and 3 knows node 1 offers text.upper with its module,
	// and the other node (announcing echo, and that it fetches modules in
	// the same announcement).
	for _, n := range []struct{ repo, other string }{{repo2, id3}, {repo3, id2}} {
		pollUntil(t, 30*time.Second, "a node to learn of node 1's text.upper and of the other fetcher", func() error {
			up, echo := skillOf(t, n.repo, "text.upper"), skillOf(t, n.repo, "echo")
			if up.Local || len(up.Providers) != 1 || up.Providers[0] != id1 || up.Module != sum {
				return fmt.Errorf("text.upper: %+v", up)
			}
			for _, p := range echo.Providers {
				if p == n.other {
					return nil
				}
			}
			return fmt.Errorf("echo providers %v lack %s", echo.Providers, n.other)
		})
	}
	code, stdout, stderr = runCLI(t, bin, "--repo", repo3, "skill", "list")
	if code != 0 || !strings.Contains(stdout, "text.upper") || !strings.Contains(stdout, sum[:12]) {
		t.Fatalf("skill list on node 3 (lacks text.upper): exit %d, stdout %q, stderr %q; want the announced module %s", code, stdout, stderr, sum[:12])
	}

	// fetched checks that the node of p and repo fetched the module from
	// peer from for requester req.
	fetched := func(t *testing.T, p *daemonProc, repo, from, req string) {
		t.Helper()
		log := p.stderr.String()
		line := lineWith(log, "wasm skill fetched")
		if !strings.Contains(line, "module="+sum[:12]) || !strings.Contains(line, "from="+from) || !strings.Contains(line, "requester="+req) {
			t.Fatalf("the node's log has no \"wasm skill fetched\" line for module %s from %s for %s:\n%s", sum[:12], from, req, lastLines(log, 40))
		}
		ms, _ := filepath.Glob(filepath.Join(repo, "wasm", "fetched", "*"))
		var found bool
		for _, m := range ms {
			if strings.Contains(filepath.Base(m), sum) {
				found = true
			}
		}
		if !found {
			t.Fatalf("%s holds %v, no file named for module %s", filepath.Join(repo, "wasm", "fetched"), ms, sum)
		}
		t.Logf("fetch: %s", line)
	}

	t.Run("node 2 fetches the module for a task from node 3, which lacks the skill", func(t *testing.T) {
		if out, by := submitUpper(t, bin, repo3, "from three"); out != `"FROM THREE"` || by != id2 {
			t.Fatalf("output %s from %s, want \"FROM THREE\" from node 2 %s", out, by, id2)
		}
		fetched(t, p2, repo2, id1, id3) // node 3 has no module to give
	})

	t.Run("node 3 fetches the module for a task from node 2", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, bin, "--repo", repo2, "skill", "rm", "text.upper")
		if code != 0 || !strings.Contains(stdout, "removed wasm skill text.upper") {
			t.Fatalf("skill rm on node 2: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		if s := skillOf(t, repo2, "text.upper"); s.Local {
			t.Fatalf("node 2 still has text.upper: %+v", s)
		}
		if out, by := submitUpper(t, bin, repo2, "from two"); out != `"FROM TWO"` || by != id3 {
			t.Fatalf("output %s from %s, want \"FROM TWO\" from node 3 %s", out, by, id3)
		}
		fetched(t, p3, repo3, id2, id2) // the requester is asked first, and has it in its cache
	})

	t.Run("a node with fetch_modules off refuses a task naming a module it lacks", func(t *testing.T) {
		repo4 := initDaemonRepo(t, bin, "echo")
		writeConfig(t, repo4, withFetching("off"))
		startDaemon(t, bin, repo4, "--bootstrap", boot)
		c4 := repoClient(t, repo4)
		id4, err := peer.Decode(nodeID(t, repo4))
		if err != nil {
			t.Fatal(err)
		}
		// A requester that does not go through the router (which never
		// picks a node that neither offers the skill nor fetches).
		addr, err := multiaddr.NewMultiaddr(daemonLoopbackAddr(t, c4))
		if err != nil {
			t.Fatal(err)
		}
		ai, err := peer.AddrInfoFromP2pAddr(addr)
		if err != nil {
			t.Fatal(err)
		}
		client := newHarnessNode(t, harnessConfig{nodeOpts: []grid.NodeOption{grid.WithBootstrapPeers(*ai)}})
		awaitCond(t, harnessWait, "the requester connects to node 4", func() bool {
			return client.Node.Host().Network().Connectedness(id4) == network.Connected
		})
		_, err = delegate(t, client, id4, "text.upper", wasm.ModuleIDOf(module), "x")
		var rej *grid.RejectError
		if !errors.As(err, &rej) || rej.Reason != grid.RejectUnknownSkill ||
			!strings.Contains(rej.Message, "skills.fetch_modules is off") || !strings.Contains(rej.Message, sum[:12]) {
			t.Fatalf("delegate to node 4: %v; want unknown skill saying fetch_modules is off and naming module %s", err, sum[:12])
		}
		t.Logf("refusal: %v", err)
		code, _, stderr := runCLI(t, bin, "--repo", repo4, "task", "submit", "echo", "--input", `"still here"`, "--wait")
		if code != 0 {
			t.Fatalf("echo on node 4 after the refusal: exit %d, stderr %s", code, stderr)
		}
	})
}

// lineWith returns the first line of s containing sub.
func lineWith(s, sub string) string {
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			return l
		}
	}
	return ""
}
