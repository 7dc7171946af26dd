package test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/test"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// TestAdmissionHoldsAStrangerToItsBudgetButNotAKnownPeer sends three
// long tasks at once from a stranger and from a peer whose work this node
// trusts: the stranger's third is refused over budget (2 tasks), the known
// peer's all run.
func TestAdmissionHoldsAStrangerToItsBudgetButNotAKnownPeer(t *testing.T) {
	// The policy reads a graph the test controls, standing for the
	// executor's own.
	g, err := reputation.NewGraph(test.RandPeerIDFatal(t), reputation.WithLogger(harnessLogger()))
	if err != nil {
		t.Fatal(err)
	}
	pol, err := skill.NewAdmissionPolicy(g, skill.DefaultAdmissionConfig())
	if err != nil {
		t.Fatal(err)
	}
	exec := newHarnessNode(t, harnessConfig{
		builtins: []reputation.SkillID{"debug.sleep"}, workers: 8,
		orchOpts:  []grid.OrchestratorOption{grid.WithPeerPolicy(pol)},
		coordOpts: []skill.CoordinatorOption{skill.WithAdmission(pol)},
	})
	stranger := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{exec}})
	known := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{exec}})
	for g.Trust(known.ID) < skill.DefaultKnownTrust {
		g.Record(known.ID, "debug.sleep", reputation.OutcomeSuccess)
	}

	send := func(from *harnessNode) []error {
		ctx, cancel := context.WithTimeout(context.Background(), harnessWait)
		defer cancel()
		errs := make([]error, 3)
		var wg sync.WaitGroup
		for i := range errs {
			wg.Go(func() {
				_, errs[i] = from.Orch.Delegate(ctx, exec.ID, &grid.RemoteTask{
					ID: grid.NewTaskID(), Skill: "debug.sleep", Input: []byte(`{"ms":1500}`), InputKind: grid.InputJSON,
					Deadline: time.Now().Add(10 * time.Second), Attempt: 1,
				})
			})
			time.Sleep(100 * time.Millisecond) // in order: the third is the one over
		}
		wg.Wait()
		return errs
	}
	errs := send(stranger)
	var rej *grid.RejectError
	if errs[0] != nil || errs[1] != nil || !errors.As(errs[2], &rej) || rej.Reason != grid.RejectOverBudget {
		t.Fatalf("a stranger's three tasks: %v; want two run and the third RejectOverBudget", errs)
	}
	if rej.RetryAfter <= 0 {
		t.Errorf("over-budget refusal %v has no retry hint", rej)
	}
	for i, err := range send(known) {
		if err != nil {
			t.Errorf("a known peer's task %d: %v, want it run", i, err)
		}
	}
}
