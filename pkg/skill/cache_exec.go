package skill

import (
	"slices"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// DefaultMaxRunWaiters bounds the requests that wait for one shared run
// of a peer's deterministic task (see execRun): a request past it is
// refused with RejectQueueFull, and asked again later it finds the
// result in the cache.
const DefaultMaxRunWaiters = 1024

// execRun is one execution on this node of a deterministic task that
// peers asked for, shared by every identical request (same cache key)
// that comes while it runs, and by local tasks submitted meanwhile. It
// takes one place in the queue, under an ID of its own, so that the
// number of distinct keys running is bounded by the queue; its waiters
// take none. Each peer's request keeps its own entry in the incoming
// table (its ID, deadline, reply, cancel); leaving the run (a cancel, a
// deadline, a lost connection) takes the request out of waiters, and
// the last one to leave cancels the run.
//
// A local task that waits and is then canceled stays in locals (its
// record just ends): the run goes on for it, and its result is cached.
//
// waiters, locals and over are guarded by the cache's mutex.
type execRun struct {
	rc    *ResultCache
	key   CacheKey
	first *incoming // the request the run started for: its result is not marked cached
	task  SkillTask
	job   Job
	qt    grid.QueuedTask

	waiters []*incoming
	locals  []*record // local tasks waiting (see joinRun)
	over    bool      // ended: Done ran, or the last waiter left
}

// admitCacheable admits inc, a peer's request for a deterministic skill
// (e) without no_cache, through rc: it answers it from the cache (a
// result this node computed itself: it vouches only for its own work),
// or makes it wait for the identical run going on here, or starts that
// run; key is its cache key. It is called with the incoming shard s
// locked, inc checked against the table and not in it; it puts inc in the
// table, unless it answered it, and unlocks s. The run it starts, if any,
// is returned for the caller to enqueue.
func (c *DelegationCoordinator) admitCacheable(rc *ResultCache, s *inShard, key CacheKey, inc *incoming, qid TaskID, now time.Time) (run *execRun, answered bool, err error) {
	rc.mu.Lock()
	if hit, ok := rc.getLocked(key, now); ok && hit.ExecutedBy == c.self {
		rc.mu.Unlock()
		s.mu.Unlock()
		rc.peerHits.Add(1)
		rr := &grid.RemoteResult{ID: inc.id, Success: true, Output: hit.Output, ExecTime: hit.Duration, Executor: c.self, Cached: true}
		c.sent(inc, rr)
		inc.reply.Reply(rr)
		return nil, true, nil
	}
	if cur := rc.runs[key]; cur != nil {
		if len(cur.waiters)+len(cur.locals) >= rc.maxWaiters {
			n := len(cur.waiters) + len(cur.locals)
			rc.mu.Unlock()
			s.mu.Unlock()
			return nil, false, reject(grid.RejectQueueFull, c.cfg.retryBase, "%d requests wait here for the same work already: ask again soon, its result will be cached", n)
		}
		inc.cache, inc.run = rc, cur
		cur.waiters = append(cur.waiters, inc)
		rc.mu.Unlock()
		s.m[qid] = inc
		s.mu.Unlock()
		rc.peerJoins.Add(1)
		return nil, false, nil
	}
	if fl := rc.flights[key]; fl != nil && len(fl.remote) < rc.maxWaiters && c.runsHere(fl.leader) {
		// A local task identical to it runs here: wait for it.
		inc.cache, inc.fl = rc, fl
		fl.remote = append(fl.remote, inc)
		rc.mu.Unlock()
		s.m[qid] = inc
		s.mu.Unlock()
		rc.peerJoins.Add(1)
		return nil, false, nil
	}
	run = c.newRun(rc, key, []*incoming{inc})
	rc.runs[key] = run
	inc.cache, inc.run = rc, run
	rc.mu.Unlock()
	s.m[qid] = inc
	s.mu.Unlock()
	rc.peerMisses.Add(1)
	return run, false, nil
}

// newRun returns a run of key for waiters (the first is the request it
// runs for), under the priority and deadline of the one with the latest
// deadline. The caller puts it in rc.runs and enqueues it.
func (c *DelegationCoordinator) newRun(rc *ResultCache, key CacheKey, waiters []*incoming) *execRun {
	lead := waiters[0]
	for _, w := range waiters[1:] {
		if w.deadline.After(lead.deadline) {
			lead = w
		}
	}
	now := time.Now()
	run := &execRun{rc: rc, key: key, first: waiters[0], waiters: waiters}
	run.task = lead.task
	run.task.ID = grid.NewTaskID()
	run.task.CreatedAt = now
	run.task.Timeout = lead.deadline.Sub(now)
	run.job = Job{Task: &run.task, run: run, progress: c.runProgress}
	run.job.Done = func(_ *grid.QueuedTask, res SkillResult) { c.endRun(run, res) }
	run.qt = grid.QueuedTask{ID: run.task.ID, Priority: run.task.Priority, Payload: &run.job, CreatedAt: now, Deadline: lead.deadline}
	return run
}

// enqueueRun puts run in the queue. If the queue refuses it, the run
// ends: except, the request that started it, is taken out of the table
// (its caller rejects it), and the others get the failure.
func (c *DelegationCoordinator) enqueueRun(run *execRun, except *incoming) error {
	err := c.q.Enqueue(&run.qt)
	if err == nil {
		return nil
	}
	if except != nil {
		c.in.take(saltID(except.id, c.salt), &except.job)
	}
	c.endRun(run, SkillResult{Code: grid.CodeInternal, Error: "this node could not queue the work: " + err.Error()})
	return err
}

// endRun ends run with res, from the executor (or the queue's refusal):
// a success goes in the cache, and every request and local task still
// waiting gets res. A run that timed out is started again for the
// requests whose own deadlines have not passed (they may be later than
// the one the run took).
func (c *DelegationCoordinator) endRun(run *execRun, res SkillResult) {
	rc := run.rc
	rc.mu.Lock()
	if rc.runs[run.key] == run {
		delete(rc.runs, run.key)
	}
	waiters, locals := run.waiters, run.locals
	run.waiters, run.locals, run.over = nil, nil, true
	if res.Success {
		rc.putLocked(run.key, CachedResult{Output: res.Output, ExecutedBy: c.self, Duration: res.Duration})
	}
	rc.mu.Unlock()

	now := time.Now()
	var again []*incoming
	for _, w := range waiters {
		if !res.Success && res.Code == grid.CodeTimeout && now.Before(w.deadline) && !c.closing.Load() {
			again = append(again, w)
			continue
		}
		in, reply := c.in.take(saltID(w.id, c.salt), &w.job)
		if in == nil {
			continue // it left, and was answered
		}
		shared := res.Success && w != run.first
		if shared {
			rc.peerShared.Add(1)
		}
		c.answerIncoming(in, reply, res, shared)
	}
	if len(again) > 0 {
		c.restartRun(rc, run.key, again)
	}
	for _, r := range locals {
		if res.Success {
			// Counted before the waiter wakes, so that it sees the count;
			// undone if it had ended already.
			rc.hits.Add(1)
			rc.shared.Add(1)
			if !c.finishShared(r, SkillResult{Success: true, Output: res.Output, Duration: res.Duration, ExecutedBy: c.self, Cached: true}) {
				rc.shared.Add(^uint64(0))
				rc.hits.Add(^uint64(0))
			}
			continue
		}
		c.join(rc, run.key, r) // it runs the task itself, or joins whoever does
	}
}

// restartRun runs key again for waiters, requests still in the table
// whose run timed out before their deadlines; if another run of key
// started meanwhile, they join it.
func (c *DelegationCoordinator) restartRun(rc *ResultCache, key CacheKey, all []*incoming) {
	rc.mu.Lock()
	var waiters []*incoming
	for _, w := range all {
		if !w.left {
			waiters = append(waiters, w)
		}
	}
	if len(waiters) == 0 {
		rc.mu.Unlock()
		return
	}
	if cur := rc.runs[key]; cur != nil {
		for _, w := range waiters {
			w.run, w.fl = cur, nil
		}
		cur.waiters = append(cur.waiters, waiters...)
		rc.mu.Unlock()
		return
	}
	run := c.newRun(rc, key, waiters)
	for _, w := range waiters {
		w.run, w.fl = run, nil
	}
	rc.runs[key] = run
	rc.mu.Unlock()
	rc.peerMisses.Add(1)
	_ = c.enqueueRun(run, nil)
}

// leaveRun takes in, a request taken out of the incoming table, out of
// its run; the last to leave cancels the run.
func (c *DelegationCoordinator) leaveRun(in *incoming) {
	rc := in.cache
	rc.mu.Lock()
	in.left = true
	if fl := in.fl; fl != nil {
		// Waiting for a local task, which its own caller may cancel.
		for i, w := range fl.remote {
			if w == in {
				fl.remote = append(fl.remote[:i], fl.remote[i+1:]...)
				break
			}
		}
		rc.mu.Unlock()
		return
	}
	run := in.run
	for i, w := range run.waiters {
		if w == in {
			run.waiters = append(run.waiters[:i], run.waiters[i+1:]...)
			break
		}
	}
	last := !run.over && len(run.waiters) == 0 && len(run.locals) == 0
	if last {
		run.over = true
		if rc.runs[run.key] == run {
			delete(rc.runs, run.key)
		}
	}
	rc.mu.Unlock()
	if last {
		c.q.Remove(run.qt.ID)
		run.job.Cancel()
	}
}

// joinRun makes r, a local follower record of key, wait for a peer's
// identical task running here, and reports whether it did (false: none
// runs, or it has all the waiters it may have).
func (c *DelegationCoordinator) joinRun(rc *ResultCache, key CacheKey, r *record) bool {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	run := rc.runs[key]
	if run == nil || run.over || len(run.waiters)+len(run.locals) >= rc.maxWaiters {
		return false
	}
	run.locals = append(run.locals, r)
	return true
}

// runsHere reports whether task id, a local task, runs on this node now
// (queued or running in its executor).
func (c *DelegationCoordinator) runsHere(id TaskID) bool {
	s := c.tasks.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.get(id)
	return r != nil && !r.state.Terminal() && r.job != nil
}

// endRemoteFollowers ends the peers' requests that waited for fl, a local
// task of key that ended with res (nil: it did not succeed). A success of
// this node's answers them; otherwise they run on their own, in one run,
// and the local followers, if any, join it: it reports whether they did.
func (c *DelegationCoordinator) endRemoteFollowers(rc *ResultCache, key CacheKey, remote []*incoming, res *SkillResult) bool {
	if len(remote) == 0 {
		return false
	}
	if res != nil && res.ExecutedBy == c.self {
		shared := SkillResult{Success: true, Output: res.Output, Duration: res.Duration, ExecutedBy: c.self}
		for _, w := range remote {
			if in, reply := c.in.take(saltID(w.id, c.salt), &w.job); in != nil {
				rc.peerShared.Add(1)
				c.answerIncoming(in, reply, shared, true)
			}
		}
		return false
	}
	c.restartRun(rc, key, remote)
	return true
}

// answerIncoming sends res, the result of in's work, to its requester;
// shared marks it as another request's run (Cached on the wire).
func (c *DelegationCoordinator) answerIncoming(in *incoming, reply grid.Replier, res SkillResult, shared bool) {
	rr := &grid.RemoteResult{
		ID: in.id, Success: res.Success, Output: res.Output, ErrorCode: res.Code,
		ErrorMessage: res.Error, ExecTime: res.Duration, Executor: c.self, Cached: shared,
	}
	if c.cfg.store != nil {
		c.storeAnswered(in, rr)
	}
	c.sent(in, rr)
	reply.Reply(rr)
}

// stopWork stops the work of in, taken out of the incoming table: its
// queue entry and job, or its place in a shared run.
func (c *DelegationCoordinator) stopWork(qid TaskID, in *incoming) {
	if in.cache != nil {
		c.leaveRun(in)
		return
	}
	c.q.Remove(qid)
	in.job.Cancel()
}

// cacheableIncoming reports whether a peer's request for e goes through
// the cache.
func cacheableIncoming(rc *ResultCache, e *entry, rt *grid.RemoteTask) bool {
	return rc != nil && e.desc.Deterministic && !rt.NoCache
}

// runProgress is the reporter of a shared run: the report goes to every
// peer's request waiting for it, each to the attempt it now answers.
func (c *DelegationCoordinator) runProgress(j *Job, fraction float64, msg string) {
	run := j.run
	if run == nil {
		return
	}
	run.rc.mu.Lock()
	waiters := slices.Clone(run.waiters)
	run.rc.mu.Unlock()
	for _, w := range waiters {
		c.onIncomingProgress(&w.job, fraction, msg)
	}
}
