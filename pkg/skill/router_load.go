package skill

import (
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ObservedLoad is what this node itself sees of a peer's load, whatever
// the peer announces.
type ObservedLoad struct {
	// InFlight counts the tasks this node delegated to the peer that await
	// their results (the orchestrator's Outstanding).
	InFlight int
	// Latency is the peer's recent latency as this node measured it (the
	// metrics tracker's RecentLatency); 0 if none.
	Latency time.Duration
}

// WithObservedLoad sets where the router learns what this node sees of a
// peer's load. f must be fast and safe for concurrent use: it is called
// for every remote candidate of every task. Default: only the attempts this
// router's coordinator has outstanding.
func WithObservedLoad(f func(peer.ID) ObservedLoad) RouterOption {
	return func(c *routerConfig) { c.observed = f }
}

// Bounds on a peer's announced load. A capacity of 0 (not announced) or
// above MaxCredibleCapacity reads as unknown: the router then assumes
// UnknownCapacity worker slots and a utilization of at least
// unknownUtilFloor, never idle.
const (
	MaxCredibleCapacity = 1024
	UnknownCapacity     = 4
	unknownUtilFloor    = 0.5
)

// remoteUtil is the utilization the score uses for provider p. The
// announced load is a hint, checked against what this node sees: the busy
// count is the larger of the announced one (queued + in flight) and the
// observed one (the larger of this router's outstanding attempts and
// ObservedLoad.InFlight), so a peer that announces idle while this node
// has tasks waiting on it does not look idle. An unknown or incredible
// capacity is not idle either; see MaxCredibleCapacity.
func (r *Router) remoteUtil(p *grid.Provider) float64 {
	l := p.Load
	announced := max(l.InFlight, 0)
	for _, d := range l.QueueDepth {
		announced += max(d, 0)
	}
	observed := 0
	if v, ok := r.outstanding.Load(p.Peer); ok {
		observed = max(int(v.(*atomic.Int32).Load()), 0)
	}
	if r.observed != nil {
		observed = max(observed, r.observed(p.Peer).InFlight)
	}
	busy := float64(max(announced, observed))
	if l.Capacity <= 0 || l.Capacity > MaxCredibleCapacity {
		return max(unknownUtilFloor, busy/UnknownCapacity)
	}
	return busy / float64(l.Capacity)
}

// observedLatency is the latency this node measured to p itself, 0 if none
// or if no ObservedLoad function is set.
func (r *Router) observedLatency(p peer.ID) time.Duration {
	if r.observed == nil {
		return 0
	}
	return max(r.observed(p).Latency, 0)
}
