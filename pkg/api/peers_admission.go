package api

import (
	"math"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// PeerAdmission tells each peer's admission class and the limits that come
// with it. *skill.AdmissionPolicy implements it.
type PeerAdmission interface {
	PeerAdmission(p peer.ID) (skill.PeerClass, grid.PeerLimits)
}

// PeerActivity tells what each peer holds on this node now and how many of
// this node's tasks are in flight to it, as the orchestrator counts them.
// *grid.Orchestrator implements it.
type PeerActivity interface {
	PeerUsage(p peer.ID) grid.PeerUsage
	Outstanding(p peer.ID) int
}

var _ PeerAdmission = (*skill.AdmissionPolicy)(nil)

// fillAdmission sets the admission fields of out for p, from whichever of
// Deps.Admission and Deps.Activity the server has.
func (s *Server) fillAdmission(out *apiv1.Peer, p peer.ID) {
	if a := s.deps.Admission; a != nil {
		class, lim := a.PeerAdmission(p)
		out.Admission = &apiv1.PeerAdmission{Class: class.String(), Limits: limitsOf(lim)}
	}
	if act := s.deps.Activity; act != nil {
		u := act.PeerUsage(p)
		if out.Admission == nil {
			out.Admission = &apiv1.PeerAdmission{}
		}
		out.Admission.Usage = &apiv1.PeerUsage{Tasks: u.Tasks, Bytes: u.Bytes}
		n := act.Outstanding(p)
		out.Outstanding = &n
	}
}

// limitsOf converts limits for the API; an unlimited rate is 0.
func limitsOf(l grid.PeerLimits) apiv1.PeerLimits {
	r := float64(l.Rate)
	if l.Rate == rate.Inf || math.IsInf(r, 0) || math.IsNaN(r) {
		r = 0
	}
	return apiv1.PeerLimits{RatePerSec: r, Burst: l.Burst, MaxTasks: l.MaxTasks, MaxBytes: l.MaxBytes}
}
