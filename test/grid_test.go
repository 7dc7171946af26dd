package test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"maps"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// The grid's integration tests: whole nodes (see harness_test.go) on real
// libp2p hosts over loopback, delegating tasks to each other.

// hashTask returns a hash.sha256 task over data and the output it must
// give, computed here independently of the skill.
func hashTask(t testing.TB, data []byte) (*skill.SkillTask, []byte) {
	t.Helper()
	in, err := skill.JSONInput(map[string]string{"data": base64.StdEncoding.EncodeToString(data)})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return skill.NewSkillTask("hash.sha256", in, ""), []byte(`{"sha256":"` + hex.EncodeToString(sum[:]) + `"}`)
}

// sleepTask returns a debug.sleep task of ms milliseconds.
func sleepTask(t testing.TB, ms int) *skill.SkillTask {
	t.Helper()
	in, err := skill.JSONInput(map[string]int{"ms": ms})
	if err != nil {
		t.Fatal(err)
	}
	return skill.NewSkillTask("debug.sleep", in, "")
}

// jsonTask returns a task for id with the JSON input v.
func jsonTask(t testing.TB, id reputation.SkillID, v any) *skill.SkillTask {
	t.Helper()
	in, err := skill.JSONInput(v)
	if err != nil {
		t.Fatal(err)
	}
	return skill.NewSkillTask(id, in, "")
}

func echoTask(data []byte) *skill.SkillTask {
	return skill.NewSkillTask("echo", skill.RawInput(data), "")
}

// wantMetrics fails the test unless m has these counters.
func wantMetrics(t testing.TB, who string, m grid.Metrics, submitted, completed, failed, timedOut uint64) {
	t.Helper()
	if m.Submitted != submitted || m.Completed != completed || m.Failed != failed || m.TimedOut != timedOut {
		t.Errorf("%s: submitted/completed/failed/timed out = %d/%d/%d/%d; want %d/%d/%d/%d",
			who, m.Submitted, m.Completed, m.Failed, m.TimedOut, submitted, completed, failed, timedOut)
	}
}

func TestLocalTaskExecution(t *testing.T) {
	n := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo", "hash.sha256"}})

	input := []byte("hello, grid")
	res := n.run(t, echoTask(input))
	if !res.Success || !bytes.Equal(res.Output, input) || res.ExecutedBy != n.ID || res.Attempts != 1 {
		t.Errorf("echo result: success %v, output %q, executed by %s, %d attempts; want %q from this node in 1 attempt",
			res.Success, res.Output, res.ExecutedBy, res.Attempts, input)
	}
	task, want := hashTask(t, []byte("hello"))
	res = n.run(t, task)
	if !res.Success || !bytes.Equal(res.Output, want) || res.ExecutedBy != n.ID {
		t.Errorf("hash.sha256 result: output %q, executed by %s; want %q from this node", res.Output, res.ExecutedBy, want)
	}

	m := n.Coord.Metrics()
	wantMetrics(t, "global metrics", m.Metrics, 2, 2, 0, 0)
	local, ok := m.PerNode[n.ID]
	if len(m.PerNode) != 1 || !ok {
		t.Fatalf("per-node metrics for %v; want only this node", slices.Collect(maps.Keys(m.PerNode)))
	}
	wantMetrics(t, "this node's metrics", local.Metrics, 2, 2, 0, 0)
	if local.SuccessRate() != 1 || local.MaxExec <= 0 {
		t.Errorf("this node: success rate %v, max exec %v; want 1 and a positive time", local.SuccessRate(), local.MaxExec)
	}
}

