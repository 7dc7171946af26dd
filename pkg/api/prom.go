package api

import (
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// StatsSource is what the Prometheus collector reads at each scrape.
// *skill.Coordinator implements it.
type StatsSource interface {
	Metrics() grid.MetricsSnapshot
	QueueStats() grid.QueueStats
}

// trustBuckets are the upper bounds of the cortex_trust_peers_score histogram.
var trustBuckets = []float64{0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1}

// Collector exports the node's figures as cortex_* Prometheus metrics,
// read from the coordinator, the node and the trust graph at each scrape,
// so the task path does no Prometheus work. Register it on the daemon's
// registry. It is safe for concurrent use.
type Collector struct {
	stats StatsSource
	node  Network
	trust TrustView

	queueDepth    *prometheus.Desc
	queueInFlight *prometheus.Desc
	queueOps      *prometheus.Desc
	submitted     *prometheus.Desc
	finished      *prometheus.Desc
	execSeconds   *prometheus.Desc
	peers         *prometheus.Desc
	trustPeers    *prometheus.Desc
	cacheLookups  *prometheus.Desc
	peerLookups   *prometheus.Desc
	cacheBytes    *prometheus.Desc
	spotChecks    *prometheus.Desc
	opinionPeers  *prometheus.Desc
}

// spotCheckSource is a StatsSource that runs spot checks
// (*skill.Coordinator).
type spotCheckSource interface {
	SpotCheckStats() skill.SpotCheckStats
}

// opinionCounter is a TrustView that holds other peers' opinions
// (*reputation.Graph).
type opinionCounter interface {
	OpinionPeers() int
}

// cacheSource is a StatsSource with a result cache (*skill.Coordinator).
type cacheSource interface {
	CacheStats() (skill.CacheStats, bool)
}

var _ prometheus.Collector = (*Collector)(nil)

// NewCollector returns a collector over the given sources.
func NewCollector(stats StatsSource, node Network, trust TrustView) *Collector {
	return &Collector{
		stats: stats, node: node, trust: trust,
		queueDepth: prometheus.NewDesc("cortex_queue_depth_tasks",
			"Tasks ready to run in this node's queue, per priority level.", []string{"level"}, nil),
		queueInFlight: prometheus.NewDesc("cortex_queue_in_flight_tasks",
			"Tasks taken from this node's queue and not finished yet.", nil, nil),
		queueOps: prometheus.NewDesc("cortex_queue_operations_total",
			"Queue operations since start, by kind: enqueued, completed, failed, retried, timed_out, rejected (level full).", []string{"op"}, nil),
		submitted: prometheus.NewDesc("cortex_tasks_submitted_total",
			"Task attempts started, on this node or on a peer.", nil, nil),
		finished: prometheus.NewDesc("cortex_tasks_finished_total",
			"Task attempts finished, by outcome: completed, failed, timed_out, unavailable (never answered), rejected (refused or given back unrun).", []string{"outcome"}, nil),
		execSeconds: prometheus.NewDesc("cortex_task_execution_seconds",
			"Execution time of completed task attempts on the node that ran them (quantiles within 1%).", nil, nil),
		peers: prometheus.NewDesc("cortex_grid_peers",
			"Peers this node knows, by state: connected (a live connection) or known (announced skills recently).", []string{"state"}, nil),
		trustPeers: prometheus.NewDesc("cortex_trust_peers_score",
			"Distribution of this node's trust in the peers it holds evidence about (0 to 1).", nil, nil),
		cacheLookups: prometheus.NewDesc("cortex_tasks_cache_lookups_total",
			"Tasks of deterministic skills submitted to this node, by result: hit (answered from the result cache), shared (answered by an identical task's run), miss (ran).", []string{"result"}, nil),
		peerLookups: prometheus.NewDesc("cortex_peer_tasks_cache_lookups_total",
			"Tasks of deterministic skills that peers sent this node to run, by result: hit (answered from the result cache), shared (answered by an identical request's run here), miss (started a run).", []string{"result"}, nil),
		cacheBytes: prometheus.NewDesc("cortex_tasks_cache_bytes",
			"Bytes the result cache holds (at most cache.max_bytes).", nil, nil),
		spotChecks: prometheus.NewDesc("cortex_trust_spot_checks_total",
			"Spot checks of peers' outputs for deterministic skills, by result: match, wrong_result (a node's output disagreed with this node's run or the majority), inconclusive, skipped (too many running).", []string{"result"}, nil),
		opinionPeers: prometheus.NewDesc("cortex_trust_opinion_peers",
			"Peers whose shared trust opinions the trust graph holds.", nil, nil),
	}
}

// Describe implements prometheus.Collector.
func (c *Collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.queueDepth, c.queueInFlight, c.queueOps,
		c.submitted, c.finished, c.execSeconds, c.peers, c.trustPeers, c.cacheLookups, c.peerLookups, c.cacheBytes, c.spotChecks, c.opinionPeers} {
		ch <- d
	}
}

