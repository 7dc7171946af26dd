package skill

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A task that this node's full queue sends on to a peer at once must not
// look failed first: its subscribers see it queued, then delegated, then
// its real end, and never a terminal event before that.
func TestCoordinatorQueueFullFallbackPublishesNoFailure(t *testing.T) {
	ids := rtPeers(t, 2)
	a := ids[0]
	dir := rtDirectory{"test.block": {{Peer: a, Version: "1.0.0", Load: grid.Load{Capacity: 4}}}} // not connected: this node ranks first
	e := newCoEnv(t, coEnvConfig{workers: 1, queueOpts: []grid.QueueOption{grid.WithMaxPerLevel(1)}, dir: dir})
	e.del.behave[a] = coSucceedAs(a)
	// One task runs here, one waits: the next cannot fit.
	for i := range 2 {
		task := NewSkillTask("test.block", RawInput(nil), "")
		if _, err := e.c.SubmitTask(context.Background(), task); err != nil {
			t.Fatalf("SubmitTask: %v", err)
		}
		if st := e.state(t, task.ID); st.Peer != e.self {
			t.Fatalf("the router sent a filler task to %s (%s), not here", st.Peer, st.State)
		}
		if i == 0 {
			<-e.started // out of the queue: the next one fits
		}
	}
	events := make(chan Event, 64)
	unsub := e.c.Subscribe(func(ev Event) { events <- ev })
	defer unsub()
	id := e.submit(t, NewSkillTask("test.block", RawInput([]byte("x")), ""))
	res, err := e.wait(t, id)
	if err != nil || !res.Success || res.ExecutedBy != a {
		t.Fatalf("result %+v, %v; want success on the peer", res, err)
	}
	var got []TaskState
	for len(got) == 0 || !got[len(got)-1].Terminal() {
		ev := <-events
		if ev.TaskID == id {
			got = append(got, ev.State)
		}
	}
	if want := []TaskState{StateQueued, StateDelegated, StateSucceeded}; !slices.Equal(got, want) {
		t.Fatalf("events %v, want %v", got, want)
	}
	if calls := e.del.Calls(); len(calls) != 1 || calls[0].attempt != 1 {
		t.Fatalf("calls %+v, want the first attempt on the peer", calls)
	}
}

// A burst of tasks is spread over two equal peers: the router counts the
// attempts this node has sent each peer since its last announcement, not
// only the load the peer announced then.
func TestCoordinatorSpreadsABurstOverEqualPeers(t *testing.T) {
	ids := rtPeers(t, 2)
	a, b := ids[0], ids[1]
	e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(a, b)})
	release := make(chan struct{})
	hold := func(ctx context.Context, rt *grid.RemoteTask) (*grid.RemoteResult, error) {
		select {
		case <-release:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		return &grid.RemoteResult{ID: rt.ID, Success: true, Executor: a}, nil
	}
	e.del.behave[a], e.del.behave[b] = hold, hold
	const n = 20
	var tasks []TaskID
	count := map[peer.ID]int{}
	for range n {
		id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))
		tasks = append(tasks, id)
		count[e.state(t, id).Peer]++
	}
	if count[a] > n*3/4 || count[b] > n*3/4 {
		t.Fatalf("a burst of %d tasks went %d to a and %d to b; want neither over 75%%", n, count[a], count[b])
	}
	close(release)
	for _, id := range tasks {
		if _, err := e.wait(t, id); err != nil {
			t.Fatalf("Wait: %v", err)
		}
	}
	for _, p := range []peer.ID{a, b} {
		if v, ok := e.c.router.outstanding.Load(p); !ok || v.(*atomic.Int32).Load() != 0 {
			t.Fatalf("outstanding attempts on %s after every task ended: %v, want 0", p, v)
		}
	}
}

// Finding that this node does not have a skill, which SubmitTask and the
// router do for every task bound for a peer, builds no error.
func TestRegistryMissAllocatesNothing(t *testing.T) {
	ids := rtPeers(t, 1)
	r := newRtRouter(t, ids[0], nil, nil, nil, nil)
	task := NewSkillTask("remote.only", RawInput(nil), "")
	if n := testing.AllocsPerRun(100, func() {
		if ok, _ := r.localOffer(task); ok {
			t.Fatal("remote.only is local")
		}
	}); n != 0 {
		t.Fatalf("a registry miss allocates %v times, want 0", n)
	}
}

// rtCandidateDirectory lists providers as they are, candidates included,
// and records the peers it is told are no providers, leaving them out
// from then on, as grid.Node does.
type rtCandidateDirectory struct {
	mu      sync.Mutex
	provs   []grid.Provider
	refused []peer.ID
}

func (d *rtCandidateDirectory) Providers(reputation.SkillID) []grid.Provider {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.DeleteFunc(slices.Clone(d.provs), func(p grid.Provider) bool { return slices.Contains(d.refused, p.Peer) })
}

func (d *rtCandidateDirectory) NotProvider(p peer.ID) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.refused = append(d.refused, p)
}

// A candidate that turns out not to speak the task protocol costs the
// task nothing: the coordinator moves on to the next at once, without an
// attempt used up or trust charged, and tells the directory.
func TestCoordinatorMovesOnFromACandidateThatIsNoProvider(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		a, b := ids[0], ids[1]
		dir := &rtCandidateDirectory{provs: []grid.Provider{
			{Peer: a, Version: "1.0.0", Connected: true, Load: grid.Load{Capacity: 4}},                 // a candidate
			{Peer: b, Version: "1.0.0", Connected: true, Load: grid.Load{Capacity: 4}, Verified: true}, // verified, trusted less
		}}
		e := newCoEnv(t, coEnvConfig{directory: dir})
		for range 5 {
			e.trust.Record(a, "remote.only", reputation.OutcomeSuccess) // a ranks first despite the penalty
		}
		trustA := e.trust.Trust(a)
		e.del.behave[a] = coFailWith(fmt.Errorf("%w: a does not speak it", grid.ErrNotProvider))
		e.del.behave[b] = coSucceedAs(b)
		start := time.Now()
		// One attempt allowed: the candidate that is no provider must not use it up.
		task := NewSkillTask("remote.only", RawInput(nil), "").WithRetry(RetryPolicy{MaxAttempts: 1})
		res, err := e.wait(t, e.submit(t, task))
		if err != nil || res.ExecutedBy != b {
			t.Fatalf("Wait = %+v, %v; want success on b", res, err)
		}
		if calls := e.del.Calls(); len(calls) != 2 || calls[0].peer != a {
			t.Fatalf("calls %+v; want a first, then b", calls)
		}
		if d := time.Since(start); d != 0 {
			t.Errorf("moving on from a candidate that is no provider took %v, want no backoff", d)
		}
		if got := e.trust.Trust(a); got != trustA {
			t.Errorf("trust of the candidate moved from %v to %v", trustA, got)
		}
		if !slices.Contains(dir.refused, a) {
			t.Error("the directory was not told that a is no provider")
		}
		for _, st := range e.c.Breakers() {
			if st.Peer == a && st.Failures != 0 {
				t.Errorf("a's breaker counted %d failures; want none", st.Failures)
			}
		}
	})
}
