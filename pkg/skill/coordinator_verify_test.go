package skill

import (
	"context"
	"testing"
	"testing/synctest"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// A peer that returns a wrong echo or a wrong hash is caught by the
// built-in's own output check: its answer is a wrong result in its trust,
// and the task runs again on a peer that answers right.
func TestCoordinatorRecordsAWrongBuiltinOutputAsAWrongResult(t *testing.T) {
	tests := []struct {
		name  string
		skill reputation.SkillID
		in    SkillInput
		wrong []byte
	}{
		{"a wrong echo", "echo", RawInput([]byte("hello")), []byte("hellp")},
		{"a wrong hash", "hash.sha256", RawInput([]byte("hello")),
			[]byte(`{"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}`)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ids := rtPeers(t, 2)
				liar, honest := ids[0], ids[1]
				var provs []grid.Provider
				for _, p := range ids {
					provs = append(provs, grid.Provider{Peer: p, Version: "1.0.0", Connected: true, Load: grid.Load{Capacity: 4}})
				}
				// One worker and one queued task per level: with two blocking
				// tasks here, this node's queue is full and the built-in goes
				// to a peer.
				e := newCoEnv(t, coEnvConfig{workers: 1, queueOpts: []grid.QueueOption{grid.WithMaxPerLevel(1)},
					dir: rtDirectory{tc.skill: provs}})
				e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
				<-e.started                                                // running
				e.submit(t, NewSkillTask("test.block", RawInput(nil), "")) // queued
				want, err := builtin(t, BuiltinOptions{}, tc.skill).Execute(context.Background(), tc.in)
				if err != nil {
					t.Fatal(err)
				}
				answer := func(p peer.ID, out []byte) func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) {
					return func(_ context.Context, rt *grid.RemoteTask) (*grid.RemoteResult, error) {
						return &grid.RemoteResult{ID: rt.ID, Success: true, Output: out, Executor: p}, nil
					}
				}
				e.del.behave[liar] = answer(liar, tc.wrong)
				e.del.behave[honest] = answer(honest, want)
				e.trust.Record(liar, tc.skill, reputation.OutcomeSuccess) // the liar ranks first

				res, err := e.wait(t, e.submit(t, NewSkillTask(tc.skill, tc.in, "")))
				if err != nil || res.ExecutedBy != honest || string(res.Output) != string(want) {
					t.Fatalf("Wait = %+v, %v; want the honest peer's output", res, err)
				}
				if pt := coPeerTrust(t, e.trust, liar); pt.WrongResults != 1 {
					t.Errorf("trust record of the liar = %+v; want its output recorded as a wrong result", pt)
				}
				if pt := coPeerTrust(t, e.trust, honest); pt.WrongResults != 0 || pt.Successes != 1 {
					t.Errorf("trust record of the honest peer = %+v; want 1 success", pt)
				}
			})
		})
	}
}
