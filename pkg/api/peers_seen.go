package api

import (
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// peerSeen is what this node observed itself of its tasks on each peer:
// the tracker's figures and, when Deps.Activity does not count them, how
// many are in flight there, from the coordinator's task list.
type peerSeen struct {
	now      time.Time
	metrics  map[peer.ID]*apiv1.PeerSeen
	inFlight map[peer.ID]int // nil when Deps.Activity counts them
}

func (s *Server) peerSeen() peerSeen {
	snap := s.deps.Tasks.Metrics()
	ps := peerSeen{now: time.Now(), metrics: make(map[peer.ID]*apiv1.PeerSeen, len(snap.PerNode))}
	self := s.deps.Node.ID()
	for p, nm := range snap.PerNode {
		if p == self || nm.Submitted == 0 {
			continue
		}
		ps.metrics[p] = &apiv1.PeerSeen{
			Completed: nm.Completed, Failed: nm.Failed, TimedOut: nm.TimedOut,
			RecentLatencyMS: msOf(nm.RecentLatency), LastOutcome: nm.LastSeen,
		}
	}
	if s.deps.Activity == nil {
		ps.inFlight = make(map[peer.ID]int)
		for _, st := range s.deps.Tasks.List(skill.ListFilter{States: []skill.TaskState{skill.StateDelegated}, Limit: skill.MaxListLimit}) {
			ps.inFlight[st.Peer]++
		}
	}
	return ps
}

// fill sets the fields of out that this node observed of p, and the age of
// p's last announcement (lastSeen; zero if none).
func (ps peerSeen) fill(out *apiv1.Peer, p peer.ID, lastSeen time.Time) {
	out.Seen = ps.metrics[p]
	if !lastSeen.IsZero() {
		out.AnnouncedAgo = apiv1.Duration(max(ps.now.Sub(lastSeen), 0).Round(time.Millisecond))
	}
	if ps.inFlight != nil {
		n := ps.inFlight[p]
		out.Outstanding = &n
	}
}
