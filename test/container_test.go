package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// TestContainerComposeBootstrapIDMatchesSeed checks that the peer ID that
// docker-compose.yml gives node2 and node3 as their bootstrap peer is the
// one node1 derives from its seed. It needs no Docker.
func TestContainerComposeBootstrapIDMatchesSeed(t *testing.T) {
	compose, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	seed := regexp.MustCompile(`"--init-identity-seed", "([^"]+)"`).FindSubmatch(compose)
	if seed == nil {
		t.Fatal("docker-compose.yml: node1 has no --init-identity-seed")
	}
	ids := regexp.MustCompile(`/p2p/(12D3Koo\w+)`).FindAllSubmatch(compose, -1)
	if len(ids) != 2 {
		t.Fatalf("docker-compose.yml: %d bootstrap peer IDs, want 2 (node2, node3)", len(ids))
	}
	bin := cortexdBinary(t)
	out, err := exec.Command(bin, "--repo", filepath.Join(t.TempDir(), "r"), "init", "--identity-seed", string(seed[1])).Output()
	if err != nil {
		t.Fatal(err)
	}
	got := strings.TrimSpace(string(out))
	for _, id := range ids {
		if string(id[1]) != got {
			t.Errorf("docker-compose.yml bootstraps from %s, but seed %q gives %s", id[1], seed[1], got)
		}
	}
}

// TestContainerComposeGrid builds the image as `make image` does and runs
// the compose grid: a task submitted on node1 runs on node2 and node3.
// It runs only where Docker works and CORTEX_CONTAINER_TEST=1.
// composeCommand returns the command that runs Compose here: docker
// compose (v2), else docker-compose (v1); nil if neither works.
func composeCommand() []string {
	if err := exec.Command("docker", "compose", "version").Run(); err == nil {
		return []string{"docker", "compose"}
	}
	if _, err := exec.LookPath("docker-compose"); err == nil {
		return []string{"docker-compose"}
	}
	return nil
}

// composeDocCommands returns the commands that docker-compose.yml's header
// tells the reader to run, as written: its indented comment lines, without
// `make image`, which the test does its own way.
func composeDocCommands(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile("../docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		cmd, ok := strings.CutPrefix(line, "#   ")
		if !ok || strings.HasPrefix(cmd, " ") || cmd == "make image" {
			continue
		}
		out = append(out, cmd)
	}
	return out
}

func TestContainerDocsAreTheREADMEs(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	cmds := composeDocCommands(t)
	if len(cmds) < 5 {
		t.Fatalf("docker-compose.yml documents %d commands: %q", len(cmds), cmds)
	}
	for _, c := range cmds {
		if !strings.Contains(string(readme), "    "+c+"\n") {
			t.Errorf("README.md does not show the compose command %q as docker-compose.yml does", c)
		}
		if strings.Contains(c, "cat ") {
			t.Errorf("%q: the image has no cat", c)
		}
	}
}

