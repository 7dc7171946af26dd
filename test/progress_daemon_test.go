//go:build linux

package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// TestDaemonProgressOfADelegatedTaskReachesTheRequester runs two daemons:
// node 1 has only echo, node 2 has debug.sleep. A 1.5 s sleep submitted
// to node 1 runs on node 2, which reports progress every 100 ms over the
// task stream; node 1's GET /v1/tasks/{id} and /v1/events show it rising
// while the task is delegated, and the CLI's --wait, whose stderr is not a
// terminal here, prints no progress bar and only the result on stdout.
func TestDaemonProgressOfADelegatedTaskReachesTheRequester(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	repos := []string{initDaemonRepo(t, bin, "echo"), initDaemonRepo(t, bin, "debug.sleep")}
	startDaemon(t, bin, repos[0])
	c1 := repoClient(t, repos[0])
	startDaemon(t, bin, repos[1], "--bootstrap", daemonLoopbackAddr(t, c1))
	id2, err := repoClient(t, repos[1]).ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pollUntil(t, 30*time.Second, "node 1 to learn that node 2 has debug.sleep", func() error {
		skills, err := c1.Skills(ctx)
		if err != nil {
			return err
		}
		for _, s := range skills {
			if s.ID == "debug.sleep" && len(s.Providers) > 0 {
				return nil
			}
		}
		return fmt.Errorf("no provider of debug.sleep yet")
	})

	task, err := c1.Submit(ctx, apiv1.SubmitRequest{Skill: "debug.sleep", Input: []byte(`{"ms":1500}`), Timeout: apiv1.Duration(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	events, err := c1.Events(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer events.Close()
	// GET /v1/tasks/{id}, polled while the task runs.
	var polled []float64
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for {
			got, err := c1.Task(ctx, task.ID)
			if err != nil || apiv1.Terminal(got.State) {
				return
			}
			if p := got.Progress; p != nil && got.State == apiv1.StateDelegated {
				if len(polled) == 0 || polled[len(polled)-1] != p.Fraction {
					polled = append(polled, p.Fraction)
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
	}()
	var streamed []float64
	var final *apiv1.Task
	for final == nil {
		ev, err := events.Next()
		if err != nil {
			t.Fatalf("event stream: %v (progress so far %v)", err, streamed)
		}
		switch {
		case ev.Task == nil || ev.Task.ID != task.ID:
			t.Fatalf("event %+v is not about task %s", ev, task.ID)
		case ev.Type == "progress":
			p := ev.Task.Progress
			if p == nil || ev.Task.State != apiv1.StateDelegated || ev.Task.Node != id2.ID || !strings.HasPrefix(p.Message, "slept ") {
				t.Fatalf("progress event %+v (progress %+v), want a report of the task delegated to node 2", ev, p)
			}
			streamed = append(streamed, p.Fraction)
		case apiv1.Terminal(ev.Task.State):
			final = ev.Task
		}
	}
	<-pollDone
	if final.State != apiv1.StateSucceeded || final.Result == nil || final.Result.ExecutedBy != id2.ID {
		t.Fatalf("task ended %+v, want success on node 2", final)
	}
	for what, fs := range map[string][]float64{"/v1/events": streamed, "GET /v1/tasks/{id}": polled} {
		if len(fs) < 4 {
			t.Errorf("%s showed progress %v, want at least 4 reports over a 1.5 s sleep reported every 100 ms", what, fs)
			continue
		}
		for i := 1; i < len(fs); i++ {
			if fs[i] <= fs[i-1] || fs[i] > 1 {
				t.Errorf("%s showed progress %v: not rising within [0, 1]", what, fs)
				break
			}
		}
	}
	got, err := c1.Task(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Progress == nil || got.Progress.Fraction < 0.8 || got.Progress.UpdatedAt.IsZero() {
		t.Errorf("finished task's progress %+v, want the last report (0.8 or more)", got.Progress)
	}

	// The CLI with stderr not a terminal: the result only, no bar.
	code, stdout, stderr := runCLI(t, bin, "--repo", repos[0], "task", "submit", "debug.sleep", "--input", `{"ms":600}`, "--wait")
	var compact bytes.Buffer
	if code != 0 || json.Compact(&compact, []byte(stdout)) != nil || compact.String() != `{"slept_ms":600}` {
		t.Fatalf("task submit --wait: exit %d, stdout %q, stderr %q; want the result alone", code, stdout, stderr)
	}
	if strings.Contains(stderr, "\r") || strings.Contains(stderr, "%") {
		t.Errorf("stderr %q has a progress bar though it is not a terminal", stderr)
	}

	// task wait with stderr a terminal: the bar is drawn there.
	task, err = c1.Submit(ctx, apiv1.SubmitRequest{Skill: "debug.sleep", Input: []byte(`{"ms":1200}`), Timeout: apiv1.Duration(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	stdout, term := runCLIOnTerminal(t, bin, "--repo", repos[0], "task", "wait", task.ID)
	compact.Reset()
	if json.Compact(&compact, []byte(stdout)) != nil || compact.String() != `{"slept_ms":1200}` {
		t.Errorf("task wait on a terminal: stdout %q, want the result alone", stdout)
	}
	if !strings.Contains(term, "] ") || !strings.Contains(term, "% slept ") || !strings.Contains(term, "#") {
		t.Errorf("task wait on a terminal drew no progress bar; the terminal got %q", lastLines(term, 5))
	}
}

// runCLIOnTerminal runs a client command with its stderr on a new
// pseudo-terminal and its stdout on a pipe, and returns both outputs.
func runCLIOnTerminal(t *testing.T, bin string, args ...string) (stdout, term string) {
	t.Helper()
	master, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	defer master.Close()
	fd := int(master.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil {
		t.Fatalf("unlock pty: %v", err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN)
	if err != nil {
		t.Fatalf("pty number: %v", err)
	}
	slave, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("open pty: %v", err)
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, slave
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	slave.Close() // the child holds it
	read := make(chan string)
	go func() {
		b, _ := io.ReadAll(master) // EIO once the child has closed its end
		read <- string(b)
	}()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("%v: %v", args, err)
		}
	case <-time.After(time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("%v did not finish in a minute", args)
	}
	return out.String(), <-read
}
