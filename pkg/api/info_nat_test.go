package api_test

import (
	"encoding/json"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

func TestAPIIdentitySaysWhetherTheNodeIsReachable(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()
	a := request(t, h, "GET", "/v1/id", "")
	if a.status != 200 {
		t.Fatalf("GET /v1/id: %d", a.status)
	}
	var id apiv1.Identity
	if err := json.Unmarshal(a.body, &id); err != nil {
		t.Fatal(err)
	}
	if id.NAT == nil {
		t.Fatalf("GET /v1/id has no nat section: %s", a.body)
	}
	// A node on loopback alone has no peer to dial it back: AutoNAT has
	// not decided, and it holds no relay reservation.
	if id.NAT.Reachability != "unknown" || len(id.NAT.Relays) != 0 || id.NAT.Relays == nil {
		t.Errorf("nat = %+v, want reachability unknown and an empty relay list", id.NAT)
	}
	if id.NAT.DirectPeers != 0 || id.NAT.RelayedPeers == nil || len(id.NAT.RelayedPeers) != 0 {
		t.Errorf("nat = %+v, want no peer, direct or relayed (an empty list, not null)", id.NAT)
	}
}
