package api

import (
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// ModuleView tells which module a peer announces for a wasm skill
// (capability gossip's module hashes). *grid.Node implements it. When
// Deps.Node does, /v1/skills reports the module of a wasm skill only peers
// offer: the one its providers announce (see Server.skills).
type ModuleView interface {
	AnnouncedModule(p peer.ID, skill reputation.SkillID, version string) ([32]byte, bool)
}

var _ ModuleView = (*grid.Node)(nil)

// announcedModule returns the module most of provs announce for skill at
// version, ties broken by the smaller hash (the coordinator names the
// same one in the tasks it sends: skill.Router's announcedModule), and
// false if none announces one.
func announcedModule(mv ModuleView, provs []peer.ID, skill reputation.SkillID, version string) ([32]byte, bool) {
	var best [32]byte
	bestN := 0
	counts := make(map[[32]byte]int, 1)
	for _, p := range provs {
		m, ok := mv.AnnouncedModule(p, skill, version)
		if !ok || m == ([32]byte{}) {
			continue
		}
		counts[m]++
		if n := counts[m]; n > bestN || (n == bestN && string(m[:]) < string(best[:])) {
			best, bestN = m, n
		}
	}
	return best, bestN > 0
}
