package skill

import (
	"bytes"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// ModuleDirectory is a Directory that also tells which module a peer
// announces for a wasm skill (capability gossip's module hashes):
// *grid.Node is one. With it, a task for a wasm skill this node lacks
// still names the module to run, so that a node that fetches modules
// can fetch it (see Router.announcedModule).
type ModuleDirectory interface {
	AnnouncedModule(p peer.ID, skill reputation.SkillID, version string) ([32]byte, bool)
}

var _ ModuleDirectory = (*grid.Node)(nil)

// offerDirectory is a Directory that can tell whether one peer is a
// provider of a skill without listing them all: *grid.Node is one. It
// spares announcedModule a slice per remote attempt of a non-wasm skill.
type offerDirectory interface {
	Offers(p peer.ID, skill reputation.SkillID, version string) bool
}

var _ offerDirectory = (*grid.Node)(nil)

// announcedModule returns the module to name in t, sent to p, when this
// node lacks t's skill; zero if none is known, or t's skill is not a wasm
// skill, or the Directory is not a ModuleDirectory.
//
// If p announces a module for the skill (at t's version, any version if
// t names none), that is the one: p runs it. If p offers the skill
// without one (not a wasm skill there), zero: a module hash would make p
// refuse the task. Otherwise p is a node that fetches modules, and the
// module is the one the providers of the skill at t's version announce.
// Providers may disagree (two operators added different builds under one
// name and version); then the hash most of them announce wins, as the
// likeliest to be the code the requester means and the easiest to fetch,
// ties broken by the smaller hash so that every attempt names the same.
//
// It runs once per remote attempt, only for a skill this node lacks: one
// AnnouncedModule lookup for a provider, one per provider for a fetcher.
func (r *Router) announcedModule(t *SkillTask, p peer.ID) [32]byte {
	md, ok := r.dir.(ModuleDirectory)
	if !ok {
		return [32]byte{}
	}
	if m, ok := md.AnnouncedModule(p, t.Skill, t.Version); ok {
		return m
	}
	if od, ok := r.dir.(offerDirectory); ok && od.Offers(p, t.Skill, t.Version) {
		return [32]byte{} // p offers the skill, and not as a wasm skill
	}
	provs := r.dir.Providers(t.Skill)
	for _, q := range provs {
		if q.Peer == p && (t.Version == "" || q.Version == t.Version) {
			return [32]byte{} // p offers the skill, and not as a wasm skill
		}
	}
	var best [32]byte
	bestN := 0
	counts := make(map[[32]byte]int, 1)
	for _, q := range provs {
		if q.Peer == r.self || (t.Version != "" && q.Version != t.Version) {
			continue
		}
		m, ok := md.AnnouncedModule(q.Peer, t.Skill, q.Version)
		if !ok || m == ([32]byte{}) {
			continue
		}
		counts[m]++
		if n := counts[m]; n > bestN || (n == bestN && bytes.Compare(m[:], best[:]) < 0) {
			best, bestN = m, n
		}
	}
	return best
}
