package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
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
func TestContainerComposeGrid(t *testing.T) {
	if os.Getenv("CORTEX_CONTAINER_TEST") != "1" {
		t.Skip("set CORTEX_CONTAINER_TEST=1 to build the image and run the compose grid (needs docker and docker-compose)")
	}
	for _, tool := range []string{"docker", "docker-compose"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not found", tool)
		}
	}
	image := fmt.Sprintf("cortexd:e2e-%d", os.Getpid())
	buildImage(t, image)

	project := fmt.Sprintf("cortexde2e%d", os.Getpid())
	env := append(os.Environ(), "CORTEXD_IMAGE="+image)
	for i := 1; i <= 3; i++ {
		env = append(env, fmt.Sprintf("CORTEXD_NODE%d_PORT=%d", i, freeTCPPort(t)))
	}
	compose := func(ctx context.Context, args ...string) (string, error) {
		cmd := exec.CommandContext(ctx, "docker-compose", append([]string{"-p", project, "-f", "../docker-compose.yml"}, args...)...)
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