func TestRemoteTaskDelegation(t *testing.T) {
	a := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	b := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"hash.sha256"}, bootstrap: []*harnessNode{a}})
	a.awaitOffer(t, "hash.sha256", b.ID)
	if tr := a.Trust.Trust(b.ID); tr != 0.5 {
		t.Fatalf("a's trust in b before any task = %v; want neutral 0.5", tr)
	}

	task, want := hashTask(t, []byte("delegate me"))
	id := a.submit(t, task)
	res, err := a.wait(t, id)
	if err != nil {
		t.Fatalf("delegated task failed: %v", err)
	}
	if !res.Success || res.ExecutedBy != b.ID || !bytes.Equal(res.Output, want) {
		t.Fatalf("result: executed by %s, output %q; want b (%s) and %q", res.ExecutedBy, res.Output, b.ID, want)
	}
	if st, _ := a.Coord.Status(id); !slices.Equal(st.Tried, []peer.ID{b.ID}) {
		t.Errorf("a tried %v; want only b", st.Tried)
	}
	if qs := b.Coord.QueueStats(); qs.Completed != 1 {
		t.Errorf("b's queue completed %d tasks; want the 1 it ran for a", qs.Completed)
	}

	m := a.Coord.Metrics()
	wantMetrics(t, "a's global metrics", m.Metrics, 1, 1, 0, 0)
	nb, ok := m.PerNode[b.ID]
	if !ok {
		t.Fatalf("a's metrics have no entry for b")
	}
	wantMetrics(t, "a's metrics for b", nb.Metrics, 1, 1, 0, 0)
	if _, ok := m.PerNode[a.ID]; ok {
		t.Errorf("a's metrics have an entry for a, which ran nothing")
	}
	if tr := a.Trust.Trust(b.ID); tr <= 0.5 {
		t.Errorf("a's trust in b after a success = %v; want above neutral 0.5", tr)
	}
}

func TestTaskPriorityHandling(t *testing.T) {
	n := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo", "debug.sleep"}, workers: 1})

	var mu sync.Mutex
	var finished []skill.TaskID
	unsubscribe := n.Coord.Subscribe(func(ev skill.Event) {
		if ev.State.Terminal() {
			mu.Lock()
			finished = append(finished, ev.TaskID)
			mu.Unlock()
		}
	})
	defer unsubscribe()

	// The one worker runs a long sleep until it is canceled, so that every
	// later task waits in the queue.
	blocker := n.submit(t, sleepTask(t, 60_000))
	awaitCond(t, harnessWait, "the blocking sleep runs", func() bool {
		st, err := n.Coord.Status(blocker)
		return err == nil && st.State == skill.StateRunning
	})
	levels := []struct {
		name     string
		priority uint8
	}{{"low", 10}, {"normal", 96}, {"high", 160}, {"critical", 224}}
	ids := make(map[skill.TaskID]string)
	for _, l := range levels {
		ids[n.submit(t, echoTask([]byte(l.name)).WithPriority(l.priority))] = l.name
	}
	if qs := n.Coord.QueueStats(); qs.Depth != [grid.NumLevels]int{1, 1, 1, 1} || qs.InFlight != 1 {
		t.Fatalf("queue depth %v, in flight %d; want one task per level behind the running sleep", qs.Depth, qs.InFlight)
	}
	if err := n.Coord.Cancel(blocker); err != nil {
		t.Fatalf("cancel the blocking sleep: %v", err)
	}

	var results []*skill.SkillResult
	for id := range ids {
		res, err := n.wait(t, id)
		if err != nil {
			t.Fatalf("%s task failed: %v", ids[id], err)
		}
		results = append(results, res)
	}
	awaitCond(t, harnessWait, "every terminal event arrives", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(finished) == 1+len(ids)
	})
	var order []string
	mu.Lock()
	for _, id := range finished {
		if name, ok := ids[id]; ok {
			order = append(order, name)
		}
	}
	mu.Unlock()
	if want := []string{"critical", "high", "normal", "low"}; !slices.Equal(order, want) {
		t.Errorf("completion order %v; want %v", order, want)
	}
	// The results' finish times agree with the events' order.
	slices.SortFunc(results, func(x, y *skill.SkillResult) int { return x.FinishedAt.Compare(y.FinishedAt) })
	for i, res := range results {
		if got, want := string(res.Output), []string{"critical", "high", "normal", "low"}[i]; got != want {
			t.Errorf("result %d by finish time is %q; want %q", i, got, want)
		}
	}
}

