package skill

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// flight is a cacheable task running now (the leader) and the identical
// tasks waiting for its result (the followers). Its fields are guarded by
// the cache's mutex.
//
// A follower is a record in StateQueued without an attempt: canceling it,
// or its deadline, ends only that record. When the leader succeeds, each
// follower still waiting succeeds with its output (Cached set); when the
// leader ends otherwise (it failed, timed out or its own caller canceled
// it), the first follower runs the task itself and the others wait for it.
type flight struct {
	key       CacheKey
	leader    TaskID
	followers []*record
}

// submitCacheable is SubmitTask for a task of a deterministic skill this
// node has (e), with rc installed. done says that the task was answered
// from the cache or joined a running identical task (id and err are
// SubmitTask's); otherwise the caller submits t as usual and, if fl is not
// nil, reports the submission to startFlight.
func (c *DelegationCoordinator) submitCacheable(ctx context.Context, rc *ResultCache, e *entry, t *SkillTask, now time.Time, checkDup bool) (id TaskID, fl *flight, done bool, err error) {
	key := keyOf(e.skill, &e.desc, t.Input)
	rc.mu.Lock()
	if res, ok := rc.getLocked(key, now); ok {
		rc.mu.Unlock()
		rc.hits.Add(1)
		id, err = c.addCached(ctx, t, cachedResult(res), now, checkDup)
		return id, nil, true, err
	}
	running := rc.flights[key]
	if running == nil {
		fl = &flight{key: key, leader: t.ID}
		rc.flights[key] = fl
		rc.mu.Unlock()
		rc.misses.Add(1)
		return TaskID{}, fl, false, nil
	}
	rc.mu.Unlock()
	if res, ok := c.succeeded(running.leader); ok {
		// The leader is done and its watcher has yet to store the result:
		// a caller that waited for it and asks again gets a hit at once.
		rc.Put(key, CachedResult{Output: res.Output, ExecutedBy: res.ExecutedBy, Duration: res.Duration})
		rc.hits.Add(1)
		id, err = c.addCached(ctx, t, cachedResult(CachedResult{Output: res.Output, ExecutedBy: res.ExecutedBy, Duration: res.Duration}), now, checkDup)
		return id, nil, true, err
	}
	r, err := c.addFollower(ctx, t, now, checkDup)
	if err != nil {
		return TaskID{}, nil, true, err
	}
	c.join(rc, key, r)
	return t.ID, nil, true, nil
}

// startFlight follows the leader of fl, whose submission returned err.
func (c *DelegationCoordinator) startFlight(rc *ResultCache, fl *flight, err error) {
	if err != nil {
		c.endFlight(rc, fl, nil)
		return
	}
	c.watch(rc, fl)
}

// watch ends fl when its leader ends. The goroutine ends with the leader
// task, which Close ends at the latest, and Close waits for it.
func (c *DelegationCoordinator) watch(rc *ResultCache, fl *flight) {
	if c.closing.Load() {
		c.endFlight(rc, fl, nil)
		return
	}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		res, err := c.Wait(context.Background(), fl.leader)
		if err != nil || res == nil || !res.Success {
			res = nil
		}
		c.endFlight(rc, fl, res)
	}()
}

// join makes r, a follower record in the table, wait for the running task
// identical to it, or, if that ended meanwhile, answers it from the cache
// or runs it.
func (c *DelegationCoordinator) join(rc *ResultCache, key CacheKey, r *record) {
	rc.mu.Lock()
	if fl := rc.flights[key]; fl != nil {
		fl.followers = append(fl.followers, r)
		rc.mu.Unlock()
		return
	}
	if res, ok := rc.getLocked(key, time.Now()); ok {
		rc.mu.Unlock()
		rc.hits.Add(1)
		c.finishShared(r, cachedResult(res))
		return
	}
	fl := &flight{key: key, leader: r.task.ID}
	rc.flights[key] = fl
	rc.mu.Unlock()
	rc.misses.Add(1)
	c.promote(rc, fl, r)
}

// endFlight ends fl with its leader's result res (nil: it did not
// succeed): the result goes in the cache and answers the followers, or
// else the first follower runs the task.
func (c *DelegationCoordinator) endFlight(rc *ResultCache, fl *flight, res *SkillResult) {
	rc.mu.Lock()
	if rc.flights[fl.key] == fl {
		delete(rc.flights, fl.key)
	}
	followers := fl.followers
	fl.followers = nil
	var next *flight
	if res != nil {
		rc.putLocked(fl.key, CachedResult{Output: res.Output, ExecutedBy: res.ExecutedBy, Duration: res.Duration})
	} else if len(followers) > 0 && !c.closing.Load() && rc.flights[fl.key] == nil {
		next = &flight{key: fl.key, leader: followers[0].task.ID, followers: followers[1:]}
		rc.flights[fl.key] = next
	}
	rc.mu.Unlock()
	switch {
	case res != nil:
		shared := SkillResult{Success: true, Output: res.Output, Duration: res.Duration, ExecutedBy: res.ExecutedBy, Cached: true}
		for _, r := range followers {
			if c.finishShared(r, shared) {
				rc.hits.Add(1)
				rc.shared.Add(1)
			}
		}
	case next != nil:
		c.promote(rc, next, followers[0])
	default:
		// Closing (Close finishes the followers), or another flight for
		// the key started: the followers join it.
		for _, r := range followers {
			c.join(rc, fl.key, r)
		}
	}
}

