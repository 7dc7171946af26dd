package test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// TestPartitionLongerThanLeaseThenHeal cuts the only path between a
// requester A and a worker B, while B runs A's tasks, for longer than the
// task lease, then heals it.
//
// A reaches B only through a blackholeProxy: A's one bootstrap address for
// B is the proxy's, and the test checks, before the cut and after the
// failover, that every connection A has to B goes through it. (A does learn
// B's real addresses, from identify and the DHT, but libp2p dials only
// when no connection is up, and a blackholed connection stays up.) The cut
// stops every byte both ways without closing anything, so A sees neither a
// reset nor a close: only silence on B's task stream. A third worker C,
// connected to both directly, is given the skill once B holds every task.
//
// What it proves: with a 200 ms heartbeat interval and a lease of three,
// A gives up on B by the lease alone (the connection stays up throughout)
// and moves every task to C, which finishes them all while the partition
// still holds and long before their deadline; B, which never heard of the
// failover, finishes its copies into the partition; after the heal those
// late results reach A's end of the connection and change nothing: each
// task has exactly one terminal event and keeps C's result.
func TestPartitionLongerThanLeaseThenHeal(t *testing.T) {
	const (
		interval = 200 * time.Millisecond
		misses   = 3
		tasks    = 6
		sleepMS  = 4000
		timeout  = 60 * time.Second // far beyond the failover: it must not be what moves the tasks
	)
	orch := []grid.OrchestratorOption{
		grid.WithHeartbeatInterval(interval), grid.WithLeaseMisses(misses), grid.WithAckTimeout(2 * time.Second),
	}
	b := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"debug.sleep"}, workers: tasks, orchOpts: orch})
	proxy := newBlackholeProxy(t, loopbackTCPAddr(t, b))
	a := newHarnessNode(t, harnessConfig{orchOpts: orch, nodeOpts: []grid.NodeOption{
		grid.WithBootstrapPeers(peer.AddrInfo{ID: b.ID, Addrs: []multiaddr.Multiaddr{proxy.Multiaddr()}}),
	}})
	c := newHarnessNode(t, harnessConfig{workers: tasks, orchOpts: orch, bootstrap: []*harnessNode{a, b}})
	a.awaitOffer(t, "debug.sleep", b.ID)
	wantOnlyThroughProxy(t, a, b, proxy)

	ends := &terminalCounter{}
	defer a.Coord.Subscribe(ends.observe)()

	ids := make([]skill.TaskID, tasks)
	for i := range ids {
		ids[i] = a.submit(t, sleepTask(t, sleepMS).WithTimeout(timeout).WithMaxRetries(5))
	}
	awaitCond(t, harnessWait, fmt.Sprintf("all %d tasks run on B", tasks), func() bool {
		for _, id := range ids {
			if st, err := a.Coord.Status(id); err != nil || st.State != skill.StateDelegated || st.Peer != b.ID {
				return false
			}
		}
		return b.Exec.Busy() == tasks
	})
	if err := c.Reg.Register(builtinSkill(t, "debug.sleep")); err != nil {
		t.Fatal(err)
	}
	a.awaitOffer(t, "debug.sleep", c.ID)

	proxy.Blackhole()
	cut, forwarded := time.Now(), proxy.Forwarded()
	if busy := b.Exec.Busy(); busy != tasks {
		t.Fatalf("B runs %d tasks at the cut, want %d: they must still be in flight when the partition starts", busy, tasks)
	}

	awaitCond(t, harnessWait, "every task finishes while the partition holds", func() bool {
		return slices.IndexFunc(ids, func(id skill.TaskID) bool { _, ok := a.Coord.GetResult(id); return !ok }) < 0
	})
	took := time.Since(cut)
	if got := proxy.Forwarded(); got != forwarded {
		t.Fatalf("the proxy forwarded %d bytes during the partition", got-forwarded)
	}
	if a.Node.Host().Network().Connectedness(b.ID) != network.Connected {
		t.Errorf("A's connection to B closed during the partition; want the lease, not a closed connection, to move the tasks")
	}
	wantOnlyThroughProxy(t, a, b, proxy)
	final := make(map[skill.TaskID]skill.SkillResult, tasks)
	for _, id := range ids {
		st, err := a.Coord.Status(id)
		if err != nil {
			t.Fatal(err)
		}
		res := st.Result
		if st.State != skill.StateSucceeded || res.ExecutedBy != c.ID || string(res.Output) != fmt.Sprintf(`{"slept_ms":%d}`, sleepMS) {
			t.Errorf("task %s: %s, executed by %s, output %q, error %q; want success on C %s", id.Short(), st.State, res.ExecutedBy, res.Output, st.Error, c.ID)
		}
		if len(st.Tried) < 2 || st.Tried[0] != b.ID || st.Tried[len(st.Tried)-1] != c.ID {
			t.Errorf("task %s tried %v; want B first and C last", id.Short(), st.Tried)
		}
		if left := st.Deadline.Sub(st.FinishedAt); left < timeout/2 {
			t.Errorf("task %s finished %v before its deadline; want it moved by the lease, long before", id.Short(), left)
		}
		final[id] = *res
	}
	t.Logf("all %d tasks moved to C and finished %v after the cut (lease %v, sleep %d ms)", tasks, took.Round(time.Millisecond), misses*interval, sleepMS)

	// B never heard of the failover: it finishes its copies, whose results
	// wait in the partition.
	awaitCond(t, harnessWait, "B finishes its copies of the tasks", func() bool { return b.Exec.Busy() == 0 })
	proxy.Heal()

	// Frames on one connection arrive in order: once a task delegated to B
	// after the heal comes back, B's late results have reached A too.
	ctx, cancel := context.WithTimeout(context.Background(), harnessWait)
	defer cancel()
	res, err := a.Orch.Delegate(ctx, b.ID, &grid.RemoteTask{
		ID: grid.NewTaskID(), Skill: "debug.sleep", Input: []byte(`{"ms":1}`), InputKind: grid.InputJSON,
		Deadline: time.Now().Add(harnessWait), Requester: a.ID, Attempt: 1,
	})
	if err != nil || !res.Success {
		t.Fatalf("a task delegated to B after the heal: result %+v, error %v; want success", res, err)
	}
	if proxy.Forwarded() == forwarded {
		t.Fatal("nothing went through the proxy after the heal")
	}
	ends.flush(t, a)
	for _, id := range ids {
		if n := ends.count(id); n != 1 {
			t.Errorf("task %s has %d terminal events; want exactly 1", id.Short(), n)
		}
		got, _ := a.Coord.GetResult(id)
		if want := final[id]; got.ExecutedBy != want.ExecutedBy || !got.FinishedAt.Equal(want.FinishedAt) {
			t.Errorf("task %s's result changed after the heal: executed by %s at %v, was %s at %v",
				id.Short(), got.ExecutedBy, got.FinishedAt, want.ExecutedBy, want.FinishedAt)
		}
	}
}