func TestMetricsTracking(t *testing.T) {
	a := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo", "image.resize"}})
	b := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"hash.sha256"}, bootstrap: []*harnessNode{a}})
	a.awaitOffer(t, "hash.sha256", b.ID)

	// On a: 3 echoes succeed and 2 resizes of an image that does not decode
	// fail; on b: 4 hashes succeed and 1 of data that is not base64 fails.
	// Each failure passes the schema and fails in the skill as invalid
	// input: the user's mistake, which counts against no node.
	badImage := map[string]any{"image": base64.StdEncoding.EncodeToString([]byte("not an image")), "width": 8, "height": 8}
	type submitted struct {
		id      skill.TaskID
		succeed bool
		on      peer.ID
	}
	var tasks []submitted
	add := func(task *skill.SkillTask, succeed bool, on peer.ID) {
		tasks = append(tasks, submitted{a.submit(t, task), succeed, on})
	}
	for i := range 3 {
		add(echoTask(fmt.Appendf(nil, "echo %d", i)), true, a.ID)
	}
	for range 2 {
		add(jsonTask(t, "image.resize", badImage), false, a.ID)
	}
	for i := range 4 {
		task, _ := hashTask(t, fmt.Appendf(nil, "data %d", i))
		add(task, true, b.ID)
	}
	add(jsonTask(t, "hash.sha256", map[string]string{"data": "*** not base64 ***"}), false, b.ID)

	for i, s := range tasks {
		res, err := a.wait(t, s.id)
		switch {
		case s.succeed && err != nil:
			t.Errorf("task %d failed: %v", i, err)
		case !s.succeed && !errors.Is(err, skill.ErrInvalidInput):
			t.Errorf("task %d: error %v; want one wrapping ErrInvalidInput", i, err)
		case res.ExecutedBy != s.on:
			t.Errorf("task %d ran on %s; want %s", i, res.ExecutedBy, s.on)
		}
	}

	m := a.Coord.Metrics()
	wantMetrics(t, "global", m.Metrics, 10, 7, 0, 0)
	if m.SuccessRate() != 1 || m.FailureRate() != 0 {
		t.Errorf("global success/failure rate %v/%v; want 1/0: invalid inputs are no node's failure", m.SuccessRate(), m.FailureRate())
	}
	if len(m.PerNode) != 2 {
		t.Errorf("per-node entries for %v; want a and b", slices.Collect(maps.Keys(m.PerNode)))
	}
	for _, want := range []struct {
		name              string
		id                peer.ID
		completed, failed uint64
		successRate       float64
	}{
		{"a", a.ID, 3, 0, 1},
		{"b", b.ID, 4, 0, 1},
	} {
		nm := m.PerNode[want.id]
		wantMetrics(t, want.name, nm.Metrics, 5, want.completed, want.failed, 0)
		if nm.SuccessRate() != want.successRate {
			t.Errorf("%s: success rate %v; want %v", want.name, nm.SuccessRate(), want.successRate)
		}
	}
	// b counts the tasks it ran for a in its queue, not as its own.
	if qs := b.Coord.QueueStats(); qs.Completed != 4 || qs.Failed != 1 {
		t.Errorf("b's queue completed %d and failed %d; want 4 and 1", qs.Completed, qs.Failed)
	}
	if bm := b.Coord.Metrics(); bm.Submitted != 0 {
		t.Errorf("b's metrics count %d submitted tasks; want 0 (it submitted none)", bm.Submitted)
	}
}

