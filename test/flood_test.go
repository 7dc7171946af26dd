package test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// TestFloodFromOnePeer has a peer F send node N valid task requests (4 KiB
// inputs) from 256 goroutines as fast as N answers them, ignoring every
// rejection and its retry hint, while a well-behaved peer G submits 50
// tasks that only N can run. N admits F's requests at its per-peer rate
// (200/s, burst 100) and rejects the rest as rate limited, without cutting
// F off; G's tasks, on their own budget, all succeed on N at the first
// attempt; and the heap of the whole process (the three nodes and the
// flood's goroutines) stays under 512 MiB throughout.
func TestFloodFromOnePeer(t *testing.T) {
	const (
		peerRate    = 200 // requests/s per peer on N
		peerBurst   = 100 // at least G's 50 at once
		flooders    = 256
		goodTasks   = 50
		heapBound   = 512 << 20
		sampleEvery = 50 * time.Millisecond
	)
	n := newHarnessNode(t, harnessConfig{
		builtins: []reputation.SkillID{"echo"},
		orchOpts: []grid.OrchestratorOption{grid.WithPeerPolicy(grid.FixedLimits{Rate: rate.Limit(peerRate), Burst: peerBurst, MaxTasks: grid.DefaultMaxInFlightPerPeer, MaxBytes: grid.DefaultPeerMaxBytes})},
	})
	f := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{n}})
	g := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{n}})
	g.awaitOffer(t, "echo", n.ID)

	fl := startFlood(t, f, n, flooders)
	heap := sampleHeap(t, sampleEvery)
	awaitCond(t, harnessWait, "N rate-limits F", func() bool { return fl.limited.Load() > 0 })

	// G's tasks, submitted together in the middle of the flood.
	ids := make([]skill.TaskID, goodTasks)
	for i := range ids {
		ids[i] = g.submit(t, echoTask(fmt.Appendf(nil, "good %d", i)).WithTimeout(harnessWait))
	}
	for i, id := range ids {
		res, err := g.wait(t, id)
		if err != nil {
			t.Errorf("G's task %d failed during the flood: %v", i, err)
			continue
		}
		if res.ExecutedBy != n.ID || string(res.Output) != fmt.Sprintf("good %d", i) || res.Attempts != 1 {
			t.Errorf("G's task %d: executed by %s in %d attempts, output %q; want N's echo at the first attempt", i, res.ExecutedBy, res.Attempts, res.Output)
		}
	}
	// Measure the rate and the heap over a fair span: two seconds' worth
	// of F's requests past the burst.
	awaitCond(t, harnessWait, "N admits two seconds' worth of F's requests past the burst", func() bool {
		return fl.admitted.Load() >= peerBurst+2*peerRate
	})
	took := fl.stop()
	maxHeap := heap.stop()

	admitted, limited, other := fl.admitted.Load(), fl.limited.Load(), fl.other.Load()
	t.Logf("flood of %v: F's requests admitted %d, rate limited %d, other errors %d; max heap in use %d MiB",
		took.Round(time.Millisecond), admitted, limited, other, maxHeap>>20)
	if limited == 0 {
		t.Error("none of F's requests was rate limited")
	}
	if most := peerBurst + int64(peerRate*took.Seconds()*1.1) + 10; admitted > most {
		t.Errorf("N admitted %d of F's requests in %v; its rate limit allows at most %d", admitted, took, most)
	}
	if admitted == 0 {
		t.Error("N admitted none of F's requests; want it slowed to the rate, not cut off")
	}
	if other > 0 {
		t.Errorf("%d of F's requests failed other than by a rate limit (first: %v)", other, fl.firstOther())
	}
	if maxHeap >= heapBound {
		t.Errorf("heap in use reached %d MiB during the flood; want under %d MiB", maxHeap>>20, heapBound>>20)
	}
}

// floodInput is the size of each flood request's input: enough that the
// flood moves tens of MB/s, which a node that buffered what it cannot
// admit would feel at once.
const floodInput = 4 << 10

// flood is F delegating echo tasks to N in a loop from many goroutines,
// counting how each ended.
type flood struct {
	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup

	admitted, limited, other atomic.Int64
	otherErr                 atomic.Pointer[error]
}

// startFlood starts the flood; t.Cleanup stops it if the test ends first.
func startFlood(t testing.TB, from, to *harnessNode, goroutines int) *flood {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	fl := &flood{start: time.Now(), cancel: cancel}
	for i := range goroutines {
		fl.wg.Go(func() {
			input := fmt.Appendf(make([]byte, 0, floodInput), "flood %d ", i)
			input = append(input, make([]byte, floodInput-len(input))...)
			for ctx.Err() == nil {
				task := &grid.RemoteTask{
					ID: grid.NewTaskID(), Skill: "echo", Input: input, InputKind: grid.InputRaw,
					Deadline: time.Now().Add(harnessWait), Requester: from.ID, Attempt: 1,
				}
				res, err := from.Orch.Delegate(ctx, to.ID, task)
				fl.count(ctx, res, err)
			}
		})
	}
	t.Cleanup(func() { fl.stop() })
	return fl
}

func (fl *flood) count(ctx context.Context, res *grid.RemoteResult, err error) {
	var rej *grid.RejectError
	switch {
	case err == nil && res.Success:
		fl.admitted.Add(1)
	case errors.As(err, &rej) && rej.Reason == grid.RejectRateLimited:
		fl.limited.Add(1)
	case ctx.Err() != nil: // stopped mid-request
	default:
		if err == nil {
			err = fmt.Errorf("task failed on the node: code %v: %s", res.ErrorCode, res.ErrorMessage)
		}
		fl.other.Add(1)
		fl.otherErr.CompareAndSwap(nil, &err)
	}
}

// stop ends the flood, waits for its goroutines and returns how long it ran.
func (fl *flood) stop() time.Duration {
	fl.cancel()
	fl.wg.Wait()
	return time.Since(fl.start)
}

func (fl *flood) firstOther() error {
	if p := fl.otherErr.Load(); p != nil {
		return *p
	}
	return nil
}

// heapSampler records the largest HeapInuse it sees.
type heapSampler struct {
	stopc chan struct{}
	done  chan struct{}
	max   uint64
}

// sampleHeap reads runtime.MemStats every period until stop.
func sampleHeap(t testing.TB, period time.Duration) *heapSampler {
	h := &heapSampler{stopc: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(h.done)
		tick := time.NewTicker(period)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			h.max = max(h.max, ms.HeapInuse)
			select {
			case <-h.stopc:
				return
			case <-tick.C:
			}
		}
	}()
	t.Cleanup(func() { h.stop() })
	return h
}

// stop ends the sampling and returns the largest HeapInuse seen. It is
// idempotent.
func (h *heapSampler) stop() uint64 {
	select {
	case <-h.stopc:
	default:
		close(h.stopc)
	}
	<-h.done
	return h.max
}
