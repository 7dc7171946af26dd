// Package eventhub fans events out to subscribers, each served by its own
// goroutine through a bounded buffer, so that a publisher never waits for
// a slow subscriber: an event a subscriber has no room for is dropped for
// it and counted. The coordinator's task events and the workflow engine's
// events both go through it.
package eventhub

import (
	"slices"
	"sync"
	"sync/atomic"
)

// Hub holds the subscriptions of one event source. The zero value is not
// ready: use New.
type Hub[E any] struct {
	buffer int

	mu     sync.Mutex
	closed bool
	subs   atomic.Pointer[[]*subscriber[E]] // replaced, never modified
	wg     sync.WaitGroup
}

type subscriber[E any] struct {
	fn      func(E)
	ch      chan E
	stop    chan struct{}
	dropped atomic.Uint64
}

// New returns a hub whose subscribers may each lag buffer events behind
// before newer ones are dropped for them.
func New[E any](buffer int) *Hub[E] { return &Hub[E]{buffer: buffer} }

// Subscribe calls fn with every event published from now on, from one
// goroutine, in order. The returned function ends the subscription; it
// does not wait for a running fn. After Close it does nothing.
func (h *Hub[E]) Subscribe(fn func(E)) (unsubscribe func()) {
	if fn == nil {
		return func() {}
	}
	s := &subscriber[E]{fn: fn, ch: make(chan E, h.buffer), stop: make(chan struct{})}
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return func() {}
	}
	h.set(append(slices.Clone(h.list()), s))
	h.wg.Add(1)
	h.mu.Unlock()
	go h.deliver(s)
	return func() { h.unsubscribe(s) }
}

// Has reports whether anyone subscribes: a publisher's check before it
// builds an event. It takes no lock.
func (h *Hub[E]) Has() bool {
	p := h.subs.Load()
	return p != nil && len(*p) > 0
}

// Publish hands ev to every subscriber without blocking. Publishers that
// need their events in order publish under their own lock.
func (h *Hub[E]) Publish(ev E) {
	for _, s := range h.list() {
		select {
		case s.ch <- ev:
		default:
			s.dropped.Add(1)
		}
	}
}

// Dropped returns how many events were dropped because a subscriber
// lagged, summed over the current subscriptions.
func (h *Hub[E]) Dropped() uint64 {
	var n uint64
	for _, s := range h.list() {
		n += s.dropped.Load()
	}
	return n
}

// Close ends every subscription, each after it delivered what it had
// buffered, and waits for their goroutines. Later Subscribes do nothing.
func (h *Hub[E]) Close() {
	h.mu.Lock()
	h.closed = true
	for _, s := range h.list() {
		close(s.stop)
	}
	h.set(nil)
	h.mu.Unlock()
	h.wg.Wait()
}

func (h *Hub[E]) list() []*subscriber[E] {
	if p := h.subs.Load(); p != nil {
		return *p
	}
	return nil
}

func (h *Hub[E]) set(l []*subscriber[E]) { h.subs.Store(&l) }

func (h *Hub[E]) unsubscribe(s *subscriber[E]) {
	h.mu.Lock()
	defer h.mu.Unlock()
	l := h.list()
	i := slices.Index(l, s)
	if i < 0 {
		return
	}
	h.set(slices.Delete(slices.Clone(l), i, i+1))
	close(s.stop)
}

func (h *Hub[E]) deliver(s *subscriber[E]) {
	defer h.wg.Done()
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
