package test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOpsMakeRunEndsQuietlyOnCtrlC runs `make run` as a terminal would,
// in its own process group, and sends the group SIGINT as Ctrl-C does:
// the grid stops and make reports no error.
func TestOpsMakeRunEndsQuietlyOnCtrlC(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cortexd with make and runs a devnet")
	}
	if _, err := exec.LookPath("make"); err != nil {
		t.Skip("make not found")
	}
	cmd := exec.Command("make", "--no-print-directory", "run", "NODES=2", "BIN="+filepath.Join(t.TempDir(), "cortexd"))
	cmd.Dir = ".."
	var out logBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		select {
		case <-done:
		case <-time.After(10 * time.Second):
		}
	})
	deadline := time.After(5 * time.Minute) // the build may be slow on a busy machine
	for !strings.Contains(out.String(), "Ctrl-C stops them") {
		select {
		case err := <-done:
			t.Fatalf("make run ended before the grid was up: %v\n%s", err, out.String())
		case <-deadline:
			t.Fatalf("the grid was not up after 5 minutes:\n%s", out.String())
		case <-time.After(100 * time.Millisecond):
		}
	}
	for _, want := range []string{"API=$(cat $CORTEXD_PATH/api)", "curl -s $API/v1/tasks", "Dashboards (open in a browser", "/ui/\n"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("devnet's printout lacks %q:\n%s", want, out.String())
		}
	}
	if err := syscall.Kill(-cmd.Process.Pid, syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		t.Fatalf("make run did not end within a minute of Ctrl-C:\n%s", out.String())
	}
	text := out.String()
	if !strings.Contains(text, "cortexd devnet: stopping") {
		t.Errorf("the devnet did not stop on Ctrl-C:\n%s", text)
	}
	if strings.Contains(text, "make: ***") || strings.Contains(text, "Error") || strings.Contains(text, "exit status") {
		t.Errorf("Ctrl-C on make run ended with an error report:\n%s", text)
	}
}