func TestContainerComposeGrid(t *testing.T) {
	if os.Getenv("CORTEX_CONTAINER_TEST") != "1" {
		t.Skip("set CORTEX_CONTAINER_TEST=1 to build the image and run the compose grid (needs docker and docker compose or docker-compose)")
	}
	if _, err := exec.LookPath("docker"); err != nil {
		t.Skip("docker not found")
	}
	composeCmd := composeCommand()
	if composeCmd == nil {
		t.Skip("neither docker compose nor docker-compose works")
	}
	image := fmt.Sprintf("cortexd:e2e-%d", os.Getpid())
	buildImage(t, image)

	project := fmt.Sprintf("cortexde2e%d", os.Getpid())
	env := append(os.Environ(), "CORTEXD_IMAGE="+image)
	ports := make([]int, 3)
	for i := range ports {
		ports[i] = freeTCPPort(t)
		env = append(env, fmt.Sprintf("CORTEXD_NODE%d_PORT=%d", i+1, ports[i]))
	}
	composeArgs := append(composeCmd[1:], "-p", project, "-f", "../docker-compose.yml")
	compose := func(ctx context.Context, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, composeCmd[0], append(slices.Clone(composeArgs), args...)...)
		cmd.Env = env
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		if t.Failed() {
			out, _ := compose(ctx, "logs", "--no-color", "--tail", "80")
			t.Logf("compose logs:\n%s", out)
		}
		if out, err := compose(ctx, "down", "-v", "--remove-orphans"); err != nil {
			t.Logf("compose down: %v\n%s", err, out)
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if out, err := compose(ctx, "up", "-d"); err != nil {
		t.Fatalf("compose up: %v\n%s", err, out)
	}
	exec1 := func(args ...string) (string, error) {
		return compose(ctx, append([]string{"exec", "-T", "node1", "cortexd"}, args...)...)
	}
	pollUntil(t, 2*time.Minute, "node1 to see every skill", func() error {
		out, err := exec1("--json", "skills")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		var skills []apiv1.Skill
		if err := json.Unmarshal([]byte(out), &skills); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		seen := map[string]bool{}
		for _, s := range skills {
			seen[s.ID] = len(s.Providers) > 0
		}
		for _, s := range []string{"echo", "hash.sha256", "image.resize", "debug.sleep"} {
			if !seen[s] {
				return fmt.Errorf("no provider of %s yet", s)
			}
		}
		return nil
	})
	out, err := exec1("--json", "task", "submit", "hash.sha256", "--input", `{"data":"aGVsbG8="}`, "--wait")
	if err != nil {
		t.Fatalf("submit hash.sha256 on node1: %v\n%s", err, out)
	}
	var task apiv1.Task
	if err := json.Unmarshal([]byte(out), &task); err != nil || task.Result == nil {
		t.Fatalf("task output %q: %v", out, err)
	}
	if !bytes.Contains(task.Result.Output, []byte(helloSHA256)) {
		t.Errorf("hash.sha256 output %s, want %s", task.Result.Output, helloSHA256)
	}
	out, err = exec1("--json", "task", "submit", "debug.sleep", "--input", `{"ms":10}`, "--wait")
	if err != nil || !strings.Contains(out, `"succeeded"`) {
		t.Fatalf("submit debug.sleep on node1: %v\n%s", err, out)
	}
	// The commands the compose file and the README show, as written, with
	// this test's project (and -T: the test has no terminal).
	script := []string{"set -eu", fmt.Sprintf("compose() { %s \"$@\"; }", strings.Join(append(slices.Clone(composeCmd), "-p", project, "-f", "../docker-compose.yml"), " "))}
	for _, c := range composeDocCommands(t) {
		c = strings.ReplaceAll(c, "docker compose exec -T ", "docker compose exec ")
		c = strings.ReplaceAll(c, "docker compose exec ", "compose exec -T ")
		script = append(script, strings.ReplaceAll(c, "docker compose ", "compose "), `echo "--- ok"`)
	}
	doc := exec.CommandContext(ctx, "bash", "-c", strings.Join(script, "\n"))
	doc.Env = env
	docOut, err := doc.CombinedOutput()
	if err != nil || strings.Count(string(docOut), "--- ok") != len(composeDocCommands(t)) {
		t.Fatalf("the documented commands failed: %v\n%s\n%s", err, strings.Join(script, "\n"), docOut)
	}
	if !strings.Contains(string(docOut), helloSHA256) || !strings.Contains(string(docOut), `"circuit"`) {
		t.Errorf("the documented commands did not submit a task and list peers over curl:\n%s", docOut)
	}
	// A token pasted wrong gets a JSON 401 that says what is wrong.
	tok, err := exec1("token")
	if err != nil || len(strings.TrimSpace(tok)) != 64 {
		t.Fatalf("cortexd token in node1: %q, %v", tok, err)
	}
	req, _ := http.NewRequestWithContext(ctx, "GET", fmt.Sprintf("http://127.0.0.1:%d/v1/peers", ports[0]), nil)
	req.Header.Set("Authorization", "Bearer OCI runtime exec failed: exec failed: unable to start container process")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var eb apiv1.ErrorBody
	if resp.StatusCode != http.StatusUnauthorized || json.Unmarshal(body, &eb) != nil || !strings.Contains(eb.Error.Message, "cortexd token") {
		t.Errorf("a pasted error as the token: %s %s; want a JSON 401 pointing to cortexd token", resp.Status, body)
	}
	// Every container reports healthy through the image's HEALTHCHECK.
	for _, svc := range []string{"node1", "node2", "node3"} {
		id, err := compose(ctx, "ps", "-q", svc)
		if err != nil {
			t.Fatal(err)
		}
		pollUntil(t, time.Minute, svc+" to report healthy as user 10001", func() error {
			st, err := exec.Command("docker", "inspect", "-f", "{{.State.Health.Status}} {{.Config.User}}", strings.TrimSpace(id)).Output()
			if err != nil || !strings.HasPrefix(string(st), "healthy 10001") {
				return fmt.Errorf("health and user %q (%v)", strings.TrimSpace(string(st)), err)
			}
			return nil
		})
	}
}

// buildImage stages the static binary as `make image` does and builds the
// image from the repository's Dockerfile.
func buildImage(t *testing.T, tag string) {
	t.Helper()
	ctxDir := t.TempDir()
	stage := filepath.Join(ctxDir, "build", "image")
	if err := os.MkdirAll(filepath.Join(stage, "data"), 0o755); err != nil {
		t.Fatal(err)
	}
	build := exec.Command("go", "build", "-trimpath", "-ldflags", "-s -w -X main.version=e2e", "-o", filepath.Join(stage, "cortexd"), "./cmd/cortexd")
	build.Dir = ".."
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build static binary: %v\n%s", err, out)
	}
	for name, body := range map[string]string{
		"passwd": "cortexd:x:10001:10001:cortexd:/data:/sbin/nologin\n",
		"group":  "cortexd:x:10001:\n",
	} {
		if err := os.WriteFile(filepath.Join(stage, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"Dockerfile", ".dockerignore"} {
		b, err := os.ReadFile(filepath.Join("..", f))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(ctxDir, f), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if out, err := exec.Command("docker", "build", "-t", tag, ctxDir).CombinedOutput(); err != nil {
		t.Fatalf("docker build: %v\n%s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("docker", "rmi", "-f", tag).Run() })
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}
