package api

import (
	"encoding/json"
	"math/rand/v2"
	"slices"
	"sync"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Limits of the task log.
const (
	traceTasks      = 1000            // tasks whose traces are kept, the most recent (inputs: at most 16 MiB)
	traceAttempts   = 32              // attempts kept per task; later ones are counted only
	traceCandidates = 8               // candidates kept per attempt (the coordinator's skill.DefaultRankingSize)
	seriesInterval  = 5 * time.Second // one point of GET /v1/metrics/series
	seriesPoints    = 72              // six minutes of them
	seriesSamples   = 512             // latencies sampled per point for its percentiles
)

// taskLog follows the coordinator's events and keeps what the task
// endpoints do not: each attempt of the most recent tasks (where it ran,
// the candidates the router ranked when the coordinator chose its node, as
// the attempt's event carries them, how it ended), and per interval the
// tasks that finished and their latency. It lives in memory only. It runs on the coordinator's
// subscriber goroutine, so the task path pays one event per state change
// and never waits for it. It is safe for concurrent use.
type taskLog struct {
	tasks Tasks
	self  peer.ID

	mu     sync.Mutex
	traces map[skill.TaskID]*taskTrace
	ring   []skill.TaskID // FIFO of traces' IDs, for eviction
	head   int
	points [seriesPoints]seriesBucket
	rnd    *rand.Rand
}

// taskTrace is what the log holds of one task.
type taskTrace struct {
	created  time.Time
	attempts []apiv1.Attempt
	input    *apiv1.InputPreview
	done     bool
}

// seriesBucket is one interval of the series.
type seriesBucket struct {
	slot      int64 // start / seriesInterval; 0: empty
	finished  int
	succeeded int
	seen      int // successes offered to the sample
	sample    []float64
}

func newTaskLog(tasks Tasks, self peer.ID) *taskLog {
	return &taskLog{
		tasks: tasks, self: self,
		traces: make(map[skill.TaskID]*taskTrace),
		ring:   make([]skill.TaskID, 0, traceTasks),
		rnd:    rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64())),
	}
}

// start subscribes to the coordinator; the returned function unsubscribes.
func (l *taskLog) start() (stop func()) { return l.tasks.Subscribe(l.observe) }

// submitted notes what a task submitted through the API has and its
// status has not: its input.
func (l *taskLog) submitted(id skill.TaskID, t *skill.SkillTask) {
	in := previewOf(t.Input)
	l.mu.Lock()
	defer l.mu.Unlock()
	l.traceLocked(id, time.Now()).input = in
}

// previewOf keeps at most apiv1.MaxInputPreview bytes of an input.
func previewOf(in skill.SkillInput) *apiv1.InputPreview {
	p := &apiv1.InputPreview{Size: len(in.Data)}
	switch {
	case len(in.Data) <= apiv1.MaxInputPreview && in.Kind == grid.InputJSON && json.Valid(in.Data):
		p.JSON = slices.Clone(in.Data)
	case len(in.Data) <= apiv1.MaxInputPreview:
		p.Base64 = slices.Clone(in.Data)
	default:
		p.Base64, p.Truncated = slices.Clone(in.Data[:apiv1.MaxInputPreview]), true
	}
	return p
}

// traceLocked returns id's trace, making one (and evicting the oldest) if
// there is none. l.mu must be held.
func (l *taskLog) traceLocked(id skill.TaskID, at time.Time) *taskTrace {
	if tr, ok := l.traces[id]; ok {
		return tr
	}
	tr := &taskTrace{created: at}
	if len(l.ring) < traceTasks {
		l.ring = append(l.ring, id)
	} else {
		delete(l.traces, l.ring[l.head])
		l.ring[l.head] = id
		l.head = (l.head + 1) % traceTasks
	}
	l.traces[id] = tr
	return tr
}

// observe records one event.
func (l *taskLog) observe(e skill.Event) {
	l.mu.Lock()
	tr := l.traceLocked(e.TaskID, e.At)
	if e.At.Before(tr.created) {
		tr.created = e.At
	}
	n := len(tr.attempts)
	num, startAt := max(e.Attempt, 1), e.At // a local task is queued before its attempt is counted
	if e.State.Terminal() && n == 0 && (e.Peer != "" || e.Attempt > 0) {
		num, startAt = 1, tr.created // its only attempt: from its submission to this end
	}
	if num > n && n < traceAttempts && e.State != skill.StateRetrying {
		if n > 0 {
			l.endLocked(&tr.attempts[n-1], startAt, "retried", "")
		}
		node := e.Peer
		if node == "" {
			node = l.self
		}
		a := apiv1.Attempt{Number: num, Node: node.String(), Local: node == l.self, StartedAt: startAt, Outcome: "running"}
		if rk := e.Ranking; rk != nil && rk.Attempt == num {
			a.Candidates, a.Considered = candidatesOf(rk, node), rk.Considered
		}
		tr.attempts = append(tr.attempts, a)
	}
	var last *apiv1.Attempt
	if n := len(tr.attempts); n > 0 {
		last = &tr.attempts[n-1]
	}
	switch {
	case e.State == skill.StateRetrying && last != nil:
		l.endLocked(last, e.At, "retried", e.Error)
	case e.State.Terminal() && !tr.done:
		tr.done = true
		if last != nil {
			l.endLocked(last, e.At, e.State.String(), e.Error)
		}
		l.finishLocked(e, tr.created)
	}
	l.mu.Unlock()
}