func TestDiscoveryFiveNodes(t *testing.T) {
	first := newHarnessNode(t, harnessConfig{})
	nodes := []*harnessNode{first}
	for i := 2; i <= 5; i++ {
		cfg := harnessConfig{builtins: []reputation.SkillID{"echo"}, bootstrap: []*harnessNode{first}}
		if i == 5 {
			cfg.skills = []skill.Skill{taggedSkill("test.only5", "node5:")}
		}
		nodes = append(nodes, newHarnessNode(t, cfg))
	}
	second, fifth := nodes[1], nodes[4]
	second.awaitOffer(t, "test.only5", fifth.ID)

	res := second.run(t, skill.NewSkillTask("test.only5", skill.RawInput([]byte("ping")), ""))
	if res.ExecutedBy != fifth.ID || string(res.Output) != "node5:ping" {
		t.Fatalf("test.only5 ran on %s with output %q; want node 5 (%s) and %q", res.ExecutedBy, res.Output, fifth.ID, "node5:ping")
	}
	for _, n := range nodes[1:4] {
		if n.Coord.QueueStats().Enqueued != 0 {
			t.Errorf("node %s queued a task; only node 5 should have", n.ID.ShortString())
		}
	}
}

func TestCapabilityGossip(t *testing.T) {
	a := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	b := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}, bootstrap: []*harnessNode{a}})
	a.awaitOffer(t, "echo", b.ID)

	if err := b.Reg.Register(taggedSkill("test.late", "b:")); err != nil {
		t.Fatal(err)
	}
	registered := time.Now()
	a.awaitOffer(t, "test.late", b.ID)
	t.Logf("test.late routable on a %v after b registered it", time.Since(registered).Round(time.Millisecond))
	res := a.run(t, skill.NewSkillTask("test.late", skill.RawInput([]byte("x")), ""))
	if res.ExecutedBy != b.ID || string(res.Output) != "b:x" {
		t.Fatalf("test.late ran on %s with output %q; want b and %q", res.ExecutedBy, res.Output, "b:x")
	}

	left := make(chan struct{})
	var once sync.Once
	unsubscribe := a.Node.OnPeerEvent(func(ev grid.PeerEvent) {
		if ev.Kind == grid.PeerLeft && ev.Peer == b.ID {
			once.Do(func() { close(left) })
		}
	})
	defer unsubscribe()
	if err := b.Close(); err != nil {
		t.Fatalf("close b: %v", err)
	}
	// b's entry stays until its last announcement's TTL has run out.
	var lastSeen time.Time
	awaitCond(t, harnessWait, "b ages out of a's providers of test.late", func() bool {
		ps := a.Node.Providers("test.late")
		i := slices.IndexFunc(ps, func(p grid.Provider) bool { return p.Peer == b.ID })
		if i >= 0 {
			lastSeen = ps[i].LastSeen
		}
		return i < 0
	})
	gone := time.Now()
	if lastSeen.IsZero() {
		t.Logf("b had aged out already when first checked")
	} else if age := gone.Sub(lastSeen); age < harnessTTL || age > harnessTTL+3*time.Second {
		t.Errorf("b's entry went %v after its last announcement; want its TTL %v (plus polling)", age, harnessTTL)
	}
	select {
	case <-left:
	case <-time.After(harnessWait):
		t.Fatal("no PeerLeft event for b")
	}
	if _, err := a.Coord.SubmitTask(context.Background(), skill.NewSkillTask("test.late", skill.RawInput(nil), "")); !errors.Is(err, skill.ErrUnknownSkill) {
		t.Errorf("submit test.late once b aged out: %v; want ErrUnknownSkill", err)
	}
}

