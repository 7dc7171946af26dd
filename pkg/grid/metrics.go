package grid

import (
	"encoding/json"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"

	hdrhistogram "github.com/HdrHistogram/hdrhistogram-go"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Execution-time histograms use hdrhistogram-go, the Go port of Gil Tene's
// HDR Histogram: it is maintained, records in O(1) with no allocation, keeps
// a fixed relative error over the whole range (so p99 of a 2 ms task and of a
// 200 s task are both right to 1%), and merges exactly, which is how the
// global histogram is built from the per-node ones. A reservoir sample or a
// hand-rolled bucket array would give up one of those.
//
// Values are nanoseconds, resolved to 1 µs at the low end, up to one hour
// (longer times are recorded as one hour), with two significant digits: a
// histogram then takes about 27 KB, allocated on a node's first completion.
const (
	histLowest  = int64(time.Microsecond)
	histHighest = int64(time.Hour)
	histDigits  = 2
)

// Recent-behaviour averages: each new outcome or execution time has weight
// ewmaAlpha, so roughly the last 1/ewmaAlpha tasks dominate.
const ewmaAlpha = 0.2

// quantileMaxAge bounds how stale the percentiles returned by Node may be.
const quantileMaxAge = time.Second

// Metrics counts tasks and summarizes their execution times.
//
// MinExec, MaxExec and AvgExec are exact; P50, P95 and P99 come from a
// histogram and are within 1% of the true value (and within [MinExec,
// MaxExec]). All execution-time fields are zero until a task has completed.
//
// Failed and TimedOut count the node's own faults: work it ran and failed,
// returned wrong, or did not finish in time. Unavailable and Rejected count
// attempts the node never ran: it could not be reached or went away
// (Unavailable), or it refused them or gave them back unrun: busy, rate
// limiting, shutting down, without the skill (Rejected). Neither is in the
// success or failure rate, so that a node that was down for a while still
// reports how well it does the work it takes. Attempts that end for the
// user's own reasons (invalid input, a cancel, a deadline that passed
// before the task left this node's queue) are in no count but Submitted.
type Metrics struct {
	Submitted   uint64 `json:"submitted"`
	Completed   uint64 `json:"completed"`
	Failed      uint64 `json:"failed"`
	TimedOut    uint64 `json:"timed_out"`
	Unavailable uint64 `json:"unavailable"`
	Rejected    uint64 `json:"rejected"`
	// Retried counts the submitted attempts that retried a failed one.
	Retried uint64 `json:"retried"`

	MinExec time.Duration `json:"min_exec"`
	MaxExec time.Duration `json:"max_exec"`
	AvgExec time.Duration `json:"avg_exec"`
	P50     time.Duration `json:"p50"`
	P95     time.Duration `json:"p95"`
	P99     time.Duration `json:"p99"`
}

// Finished returns Completed + Failed + TimedOut.
func (m Metrics) Finished() uint64 { return m.Completed + m.Failed + m.TimedOut }

// SuccessRate returns Completed / (Completed + Failed + TimedOut), or 0 when
// no task has finished.
func (m Metrics) SuccessRate() float64 {
	n := m.Finished()
	if n == 0 {
		return 0
	}
	return float64(m.Completed) / float64(n)
}

// FailureRate returns (Failed + TimedOut) / (Completed + Failed + TimedOut),
// or 0 when no task has finished.
func (m Metrics) FailureRate() float64 {
	n := m.Finished()
	if n == 0 {
		return 0
	}
	return float64(m.Failed+m.TimedOut) / float64(n)
}

// NodeMetrics is what the tracker knows about one node.
type NodeMetrics struct {
	Metrics

	// RecentSuccess is an exponentially weighted moving average of outcomes
	// (1 for a completion, 0 for a failure or a timeout), each new outcome
	// weighing 0.2. It starts at 1 for a node with no outcome yet: an untried
	// node is not ranked below one with known failures, and trust, not this
	// figure, is what keeps bad nodes out.
	RecentSuccess float64 `json:"recent_success"`
	// RecentLatency is an exponentially weighted moving average of execution
	// times, each new one weighing 0.2; the first completion sets it. It is 0
	// until the node has completed a task: callers must read 0 as unknown.
	RecentLatency time.Duration `json:"recent_latency"`
	// LastSeen is when the node last answered: a completion, failure,
	// timeout or rejection was recorded for it; zero if none was.
	LastSeen time.Time `json:"last_seen"`
}

// MetricsSnapshot is a copy of a tracker's figures at one moment. The
// global Metrics are the sums over every node, plus tasks recorded with an
// empty node ID (which appear in no PerNode entry).
type MetricsSnapshot struct {
	Metrics
	PerNode map[peer.ID]NodeMetrics `json:"per_node"`
	At      time.Time               `json:"at"`
}

// MarshalJSON writes the snapshot with PerNode keyed by base58 peer IDs:
// encoding/json would otherwise write a peer.ID key as its raw bytes.
func (s MetricsSnapshot) MarshalJSON() ([]byte, error) {
	type plain MetricsSnapshot // without this method
	perNode := make(map[string]NodeMetrics, len(s.PerNode))
	for p, nm := range s.PerNode {
		perNode[p.String()] = nm
	}
	return json.Marshal(struct {
		plain
		PerNode map[string]NodeMetrics `json:"per_node"`
	}{plain(s), perNode})
}

// UnmarshalJSON reads what MarshalJSON writes, with PerNode keyed by
// base58 peer IDs.
func (s *MetricsSnapshot) UnmarshalJSON(b []byte) error {
	type plain MetricsSnapshot // without this method
	var v struct {
		plain
		PerNode map[string]NodeMetrics `json:"per_node"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = MetricsSnapshot(v.plain)
	s.PerNode = make(map[peer.ID]NodeMetrics, len(v.PerNode))
	for k, nm := range v.PerNode {
		p, err := peer.Decode(k)
		if err != nil {
			return fmt.Errorf("decode metrics of node %q: %w", k, err)
		}
		s.PerNode[p] = nm
	}
	return nil
}

// MetricsTracker records task outcomes and execution times, globally and per
// node. It is safe for concurrent use. Recording takes no global lock: a
// node's state is found in a sync.Map, its counters and averages are atomics,
// and only its histogram sits behind a mutex of its own. Node reads no lock.
//
// Recording with an empty node ID counts towards the global figures only.
type MetricsTracker struct {
	epoch      time.Time // times are kept as monotonic offsets from it
	nodes      sync.Map  // peer.ID -> *trackedNode
	unassigned trackedNode
}

// NewMetricsTracker returns an empty tracker.
func NewMetricsTracker() *MetricsTracker {
	m := &MetricsTracker{epoch: time.Now()}
	m.unassigned.init()
	return m
}

// trackedNode holds one node's figures. The atomics may be read at any time;
// hist is guarded by mu. The cached percentiles are written under mu.
type trackedNode struct {
	submitted   atomic.Uint64
	completed   atomic.Uint64
	failed      atomic.Uint64
	timedOut    atomic.Uint64
	unavailable atomic.Uint64
	rejected    atomic.Uint64
	retried     atomic.Uint64

	execSum atomic.Int64 // ns
	execMin atomic.Int64 // ns; math.MaxInt64 until the first completion
	execMax atomic.Int64 // ns

	recentSuccess atomic.Uint64 // float64 bits
	recentLatency atomic.Uint64 // float64 bits, ns; 0 until the first completion
	lastSeen      atomic.Int64  // ns since the tracker's epoch; notSeen until the first outcome

	// Percentiles as of the last refresh: for qCount completions, at qAt
	// (ns since the tracker's epoch).
	qCount        atomic.Uint64
	qAt           atomic.Int64
	p50, p95, p99 atomic.Int64

	mu   sync.Mutex
	hist *hdrhistogram.Histogram // nil until the first completion
}

// notSeen marks a node with no outcome; longAgo, percentiles never computed.
const (
	notSeen = math.MinInt64
	longAgo = -1 << 62
)

func (s *trackedNode) init() {
	s.execMin.Store(math.MaxInt64)
	s.recentSuccess.Store(math.Float64bits(1))
	s.lastSeen.Store(notSeen)
	s.qAt.Store(longAgo)
}

// now reads the monotonic clock as an offset from m.epoch: half the cost of
// time.Now, which also reads the wall clock.
func (m *MetricsTracker) now() int64 { return int64(time.Since(m.epoch)) }

// state returns node's state, creating it on first use.
func (m *MetricsTracker) state(node peer.ID) *trackedNode {
	if node == "" {
		return &m.unassigned
	}
	if v, ok := m.nodes.Load(node); ok {
		return v.(*trackedNode)
	}
	s := &trackedNode{}
	s.init()
	v, _ := m.nodes.LoadOrStore(node, s)
	return v.(*trackedNode)
}

// RecordSubmitted counts a task sent to node.
func (m *MetricsTracker) RecordSubmitted(node peer.ID) {
	m.state(node).submitted.Add(1)
}

// RecordCompleted counts a task that node completed in exec.
func (m *MetricsTracker) RecordCompleted(node peer.ID, exec time.Duration) {
	s := m.state(node)
	ns := max(int64(exec), 0)
	s.completed.Add(1)
	s.execSum.Add(ns)
	for cur := s.execMin.Load(); ns < cur && !s.execMin.CompareAndSwap(cur, ns); cur = s.execMin.Load() {
	}
	for cur := s.execMax.Load(); ns > cur && !s.execMax.CompareAndSwap(cur, ns); cur = s.execMax.Load() {
	}
	ewmaAdd(&s.recentSuccess, 1, false)
	ewmaAdd(&s.recentLatency, float64(ns), true)
	s.lastSeen.Store(m.now())

	s.mu.Lock()
	if s.hist == nil {
		s.hist = newExecHistogram()
	}
	_ = s.hist.RecordValue(min(ns, histHighest)) // in range by construction
	s.mu.Unlock()
}

// RecordFailed counts a task that failed on node.
func (m *MetricsTracker) RecordFailed(node peer.ID) {
	s := m.state(node)
	s.failed.Add(1)
	ewmaAdd(&s.recentSuccess, 0, false)
	s.lastSeen.Store(m.now())
}

// RecordTimedOut counts a task that node did not finish in time.
func (m *MetricsTracker) RecordTimedOut(node peer.ID) {
	s := m.state(node)
	s.timedOut.Add(1)
	ewmaAdd(&s.recentSuccess, 0, false)
	s.lastSeen.Store(m.now())
}

// RecordRetried counts an attempt sent to node (and counted by
// RecordSubmitted) that retries a failed attempt of the same task.
func (m *MetricsTracker) RecordRetried(node peer.ID) {
	m.state(node).retried.Add(1)
}

// RecordUnavailable counts an attempt that node never ran because it could
// not be reached or went away (no ack, a lost stream or lease). It is not a
// failure: the success rate and RecentSuccess stay as they are, and the
// node is not marked seen.
func (m *MetricsTracker) RecordUnavailable(node peer.ID) {
	m.state(node).unavailable.Add(1)
}

// RecordRejected counts an attempt that node refused (queue full, rate
// limited, shutting down, ...) or gave back unrun (it stopped it, or no
// longer has the skill). Like RecordUnavailable, it is not a failure.
func (m *MetricsTracker) RecordRejected(node peer.ID) {
	s := m.state(node)
	s.rejected.Add(1)
	s.lastSeen.Store(m.now())
}

// ewmaAdd folds x into the average stored as float64 bits in v. If seed is
// set, a zero average is taken to mean "no sample yet" and x replaces it.
func ewmaAdd(v *atomic.Uint64, x float64, seed bool) {
	for {
		old := v.Load()
		cur := math.Float64frombits(old)
		next := cur + ewmaAlpha*(x-cur)
		if seed && old == 0 {
			next = x
		}
		if v.CompareAndSwap(old, math.Float64bits(next)) {
			return
		}
	}
}

func newExecHistogram() *hdrhistogram.Histogram {
	return hdrhistogram.New(histLowest, histHighest, histDigits)
}

// Node returns node's figures, and false if nothing was recorded for it. It
// takes no lock and computes no percentile unless the cached ones are more
// than a second old and the node has completed tasks since; even then it
// only tries the node's lock and returns the cached values if it is busy.
func (m *MetricsTracker) Node(node peer.ID) (NodeMetrics, bool) {
	if node == "" {
		return NodeMetrics{}, false
	}
	v, ok := m.nodes.Load(node)
	if !ok {
		return NodeMetrics{}, false
	}
	s := v.(*trackedNode)
	if n := s.completed.Load(); n != s.qCount.Load() {
		now := m.now()
		if now-s.qAt.Load() >= int64(quantileMaxAge) && s.mu.TryLock() {
			s.refreshQuantiles(now)
			s.mu.Unlock()
		}
	}
	return s.read(m.epoch), true
}

// refreshQuantiles recomputes the cached percentiles. s.mu must be held.
func (s *trackedNode) refreshQuantiles(now int64) {
	if s.hist == nil {
		return
	}
	n := uint64(s.hist.TotalCount())
	if n == s.qCount.Load() {
		return
	}
	p50, p95, p99 := execQuantiles(s.hist)
	s.p50.Store(p50)
	s.p95.Store(p95)
	s.p99.Store(p99)
	s.qCount.Store(n)
	s.qAt.Store(now)
}

var execPercentiles = []float64{50, 95, 99}

func execQuantiles(h *hdrhistogram.Histogram) (p50, p95, p99 int64) {
	q := h.ValueAtPercentilesSlice(execPercentiles)
	return q[0], q[1], q[2]
}

// read returns the node's figures from its atomics and cached percentiles.
// Each field is current; fields may come from slightly different moments
// while tasks are being recorded.
func (s *trackedNode) read(epoch time.Time) NodeMetrics {
	nm := NodeMetrics{
		Metrics: Metrics{
			Submitted:   s.submitted.Load(),
			Completed:   s.completed.Load(),
			Failed:      s.failed.Load(),
			TimedOut:    s.timedOut.Load(),
			Unavailable: s.unavailable.Load(),
			Rejected:    s.rejected.Load(),
			Retried:     s.retried.Load(),
		},
		RecentSuccess: math.Float64frombits(s.recentSuccess.Load()),
		RecentLatency: time.Duration(math.Float64frombits(s.recentLatency.Load())),
	}
	if ls := s.lastSeen.Load(); ls != notSeen {
		nm.LastSeen = epoch.Add(time.Duration(ls))
	}
	lo, hi, sum := s.execMin.Load(), s.execMax.Load(), s.execSum.Load()
	setExecFields(&nm.Metrics, lo, hi, sum, nm.Completed, s.p50.Load(), s.p95.Load(), s.p99.Load())
	return nm
}

// setExecFields fills m's execution-time fields, clamping the percentiles into
// [lo, hi] so that histogram rounding never reports a p99 above the maximum.
func setExecFields(m *Metrics, lo, hi, sum int64, completed uint64, p50, p95, p99 int64) {
	if completed == 0 || lo == math.MaxInt64 {
		return
	}
	m.MinExec = time.Duration(lo)
	m.MaxExec = time.Duration(hi)
	m.AvgExec = time.Duration(sum / int64(completed))
	clamp := func(v int64) time.Duration {
		if v == 0 { // no percentile computed yet
			return 0
		}
		return time.Duration(min(max(v, lo), hi))
	}
	m.P50, m.P95, m.P99 = clamp(p50), clamp(p95), clamp(p99)
}

// Snapshot returns a copy of every figure, global and per node, with fresh
// percentiles. The copy shares nothing with the tracker. It locks one node
// at a time, so it never stops recording as a whole.
func (m *MetricsTracker) Snapshot() MetricsSnapshot {
	now := m.now()
	snap := MetricsSnapshot{PerNode: make(map[peer.ID]NodeMetrics), At: m.epoch.Add(time.Duration(now))}
	g := metricsSum{epoch: m.epoch}
	g.add(&m.unassigned, now)
	m.nodes.Range(func(k, v any) bool {
		snap.PerNode[k.(peer.ID)] = g.add(v.(*trackedNode), now)
		return true
	})
	snap.Metrics = g.metrics()
	return snap
}

// metricsSum accumulates nodes into the global figures.
type metricsSum struct {
	epoch    time.Time
	m        Metrics
	lo, hi   int64
	sum      int64
	hist     *hdrhistogram.Histogram
	anyExecs bool
}

// add refreshes s's percentiles, merges its histogram and counts into g,
// and returns s's figures.
func (g *metricsSum) add(s *trackedNode, now int64) NodeMetrics {
	s.mu.Lock()
	s.refreshQuantiles(now)
	if s.hist != nil {
		if g.hist == nil {
			g.hist = newExecHistogram()
		}
		g.hist.Merge(s.hist)
	}
	nm := s.read(g.epoch)
	s.mu.Unlock()

	g.m.Submitted += nm.Submitted
	g.m.Completed += nm.Completed
	g.m.Failed += nm.Failed
	g.m.TimedOut += nm.TimedOut
	g.m.Unavailable += nm.Unavailable
	g.m.Rejected += nm.Rejected
	g.m.Retried += nm.Retried
	if lo := s.execMin.Load(); lo != math.MaxInt64 {
		if !g.anyExecs || lo < g.lo {
			g.lo = lo
		}
		g.hi = max(g.hi, s.execMax.Load())
		g.anyExecs = true
	}
	g.sum += s.execSum.Load()
	return nm
}

func (g *metricsSum) metrics() Metrics {
	m := g.m
	if g.anyExecs && g.hist != nil {
		p50, p95, p99 := execQuantiles(g.hist)
		setExecFields(&m, g.lo, g.hi, g.sum, m.Completed, p50, p95, p99)
	}
	return m
}

// Restore adds the figures of snap, as Snapshot returned them (say before a
// restart, read back from disk), to the tracker: counts, execution-time
// bounds and averages, the recent success rate and latency, and when each
// node was last seen. A snapshot holds percentiles, not histograms, so each
// node's histogram is rebuilt from its P50, P95 and P99 (half of its
// completions at P50, 45% at P95, 5% at P99): percentiles stay close to
// what they were and move with the new completions. Counts recorded with
// an empty node ID are restored to the global figures only. Call it before
// recording starts: a node's recent averages are replaced, not merged.
func (m *MetricsTracker) Restore(snap MetricsSnapshot) {
	var sum Metrics
	for p, nm := range snap.PerNode {
		if p == "" {
			continue
		}
		m.restoreNode(m.state(p), nm)
		sum.Submitted += nm.Submitted
		sum.Completed += nm.Completed
		sum.Failed += nm.Failed
		sum.TimedOut += nm.TimedOut
		sum.Unavailable += nm.Unavailable
		sum.Rejected += nm.Rejected
		sum.Retried += nm.Retried
	}
	// Completions without a node carry no execution times worth keeping.
	m.unassigned.submitted.Add(sub0(snap.Submitted, sum.Submitted))
	m.unassigned.failed.Add(sub0(snap.Failed, sum.Failed))
	m.unassigned.timedOut.Add(sub0(snap.TimedOut, sum.TimedOut))
	m.unassigned.unavailable.Add(sub0(snap.Unavailable, sum.Unavailable))
	m.unassigned.rejected.Add(sub0(snap.Rejected, sum.Rejected))
	m.unassigned.retried.Add(sub0(snap.Retried, sum.Retried))
}

func sub0(a, b uint64) uint64 {
	if a > b {
		return a - b
	}
	return 0
}

// restoreNode adds nm to s.
func (m *MetricsTracker) restoreNode(s *trackedNode, nm NodeMetrics) {
	s.submitted.Add(nm.Submitted)
	s.failed.Add(nm.Failed)
	s.timedOut.Add(nm.TimedOut)
	s.unavailable.Add(nm.Unavailable)
	s.rejected.Add(nm.Rejected)
	s.retried.Add(nm.Retried)
	if !math.IsNaN(nm.RecentSuccess) && nm.RecentSuccess >= 0 && nm.RecentSuccess <= 1 {
		s.recentSuccess.Store(math.Float64bits(nm.RecentSuccess))
	}
	if nm.RecentLatency > 0 {
		s.recentLatency.Store(math.Float64bits(float64(nm.RecentLatency)))
	}
	if !nm.LastSeen.IsZero() {
		ls := int64(nm.LastSeen.Sub(m.epoch))
		if cur := s.lastSeen.Load(); cur == notSeen || ls > cur {
			s.lastSeen.Store(ls)
		}
	}
	n := nm.Completed
	if n == 0 {
		return
	}
	lo, hi := int64(max(nm.MinExec, 0)), int64(max(nm.MaxExec, nm.MinExec, 0))
	s.completed.Add(n)
	s.execSum.Add(int64(max(nm.AvgExec, 0)) * int64(n))
	for cur := s.execMin.Load(); lo < cur && !s.execMin.CompareAndSwap(cur, lo); cur = s.execMin.Load() {
	}
	for cur := s.execMax.Load(); hi > cur && !s.execMax.CompareAndSwap(cur, hi); cur = s.execMax.Load() {
	}
	p50, p95, p99 := int64(nm.P50), int64(nm.P95), int64(nm.P99)
	if p50 <= 0 {
		p50 = int64(max(nm.AvgExec, 0))
	}
	p95, p99 = max(p95, p50), max(p99, p95, p50)
	half, most := int64(n)/2, int64(n)*45/100
	s.mu.Lock()
	if s.hist == nil {
		s.hist = newExecHistogram()
	}
	_ = s.hist.RecordValues(min(max(p50, histLowest), histHighest), max(half, 1))
	if most > 0 {
		_ = s.hist.RecordValues(min(max(p95, histLowest), histHighest), most)
	}
	if rest := int64(n) - half - most; rest > 0 {
		_ = s.hist.RecordValues(min(max(p99, histLowest), histHighest), rest)
	}
	s.mu.Unlock()
}
