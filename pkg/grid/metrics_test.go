package grid

import (
	"encoding/json"
	"math"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"
)

func TestMetricsRates(t *testing.T) {
	tests := []struct {
		name                        string
		completed, failed, timedOut int
		wantSuccess, wantFailure    float64
	}{
		{name: "no finished task gives zero rates", wantSuccess: 0, wantFailure: 0},
		{name: "only completions give a success rate of one", completed: 4, wantSuccess: 1, wantFailure: 0},
		{name: "failures and timeouts both count as failures", completed: 3, failed: 1, timedOut: 1, wantSuccess: 0.6, wantFailure: 0.4},
		{name: "only timeouts give a failure rate of one", timedOut: 2, wantSuccess: 0, wantFailure: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := NewMetricsTracker()
			node := peer.ID("node-a")
			for range tt.completed + tt.failed + tt.timedOut + 1 {
				m.RecordSubmitted(node)
			}
			for range tt.completed {
				m.RecordCompleted(node, time.Millisecond)
			}
			for range tt.failed {
				m.RecordFailed(node)
			}
			for range tt.timedOut {
				m.RecordTimedOut(node)
			}
			s := m.Snapshot()
			if got := s.SuccessRate(); !metricsNear(got, tt.wantSuccess, 1e-12) {
				t.Errorf("global SuccessRate() = %v, want %v", got, tt.wantSuccess)
			}
			if got := s.FailureRate(); !metricsNear(got, tt.wantFailure, 1e-12) {
				t.Errorf("global FailureRate() = %v, want %v", got, tt.wantFailure)
			}
			if want := uint64(tt.completed + tt.failed + tt.timedOut + 1); s.Submitted != want {
				t.Errorf("Submitted = %d, want %d", s.Submitted, want)
			}
			nm, ok := m.Node(node)
			if !ok {
				t.Fatal("Node() found nothing for a node with records")
			}
			if got := nm.SuccessRate(); !metricsNear(got, tt.wantSuccess, 1e-12) {
				t.Errorf("node SuccessRate() = %v, want %v", got, tt.wantSuccess)
			}
			if got := nm.FailureRate(); !metricsNear(got, tt.wantFailure, 1e-12) {
				t.Errorf("node FailureRate() = %v, want %v", got, tt.wantFailure)
			}
		})
	}
}

func TestMetricsExecutionTimesOnKnownInputs(t *testing.T) {
	m := NewMetricsTracker()
	node := peer.ID("node-a")
	// 1 ms .. 100 ms, in a scrambled order.
	for i := range 100 {
		m.RecordCompleted(node, time.Duration((i*37)%100+1)*time.Millisecond)
	}
	s := m.Snapshot()
	nm, _ := m.Node(node)
	for _, c := range []struct {
		name string
		got  Metrics
	}{{"global", s.Metrics}, {"per node", nm.Metrics}} {
		if c.got.MinExec != time.Millisecond || c.got.MaxExec != 100*time.Millisecond {
			t.Errorf("%s min/max = %v/%v, want 1ms/100ms", c.name, c.got.MinExec, c.got.MaxExec)
		}
		if c.got.AvgExec != 50500*time.Microsecond {
			t.Errorf("%s avg = %v, want 50.5ms", c.name, c.got.AvgExec)
		}
		// The histogram keeps two significant digits: within 1%.
		for _, q := range []struct {
			name      string
			got, want time.Duration
		}{{"p50", c.got.P50, 50 * time.Millisecond}, {"p95", c.got.P95, 95 * time.Millisecond}, {"p99", c.got.P99, 99 * time.Millisecond}} {
			if !metricsNear(float64(q.got), float64(q.want), 0.01*float64(q.want)) {
				t.Errorf("%s %s = %v, want %v within 1%%", c.name, q.name, q.got, q.want)
			}
		}
	}
}

func TestMetricsPercentilesNeverLeaveMinMax(t *testing.T) {
	m := NewMetricsTracker()
	m.RecordCompleted("a", 1234567*time.Nanosecond)
	s := m.Snapshot()
	if s.P50 != s.MinExec || s.P99 != s.MaxExec {
		t.Errorf("one sample of 1.234567ms: p50 %v p99 %v, want both equal to min/max %v", s.P50, s.P99, s.MinExec)
	}
	m.RecordCompleted("a", 3*time.Hour) // beyond the histogram's range
	s = m.Snapshot()
	if s.MaxExec != 3*time.Hour || s.P99 > s.MaxExec || s.P99 < time.Hour-time.Hour/50 {
		t.Errorf("after a 3h sample: max %v p99 %v, want max 3h and p99 near the 1h cap", s.MaxExec, s.P99)
	}
}

