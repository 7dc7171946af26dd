package store

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// The crash test runs its child half in a copy of the test binary, which
// kills itself with SIGKILL while writes are in flight.
const crashDirEnv = "CORTEX_STORE_CRASH_DIR"

const (
	crashQuiet  = 200  // tasks 0..199 written before the storm; odd ones finished
	crashStormN = 1000 // tasks 1000.. accepted during the storm
	crashKillAt = 300  // acknowledged storm accepts before the kill
)

func TestAcceptedTasksSurviveKill9(t *testing.T) {
	if dir := os.Getenv(crashDirEnv); dir != "" {
		crashChild(dir) // never returns
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestAcceptedTasksSurviveKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashDirEnv+"="+dir)
	var out, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("child: %v, want death by SIGKILL\nstdout:\n%s\nstderr:\n%s", err, out.String(), stderr.String())
	}
	acked := map[int]bool{}
	sc := bufio.NewScanner(&out)
	for sc.Scan() {
		if n, ok := strings.CutPrefix(sc.Text(), "acked "); ok {
			i, err := strconv.Atoi(n)
			if err != nil {
				t.Fatalf("child wrote %q", sc.Text())
			}
			acked[i] = true
		}
	}
	if !acked[-1] || len(acked) < crashKillAt {
		t.Fatalf("child acknowledged %d writes (quiet phase done: %v); want the quiet phase and %d more", len(acked), acked[-1], crashKillAt)
	}

	s := openStore(t, dir) // the dead child's lock is gone with it
	for n := range acked {
		if n < 0 {
			continue
		}
		if _, err := s.Get(taskID(n)); err != nil {
			t.Fatalf("task %d, accepted before the kill: %v", n, err)
		}
	}
	live, err := s.Recover()
	if err != nil {
		t.Fatalf("recover: %v", err)
	}
	quietLive := 0
	for _, r := range live {
		n := int(r.ID[0])<<16 | int(r.ID[1])<<8 | int(r.ID[2])
		switch {
		case r.State.Terminal():
			t.Fatalf("recovered task %d in state %s", n, r.State)
		case n < crashQuiet && n%2 == 1:
			t.Fatalf("recovered task %d, finished before the kill", n)
		case n < crashQuiet:
			quietLive++
		}
	}
	if quietLive != crashQuiet/2 {
		t.Fatalf("recovered %d of the %d live tasks of the quiet phase", quietLive, crashQuiet/2)
	}
	for n := 1; n < crashQuiet; n += 2 {
		r, err := s.Get(taskID(n))
		if err != nil || r.State != StateSucceeded || string(r.Result.Output) != fmt.Sprint("out ", n) {
			t.Fatalf("finished task %d after the kill: %+v, %v", n, r, err)
		}
	}
}

// crashChild writes a quiet phase, then accepts from 64 goroutines and
// kills itself once crashKillAt of those accepts have returned. Each line
// "acked N" is printed only after the write of task N returned.
func crashChild(dir string) {
	s, err := Open(dir, WithLogger(quiet))
	if err != nil {
		fmt.Fprintln(os.Stderr, "open:", err)
		os.Exit(2)
	}
	ctx := context.Background()
	for n := range crashQuiet {
		if err := s.Accept(ctx, sampleTask(n, "")); err != nil {
			fmt.Fprintln(os.Stderr, "accept:", err)
			os.Exit(2)
		}
		if n%2 == 1 {
			res := &Result{Success: true, Output: []byte(fmt.Sprint("out ", n))}
			if err := s.Update(ctx, Transition{ID: taskID(n), State: StateSucceeded, Attempt: 1, Result: res}); err != nil {
				fmt.Fprintln(os.Stderr, "update:", err)
				os.Exit(2)
			}
		}
	}
	var outMu sync.Mutex
	ack := func(n int) {
		outMu.Lock()
		_, _ = os.Stdout.WriteString("acked " + strconv.Itoa(n) + "\n") // unbuffered: in the pipe at once
		outMu.Unlock()
	}
	ack(-1)
	var count atomic.Int64
	var next atomic.Int64
	for range 64 {
		go func() {
			for {
				n := crashStormN + int(next.Add(1))
				if err := s.Accept(ctx, sampleTask(n, "")); err != nil {
					fmt.Fprintln(os.Stderr, "storm accept:", err)
					os.Exit(2)
				}
				ack(n)
				if count.Add(1) == crashKillAt {
					_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
				}
			}
		}()
	}
	select {}
}
