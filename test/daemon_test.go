package test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// helloSHA256 is SHA-256("hello"); "aGVsbG8=" is "hello" in base64.
const helloSHA256 = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"

// cortexdBinary builds cmd/cortexd from this tree into the test's temp dir
// (the build cache makes every build after the first a link).
func cortexdBinary(t testing.TB) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "cortexd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/cortexd")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/cortexd: %v\n%s", err, out)
	}
	return bin
}

// daemonProc is a cortexd daemon running as a child process.
type daemonProc struct {
	repo   string
	cmd    *exec.Cmd
	stderr *logBuffer
	done   chan error
}

type logBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *logBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *logBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemonConfig is a test node's config.yaml: loopback only, ports chosen by
// the kernel, fast announcements, and admission mode open, since every
// node of a test grid is the tester's own, as a devnet's are (the
// stranger limits of the public default are tested with
// publicDaemonConfig).
func daemonConfig(skills string) string {
	return publicDaemonConfig(skills) + `admission:
  mode: open
`
}

// publicDaemonConfig is daemonConfig with the default admission of the
// public network: peers without evidence here are strangers.
func publicDaemonConfig(skills string) string {
	return `network:
  listen_addrs: [/ip4/127.0.0.1/tcp/0]
mdns:
  enabled: false
pubsub:
  announce_interval: 1s
  capability_ttl: 5s
skills:
  enabled: [` + skills + `]
api:
  listen: 127.0.0.1:0
log:
  level: debug
shutdown:
  grace: 10s
`
}

// initDaemonRepo runs `cortexd init` and replaces the config.
func initDaemonRepo(t testing.TB, bin, skills string) string {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command(bin, "--repo", repo, "init").CombinedOutput(); err != nil {
		t.Fatalf("cortexd init: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(repo, "config.yaml"), []byte(daemonConfig(skills)), 0o600); err != nil {
		t.Fatal(err)
	}
	return repo
}

// startDaemon starts `cortexd daemon` and waits for it to write DIR/api.
func startDaemon(t testing.TB, bin, repo string, extra ...string) *daemonProc {
	t.Helper()
	p := &daemonProc{repo: repo, stderr: &logBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command(bin, append([]string{"--repo", repo, "daemon"}, extra...)...)
	p.cmd.Stderr = p.stderr
	p.cmd.Stdout = p.stderr
	// A daemon killed with SIGKILL leaves its api file: wait for the new one.
	if err := os.Remove(filepath.Join(repo, "api")); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start daemon: %v", err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("daemon %s log (pubsub lines left out):\n%s", repo, lastLines(withoutPubsub(p.stderr.String()), 60))
		}
	})
	p.awaitAPIFile(t, "daemon writes "+filepath.Join(repo, "api"))
	return p
}

// awaitAPIFile waits until the daemon has written its api file, failing
// at once if it exited.
func (p *daemonProc) awaitAPIFile(t testing.TB, what string) {
	t.Helper()
	pollUntil(t, 30*time.Second, what, func() error {
		select {
		case err := <-p.done:
			p.done <- err
			return fmt.Errorf("daemon exited: %v", err)
		default:
		}
		_, err := os.Stat(filepath.Join(p.repo, "api"))
		return err
	})
}

// withoutPubsub drops the log lines of go-libp2p-pubsub's own debug
// logging, which crowd out the daemon's in a failed test's output.
func withoutPubsub(s string) string {
	lines := strings.Split(s, "\n")
	out := lines[:0]
	for _, l := range lines {
		if !strings.Contains(l, "component=grid.pubsub") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

func lastLines(s string, n int) string {
	lines := strings.Split(s, "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// pollUntil polls cond until it returns nil or the timeout passes.
func pollUntil(t testing.TB, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: %v", what, err)
		}
		<-tick.C
	}
}

// runCLI runs a client command and returns its exit code and output.
func runCLI(t testing.TB, bin string, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var out, errb bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee):
		code = ee.ExitCode()
	default:
		t.Fatalf("run %v: %v", args, err)
	}
	return code, out.String(), errb.String()
}

// daemonLoopbackAddr returns the node's 127.0.0.1 TCP multiaddr.
func daemonLoopbackAddr(t testing.TB, c *client.Client) string {
	t.Helper()
	id, err := c.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range id.Addrs {
		if strings.HasPrefix(a, "/ip4/127.0.0.1/tcp/") {
			return a
		}
	}
	t.Fatalf("node has no loopback TCP address: %v", id.Addrs)
	return ""
}