// Collect implements prometheus.Collector.
func (c *Collector) Collect(ch chan<- prometheus.Metric) {
	q := c.stats.QueueStats()
	for l := range grid.NumLevels {
		ch <- prometheus.MustNewConstMetric(c.queueDepth, prometheus.GaugeValue, float64(q.Depth[l]), grid.Level(l).String())
	}
	ch <- prometheus.MustNewConstMetric(c.queueInFlight, prometheus.GaugeValue, float64(q.InFlight))
	for _, op := range []struct {
		name string
		v    uint64
	}{{"enqueued", q.Enqueued}, {"completed", q.Completed}, {"failed", q.Failed}, {"retried", q.Retried},
		{"timed_out", q.TimedOut}, {"rejected", q.Rejected}} {
		ch <- prometheus.MustNewConstMetric(c.queueOps, prometheus.CounterValue, float64(op.v), op.name)
	}

	m := c.stats.Metrics()
	ch <- prometheus.MustNewConstMetric(c.submitted, prometheus.CounterValue, float64(m.Submitted))
	ch <- prometheus.MustNewConstMetric(c.finished, prometheus.CounterValue, float64(m.Completed), "completed")
	ch <- prometheus.MustNewConstMetric(c.finished, prometheus.CounterValue, float64(m.Failed), "failed")
	ch <- prometheus.MustNewConstMetric(c.finished, prometheus.CounterValue, float64(m.TimedOut), "timed_out")
	ch <- prometheus.MustNewConstMetric(c.finished, prometheus.CounterValue, float64(m.Unavailable), "unavailable")
	ch <- prometheus.MustNewConstMetric(c.finished, prometheus.CounterValue, float64(m.Rejected), "rejected")
	ch <- prometheus.MustNewConstSummary(c.execSeconds, m.Completed, m.AvgExec.Seconds()*float64(m.Completed),
		map[float64]float64{0.5: m.P50.Seconds(), 0.95: m.P95.Seconds(), 0.99: m.P99.Seconds()})
	if cs, ok := c.stats.(cacheSource); ok {
		if st, on := cs.CacheStats(); on {
			ch <- prometheus.MustNewConstMetric(c.cacheLookups, prometheus.CounterValue, float64(st.Hits-st.Shared), "hit")
			ch <- prometheus.MustNewConstMetric(c.cacheLookups, prometheus.CounterValue, float64(st.Shared), "shared")
			ch <- prometheus.MustNewConstMetric(c.cacheLookups, prometheus.CounterValue, float64(st.Misses), "miss")
			ch <- prometheus.MustNewConstMetric(c.peerLookups, prometheus.CounterValue, float64(st.PeerHits), "hit")
			ch <- prometheus.MustNewConstMetric(c.peerLookups, prometheus.CounterValue, float64(st.PeerShared), "shared")
			ch <- prometheus.MustNewConstMetric(c.peerLookups, prometheus.CounterValue, float64(st.PeerMisses), "miss")
			ch <- prometheus.MustNewConstMetric(c.cacheBytes, prometheus.GaugeValue, float64(st.Bytes))
		}
	}

	if sc, ok := c.stats.(spotCheckSource); ok {
		st := sc.SpotCheckStats()
		for _, r := range []struct {
			name string
			v    uint64
		}{{"match", st.Matched}, {"wrong_result", st.WrongResults}, {"inconclusive", st.Inconclusive}, {"skipped", st.Skipped}} {
			ch <- prometheus.MustNewConstMetric(c.spotChecks, prometheus.CounterValue, float64(r.v), r.name)
		}
	}
	if oc, ok := c.trust.(opinionCounter); ok {
		ch <- prometheus.MustNewConstMetric(c.opinionPeers, prometheus.GaugeValue, float64(oc.OpinionPeers()))
	}

	connected, known := 0, 0
	for _, p := range c.node.Peers() {
		if p.Connected {
			connected++
		}
		if p.Skills != nil {
			known++
		}
	}
	ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(connected), "connected")
	ch <- prometheus.MustNewConstMetric(c.peers, prometheus.GaugeValue, float64(known), "known")

	pts := c.trust.Peers()
	buckets := make(map[float64]uint64, len(trustBuckets))
	for _, b := range trustBuckets {
		buckets[b] = 0
	}
	sum := 0.0
	for _, pt := range pts {
		sum += pt.Trust
		for _, b := range trustBuckets {
			if pt.Trust <= b {
				buckets[b]++
			}
		}
	}
	ch <- prometheus.MustNewConstHistogram(c.trustPeers, uint64(len(pts)), sum, buckets)
}