// terminalCounter counts the terminal events of each task, as a
// coordinator subscriber. It is safe for concurrent use.
type terminalCounter struct {
	mu sync.Mutex
	n  map[skill.TaskID]int
}

func (tc *terminalCounter) observe(ev skill.Event) {
	if !ev.State.Terminal() {
		return
	}
	tc.mu.Lock()
	defer tc.mu.Unlock()
	if tc.n == nil {
		tc.n = make(map[skill.TaskID]int)
	}
	tc.n[ev.TaskID]++
}

func (tc *terminalCounter) count(id skill.TaskID) int {
	tc.mu.Lock()
	defer tc.mu.Unlock()
	return tc.n[id]
}

// flush runs one more task on h and waits for its terminal event: a
// subscriber gets events in order, so every event published before has
// been counted by then.
func (tc *terminalCounter) flush(t testing.TB, h *harnessNode) {
	t.Helper()
	marker := h.submit(t, sleepTask(t, 1))
	if _, err := h.wait(t, marker); err != nil {
		t.Fatalf("marker task: %v", err)
	}
	awaitCond(t, harnessWait, "the marker task's end is delivered", func() bool { return tc.count(marker) == 1 })
}

// wantOnlyThroughProxy fails the test unless a is connected to b, and only
// through p.
func wantOnlyThroughProxy(t testing.TB, a, b *harnessNode, p *blackholeProxy) {
	t.Helper()
	conns := a.Node.Host().Network().ConnsToPeer(b.ID)
	if len(conns) == 0 {
		t.Fatalf("A has no connection to B")
	}
	for _, conn := range conns {
		if !conn.RemoteMultiaddr().Equal(p.Multiaddr()) {
			t.Fatalf("A has a connection to B at %s, not through the proxy at %s: the partition would not cut it", conn.RemoteMultiaddr(), p.Multiaddr())
		}
	}
}

// loopbackTCPAddr returns h's 127.0.0.1 TCP listen address as host:port.
func loopbackTCPAddr(t testing.TB, h *harnessNode) string {
	t.Helper()
	for _, ma := range h.Node.Host().Addrs() {
		na, err := manet.ToNetAddr(ma)
		if err != nil || na.Network() != "tcp" {
			continue
		}
		if s := na.String(); strings.HasPrefix(s, "127.0.0.1:") {
			return s
		}
	}
	t.Fatalf("node %s has no 127.0.0.1 TCP address: %v", h.ID.ShortString(), h.Node.Host().Addrs())
	return ""
}

// builtinSkill returns the built-in skill id, debug.sleep included.
func builtinSkill(t testing.TB, id reputation.SkillID) skill.Skill {
	t.Helper()
	for _, s := range skill.Builtins(skill.BuiltinOptions{DebugSleep: true}) {
		if s.Descriptor().ID == id {
			return s
		}
	}
	t.Fatalf("no built-in skill %q", id)
	return nil
}