func repoClient(t testing.TB, repo string) *client.Client {
	t.Helper()
	c, err := client.FromRepo(repo, "")
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestDaemonGridOfThreeProcesses runs three daemons as separate processes
// on loopback, each with different skills, and drives them through the CLI
// and the API: tasks that node 1 cannot run itself are delegated, results
// come back, metrics are served, and SIGTERM shuts each down cleanly.
func TestDaemonGridOfThreeProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	repos := []string{
		initDaemonRepo(t, bin, "echo"),
		initDaemonRepo(t, bin, "hash.sha256"),
		initDaemonRepo(t, bin, "image.resize, debug.sleep"),
	}
	procs := []*daemonProc{startDaemon(t, bin, repos[0])}
	c1 := repoClient(t, repos[0])
	boot := daemonLoopbackAddr(t, c1)
	procs = append(procs, startDaemon(t, bin, repos[1], "--bootstrap", boot), startDaemon(t, bin, repos[2], "--bootstrap", boot))
	ids := make([]string, 3)
	for i, r := range repos {
		id, err := repoClient(t, r).ID(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id.ID
	}
	ctx := context.Background()
	pollUntil(t, 30*time.Second, "node 1 to learn every skill", func() error {
		skills, err := c1.Skills(ctx)
		if err != nil {
			return err
		}
		seen := map[string]bool{}
		for _, s := range skills {
			if len(s.Providers) > 0 {
				seen[s.ID] = true
			}
		}
		for _, s := range []string{"echo", "hash.sha256", "image.resize", "debug.sleep"} {
			if !seen[s] {
				return fmt.Errorf("no provider of %s yet (skills: %+v)", s, skills)
			}
		}
		return nil
	})

	t.Run("a task submitted with the CLI runs on the node that has the skill", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, bin, "--repo", repos[0], "task", "submit", "hash.sha256",
			"--input", `{"data":"aGVsbG8="}`, "--priority", "high", "--wait")
		if code != 0 {
			t.Fatalf("exit %d; stderr: %s", code, stderr)
		}
		var out struct{ SHA256 string }
		if err := json.Unmarshal([]byte(stdout), &out); err != nil || out.SHA256 != helloSHA256 {
			t.Fatalf("output %q (err %v), want sha256 %s", stdout, err, helloSHA256)
		}
		if !strings.Contains(stderr, "succeeded") || !strings.Contains(stderr, ids[1][len(ids[1])-8:]) {
			t.Errorf("stderr %q does not say it succeeded on node 2 (%s)", stderr, ids[1])
		}
	})

	t.Run("a task submitted with the API is delegated and its result read back", func(t *testing.T) {
		body := `{"skill":"debug.sleep","input":{"ms":20},"priority":"critical","timeout":"30s"}`
		resp, err := http.Post(c1.BaseURL()+"/v1/tasks", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		var sub apiv1.Task
		err = json.NewDecoder(resp.Body).Decode(&sub)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusAccepted {
			t.Fatalf("POST /v1/tasks: %d, %v", resp.StatusCode, err)
		}
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		done, err := c1.Wait(wctx, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		if done.State != apiv1.StateSucceeded || done.Result == nil || done.Result.ExecutedBy != ids[2] {
			t.Fatalf("task ended %+v (result %+v), want success on node 3 %s", done, done.Result, ids[2])
		}
		if string(done.Result.Output) != `{"slept_ms":20}` {
			t.Errorf("output %s, want {\"slept_ms\":20}", done.Result.Output)
		}
		if done.Priority < 192 || done.Level != "critical" {
			t.Errorf("priority %d level %s, want critical", done.Priority, done.Level)
		}
	})

	t.Run("a local task runs on the node it was submitted to", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, bin, "--repo", repos[0], "--json", "task", "submit", "echo", "--input", `{"hi":1}`, "--wait")
		if code != 0 {
			t.Fatalf("exit %d; stderr: %s", code, stderr)
		}
		var task apiv1.Task
		if err := json.Unmarshal([]byte(stdout), &task); err != nil {
			t.Fatal(err)
		}
		var compact bytes.Buffer
		if task.Result != nil {
			_ = json.Compact(&compact, task.Result.Output)
		}
		if task.Result == nil || task.Result.ExecutedBy != ids[0] || compact.String() != `{"hi":1}` {
			t.Fatalf("task %+v, want echo's output from node 1", task)
		}
	})

	t.Run("a failed task exits 1 and says why", func(t *testing.T) {
		code, _, stderr := runCLI(t, bin, "--repo", repos[0], "task", "submit", "image.resize",
			"--input", `{"image":"bm90IGFuIGltYWdl","width":10,"height":10}`, "--wait")
		if code != 1 {
			t.Fatalf("exit %d, want 1; stderr: %s", code, stderr)
		}
		if !strings.Contains(stderr, "invalid") || !strings.Contains(stderr, "node …"+ids[2][len(ids[2])-8:]+" refused the input: ") {
			t.Errorf("stderr %q does not say node 3 found the input invalid", stderr)
		}
		if strings.Contains(stderr, ids[2]) {
			t.Errorf("stderr %q repeats the delegation's error chain; want node 3's reason alone", stderr)
		}
	})

	t.Run("a skill no node offers is refused in one line", func(t *testing.T) {
		code, _, stderr := runCLI(t, bin, "--repo", repos[0], "task", "submit", "no.such.skill", "--wait")
		if code != 1 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, "no.such.skill") {
			t.Fatalf("exit %d, stderr %q; want exit 1 and one line naming the skill", code, stderr)
		}
	})

	t.Run("the client commands print tables and JSON", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, bin, "--repo", repos[0], "peers")
		if code != 0 || !strings.Contains(stdout, ids[1]) || !strings.Contains(stdout, "hash.sha256") {
			t.Errorf("peers: exit %d, stdout %q, stderr %q", code, stdout, stderr)
		}
		code, stdout, _ = runCLI(t, bin, "--repo", repos[0], "--json", "task", "list", "--state", "succeeded")
		var list apiv1.TaskList
		if code != 0 || json.Unmarshal([]byte(stdout), &list) != nil || len(list.Tasks) < 3 {
			t.Errorf("task list: exit %d, %d tasks, stdout %q", code, len(list.Tasks), stdout)
		}
		code, stdout, _ = runCLI(t, bin, "--repo", repos[0], "metrics")
		if code != 0 || !strings.Contains(stdout, "tasks:") {
			t.Errorf("metrics: exit %d, stdout %q", code, stdout)
		}
		code, stdout, _ = runCLI(t, bin, "--repo", repos[0], "trust", ids[1])
		if code != 0 || !strings.Contains(stdout, ids[1]) {
			t.Errorf("trust: exit %d, stdout %q", code, stdout)
		}
	})

	t.Run("the metrics endpoint serves cortex and libp2p metrics", func(t *testing.T) {
		text, err := c1.Prometheus(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{
			`cortex_queue_depth_tasks{level="critical"}`,
			`cortex_tasks_finished_total{outcome="completed"}`,
			`cortex_task_execution_seconds`,
			`cortex_grid_peers{state="connected"} 2`,
			`cortex_trust_peers_score_bucket`,
			`cortex_task_duration_seconds_bucket{outcome="succeeded",where="remote"`,
			`cortex_task_duration_seconds_bucket{outcome="succeeded",where="local"`,
			`cortex_task_duration_seconds_count{outcome="failed",where="remote"}`,
			`libp2p_`,
		} {
			if !strings.Contains(text, want) {
				t.Errorf("/metrics lacks %s", want)
			}
		}
	})

	t.Run("SIGTERM on a busy node lets its running task finish first", func(t *testing.T) {
		p := apiv1.Priority(200)
		sub, err := c1.Submit(ctx, apiv1.SubmitRequest{Skill: "debug.sleep", Input: []byte(`{"ms":1500}`), Priority: &p})
		if err != nil {
			t.Fatal(err)
		}
		pollUntil(t, 10*time.Second, "the task to reach node 3", func() error {
			st, err := c1.Task(ctx, sub.ID)
			if err != nil {
				return err
			}
			if st.State != apiv1.StateDelegated {
				return fmt.Errorf("state %s", st.State)
			}
			return nil
		})
		// Delegated means sent, not yet running there: under load the
		// SIGTERM could otherwise reach node 3 before the task does.
		c3 := repoClient(t, repos[2])
		pollUntil(t, 10*time.Second, "node 3 to run the task", func() error {
			m, err := c3.Metrics(ctx)
			if err != nil {
				return err
			}
			if m.Queue.InFlight < 1 {
				return fmt.Errorf("node 3 has %d tasks in flight", m.Queue.InFlight)
			}
			return nil
		})
		if err := procs[2].cmd.Process.Signal(syscall.SIGTERM); err != nil {
			t.Fatal(err)
		}
		wctx, cancel := context.WithTimeout(ctx, 20*time.Second)
		defer cancel()
		done, err := c1.Wait(wctx, sub.ID)
		if err != nil {
			t.Fatal(err)
		}
		if done.State != apiv1.StateSucceeded || done.Result.ExecutedBy != ids[2] {
			t.Fatalf("task ended %s (%+v), want success on node 3 despite its SIGTERM", done.State, done.Error)
		}
		select {
		case err := <-procs[2].done:
			procs[2].done <- err
			if err != nil {
				t.Errorf("node 3 exited with %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("node 3 did not exit after draining")
		}
	})

	t.Run("SIGTERM drains and exits 0, removing the API file", func(t *testing.T) {
		for i := len(procs) - 1; i >= 0; i-- {
			p := procs[i]
			if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && i != 2 {
				t.Fatal(err)
			}
			select {
			case err := <-p.done:
				if err != nil {
					t.Errorf("node %d exited with %v", i+1, err)
				}
			case <-time.After(30 * time.Second):
				t.Fatalf("node %d did not exit within 30s of SIGTERM", i+1)
			}
			if _, err := os.Stat(filepath.Join(p.repo, "api")); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("node %d left its api file behind (stat: %v)", i+1, err)
			}
			if !strings.Contains(p.stderr.String(), "cortexd stopped") {
				t.Errorf("node %d did not log a clean stop", i+1)
			}
		}
		code, _, stderr := runCLI(t, bin, "--repo", repos[0], "peers")
		if code != 3 {
			t.Errorf("peers after shutdown: exit %d, want 3; stderr %q", code, stderr)
		}
	})
}

// TestDaemonStartupErrors checks what stops a daemon at start: a repo
// another daemon holds, an unknown config key, an unknown skill.
func TestDaemonStartupErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)

	t.Run("a second daemon on one repo is refused", func(t *testing.T) {
		repo := initDaemonRepo(t, bin, "echo")
		startDaemon(t, bin, repo)
		code, _, stderr := runCLI(t, bin, "--repo", repo, "daemon")
		if code != 1 || !strings.Contains(stderr, "in use") {
			t.Fatalf("second daemon: exit %d, stderr %q; want exit 1 saying the repo is in use", code, stderr)
		}
	})

	t.Run("an unknown config key is named", func(t *testing.T) {
		repo := initDaemonRepo(t, bin, "echo")
		cfg := filepath.Join(repo, "config.yaml")
		b, err := os.ReadFile(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(cfg, append(b, "queue:\n  max_per_levle: 5\n"...), 0o600); err != nil {
			t.Fatal(err)
		}
		code, _, stderr := runCLI(t, bin, "--repo", repo, "daemon")
		if code != 1 || !strings.Contains(stderr, "queue.max_per_levle: unknown key") {
			t.Fatalf("exit %d, stderr %q; want exit 1 naming queue.max_per_levle", code, stderr)
		}
	})

	t.Run("an unknown skill from the environment is named", func(t *testing.T) {
		repo := initDaemonRepo(t, bin, "echo")
		cmd := exec.Command(bin, "--repo", repo, "daemon")
		cmd.Env = append(os.Environ(), "CORTEXD_SKILLS_ENABLED=echo,teleport")
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(string(out), "skills.enabled") || !strings.Contains(string(out), "teleport") {
			t.Fatalf("exit %v, output %q; want exit 1 naming skills.enabled and the skill", err, out)
		}
	})
}

