package api_test

import (
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// peerCounts stands in for the orchestrator's per-peer counters.
type peerCounts struct {
	usage       map[peer.ID]grid.PeerUsage
	outstanding map[peer.ID]int
}

func (c peerCounts) PeerUsage(p peer.ID) grid.PeerUsage { return c.usage[p] }
func (c peerCounts) Outstanding(p peer.ID) int          { return c.outstanding[p] }

var _ api.PeerActivity = peerCounts{}

func TestAPIPeersShowAdmissionClassLimitsAndUsage(t *testing.T) {
	e := newEngine(t)
	other := connectedPeer(t, e).ID()
	pol, err := skill.NewAdmissionPolicy(e.Trust, skill.DefaultAdmissionConfig())
	if err != nil {
		t.Fatal(err)
	}
	deps := e.Deps()
	deps.Admission = pol
	deps.Activity = peerCounts{
		usage:       map[peer.ID]grid.PeerUsage{other: {Tasks: 1, Bytes: 1500}},
		outstanding: map[peer.ID]int{other: 12},
	}
	s, err := api.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	h := s.Handler()

	p, ok := peerEntry(t, h, other)
	if !ok {
		t.Fatal("GET /v1/peers does not list the connected peer")
	}
	want := apiv1.PeerAdmission{
		Class:  apiv1.ClassStranger,
		Limits: apiv1.PeerLimits{RatePerSec: 5, Burst: 10, MaxTasks: 2, MaxBytes: 4 << 20},
		Usage:  &apiv1.PeerUsage{Tasks: 1, Bytes: 1500},
	}
	if p.Admission == nil || p.Admission.Class != want.Class || p.Admission.Limits != want.Limits ||
		p.Admission.Usage == nil || *p.Admission.Usage != *want.Usage {
		t.Fatalf("admission of a new peer = %+v, want %+v", p.Admission, want)
	}
	if p.Outstanding == nil || *p.Outstanding != 12 {
		t.Fatalf("outstanding = %v, want the live count 12", p.Outstanding)
	}

	for e.Trust.Trust(other) < skill.DefaultKnownTrust {
		e.Trust.Record(other, "echo", reputation.OutcomeSuccess)
	}
	p, _ = peerEntry(t, h, other)
	if p.Admission == nil || p.Admission.Class != apiv1.ClassKnown || p.Admission.Limits.MaxTasks != skill.DefaultKnownLimits.MaxTasks {
		t.Fatalf("admission after the peer earned trust = %+v, want known with the full limits", p.Admission)
	}
}

func TestAPIPeersLeaveAdmissionOutWithoutAPolicyAndCountTasksInFlightThemselves(t *testing.T) {
	e := newEngine(t)
	other := connectedPeer(t, e).ID()
	p, ok := peerEntry(t, server(t, e).Handler(), other)
	if !ok || p.Admission != nil {
		t.Fatalf("peer entry %+v; want no admission fields when the node reports none", p)
	}
	if p.Outstanding == nil || *p.Outstanding != 0 {
		t.Fatalf("outstanding = %v; want 0 counted from the coordinator's tasks when there is no Activity", p.Outstanding)
	}
}

func TestAPIPeerClassNamesMatchTheSkillLayer(t *testing.T) {
	for c, want := range map[skill.PeerClass]string{
		skill.ClassTrusted: apiv1.ClassTrusted, skill.ClassKnown: apiv1.ClassKnown,
		skill.ClassStranger: apiv1.ClassStranger, skill.ClassRefused: apiv1.ClassRefused,
	} {
		if c.String() != want {
			t.Errorf("class %d is %q in pkg/skill and %q in apiv1", c, c.String(), want)
		}
	}
}
