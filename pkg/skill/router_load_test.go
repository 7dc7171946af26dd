package skill

import (
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

func TestRouteChecksAnnouncedLoadAgainstWhatThisNodeSees(t *testing.T) {
	ids := rtPeers(t, 3)
	self, liar, honest := ids[0], ids[1], ids[2]
	lightly := grid.Load{Capacity: 8, InFlight: 2} // utilization 0.25
	tests := []struct {
		name     string
		liar     grid.Load
		observed map[peer.ID]ObservedLoad
	}{
		{
			name:     "a peer announcing idle while this node has many tasks outstanding there is not preferred",
			liar:     grid.Load{Capacity: 8},
			observed: map[peer.ID]ObservedLoad{liar: {InFlight: 12}, honest: {InFlight: 2}},
		},
		{
			name: "a capacity of 0 reads as unknown, not idle",
			liar: grid.Load{Capacity: 0},
		},
		{
			name: "a capacity over 1024 reads as unknown, not nearly idle",
			liar: grid.Load{Capacity: 1 << 20, InFlight: 3},
		},
		{
			name:     "an unknown capacity with tasks outstanding there is counted against the assumed capacity",
			liar:     grid.Load{},
			observed: map[peer.ID]ObservedLoad{liar: {InFlight: 3}},
		},
		{
			name:     "the peer this node measures as slower ranks after the faster one, whatever they announce",
			liar:     lightly,
			observed: map[peer.ID]ObservedLoad{liar: {Latency: 800 * time.Millisecond}, honest: {Latency: 5 * time.Millisecond}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dir := rtDirectory{"remote.only": {
				{Peer: liar, Load: tc.liar, Connected: true},
				{Peer: honest, Load: lightly, Connected: true},
			}}
			r, err := NewRouter(self, rtRegistry(t), dir, nil, nil, nil,
				WithObservedLoad(func(p peer.ID) ObservedLoad { return tc.observed[p] }))
			if err != nil {
				t.Fatal(err)
			}
			got, err := r.Route(NewSkillTask("remote.only", RawInput(nil), self))
			if err != nil {
				t.Fatalf("Route: %v", err)
			}
			if len(got) != 2 || got[0].Peer != honest {
				t.Fatalf("order %v (scores %+v), want the honest peer first", rtPeersOf(got), got)
			}
			best, err := r.best(NewSkillTask("remote.only", RawInput(nil), self), false, nil)
			if err != nil || best.Peer != honest {
				t.Errorf("best = %s, %v; want the honest peer", best.Peer, err)
			}
		})
	}
}

func TestRouteUtilizationOfAnnouncedAndObservedLoad(t *testing.T) {
	p := rtPeers(t, 1)[0]
	tests := []struct {
		name     string
		load     grid.Load
		observed int
		want     float64
	}{
		{"an honest announcement is used as is", grid.Load{Capacity: 4, InFlight: 1, QueueDepth: [grid.NumLevels]int{1}}, 0, 0.5},
		{"the observed count wins when larger", grid.Load{Capacity: 4}, 3, 0.75},
		{"the announced count wins when larger", grid.Load{Capacity: 4, InFlight: 4}, 1, 1},
		{"an unknown capacity is at least half loaded", grid.Load{}, 0, unknownUtilFloor},
		{"an unknown capacity counts against UnknownCapacity slots", grid.Load{InFlight: 2}, 6, 6.0 / UnknownCapacity},
		{"a capacity of exactly 1024 is believed", grid.Load{Capacity: MaxCredibleCapacity}, 0, 0},
		{"negative announced counts count as 0", grid.Load{Capacity: 4, InFlight: -9, QueueDepth: [grid.NumLevels]int{-3}}, 0, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := NewRouter(p, rtRegistry(t), nil, nil, nil, nil,
				WithObservedLoad(func(peer.ID) ObservedLoad { return ObservedLoad{InFlight: tc.observed} }))
			if err != nil {
				t.Fatal(err)
			}
			if got := r.remoteUtil(&grid.Provider{Peer: p, Load: tc.load}); got != tc.want {
				t.Fatalf("utilization %v, want %v", got, tc.want)
			}
		})
	}
}
