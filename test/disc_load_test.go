package test

import (
	"testing"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// A worker that announces worker capacity 0 (no load at all) while it
// holds this node's tasks does not draw every task of a burst: its
// capacity reads as unknown, and the tasks this node has outstanding on
// it count.
func TestDiscLoadLiarDoesNotDrawTheWholeBurst(t *testing.T) {
	sleeper := []reputation.SkillID{"debug.sleep"}
	boot := newHarnessNode(t, harnessConfig{})
	honest := newHarnessNode(t, harnessConfig{builtins: sleeper, bootstrap: []*harnessNode{boot}})
	liar := newHarnessNode(t, harnessConfig{builtins: sleeper, bootstrap: []*harnessNode{boot}})
	liar.Node.SetLoadFunc(func() grid.Load { return grid.Load{} }) // "idle", whatever it holds
	req := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{boot}})
	req.awaitOffer(t, "debug.sleep", honest.ID)
	req.awaitOffer(t, "debug.sleep", liar.ID)
	awaitCond(t, harnessWait, "the liar's capacity-0 announcement reached the requester", func() bool {
		for _, p := range req.Node.Providers("debug.sleep") {
			if p.Peer == liar.ID {
				return p.Load.Capacity == 0
			}
		}
		return false
	})

	const burst = 16
	ids := make([]skill.TaskID, burst)
	for i := range ids {
		ids[i] = req.submit(t, sleepTask(t, 300))
	}
	ran := map[string]int{}
	for _, id := range ids {
		res, err := req.wait(t, id)
		if err != nil {
			t.Fatalf("task %s: %v", id.Short(), err)
		}
		switch res.ExecutedBy {
		case honest.ID:
			ran["honest"]++
		case liar.ID:
			ran["liar"]++
		default:
			ran["other"]++
		}
	}
	t.Logf("burst of %d: %v", burst, ran)
	if ran["honest"] < burst/4 {
		t.Fatalf("the honest worker ran %d of %d tasks (%v); the liar drew the burst", ran["honest"], burst, ran)
	}
}
