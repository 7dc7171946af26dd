package skill

import (
	"context"
	"math"
	"slices"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// Progress is how far a running task is, as its skill last reported it.
type Progress struct {
	// Fraction is how much of the work is done, in [0, 1].
	Fraction float64 `json:"fraction"`
	// Message says what the skill is doing, for a human; at most
	// grid.MaxProgressMessage bytes.
	Message   string    `json:"message,omitempty"`
	UpdatedAt time.Time `json:"updated_at"`
}

// progressEventInterval is the least time between two progress events of
// one task: at most 10 a second, as the wire carries them.
const progressEventInterval = grid.ProgressInterval

// progressKey is the context key of a running job's progress reporter.
type progressKey struct{}

// ReportProgress tells whoever waits for the task that ctx belongs to how
// far it is: fraction in [0, 1] (clamped; NaN is ignored) and a short
// message (cut to 200 bytes of valid UTF-8). A skill's Execute calls it
// with the context it was given; for a task run for a peer the report
// travels to the requester (coalesced to 10 a second), for a task of this
// node's it shows in its status and events. With a context of no task it
// does nothing. It does not block.
func ReportProgress(ctx context.Context, fraction float64, msg string) {
	if ctx == nil || math.IsNaN(fraction) {
		return
	}
	if r, _ := ctx.Value(progressKey{}).(progressReporter); r != nil {
		r.reportProgress(min(max(fraction, 0), 1), cutMessage(msg))
	}
}

// progressReporter is what a context carries for ReportProgress.
type progressReporter interface {
	reportProgress(fraction float64, msg string)
}

func (j *Job) reportProgress(fraction float64, msg string) { j.progress(j, fraction, msg) }

// ProgressFunc is a ReportProgress receiver of one's own.
type ProgressFunc func(fraction float64, msg string)

func (f ProgressFunc) reportProgress(fraction float64, msg string) { f(fraction, msg) }

// WithProgress returns a context whose ReportProgress calls go to fn, for
// running a skill outside an Executor (a test, a tool).
func WithProgress(ctx context.Context, fn ProgressFunc) context.Context {
	return context.WithValue(ctx, progressKey{}, progressReporter(fn))
}

// withProgress returns ctx carrying job's reporter, or ctx itself if the
// job has none.
func withProgress(ctx context.Context, job *Job) context.Context {
	if job.progress == nil {
		return ctx
	}
	return context.WithValue(ctx, progressKey{}, progressReporter(job))
}

// cutMessage makes msg valid UTF-8 of at most grid.MaxProgressMessage
// bytes, cut on a rune boundary.
func cutMessage(msg string) string {
	if len(msg) <= grid.MaxProgressMessage && utf8.ValidString(msg) {
		return msg
	}
	msg = strings.ToValidUTF8(msg, "\uFFFD")
	if len(msg) <= grid.MaxProgressMessage {
		return msg
	}
	cut := grid.MaxProgressMessage
	for cut > 0 && !utf8.RuneStart(msg[cut]) {
		cut--
	}
	return msg[:cut]
}

// onLocalProgress is the reporter of a local attempt's job: the record
// keeps the report while that attempt is current.
func (c *DelegationCoordinator) onLocalProgress(j *Job, fraction float64, msg string) {
	r := j.rec
	if r == nil {
		return
	}
	s := c.tasks.shard(r.task.ID)
	s.mu.Lock()
	if r.job != j || r.state.Terminal() {
		s.mu.Unlock()
		return
	}
	c.progressLocked(s, r, fraction, msg)
}

// TaskProgress implements grid.ProgressSink: a report from the peer that
// runs attempt of task id, checked by the orchestrator. It is kept if
// that attempt is the task's current one and still delegated.
func (c *DelegationCoordinator) TaskProgress(id TaskID, attempt int, fraction float64, msg string) {
	s := c.tasks.shard(id)
	s.mu.Lock()
	r := s.get(id)
	if r == nil || r.state != StateDelegated || int(r.attempts) != attempt {
		s.mu.Unlock()
		return
	}
	c.progressLocked(s, r, fraction, msg)
}

var _ grid.ProgressSink = (*DelegationCoordinator)(nil)

// progressLocked records a report for r and publishes it as an event (at
// most one per progressEventInterval); it unlocks s.
func (c *DelegationCoordinator) progressLocked(s *taskShard, r *record, fraction float64, msg string) {
	p := Progress{Fraction: fraction, Message: msg, UpdatedAt: time.Now()}
	c.setProgressLocked(r, p)
	fl := r.fl
	s.mu.Unlock()
	if fl != nil {
		c.shareProgress(fl, p)
	}
}

// setProgressLocked records p for r and publishes it, at most one event
// per progressEventInterval. The shard lock must be held: the event goes
// out under it, as every event, so that none overtakes a state change.
func (c *DelegationCoordinator) setProgressLocked(r *record, p Progress) {
	r.prog = p
	now := p.UpdatedAt
	if c.hasSubscribers() && now.UnixNano()-r.progEvent >= int64(progressEventInterval) {
		r.progEvent = now.UnixNano()
		ev := eventOf(r, now)
		ev.State = r.effectiveState()
		ev.Progress = &p
		c.publish(ev)
	}
}

// shareProgress gives the followers of fl, identical tasks waiting for
// its leader's run (see flight), the leader's report p.
func (c *DelegationCoordinator) shareProgress(fl *flight, p Progress) {
	rc := c.resultCache()
	if rc == nil {
		return
	}
	rc.mu.Lock()
	if len(fl.followers) == 0 {
		rc.mu.Unlock()
		return
	}
	followers := slices.Clone(fl.followers)
	rc.mu.Unlock()
	for _, r := range followers {
		s := c.tasks.shard(r.task.ID)
		s.mu.Lock()
		if !r.state.Terminal() && r.attempts == 0 { // still waiting
			c.setProgressLocked(r, p)
		}
		s.mu.Unlock()
	}
}

// onIncomingProgress is the reporter of a peer's task: the report goes to
// the request the task now answers (a newer attempt may have taken it
// over).
func (c *DelegationCoordinator) onIncomingProgress(j *Job, fraction float64, msg string) {
	in := j.inc
	if in == nil {
		return
	}
	qid := saltID(in.id, c.salt)
	s := c.in.shard(qid)
	s.mu.Lock()
	var rt *grid.RemoteTask
	if s.m[qid] == in {
		rt = in.rt
	}
	s.mu.Unlock()
	rt.ReportProgress(fraction, msg)
}