func TestMetricsPerNode(t *testing.T) {
	m := NewMetricsTracker()
	a, b := peer.ID("node-a"), peer.ID("node-b")
	m.RecordSubmitted(a)
	m.RecordSubmitted(a)
	m.RecordCompleted(a, 10*time.Millisecond)
	m.RecordFailed(a)
	m.RecordSubmitted(b)
	m.RecordCompleted(b, 30*time.Millisecond)
	m.RecordSubmitted("") // not yet routed: global only
	m.RecordTimedOut("")

	s := m.Snapshot()
	if len(s.PerNode) != 2 {
		t.Fatalf("PerNode has %d entries, want 2 (the empty ID must not appear): %v", len(s.PerNode), s.PerNode)
	}
	na, nb := s.PerNode[a], s.PerNode[b]
	if na.Submitted != 2 || na.Completed != 1 || na.Failed != 1 || na.AvgExec != 10*time.Millisecond {
		t.Errorf("node a = %+v, want 2 submitted, 1 completed, 1 failed, avg 10ms", na.Metrics)
	}
	if nb.Submitted != 1 || nb.Completed != 1 || nb.Failed != 0 || nb.AvgExec != 30*time.Millisecond {
		t.Errorf("node b = %+v, want 1 submitted, 1 completed, avg 30ms", nb.Metrics)
	}
	if s.Submitted != 4 || s.Completed != 2 || s.Failed != 1 || s.TimedOut != 1 {
		t.Errorf("global = %+v, want 4 submitted, 2 completed, 1 failed, 1 timed out", s.Metrics)
	}
	if s.MinExec != 10*time.Millisecond || s.MaxExec != 30*time.Millisecond || s.AvgExec != 20*time.Millisecond {
		t.Errorf("global min/max/avg = %v/%v/%v, want 10ms/30ms/20ms", s.MinExec, s.MaxExec, s.AvgExec)
	}
	if got, ok := m.Node(a); !ok || got.Metrics != na.Metrics {
		t.Errorf("Node(a) = %+v, %v; want %+v, true", got.Metrics, ok, na.Metrics)
	}
	if _, ok := m.Node("node-unknown"); ok {
		t.Error("Node() reported an unknown node as known")
	}
	if _, ok := m.Node(""); ok {
		t.Error("Node(\"\") reported the empty ID as a node")
	}
}

func TestMetricsRecentAveragesAndLastSeen(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMetricsTracker()
		node := peer.ID("node-a")
		m.RecordSubmitted(node)
		nm, _ := m.Node(node)
		if nm.RecentSuccess != 1 || nm.RecentLatency != 0 || !nm.LastSeen.IsZero() {
			t.Fatalf("before any outcome: recent success %v latency %v last seen %v; want 1, 0, zero", nm.RecentSuccess, nm.RecentLatency, nm.LastSeen)
		}
		time.Sleep(time.Minute)
		m.RecordFailed(node)
		m.RecordCompleted(node, 100*time.Millisecond)
		m.RecordCompleted(node, 200*time.Millisecond)
		nm, _ = m.Node(node)
		// success: 1 -> 0.8 (failure) -> 0.84 -> 0.872; latency: 100ms, then 100 + 0.2*100 = 120ms.
		if !metricsNear(nm.RecentSuccess, 0.872, 1e-9) {
			t.Errorf("RecentSuccess = %v, want 0.872", nm.RecentSuccess)
		}
		if nm.RecentLatency != 120*time.Millisecond {
			t.Errorf("RecentLatency = %v, want 120ms", nm.RecentLatency)
		}
		if !nm.LastSeen.Equal(time.Now()) {
			t.Errorf("LastSeen = %v, want now (%v)", nm.LastSeen, time.Now())
		}
	})
}

func TestMetricsNodePercentilesAreCachedForASecond(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		m := NewMetricsTracker()
		node := peer.ID("node-a")
		m.RecordCompleted(node, 10*time.Millisecond)
		if nm, _ := m.Node(node); nm.P50 != 10*time.Millisecond {
			t.Fatalf("first Node() p50 = %v, want 10ms", nm.P50)
		}
		for range 9 {
			m.RecordCompleted(node, 50*time.Millisecond)
		}
		if nm, _ := m.Node(node); !metricsNear(float64(nm.P50), float64(10*time.Millisecond), 0.01*float64(10*time.Millisecond)) || nm.MaxExec != 50*time.Millisecond {
			t.Errorf("Node() within a second: p50 %v max %v, want the cached 10ms and the live 50ms", nm.P50, nm.MaxExec)
		}
		time.Sleep(quantileMaxAge)
		if nm, _ := m.Node(node); !metricsNear(float64(nm.P50), float64(50*time.Millisecond), 0.01*float64(50*time.Millisecond)) {
			t.Errorf("Node() after a second: p50 %v, want 50ms", nm.P50)
		}
	})
}