// candidatesOf converts at most traceCandidates of a ranking; chosen is
// the node the attempt went to.
func candidatesOf(rk *skill.Ranking, chosen peer.ID) []apiv1.Candidate {
	cs := rk.Candidates[:min(len(rk.Candidates), traceCandidates)]
	out := make([]apiv1.Candidate, 0, len(cs))
	for _, c := range cs {
		p := c.Parts
		out = append(out, apiv1.Candidate{Node: c.Peer.String(), Local: c.Local, Connected: c.Connected,
			Score: c.Score, Trust: c.Trust, Version: c.Version, Chosen: c.Peer == chosen,
			Parts: apiv1.ScoreParts{Trust: p.Trust, Skill: p.Skill, Success: p.Success, Latency: p.Latency, Load: p.Load}})
	}
	return out
}

// endLocked closes an attempt unless it is closed already.
func (l *taskLog) endLocked(a *apiv1.Attempt, at time.Time, outcome, msg string) {
	if a.EndedAt != nil {
		return
	}
	a.EndedAt, a.Outcome, a.Error = &at, outcome, clip(msg, 400)
}

// finishLocked counts a task that reached a final state in its interval.
func (l *taskLog) finishLocked(e skill.Event, created time.Time) {
	slot := e.At.UnixNano() / int64(seriesInterval)
	b := &l.points[slot%seriesPoints]
	if b.slot != slot {
		*b = seriesBucket{slot: slot, sample: b.sample[:0]}
	}
	b.finished++
	if e.State != skill.StateSucceeded {
		return
	}
	b.succeeded++
	ms := float64(e.At.Sub(created)) / float64(time.Millisecond)
	b.seen++
	switch {
	case len(b.sample) < seriesSamples:
		b.sample = append(b.sample, ms)
	default: // reservoir sampling: each success is kept with equal chance
		if i := l.rnd.IntN(b.seen); i < seriesSamples {
			b.sample[i] = ms
		}
	}
}

// trace returns what the log holds of a task.
func (l *taskLog) trace(id skill.TaskID) apiv1.TaskTrace {
	out := apiv1.TaskTrace{Task: id.String(), Attempts: []apiv1.Attempt{}}
	l.mu.Lock()
	defer l.mu.Unlock()
	tr, ok := l.traces[id]
	if !ok {
		return out
	}
	out.Recorded, out.Input = true, tr.input // the preview is never changed once set
	for _, a := range tr.attempts {
		a.Candidates = slices.Clone(a.Candidates)
		out.Attempts = append(out.Attempts, a)
	}
	return out
}

// series returns the last seriesPoints intervals up to now, oldest first,
// with zeros for intervals in which no task finished.
func (l *taskLog) series(now time.Time) apiv1.Series {
	out := apiv1.Series{IntervalMS: seriesInterval.Milliseconds(), Points: make([]apiv1.SeriesPoint, 0, seriesPoints)}
	cur := now.UnixNano() / int64(seriesInterval)
	l.mu.Lock()
	defer l.mu.Unlock()
	for slot := cur - seriesPoints + 1; slot <= cur; slot++ {
		p := apiv1.SeriesPoint{Start: time.Unix(0, slot*int64(seriesInterval)).UTC()}
		if b := &l.points[slot%seriesPoints]; b.slot == slot {
			p.Finished, p.Succeeded = b.finished, b.succeeded
			span := seriesInterval
			if slot == cur { // the interval in progress: per second so far
				span = max(now.Sub(p.Start), time.Second)
			}
			p.PerSec = float64(b.finished) / span.Seconds()
			s := slices.Clone(b.sample)
			slices.Sort(s)
			p.P50MS, p.P95MS, p.P99MS = quantile(s, 0.50), quantile(s, 0.95), quantile(s, 0.99)
		}
		out.Points = append(out.Points, p)
	}
	return out
}

// quantile returns the q-quantile of sorted s (nearest rank), 0 if empty.
func quantile(s []float64, q float64) float64 {
	if len(s) == 0 {
		return 0
	}
	i := int(q*float64(len(s))+0.5) - 1
	return s[min(max(i, 0), len(s)-1)]
}
