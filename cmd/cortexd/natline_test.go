package main

import (
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

func TestNATLineSaysReachabilityAndRelay(t *testing.T) {
	for _, tc := range []struct {
		name string
		nat  apiv1.NAT
		want string
	}{
		{"a public relay says so", apiv1.NAT{Reachability: "public", RelayService: true}, "reachable: yes (public); relaying for others"},
		{"a node behind NAT names its relay", apiv1.NAT{Reachability: "private", Relays: []string{"12D3KooWRelay"}},
			"reachable: no (behind NAT); through relay 12D3KooWRelay"},
		{"a node behind NAT without a reservation says so", apiv1.NAT{Reachability: "private"}, "reachable: no (behind NAT); no relay reservation yet"},
		{"an undecided node says unknown", apiv1.NAT{Reachability: "unknown"}, "reachable: unknown (AutoNAT has not decided yet)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := natLine(&tc.nat); got != tc.want {
				t.Fatalf("natLine = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestConnLineSaysDirectAndRelayedPeers(t *testing.T) {
	for _, tc := range []struct {
		name string
		nat  apiv1.NAT
		want string
	}{
		{"direct peers only", apiv1.NAT{DirectPeers: 3}, "peers: 3 connected directly, none only through a relay"},
		{"relayed peers are named", apiv1.NAT{DirectPeers: 1, RelayedPeers: []string{"12D3KooWA", "12D3KooWB"}},
			"peers: 1 connected directly, 2 only through a relay (12D3KooWA, 12D3KooWB)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := connLine(&tc.nat); got != tc.want {
				t.Fatalf("connLine = %q, want %q", got, tc.want)
			}
		})
	}
}