func TestMetricsSnapshotIsACopy(t *testing.T) {
	m := NewMetricsTracker()
	node := peer.ID("node-a")
	m.RecordSubmitted(node)
	m.RecordCompleted(node, 5*time.Millisecond)
	s := m.Snapshot()
	before := s.PerNode[node]

	m.RecordSubmitted(node)
	m.RecordFailed(node)
	m.RecordCompleted(node, time.Second)
	m.RecordCompleted("node-b", time.Second)
	if s.Submitted != 1 || s.Completed != 1 || s.Failed != 0 || s.MaxExec != 5*time.Millisecond || len(s.PerNode) != 1 {
		t.Errorf("snapshot changed after more records: %+v, %d nodes", s.Metrics, len(s.PerNode))
	}
	if s.PerNode[node] != before {
		t.Errorf("snapshot's node entry changed: %+v, was %+v", s.PerNode[node], before)
	}

	delete(s.PerNode, node)
	if s2 := m.Snapshot(); len(s2.PerNode) != 2 || s2.Submitted != 2 || s2.Completed != 3 {
		t.Errorf("tracker changed after editing a snapshot: %+v, %d nodes", s2.Metrics, len(s2.PerNode))
	}
}

func TestMetricsConcurrentRecording(t *testing.T) {
	const workers, perWorker = 16, 500
	m := NewMetricsTracker()
	nodes := []peer.ID{"node-a", "node-b", "node-c"}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range perWorker {
				n := nodes[(w+i)%len(nodes)]
				m.RecordSubmitted(n)
				switch i % 4 {
				case 0, 1:
					m.RecordCompleted(n, time.Duration(i+1)*time.Microsecond)
				case 2:
					m.RecordFailed(n)
				case 3:
					m.RecordTimedOut(n)
				}
				if i%50 == 0 {
					_ = m.Snapshot()
				}
				_, _ = m.Node(n)
			}
		})
	}
	wg.Wait()

	s := m.Snapshot()
	total := uint64(workers * perWorker)
	if s.Submitted != total || s.Completed != total/2 || s.Failed != total/4 || s.TimedOut != total/4 {
		t.Errorf("global = %+v, want %d submitted, %d completed, %d failed, %d timed out", s.Metrics, total, total/2, total/4, total/4)
	}
	var sum uint64
	for _, nm := range s.PerNode {
		sum += nm.Completed + nm.Failed + nm.TimedOut
	}
	if sum != total {
		t.Errorf("per-node outcomes sum to %d, want %d", sum, total)
	}
	// The last completion in each worker is i = 497, recorded as 498µs.
	if s.MinExec != time.Microsecond || s.MaxExec != 498*time.Microsecond {
		t.Errorf("min/max = %v/%v, want 1µs/498µs", s.MinExec, s.MaxExec)
	}
}

func TestMetricsSnapshotJSONKeysNodesByPeerID(t *testing.T) {
	m := NewMetricsTracker()
	node := test.RandPeerIDFatal(t)
	m.RecordCompleted(node, 2*time.Millisecond)
	data, err := json.Marshal(m.Snapshot())
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var got struct {
		Completed uint64                     `json:"completed"`
		AvgExec   time.Duration              `json:"avg_exec"`
		PerNode   map[string]json.RawMessage `json:"per_node"`
		At        time.Time                  `json:"at"`
	}
	if err := json.Unmarshal(data, &got); err != nil {
		t.Fatalf("unmarshal %s: %v", data, err)
	}
	if _, ok := got.PerNode[node.String()]; !ok || len(got.PerNode) != 1 || got.Completed != 1 || got.AvgExec != 2*time.Millisecond || got.At.IsZero() {
		t.Errorf("JSON = %s; want one node keyed %s, 1 completed, avg 2ms and a time", data, node)
	}
}

func metricsNear(got, want, tol float64) bool { return math.Abs(got-want) <= tol }

