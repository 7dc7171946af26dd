package skill

import (
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
	return c.events.Subscribe(fn)
}

// DroppedEvents returns how many events were dropped because a subscriber
// lagged, summed over the current subscriptions.
func (c *DelegationCoordinator) DroppedEvents() uint64 { return c.events.Dropped() }

// hasSubscribers is the hot path's check before it builds an Event.
func (c *DelegationCoordinator) hasSubscribers() bool { return c.events.Has() }

// publish hands ev to every subscriber without blocking.
func (c *DelegationCoordinator) publish(ev Event) { c.events.Publish(ev) }

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