// privateDaemonConfig is daemonConfig on the private network whose key is
// DIR/swarm.key.
func privateDaemonConfig(skills string) string {
	return strings.Replace(daemonConfig(skills), "network:\n", "network:\n  swarm_key_file: swarm.key\n", 1)
}

// TestDaemonPrivateNetwork runs two daemons that share a swarm key, made
// by `cortexd init --swarm-key` and copied with --swarm-key-from, and a
// third without it that bootstraps from the first: the two delegate tasks
// to each other, and the third sees neither of them, nor they it.
func TestDaemonPrivateNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	base := t.TempDir()
	repos := []string{filepath.Join(base, "n1"), filepath.Join(base, "n2"), filepath.Join(base, "n3")}
	inits := [][]string{{"--swarm-key"}, {"--swarm-key-from", filepath.Join(repos[0], "swarm.key")}, nil}
	configs := []string{privateDaemonConfig("echo"), privateDaemonConfig("hash.sha256"), daemonConfig("image.resize")}
	for i, r := range repos {
		if code, _, stderr := runCLI(t, bin, append([]string{"--repo", r, "init"}, inits[i]...)...); code != 0 {
			t.Fatalf("init node %d: exit %d: %s", i+1, code, stderr)
		}
		if err := os.WriteFile(filepath.Join(r, "config.yaml"), []byte(configs[i]), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	k1, err1 := os.ReadFile(filepath.Join(repos[0], "swarm.key"))
	k2, err2 := os.ReadFile(filepath.Join(repos[1], "swarm.key"))
	if err1 != nil || err2 != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("node 2's swarm.key is not a copy of node 1's (%v, %v)", err1, err2)
	}

	startDaemon(t, bin, repos[0])
	c1 := repoClient(t, repos[0])
	boot := daemonLoopbackAddr(t, c1)
	startDaemon(t, bin, repos[1], "--bootstrap", boot)
	outsider := startDaemon(t, bin, repos[2], "--bootstrap", boot)
	ctx := context.Background()
	id2, err := repoClient(t, repos[1]).ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c3 := repoClient(t, repos[2])
	id3, err := c3.ID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pollUntil(t, 30*time.Second, "node 1 to learn node 2's skill", func() error {
		skills, err := c1.Skills(ctx)
		if err != nil {
			return err
		}
		for _, s := range skills {
			if s.ID == "hash.sha256" && len(s.Providers) > 0 {
				return nil
			}
		}
		return fmt.Errorf("no provider of hash.sha256 yet")
	})

	t.Run("nodes holding the key delegate tasks to each other", func(t *testing.T) {
		code, stdout, stderr := runCLI(t, bin, "--repo", repos[0], "task", "submit", "hash.sha256", "--input", `{"data":"aGVsbG8="}`, "--wait")
		if code != 0 || !strings.Contains(stdout, helloSHA256) || !strings.Contains(stderr, id2.ID[len(id2.ID)-8:]) {
			t.Fatalf("exit %d, stdout %q, stderr %q; want the hash, computed by node 2 %s", code, stdout, stderr, id2.ID)
		}
	})

	t.Run("input the remote node refuses is reported with its reason", func(t *testing.T) {
		// The schema is on node 2 only: node 1 accepts the task, node 2
		// refuses it, and --wait says why in one line.
		code, _, stderr := runCLI(t, bin, "--repo", repos[0], "task", "submit", "hash.sha256", "--input", `{"data":7}`, "--wait")
		line := strings.TrimSpace(stderr)
		if code != 1 || strings.Contains(line, "\n") {
			t.Fatalf("exit %d, stderr %q; want exit 1 and one line", code, stderr)
		}
		for _, want := range []string{"failed: node …" + id2.ID[len(id2.ID)-8:] + " refused the input: ", "hash.sha256", "/data"} {
			if !strings.Contains(line, want) {
				t.Errorf("stderr %q does not say %q", line, want)
			}
		}
		if strings.Contains(line, "task rejected") || strings.Contains(line, id2.ID) {
			t.Errorf("stderr %q repeats the delegation's error chain; want the remote's reason alone", line)
		}
	})

	t.Run("a node without the key sees neither of them", func(t *testing.T) {
		if !strings.Contains(outsider.stderr.String(), "no bootstrap peer reachable") {
			t.Errorf("node 3 did not log that its bootstrap peer was unreachable")
		}
		peers, err := c3.Peers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if p.Connected || len(p.Skills) > 0 {
				t.Errorf("node 3 knows peer %+v", p)
			}
		}
		peers, err = c1.Peers(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if p.ID == id3.ID {
				t.Errorf("node 1 knows node 3: %+v", p)
			}
		}
		code, _, stderr := runCLI(t, bin, "--repo", repos[2], "task", "submit", "hash.sha256", "--input", `{"data":"aGVsbG8="}`)
		if code != 1 || !strings.Contains(stderr, `unknown skill "hash.sha256"`) {
			t.Errorf("submit on node 3: exit %d, stderr %q; want exit 1, the skill unknown", code, stderr)
		}
	})
}