func TestFallbackWhenExecutorDies(t *testing.T) {
	for _, tc := range []struct {
		name string
		kill func(*harnessNode) error
	}{
		{"the executor shuts down", (*harnessNode).Close},
		{"the executor's host drops", func(h *harnessNode) error {
			err := h.Node.Close() // the connection goes first, as in a crash
			return errors.Join(err, h.Close())
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { testFallback(t, tc.kill) })
	}
}

func testFallback(t *testing.T, kill func(*harnessNode) error) {
	a := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	sleepers := map[peer.ID]*harnessNode{}
	for range 2 {
		n := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"debug.sleep"}, bootstrap: []*harnessNode{a}})
		sleepers[n.ID] = n
	}
	for id := range sleepers {
		a.awaitOffer(t, "debug.sleep", id)
	}
	var mu sync.Mutex
	terminal := map[skill.TaskID]int{}
	unsubscribe := a.Coord.Subscribe(func(ev skill.Event) {
		if ev.State.Terminal() {
			mu.Lock()
			terminal[ev.TaskID]++
			mu.Unlock()
		}
	})
	defer unsubscribe()

	const ms = 1000
	id := a.submit(t, sleepTask(t, ms))
	var chosen *harnessNode
	awaitCond(t, harnessWait, "the sleep runs on the chosen node", func() bool {
		st, err := a.Coord.Status(id)
		chosen = sleepers[st.Peer]
		return err == nil && st.State == skill.StateDelegated && chosen != nil && chosen.Exec.Busy() == 1
	})
	var survivor *harnessNode
	for pid, n := range sleepers {
		if pid != chosen.ID {
			survivor = n
		}
	}
	if err := kill(chosen); err != nil {
		t.Fatalf("close the chosen node: %v", err)
	}

	res, err := a.wait(t, id)
	if err != nil {
		t.Fatalf("task failed after its executor died: %v", err)
	}
	if !res.Success || res.ExecutedBy != survivor.ID || string(res.Output) != fmt.Sprintf(`{"slept_ms":%d}`, ms) || res.Attempts != 2 {
		t.Fatalf("result: executed by %s, output %q, %d attempts; want the survivor %s, slept_ms %d, 2 attempts",
			res.ExecutedBy, res.Output, res.Attempts, survivor.ID, ms)
	}
	if st, _ := a.Coord.Status(id); !slices.Equal(st.Tried, []peer.ID{chosen.ID, survivor.ID}) {
		t.Errorf("tried %v; want the chosen node, then the survivor", st.Tried)
	}
	// Events arrive in order: once a later task's end is seen, any second
	// end of the first would have been too.
	marker := a.submit(t, echoTask([]byte("marker")))
	awaitCond(t, harnessWait, "the marker task's end is delivered", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return terminal[marker] == 1
	})
	mu.Lock()
	defer mu.Unlock()
	if terminal[id] != 1 {
		t.Errorf("%d terminal events for the task; want exactly 1", terminal[id])
	}
}

// wantRejected fails the test unless task id, submitted on a with the
// default retries, failed with err after every attempt went to p and was
// rejected for reason: Wait's error and Status' both wrap
// ErrDelegationFailed and a *grid.RejectError with that reason.
func wantRejected(t testing.TB, a *harnessNode, id skill.TaskID, err error, p peer.ID, reason grid.RejectReason) {
	t.Helper()
	st, serr := a.Coord.Status(id)
	if serr != nil {
		t.Fatal(serr)
	}
	for what, err := range map[string]error{"Wait": err, "Status": st.Err} {
		var rej *grid.RejectError
		switch {
		case !errors.Is(err, skill.ErrDelegationFailed):
			t.Errorf("%s error %v; want one wrapping ErrDelegationFailed", what, err)
		case !errors.As(err, &rej):
			t.Errorf("%s error %v; want one wrapping a *grid.RejectError", what, err)
		case rej.Reason != reason:
			t.Errorf("%s: rejection reason %v; want %v", what, rej.Reason, reason)
		}
	}
	want := slices.Repeat([]peer.ID{p}, 1+skill.DefaultMaxRetries)
	if st.State != skill.StateFailed || !slices.Equal(st.Tried, want) {
		t.Errorf("task %v after trying %v; want failed after %d attempts on the rejecting peer", st.State, st.Tried, len(want))
	}
}

