package grid

import (
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// PeerLimits is what one peer may hold on this node at once, as a
// PeerPolicy decides it. The orchestrator enforces it on incoming task
// streams before a task reaches the TaskHandler: a request over Rate is
// rejected RejectRateLimited, over MaxTasks or MaxBytes RejectOverBudget,
// each with a retry-after hint. Bytes count the input of every task the
// peer has running here and the output of every result not yet written
// to its stream.
type PeerLimits struct {
	Rate     rate.Limit // task requests per second; rate.Inf for no limit
	Burst    int        // bucket size for Rate
	MaxTasks int        // tasks in flight here at once
	MaxBytes int64      // input plus output bytes in flight here at once
}

// PeerPolicy decides each peer's limits, for example from its trust: a
// stranger gets a small budget until it has earned more. The orchestrator
// asks it when a peer opens a task stream and again at most once a second
// while the peer keeps sending, so a policy may change its answer as the
// peer's trust changes. Implementations must be safe for concurrent use
// and must not block.
type PeerPolicy interface {
	PeerLimits(p peer.ID) PeerLimits
}

// PeerUsage is what one peer holds on this node now, for `cortexd peers`.
type PeerUsage struct {
	Tasks int   // tasks in flight here
	Bytes int64 // bytes in flight here
}
