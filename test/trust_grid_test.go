package test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// digestSkill is a deterministic skill registered only from this test: the
// hex sha256 of its input. A liar returns the digest of its input and its
// own tag instead, a wrong answer that no other node gives.
type digestSkill struct{ liar string }

func (digestSkill) Descriptor() skill.Descriptor {
	return skill.Descriptor{ID: "test.digest", Version: "1.0.0", Deterministic: true}
}

func (d digestSkill) Execute(_ context.Context, in skill.SkillInput) ([]byte, error) {
	sum := sha256.Sum256(append(in.Data, d.liar...))
	return []byte(hex.EncodeToString(sum[:])), nil
}

const trustOpinionInterval = 200 * time.Millisecond

// TestTrustOpinionsSteerNodesAwayFromWrongResults runs a grid of 8 nodes:
// three honest providers of test.digest and two that answer it wrongly,
// two witnesses that use them and spot-check every answer, and an
// observer that has only ever run echo tasks on the witnesses. The
// witnesses find the liars by spot checks and share their trust; the
// observer, which never dealt with the liars, ranks them below the honest
// providers from the witnesses' opinions alone, and sends fewer than 5% of
// its tasks to them.
func TestTrustOpinionsSteerNodesAwayFromWrongResults(t *testing.T) {
	if testing.Short() {
		t.Skip("an 8-node grid")
	}
	spot := skill.WithSpotChecks(skill.SpotCheckConfig{Rate: 1, Deterministic: []reputation.SkillID{"test.digest"}})
	// Announcements valid for 10 s, not the harness's 1 s: on 2 loaded
	// cores under -race gossip runs late, every entry of the observer's
	// table can lapse at once, and a task then finds no provider. This
	// test is about whom the observer picks, not about lapsed entries.
	ttl := []grid.NodeOption{grid.WithCapabilityTTL(10 * time.Second)}
	seed := newHarnessNode(t, harnessConfig{skills: []skill.Skill{digestSkill{}}, opinions: trustOpinionInterval, nodeOpts: ttl})
	boot := []*harnessNode{seed}
	honest := []*harnessNode{seed}
	for range 2 {
		honest = append(honest, newHarnessNode(t, harnessConfig{skills: []skill.Skill{digestSkill{}}, bootstrap: boot, opinions: trustOpinionInterval, nodeOpts: ttl}))
	}
	var liars []*harnessNode
	for i := range 2 {
		liars = append(liars, newHarnessNode(t, harnessConfig{skills: []skill.Skill{digestSkill{liar: fmt.Sprint("liar", i)}}, bootstrap: boot, opinions: trustOpinionInterval, nodeOpts: ttl}))
	}
	var witnesses []*harnessNode
	for range 2 {
		witnesses = append(witnesses, newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}, bootstrap: boot,
			opinions: trustOpinionInterval, coordOpts: []skill.CoordinatorOption{spot}, nodeOpts: ttl}))
	}
	observer := newHarnessNode(t, harnessConfig{bootstrap: boot, opinions: trustOpinionInterval, nodeOpts: ttl})
	providers := append(slices.Clone(honest), liars...)
	for _, w := range append(slices.Clone(witnesses), observer) {
		for _, p := range providers {
			w.awaitOffer(t, "test.digest", p.ID)
		}
	}
	for _, w := range witnesses {
		observer.awaitOffer(t, "echo", w.ID)
	}
	isLiar := func(p peer.ID) bool {
		return slices.ContainsFunc(liars, func(h *harnessNode) bool { return h.ID == p })
	}

	// The witnesses: rounds of 10 tasks at once spread over every
	// provider, until each has caught both liars (bounded).
	for round := 0; ; round++ {
		caught := true
		for _, w := range witnesses {
			for _, l := range liars {
				pt, _ := w.Trust.PeerTrustOf(l.ID)
				caught = caught && pt.WrongResults > 0
			}
		}
		if caught {
			t.Logf("the witnesses caught both liars after %d rounds of 10 tasks each", round)
			break
		}
		if round == 20 {
			t.Fatalf("after %d rounds the witnesses have not caught both liars: %+v", round, witnesses[0].Trust.Peers())
		}
		var wg sync.WaitGroup
		for _, w := range witnesses {
			for i := range 10 {
				wg.Go(func() {
					w.run(t, skill.NewSkillTask("test.digest", skill.RawInput(fmt.Appendf(nil, "w%d-%d-%s", round, i, w.ID)), ""))
				})
			}
		}
		wg.Wait()
	}

	// The observer gets to trust the witnesses by running echo on them:
	// bursts of 16 at once, which spread over both (bounded).
	ranOn := func(w *harnessNode) bool {
		pt, _ := observer.Trust.PeerTrustOf(w.ID)
		return pt.Successes > 0
	}
	for round := 0; !ranOn(witnesses[0]) || !ranOn(witnesses[1]); round++ {
		if round == 20 {
			t.Fatalf("after %d bursts of echo the observer has not run one on each witness", round)
		}
		var wg sync.WaitGroup
		for i := range 16 {
			wg.Go(func() { observer.run(t, echoTask(fmt.Appendf(nil, "warm-up %d-%d", round, i))) })
		}
		wg.Wait()
	}

	// From the witnesses' opinions alone, every honest provider ranks
	// above every liar.
	awaitCond(t, harnessWait, "the observer ranks every honest provider above every liar", func() bool {
		for _, h := range honest {
			for _, l := range liars {
				if observer.Trust.Trust(h.ID) <= observer.Trust.Trust(l.ID) {
					return false
				}
			}
		}
		return true
	})
	for _, p := range providers {
		pt, _ := observer.Trust.PeerTrustOf(p.ID)
		if pt.Successes+pt.Failures+pt.Timeouts+pt.WrongResults != 0 {
			t.Fatalf("the observer dealt with provider %s directly before routing: %+v", p.ID.ShortString(), pt)
		}
		t.Logf("observer's trust in %s (liar %v): %.3f, global %.4f, %d opinions", p.ID.ShortString(), isLiar(p.ID), pt.Trust, pt.Global, len(observer.Trust.OpinionsOf(p.ID)))
	}

	const tasks = 60
	toLiars := 0
	for i := range tasks {
		res := observer.run(t, skill.NewSkillTask("test.digest", skill.RawInput(fmt.Appendf(nil, "observer %d", i)), ""))
		if isLiar(res.ExecutedBy) {
			toLiars++
		}
	}
	t.Logf("%d of %d observer tasks went to a liar", toLiars, tasks)
	if toLiars*20 >= tasks {
		t.Fatalf("%d of %d observer tasks went to a liar; want fewer than 5%%", toLiars, tasks)
	}
}