func TestRejectionQueueFull(t *testing.T) {
	a := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	b := newHarnessNode(t, harnessConfig{
		builtins: []reputation.SkillID{"debug.sleep"}, workers: 1, bootstrap: []*harnessNode{a},
		coordOpts: []skill.CoordinatorOption{skill.WithQueueOptions(grid.WithMaxPerLevel(1))},
	})
	a.awaitOffer(t, "debug.sleep", b.ID)

	// b's worker runs one sleep and its normal level holds another.
	running := b.submit(t, sleepTask(t, 60_000))
	awaitCond(t, harnessWait, "b runs its first sleep", func() bool {
		st, err := b.Coord.Status(running)
		return err == nil && st.State == skill.StateRunning
	})
	b.submit(t, sleepTask(t, 60_000))
	if qs := b.Coord.QueueStats(); qs.Depth[grid.LevelNormal] != 1 {
		t.Fatalf("b's normal level holds %d tasks; want 1 (full)", qs.Depth[grid.LevelNormal])
	}

	// b is the only candidate: each attempt goes to b and is rejected. A
	// full queue is a passing refusal, which uses up no attempt: a keeps
	// asking b, paced by the refusal's retry-after, until the task's
	// deadline.
	start := time.Now()
	id := a.submit(t, sleepTask(t, 1).WithTimeout(3*time.Second))
	_, err := a.wait(t, id)
	st, serr := a.Coord.Status(id)
	if serr != nil {
		t.Fatal(serr)
	}
	if st.State != skill.StateTimedOut || st.Err == nil || !strings.Contains(st.Err.Error(), "queue full") {
		t.Fatalf("task %v (wait: %v, status: %v); want timed out, naming its last refusal, queue full", st.State, err, st.Err)
	}
	if el := time.Since(start); el < 2*time.Second {
		t.Errorf("the task ended after %v, before its 3s deadline", el)
	}
	if n := len(st.Tried); n < 2 || n > 10 {
		t.Errorf("b was asked %d times in 3s; want a few, paced by its retry-after", n)
	}
	if tr := a.Trust.Trust(b.ID); tr != 0.5 {
		t.Errorf("a's trust in b after a rejection = %v; want neutral 0.5 (a rejection is no fault)", tr)
	}
}

func TestRejectionTrustTooLow(t *testing.T) {
	a := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	b := newHarnessNode(t, harnessConfig{
		builtins: []reputation.SkillID{"hash.sha256"}, bootstrap: []*harnessNode{a},
		// Above the neutral trust b has in a peer it knows nothing about.
		coordOpts: []skill.CoordinatorOption{skill.WithAcceptThreshold(0.6)},
	})
	a.awaitOffer(t, "hash.sha256", b.ID)

	task, _ := hashTask(t, []byte("refused"))
	id := a.submit(t, task)
	_, err := a.wait(t, id)
	wantRejected(t, a, id, err, b.ID, grid.RejectTrustTooLow)
	if qs := b.Coord.QueueStats(); qs.Enqueued != 0 {
		t.Errorf("b queued %d tasks from a peer below its threshold; want 0", qs.Enqueued)
	}
}

