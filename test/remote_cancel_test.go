package test

import (
	"errors"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Cancel and Close end a remote attempt that is running on a peer, through
// the real orchestrator: its cancel reaches the peer, and the coordinator
// neither deadlocks on its own lock nor waits for the task's deadline.
func TestRemoteAttemptCanceledAndClosedThroughTheOrchestrator(t *testing.T) {
	a := newHarnessNode(t, harnessConfig{})
	b := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"debug.sleep"}, bootstrap: []*harnessNode{a}})
	a.awaitOffer(t, "debug.sleep", b.ID)
	sleep := func() *skill.SkillTask {
		return skill.NewSkillTask("debug.sleep", skill.SkillInput{Kind: grid.InputJSON, Data: []byte(`{"ms":60000}`)}, "").
			WithTimeout(2 * time.Minute).WithMaxRetries(0)
	}
	awaitDelegated := func(id skill.TaskID) {
		t.Helper()
		for start := time.Now(); time.Since(start) < 10*time.Second; time.Sleep(10 * time.Millisecond) {
			if st, err := a.Coord.Status(id); err == nil && st.State == skill.StateDelegated && b.Coord.QueueStats().InFlight > 0 {
				return
			}
		}
		t.Fatal("the task was not running on b within 10s")
	}

	id := a.submit(t, sleep())
	awaitDelegated(id)
	done := make(chan error, 1)
	go func() { done <- a.Coord.Cancel(id) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Cancel of a remote attempt did not return within 10s")
	}
	if _, err := a.wait(t, id); !errors.Is(err, skill.ErrCanceled) {
		t.Fatalf("Wait = %v, want ErrCanceled", err)
	}
	for start := time.Now(); b.Coord.QueueStats().InFlight > 0; time.Sleep(10 * time.Millisecond) {
		if time.Since(start) > 10*time.Second {
			t.Fatal("the cancel did not stop the task on b within 10s")
		}
	}

	id = a.submit(t, sleep())
	awaitDelegated(id)
	closed := make(chan error, 1)
	go func() { closed <- a.Coord.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close with a remote attempt running did not return within 10s")
	}
	if res, ok := a.Coord.GetResult(id); !ok || res.Success {
		t.Fatalf("GetResult after Close = %+v, %v; want a canceled task", res, ok)
	}
}