func TestMetricsRestore(t *testing.T) {
	a, b := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	old := NewMetricsTracker()
	for i := range 100 {
		old.RecordSubmitted(a)
		old.RecordCompleted(a, time.Duration(i+1)*time.Millisecond)
	}
	old.RecordSubmitted(b)
	old.RecordFailed(b)
	old.RecordSubmitted(b)
	old.RecordTimedOut(b)
	old.RecordSubmitted("")
	want := old.Snapshot()
	// As the daemon saves and loads it.
	b64, err := json.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	var loaded MetricsSnapshot
	if err := json.Unmarshal(b64, &loaded); err != nil {
		t.Fatalf("decode snapshot: %v", err)
	}

	m := NewMetricsTracker()
	m.Restore(loaded)
	got := m.Snapshot()
	if got.Submitted != want.Submitted || got.Completed != want.Completed || got.Failed != want.Failed || got.TimedOut != want.TimedOut {
		t.Fatalf("restored counts %+v, want %+v", got.Metrics, want.Metrics)
	}
	ga, wa := got.PerNode[a], want.PerNode[a]
	if ga.Completed != 100 || ga.MinExec != wa.MinExec || ga.MaxExec != wa.MaxExec || ga.AvgExec != wa.AvgExec {
		t.Fatalf("node a restored as %+v, want %+v", ga.Metrics, wa.Metrics)
	}
	for _, q := range []struct {
		name      string
		got, want time.Duration
	}{{"p50", ga.P50, wa.P50}, {"p95", ga.P95, wa.P95}, {"p99", ga.P99, wa.P99}} {
		if d := q.got - q.want; d < -q.want/20 || d > q.want/20 {
			t.Errorf("%s restored as %v, want %v within 5%%", q.name, q.got, q.want)
		}
	}
	if ga.RecentSuccess != wa.RecentSuccess || ga.RecentLatency != wa.RecentLatency || ga.LastSeen.Round(0).Sub(wa.LastSeen.Round(0)).Abs() > time.Millisecond {
		t.Errorf("node a recent figures %v %v %v, want %v %v %v", ga.RecentSuccess, ga.RecentLatency, ga.LastSeen, wa.RecentSuccess, wa.RecentLatency, wa.LastSeen)
	}
	gb := got.PerNode[b]
	if gb.Failed != 1 || gb.TimedOut != 1 || gb.RecentSuccess != want.PerNode[b].RecentSuccess {
		t.Errorf("node b restored as %+v, want %+v", gb, want.PerNode[b])
	}
	// Recording goes on from the restored figures.
	m.RecordSubmitted(a)
	m.RecordCompleted(a, time.Millisecond)
	if n, _ := m.Node(a); n.Completed != 101 {
		t.Errorf("after one more completion node a has %d, want 101", n.Completed)
	}
}

func TestMetricsCountUnavailableAndRejectedApartFromFailures(t *testing.T) {
	m := NewMetricsTracker()
	a := test.RandPeerIDFatal(t)
	for range 4 {
		m.RecordSubmitted(a)
		m.RecordCompleted(a, time.Millisecond)
	}
	for range 6 { // the node was down for a while
		m.RecordSubmitted(a)
		m.RecordUnavailable(a)
	}
	m.RecordSubmitted(a)
	m.RecordRejected(a)

	n, _ := m.Node(a)
	if n.Completed != 4 || n.Failed != 0 || n.TimedOut != 0 || n.Unavailable != 6 || n.Rejected != 1 || n.Submitted != 11 {
		t.Fatalf("node = %+v; want 4 completed, 6 unavailable, 1 rejected, no failure", n.Metrics)
	}
	if n.SuccessRate() != 1 || n.FailureRate() != 0 || n.RecentSuccess != 1 {
		t.Errorf("success rate %v, failure rate %v, recent success %v; want 1, 0, 1: attempts a node never ran are not its failures",
			n.SuccessRate(), n.FailureRate(), n.RecentSuccess)
	}
	s := m.Snapshot()
	if s.Unavailable != 6 || s.Rejected != 1 {
		t.Errorf("global = %+v; want 6 unavailable, 1 rejected", s.Metrics)
	}
	b, err := json.Marshal(s)
	if err != nil {
		t.Fatal(err)
	}
	var loaded MetricsSnapshot
	if err := json.Unmarshal(b, &loaded); err != nil {
		t.Fatal(err)
	}
	r := NewMetricsTracker()
	r.Restore(loaded)
	if got := r.Snapshot(); got.Unavailable != 6 || got.Rejected != 1 || got.PerNode[a].Unavailable != 6 || got.PerNode[a].Rejected != 1 {
		t.Errorf("restored = %+v; want 6 unavailable and 1 rejected, on a", got.Metrics)
	}
}