func TestMalformedFramesLeaveNodeHealthy(t *testing.T) {
	x := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	a := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{x}})
	raw := rawTaskClient(t, x)

	validID := grid.NewTaskID()
	requestFor := func(id grid.TaskID, skill string) []byte {
		return frameOf(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: id[:], SkillId: skill, SkillVersion: "", Input: []byte("hi"), InputKind: cortexv1.InputKind_INPUT_KIND_RAW,
			Priority: 96, DeadlineUnixMs: time.Now().Add(time.Minute).UnixMilli(), MinTrust: 0.3, Attempt: 1,
		}}})
	}
	request := func(id []byte) []byte {
		return frameOf(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
			TaskId: id, SkillId: "echo", SkillVersion: "", Input: []byte("hi"), InputKind: cortexv1.InputKind_INPUT_KIND_RAW,
			Priority: 96, DeadlineUnixMs: time.Now().Add(time.Minute).UnixMilli(), MinTrust: 0.3, Attempt: 1,
			Requester: []byte(raw.ID()),
		}}})
	}
	// Only framing errors reset the stream. A bad message in a good frame
	// is dropped, or answered with a rejecting ack if it is a request with
	// a usable ID, and the stream lives on: each such case is followed, in
	// the same write, by a valid request that must still get its echo.
	const (
		reset = iota
		dropped
		rejected
	)
	cases := []struct {
		name   string
		send   []byte
		end    int
		reject cortexv1.RejectReason // with end == rejected
	}{
		{name: "garbage bytes", send: bytes.Repeat([]byte{0xff}, 16), end: reset},
		{name: "a length prefix of 1 GiB", send: append(binary.AppendUvarint(nil, 1<<30), bytes.Repeat([]byte{0}, 64)...), end: reset},
		{name: "a body that is not an envelope", send: append(binary.AppendUvarint(nil, 8), bytes.Repeat([]byte{0xff}, 8)...), end: dropped},
		{name: "a request with a 5-byte task ID", send: request([]byte{1, 2, 3, 4, 5}), end: dropped},
		{name: "a request with the zero task ID", send: request(make([]byte, 32)), end: rejected, reject: cortexv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "a request for a skill ID no node may have", send: requestFor(grid.NewTaskID(), "Not A Skill!"), end: rejected, reject: cortexv1.RejectReason_REJECT_REASON_MALFORMED},
		{name: "an ack where requests belong", send: frameOf(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: validID[:], Accepted: true}}}), end: dropped},
	}
	// Twice over, so that more streams fail than one peer may hold open at
	// once: a failed stream must not count against its peer.
	for round := range 2 {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("round %d: %s", round+1, tc.name), func(t *testing.T) {
				send, good := tc.send, grid.NewTaskID()
				if tc.end != reset {
					send = append(append([]byte(nil), send...), request(good[:])...)
				}
				var before runtime.MemStats
				runtime.ReadMemStats(&before)
				env, err := raw.exchange(t, send)
				var after runtime.MemStats
				runtime.ReadMemStats(&after)
				if grew := after.TotalAlloc - before.TotalAlloc; grew > 256<<20 {
					t.Errorf("the process allocated %d MiB while the node read the frame", grew>>20)
				}
				if errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("the node neither answered nor reset the stream")
				}
				if tc.end == reset {
					if err == nil || !errors.Is(err, network.ErrReset) {
						t.Fatalf("node answered %v (err %v); want the stream reset", env, err)
					}
					return
				}
				if tc.end == rejected {
					if err != nil || env.GetAck() == nil || env.GetAck().GetAccepted() || env.GetAck().GetReason() != tc.reject {
						t.Fatalf("node answered %v (err %v); want a rejecting ack (%v)", env, err, tc.reject)
					}
					env, err = raw.next()
				}
				for err == nil && env.GetAck() != nil && env.GetAck().GetAccepted() && bytes.Equal(env.GetAck().GetTaskId(), good[:]) {
					env, err = raw.next()
				}
				if err != nil || env.GetResult() == nil || !bytes.Equal(env.GetResult().GetTaskId(), good[:]) || !env.GetResult().GetSuccess() {
					t.Fatalf("the valid request after the bad message got %v (err %v); want its echo on the same stream", env, err)
				}
			})
		}
	}

	// The node still serves the peer that sent all that...
	env, err := raw.exchange(t, request(validID[:]))
	for err == nil && env.GetAck() != nil && env.GetAck().GetAccepted() {
		env, err = raw.next()
	}
	if err != nil || env.GetResult() == nil || !env.GetResult().GetSuccess() || string(env.GetResult().GetOutput()) != "hi" {
		t.Fatalf("valid request after the bad ones: %v, %v; want a successful echo of %q", env, err, "hi")
	}
	// ...and other nodes.
	a.awaitOffer(t, "echo", x.ID)
	res := a.run(t, echoTask([]byte("still healthy")))
	if res.ExecutedBy != x.ID || string(res.Output) != "still healthy" {
		t.Fatalf("delegation after the bad frames ran on %s with output %q; want x and %q", res.ExecutedBy, res.Output, "still healthy")
	}
}