// promote runs r, a follower record, as the leader of fl.
func (c *DelegationCoordinator) promote(rc *ResultCache, fl *flight, r *record) {
	cand, perr := c.pick(r.task, true, nil)
	s := c.tasks.shard(r.task.ID)
	now := time.Now()
	s.mu.Lock()
	switch {
	case r.state.Terminal():
		s.mu.Unlock()
		c.endFlight(rc, fl, nil) // canceled or timed out meanwhile: the next one runs
		return
	case c.closing.Load():
		c.finishLocked(s, r, StateCanceled, failure(grid.CodeCanceled, c.self), c.canceledError(r))
		c.publishUnlock(s, r, now)
		c.endFlight(rc, fl, nil)
		return
	case perr != nil:
		c.finishLocked(s, r, StateFailed, failure(codeRejected, c.self), fmt.Errorf("task %s: %w", r.task.ID.Short(), perr))
		c.publishUnlock(s, r, now)
		c.endFlight(rc, fl, nil)
		return
	}
	c.startRetryLocked(s, r, cand, now)
	c.watch(rc, fl)
}

// finishShared ends r, a follower, with res, and reports whether it did
// (false: r had ended already).
func (c *DelegationCoordinator) finishShared(r *record, res SkillResult) bool {
	s := c.tasks.shard(r.task.ID)
	s.mu.Lock()
	if r.state.Terminal() || r.attempts != 0 {
		s.mu.Unlock()
		return false
	}
	c.finishLocked(s, r, StateSucceeded, res, nil)
	c.publishUnlock(s, r, r.updatedAt())
	return true
}

// addCached records t as succeeded at once with res, from the cache.
func (c *DelegationCoordinator) addCached(ctx context.Context, t *SkillTask, res SkillResult, now time.Time, checkDup bool) (TaskID, error) {
	r, err := c.addFollower(ctx, t, now, checkDup)
	if err != nil {
		return TaskID{}, err
	}
	c.finishShared(r, res)
	return t.ID, nil
}

// addFollower records t in StateQueued without an attempt (in the store
// too, if there is one, as a task not yet started).
func (c *DelegationCoordinator) addFollower(ctx context.Context, t *SkillTask, now time.Time, checkDup bool) (*record, error) {
	if c.cfg.store != nil {
		if err := c.acceptStored(ctx, t, false); err != nil {
			return nil, fmt.Errorf("submit task %s: %w", t.ID.Short(), err)
		}
	}
	s := c.tasks.shard(t.ID)
	r := &record{task: t, updated: now.UnixNano(), state: StateQueued}
	var err error
	s.mu.Lock()
	switch {
	case c.closing.Load():
		err = ErrClosed
	case checkDup && s.get(t.ID) != nil:
		err = fmt.Errorf("task ID is in use: %w", grid.ErrDuplicateTask)
	case !c.tasks.add(s, r):
		err = fmt.Errorf("%d tasks are unfinished, the most this node tracks: %w", c.cfg.maxTasks, ErrQueueFull)
	}
	if err != nil {
		s.mu.Unlock()
		if c.cfg.store != nil && !errors.Is(err, grid.ErrDuplicateTask) {
			c.failStored(t, err)
		}
		return nil, fmt.Errorf("submit task %s: %w", t.ID.Short(), err)
	}
	c.publishUnlock(s, r, now)
	return r, nil
}

// answerCached answers rt, a peer's request for a deterministic skill
// this node has (e), from rc if it holds a result this node computed
// itself: this node vouches only for its own work. It reports true if it
// answered through reply; otherwise it returns the Done func of the
// admitted job, which puts a success in rc.
func (c *DelegationCoordinator) answerCached(rc *ResultCache, e *entry, in SkillInput, rt *grid.RemoteTask, reply grid.Replier) (func(*grid.QueuedTask, SkillResult), bool) {
	key := keyOf(e.skill, &e.desc, in)
	if hit, ok := rc.Get(key); ok && hit.ExecutedBy == c.self {
		rc.hits.Add(1)
		reply.Reply(&grid.RemoteResult{ID: rt.ID, Success: true, Output: hit.Output, ExecTime: hit.Duration, Executor: c.self, Cached: true})
		return c.incomingDone, true
	}
	rc.misses.Add(1)
	return func(qt *grid.QueuedTask, res SkillResult) {
		if res.Success {
			rc.Put(key, CachedResult{Output: res.Output, ExecutedBy: c.self, Duration: res.Duration})
		}
		c.incomingDone(qt, res)
	}, false
}

// succeeded returns the result of task id if it succeeded.
func (c *DelegationCoordinator) succeeded(id TaskID) (SkillResult, bool) {
	s := c.tasks.shard(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.get(id)
	if r == nil || !r.finished() || r.state != StateSucceeded {
		return SkillResult{}, false
	}
	return r.result, true
}
