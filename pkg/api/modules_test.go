package api_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/test"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// modNetwork is a node whose peers, and the modules they announce, a
// test sets.
type modNetwork struct {
	api.Network
	peers []grid.PeerInfo
	mods  map[peer.ID][32]byte // for text.upper 1.0.0
}

func (n modNetwork) Peers() []grid.PeerInfo { return n.peers }

func (n modNetwork) AnnouncedModule(p peer.ID, s reputation.SkillID, version string) ([32]byte, bool) {
	m, ok := n.mods[p]
	return m, ok && s == "text.upper" && version == "1.0.0"
}

var _ api.ModuleView = modNetwork{}

func TestSkillsListTheModuleProvidersAnnounceForAWasmSkillNotHere(t *testing.T) {
	e := newEngine(t)
	a, b, c, d := test.RandPeerIDFatal(t), test.RandPeerIDFatal(t), test.RandPeerIDFatal(t), test.RandPeerIDFatal(t)
	upper := []grid.SkillCapability{{ID: "text.upper", Version: "1.0.0"}}
	net := modNetwork{Network: e.Node,
		peers: []grid.PeerInfo{
			{Peer: a, Skills: upper, Verified: true}, {Peer: b, Skills: upper, Verified: true}, {Peer: c, Skills: upper, Verified: true},
			{Peer: c, Skills: []grid.SkillCapability{{ID: "echo", Version: "1.0.0"}}, Verified: true}, // echo is local, and no wasm skill
			{Peer: d, Skills: upper}, // not verified: no provider yet
		},
		mods: map[peer.ID][32]byte{a: {2}, b: {1}, c: {2}, d: {1}}, // they disagree: 02 twice, 01 once (d is not counted)
	}
	deps := e.Deps()
	deps.Node = net
	s, err := api.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	ans := request(t, s.Handler(), "GET", "/v1/skills", "")
	var skills []apiv1.Skill
	if ans.status != 200 || json.Unmarshal(ans.body, &skills) != nil {
		t.Fatalf("/v1/skills: %d %s", ans.status, ans.body)
	}
	want := "02" + strings.Repeat("0", 62)
	var found bool
	for _, sk := range skills {
		switch sk.ID {
		case "text.upper":
			found = true
			if sk.Local || sk.Module != want || len(sk.Providers) != 3 {
				t.Errorf("text.upper = %+v; want not local, 3 providers (not the unverified one), module %s (announced by 2 of them)", sk, want)
			}
		case "echo":
			if sk.Module != "" {
				t.Errorf("echo (a local built-in) = %+v; want no module", sk)
			}
		}
	}
	if !found {
		t.Fatalf("/v1/skills lacks text.upper: %s", ans.body)
	}
}
