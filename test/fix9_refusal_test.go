package test

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/test"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// TestFix9ABurstFromAStrangerAllRuns sends, through the requester's
// coordinator, 6 slow tasks to a worker that holds it to the public
// default for strangers (2 tasks at once): the worker refuses the rest
// over budget with a retry-after, and the requester, which does not count
// refusals against a task's retries, gets every one of them done.
func TestFix9ABurstFromAStrangerAllRuns(t *testing.T) {
	g, err := reputation.NewGraph(test.RandPeerIDFatal(t), reputation.WithLogger(harnessLogger()))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := skill.NewAdmissionPolicy(g, skill.DefaultAdmissionConfig())
	if err != nil {
		t.Fatal(err)
	}
	worker := newHarnessNode(t, harnessConfig{
		builtins: []reputation.SkillID{"debug.sleep"}, workers: 8,
		orchOpts:  []grid.OrchestratorOption{grid.WithPeerPolicy(pol)},
		coordOpts: []skill.CoordinatorOption{skill.WithAdmission(pol)},
	})
	requester := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{worker}})
	requester.awaitOffer(t, "debug.sleep", worker.ID)

	start := time.Now()
	var ids []skill.TaskID
	for range 6 {
		task := skill.NewSkillTask("debug.sleep", skill.SkillInput{Kind: grid.InputJSON, Data: []byte(`{"ms":1000}`)}, "")
		ids = append(ids, requester.submit(t, task.WithMaxRetries(1).WithTimeout(30*time.Second)))
	}
	for _, id := range ids {
		res, err := requester.wait(t, id)
		if err != nil {
			t.Fatalf("task %s: %v; want every task of the burst to run", id.Short(), err)
		}
		if res.ExecutedBy != worker.ID {
			t.Fatalf("task %s ran on %s, want the worker", id.Short(), res.ExecutedBy.ShortString())
		}
	}
	took := time.Since(start)
	m := requester.Coord.Metrics().PerNode[worker.ID]
	t.Logf("6 tasks of 1 s in %v; worker: %d completed, %d rejected, %d failed", took.Round(time.Millisecond), m.Completed, m.Rejected, m.Failed)
	if m.Completed != 6 || m.Rejected == 0 || m.Failed != 0 {
		t.Errorf("requester's metrics of the worker = %+v; want 6 completed, some rejected (2 at a time), no failure", m.Metrics)
	}
	if took < 3*time.Second {
		t.Errorf("6 tasks of 1 s, 2 at a time, took %v; want at least 3 s (was the stranger budget applied?)", took)
	}
}
