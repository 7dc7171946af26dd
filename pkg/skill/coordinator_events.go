package skill

import (
	"slices"
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Event is a change of a task's state, as Subscribe delivers it.
type Event struct {
	TaskID  TaskID             `json:"task_id"`
	Skill   reputation.SkillID `json:"skill"`
	State   TaskState          `json:"state"`
	Peer    peer.ID            `json:"peer,omitempty"` // node of the current or last attempt
	Attempt int                `json:"attempt"`
	// Error is why the task failed, for a terminal state, or why the
	// attempt before failed, for StateRetrying.
	Error string    `json:"error,omitempty"`
	At    time.Time `json:"at"`
	// Ranking is what the router ranked when the coordinator chose the
	// node of attempt Ranking.Attempt (see WithRankingSize); nil if none.
	// It is shared by every subscriber: do not modify it.
	Ranking *Ranking `json:"-"`
	// Progress is set on a progress event: the task's state has not
	// changed, its skill reported how far it is.
	Progress *Progress `json:"progress,omitempty"`
}

// eventBuffer is how many events a subscriber may lag behind before
// further events to it are dropped.
const eventBuffer = 1024

// subscriber delivers events to one Subscribe callback from its own
// goroutine, so that a slow callback never holds up a task.
type subscriber struct {
	fn      func(Event)
	ch      chan Event
	stop    chan struct{}
	dropped atomic.Uint64
}

// Subscribe calls fn with every task state change from now on: the
// submission (queued or delegated), each new attempt (delegated, queued,
// retrying) and the terminal state. A local attempt's start is not an
// event (the executor reports only a job's end); Status shows it as
// running. fn is called from one goroutine per subscription, in order; the
// task path never waits for it: if fn falls more than 1024 events behind,
// newer events are dropped for that subscriber (and counted; see
// DroppedEvents). The returned function ends the subscription; it does not
// wait for a running fn. Close ends every subscription.
func (c *DelegationCoordinator) Subscribe(fn func(Event)) (unsubscribe func()) {
	if fn == nil {
		return func() {}
	}
	s := &subscriber{fn: fn, ch: make(chan Event, eventBuffer), stop: make(chan struct{})}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return func() {}
	}
	c.setSubs(append(slices.Clone(c.subList()), s))
	c.wg.Add(1)
	c.mu.Unlock()
	go c.deliver(s)
	return func() { c.unsubscribe(s) }
}

// DroppedEvents returns how many events were dropped because a subscriber
// lagged, summed over the current subscriptions.
func (c *DelegationCoordinator) DroppedEvents() uint64 {
	var n uint64
	for _, s := range c.subList() {
		n += s.dropped.Load()
	}
	return n
}

func (c *DelegationCoordinator) subList() []*subscriber {
	if p := c.subs.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *DelegationCoordinator) setSubs(l []*subscriber) { c.subs.Store(&l) }

func (c *DelegationCoordinator) unsubscribe(s *subscriber) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.subList()
	i := slices.Index(l, s)
	if i < 0 {
		return
	}
	c.setSubs(slices.Delete(slices.Clone(l), i, i+1))
	close(s.stop)
}

// stopSubscribers ends every subscription. c.mu must be held.
func (c *DelegationCoordinator) stopSubscribersLocked() {
	for _, s := range c.subList() {
		close(s.stop)
	}
	c.setSubs(nil)
}

func (c *DelegationCoordinator) deliver(s *subscriber) {
	defer c.wg.Done()
	for {
		select {
		case ev := <-s.ch:
			s.fn(ev)
		case <-s.stop:
			// Hand over what is already buffered, then stop.
			for {
				select {
				case ev := <-s.ch:
					s.fn(ev)
				default:
					return
				}
			}
		}
	}
}

// hasSubscribers is the hot path's check before it builds an Event.
func (c *DelegationCoordinator) hasSubscribers() bool {
	p := c.subs.Load()
	return p != nil && len(*p) > 0
}

// publish hands ev to every subscriber without blocking.
func (c *DelegationCoordinator) publish(ev Event) {
	for _, s := range c.subList() {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

// eventOf builds the event for r's current state. The shard lock must be
// held.
func eventOf(r *record, at time.Time) Event {
	ev := Event{TaskID: r.task.ID, Skill: r.task.Skill, State: r.state, Peer: r.peer, Attempt: int(r.attempts), At: at, Ranking: r.ranking}
	switch {
	case r.state.Terminal() && r.err != nil:
		ev.Error = r.err.Error()
	case r.state == StateRetrying && r.retry != nil && r.retry.last != nil:
		ev.Error = r.retry.last.Error()
	case r.state == StateRetrying && r.retry != nil && r.retry.waitErr != nil:
		ev.Error = r.retry.waitErr.Error()
	}
	return ev
}
