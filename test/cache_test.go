package test

import (
	"context"
	"sync/atomic"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/skill"
)

// TestCacheAnswersASecondRequesterWithoutRunningAgain: node B offers a
// deterministic skill and has a result cache; two other nodes ask it for
// the same work, one after the other. B runs it once, and answers the
// second requester from its cache.
func TestCacheAnswersASecondRequesterWithoutRunningAgain(t *testing.T) {
	var runs atomic.Int64
	det := funcSkill{
		desc: skill.Descriptor{ID: "test.det", Version: "1.0.0", Description: "test skill: deterministic", Deterministic: true},
		fn: func(_ context.Context, in skill.SkillInput) ([]byte, error) {
			runs.Add(1)
			return append([]byte("det:"), in.Data...), nil
		},
	}
	b := newHarnessNode(t, harnessConfig{skills: []skill.Skill{det}})
	rc, err := skill.NewResultCache(skill.CacheConfig{})
	if err != nil {
		t.Fatal(err)
	}
	b.Coord.UseResultCache(rc)
	t.Cleanup(func() { b.Coord.UseResultCache(nil) })
	a1 := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{b}})
	a2 := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{b}})

	for i, a := range []*harnessNode{a1, a2} {
		a.awaitOffer(t, "test.det", b.ID)
		res := a.run(t, skill.NewSkillTask("test.det", skill.RawInput([]byte("same")), ""))
		if string(res.Output) != "det:same" || res.ExecutedBy != b.ID {
			t.Fatalf("requester %d: output %q from %s, want %q from B", i+1, res.Output, res.ExecutedBy.ShortString(), "det:same")
		}
		if n := runs.Load(); n != 1 {
			t.Fatalf("after requester %d: B ran the skill %d times, want 1", i+1, n)
		}
	}
	if st := rc.Stats(); st.Hits != 1 || st.Misses != 1 {
		t.Errorf("B's cache: %+v, want 1 hit and 1 miss", st)
	}

	// Another input: B runs it.
	a1.run(t, skill.NewSkillTask("test.det", skill.RawInput([]byte("other")), ""))
	if n := runs.Load(); n != 2 {
		t.Fatalf("another input: B ran the skill %d times in all, want 2", n)
	}
}