// TaskLatency exports cortex_task_duration_seconds: a histogram of the
// time from a task's submission to its end, by outcome (the terminal
// state) and by where the last attempt ran (local or remote). It follows
// the coordinator's events, so it costs the task path one event per state
// change, delivered on the coordinator's subscriber goroutine. It is safe
// for concurrent use.
type TaskLatency struct {
	tasks Tasks
	self  peer.ID
	hist  *prometheus.HistogramVec
}

var _ prometheus.Collector = (*TaskLatency)(nil)

// NewTaskLatency returns a histogram fed by tasks' events; self is this
// node's ID, to tell local from remote attempts. Register it, then Start it.
func NewTaskLatency(tasks Tasks, self peer.ID) *TaskLatency {
	return &TaskLatency{
		tasks: tasks,
		self:  self,
		hist: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "cortex_task_duration_seconds",
			Help:    "Time from a task's submission to its end, by outcome (succeeded, failed, canceled, timed_out) and where its last attempt ran (local, remote).",
			Buckets: prometheus.ExponentialBucketsRange(0.0005, 300, 16),
		}, []string{"outcome", "where"}),
	}
}

// Start subscribes to the coordinator's events; the returned function
// unsubscribes.
func (l *TaskLatency) Start() (stop func()) {
	return l.tasks.Subscribe(func(e skill.Event) {
		if !e.State.Terminal() {
			return
		}
		st, err := l.tasks.Status(e.TaskID)
		if err != nil {
			return // already forgotten: retention is shorter than the event lag
		}
		where := "remote"
		if e.Peer == l.self || e.Peer == "" {
			where = "local"
		}
		l.hist.WithLabelValues(e.State.String(), where).Observe(e.At.Sub(st.CreatedAt).Seconds())
	})
}

// Describe implements prometheus.Collector.
func (l *TaskLatency) Describe(ch chan<- *prometheus.Desc) { l.hist.Describe(ch) }

// Collect implements prometheus.Collector.
func (l *TaskLatency) Collect(ch chan<- prometheus.Metric) { l.hist.Collect(ch) }
