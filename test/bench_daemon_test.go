package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// The task path as an operator runs it: two `cortexd daemon` processes on
// a private network (the config every test daemon gets, plus a swarm key;
// each peer gets the known limits, as every member of a private network
// does by default), each with its store, router, admission policy and
// per-peer rate and byte limits on. Tasks are
// submitted and awaited through node 1's HTTP API, as `cortexd task
// submit --wait` does, echo with a 200-byte input:
//
//	make bench-daemon
//	go test -run XXX -bench Daemon -benchtime 2000x ./test/
//
// The baseline, measured in the same run, is the same task submitted to
// node 2, which runs it itself: "local" (API, store, queue, executor).
// "remote" adds routing on node 1, the libp2p task stream, node 2's
// admission, and the result's way back; its x-local figures are the ratio.
func BenchmarkDaemonEcho(b *testing.B) {
	bin := cortexdBinary(b)
	base := b.TempDir()
	repos := []string{filepath.Join(base, "n1"), filepath.Join(base, "n2")}
	inits := [][]string{{"--swarm-key"}, {"--swarm-key-from", filepath.Join(repos[0], "swarm.key")}}
	configs := []string{privateDaemonConfig(""), privateDaemonConfig("echo")}
	for i, r := range repos {
		if code, _, stderr := runCLI(b, bin, append([]string{"--repo", r, "init"}, inits[i]...)...); code != 0 {
			b.Fatalf("init node %d: exit %d: %s", i+1, code, stderr)
		}
		cfg := bytes.Replace([]byte(configs[i]), []byte("level: debug"), []byte("level: warn"), 1)
		if err := os.WriteFile(filepath.Join(r, "config.yaml"), cfg, 0o600); err != nil {
			b.Fatal(err)
		}
	}
	startDaemon(b, bin, repos[0])
	c1 := repoClient(b, repos[0])
	startDaemon(b, bin, repos[1], "--bootstrap", daemonLoopbackAddr(b, c1))
	c2 := repoClient(b, repos[1])
	ctx := context.Background()
	pollUntil(b, 30*time.Second, "node 1 to learn node 2's echo", func() error {
		skills, err := c1.Skills(ctx)
		if err != nil {
			return err
		}
		for _, s := range skills {
			if s.ID == "echo" && len(s.Providers) > 0 {
				return nil
			}
		}
		return fmt.Errorf("no provider of echo yet")
	})
	id2, err := c2.ID(ctx)
	if err != nil {
		b.Fatal(err)
	}
	local := daemonEcho(c2, id2.ID)
	remote := daemonEcho(c1, id2.ID)

	var localP50 time.Duration
	b.Run("local-serial", func(b *testing.B) { localP50 = benchSerial(b, local) })
	b.Run("remote-serial", func(b *testing.B) {
		p50 := benchSerial(b, remote)
		if localP50 > 0 {
			b.ReportMetric(float64(p50)/float64(localP50), "x-local-p50")
		}
	})
	var localRate float64
	b.Run("local-64", func(b *testing.B) { localRate = benchConcurrent(b, 64, local) })
	b.Run("remote-64", func(b *testing.B) {
		r := benchConcurrent(b, 64, remote)
		if localRate > 0 {
			b.ReportMetric(r/localRate, "x-local-rate")
		}
	})
}

// daemonEcho returns an operation that submits one echo task through c,
// waits for it, and checks that node want ran it and gave the input back.
func daemonEcho(c *client.Client, want string) func() error {
	input := bytes.Repeat([]byte{'x'}, benchInput)
	ctx := context.Background()
	return func() error {
		t, err := c.Submit(ctx, apiv1.SubmitRequest{Skill: "echo", InputBase64: input})
		if err != nil {
			return fmt.Errorf("submit echo: %w", err)
		}
		if !apiv1.Terminal(t.State) {
			if t, err = c.Wait(ctx, t.ID); err != nil {
				return fmt.Errorf("wait for echo: %w", err)
			}
		}
		if t.State != apiv1.StateSucceeded || t.Result == nil {
			return fmt.Errorf("echo task %s ended %s: %+v", t.ID, t.State, t.Error)
		}
		if t.Result.ExecutedBy != want || len(t.Result.OutputBytes()) != benchInput {
			return fmt.Errorf("echo ran on %s with %d bytes of output; want %s and %d", t.Result.ExecutedBy, len(t.Result.OutputBytes()), want, benchInput)
		}
		return nil
	}
}

// benchSerial runs op b.N times, one at a time, and reports the p50 and
// p99 latency; it returns the p50.
func benchSerial(b *testing.B, op func() error) time.Duration {
	lat := make([]time.Duration, 0, b.N)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		lat = append(lat, time.Since(start))
	}
	b.StopTimer()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p50, p99 := lat[len(lat)/2], lat[len(lat)*99/100]
	b.ReportMetric(float64(p50.Microseconds()), "p50-us")
	b.ReportMetric(float64(p99.Microseconds()), "p99-us")
	return p50
}

// benchConcurrent runs op b.N times from n goroutines and reports the
// rate; it returns tasks per second.
func benchConcurrent(b *testing.B, n int, op func() error) float64 {
	var next atomic.Int64
	var wg sync.WaitGroup
	var once sync.Once
	var failed error
	b.ResetTimer()
	start := time.Now()
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					once.Do(func() { failed = err })
					return
				}
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	b.StopTimer()
	if failed != nil {
		b.Fatal(failed)
	}
	r := float64(b.N) / el.Seconds()
	b.ReportMetric(r, "tasks/s")
	return r
}
