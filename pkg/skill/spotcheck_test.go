package skill

import (
	"context"
	"math"
	"slices"
	"sync"
	"testing"
	"testing/synctest"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// spotAnswer answers every task with out, as p.
func spotAnswer(p peer.ID, out string) func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) {
	return func(_ context.Context, rt *grid.RemoteTask) (*grid.RemoteResult, error) {
		return &grid.RemoteResult{ID: rt.ID, Success: true, Output: []byte(out), Executor: p}, nil
	}
}

// spotDet is a deterministic skill this node runs: it returns "right".
type spotDet struct{}

func (spotDet) Descriptor() Descriptor {
	return Descriptor{ID: "test.det", Version: "1.0.0", Deterministic: true}
}
func (spotDet) Execute(context.Context, SkillInput) ([]byte, error) { return []byte("right"), nil }

// spotEnv is a coordinator whose three peers offer skill, with spot
// checks of every success, and the checks it reported.
type spotEnv struct {
	*coEnv
	ids []peer.ID
	mu  sync.Mutex
	got []SpotCheck
}

func newSpotEnv(t *testing.T, skill reputation.SkillID, extra ...CoordinatorOption) *spotEnv {
	t.Helper()
	ids := rtPeers(t, 3)
	var provs []grid.Provider
	for _, p := range ids {
		provs = append(provs, grid.Provider{Peer: p, Version: "1.0.0", Connected: true, Load: grid.Load{Capacity: 4}})
	}
	opts := append([]CoordinatorOption{WithSpotChecks(SpotCheckConfig{Rate: 1, Deterministic: []reputation.SkillID{"remote.det"}})}, extra...)
	se := &spotEnv{coEnv: newCoEnv(t, coEnvConfig{workers: 1, queueOpts: []grid.QueueOption{grid.WithMaxPerLevel(1)},
		dir: rtDirectory{skill: provs}, opts: opts}), ids: ids}
	se.c.OnSpotCheck(func(sc SpotCheck) {
		se.mu.Lock()
		se.got = append(se.got, sc)
		se.mu.Unlock()
	})
	return se
}

func (se *spotEnv) checks() []SpotCheck {
	se.mu.Lock()
	defer se.mu.Unlock()
	return slices.Clone(se.got)
}

func TestSpotCheckFindsTheLiarByTheMajority(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newSpotEnv(t, "remote.det")
		liar, h1, h2 := e.ids[0], e.ids[1], e.ids[2]
		e.del.behave[liar] = spotAnswer(liar, "wrong")
		e.del.behave[h1] = spotAnswer(h1, "right")
		e.del.behave[h2] = spotAnswer(h2, "right")
		e.trust.Record(liar, "remote.det", reputation.OutcomeSuccess) // the liar ranks first

		res, err := e.wait(t, e.submit(t, NewSkillTask("remote.det", RawInput(nil), "")))
		if err != nil || res.ExecutedBy != liar || string(res.Output) != "wrong" {
			t.Fatalf("Wait = %+v, %v; want the first answer, the liar's, unchanged", res, err)
		}
		synctest.Wait()
		got := e.checks()
		if len(got) != 1 || got[0].Result != SpotCheckWrongResult || got[0].Wrong != liar || len(got[0].Checkers) != 2 {
			t.Fatalf("spot checks = %+v; want one wrong result of the liar, settled by two checkers", got)
		}
		if pt := coPeerTrust(t, e.trust, liar); pt.WrongResults != 1 || pt.Successes != 1 {
			t.Errorf("liar's trust record %+v; want one wrong result and only the success recorded before: its wrong answer is no success", pt)
		}
		for _, p := range []peer.ID{h1, h2} {
			if pt := coPeerTrust(t, e.trust, p); pt.WrongResults != 0 || pt.Successes != 1 {
				t.Errorf("honest checker's trust record %+v; want one success", pt)
			}
		}
		if st := e.c.SpotCheckStats(); st.Started != 1 || st.WrongResults != 1 {
			t.Errorf("SpotCheckStats = %+v; want 1 started, 1 wrong result", st)
		}
	})
}

func TestSpotCheckBlamesALyingChecker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newSpotEnv(t, "remote.det")
		first, liar, third := e.ids[0], e.ids[1], e.ids[2]
		e.del.behave[first] = spotAnswer(first, "right")
		e.del.behave[liar] = spotAnswer(liar, "wrong")
		e.del.behave[third] = spotAnswer(third, "right")
		for range 3 {
			e.trust.Record(first, "remote.det", reputation.OutcomeSuccess)
		}
		e.trust.Record(liar, "remote.det", reputation.OutcomeSuccess) // the liar checks second

		if _, err := e.wait(t, e.submit(t, NewSkillTask("remote.det", RawInput(nil), ""))); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := e.checks(); len(got) != 1 || got[0].Wrong != liar || got[0].First != first {
			t.Fatalf("spot checks = %+v; want the checker that disagreed with two others found wrong", got)
		}
	})
}

func TestSpotCheckAgreementBlamesNobody(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newSpotEnv(t, "remote.det")
		for _, p := range e.ids {
			e.del.behave[p] = spotAnswer(p, "right")
		}
		if _, err := e.wait(t, e.submit(t, NewSkillTask("remote.det", RawInput(nil), ""))); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		if got := e.checks(); len(got) != 1 || got[0].Result != SpotCheckMatch || len(got[0].Checkers) != 1 {
			t.Fatalf("spot checks = %+v; want one match with one checker", got)
		}
		for _, pt := range e.trust.Peers() {
			if pt.WrongResults != 0 {
				t.Errorf("%s has a wrong result after a check that agreed", pt.Peer)
			}
		}
	})
}

func TestSpotCheckRunsLocallyWhenThisNodeHasTheSkill(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newSpotEnv(t, "test.det")
		if err := e.reg.Register(spotDet{}); err != nil {
			t.Fatal(err)
		}
		// This node's one worker and its one queue slot are taken: the
		// task goes to a peer.
		e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
		<-e.started
		e.submit(t, NewSkillTask("test.block", RawInput(nil), ""))
		liar := e.ids[0]
		for _, p := range e.ids {
			e.del.behave[p] = spotAnswer(p, "wrong")
		}
		e.trust.Record(liar, "test.det", reputation.OutcomeSuccess)
		res, err := e.wait(t, e.submit(t, NewSkillTask("test.det", RawInput(nil), "")))
		if err != nil || res.ExecutedBy != liar {
			t.Fatalf("Wait = %+v, %v; want the liar's answer", res, err)
		}
		synctest.Wait()
		got := e.checks()
		if len(got) != 1 || got[0].Wrong != liar || !slices.Equal(got[0].Checkers, []peer.ID{e.self}) {
			t.Fatalf("spot checks = %+v; want the liar found wrong by this node's own run", got)
		}
		if n := len(e.del.Calls()); n != 1 {
			t.Errorf("%d remote calls; want 1: the check ran here", n)
		}
	})
}

func TestSpotCheckLeavesOtherTasksAlone(t *testing.T) {
	tests := []struct {
		name  string
		skill reputation.SkillID
		rate  float64
	}{
		{"a skill not known to be deterministic is not checked", "remote.only", 1},
		{"a rate of 0 checks nothing", "remote.det", 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newSpotEnv(t, tc.skill, WithSpotChecks(SpotCheckConfig{Rate: tc.rate, Deterministic: []reputation.SkillID{"remote.det"}}))
				for _, p := range e.ids {
					e.del.behave[p] = spotAnswer(p, "x")
				}
				if _, err := e.wait(t, e.submit(t, NewSkillTask(tc.skill, RawInput(nil), ""))); err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				if n := len(e.del.Calls()); n != 1 || len(e.checks()) != 0 {
					t.Fatalf("%d remote calls, checks %+v; want 1 call and no check", n, e.checks())
				}
			})
		})
	}
}

// Under spot checks an answer for a deterministic skill is evidence only
// once checked (reputation.AnswerEvidence); one for any other skill, or
// with checks off, is a success at once. Metrics count every answer.
func TestSpotCheckUncheckedAnswersAreNoEvidence(t *testing.T) {
	tests := []struct {
		name      string
		skill     reputation.SkillID
		rate      float64
		successes uint64
	}{
		{"a deterministic skill, never drawn for a check", "remote.det", 1e-12, 0},
		{"a skill not known to be deterministic", "remote.only", 1e-12, 1},
		{"spot checks off", "remote.det", 0, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newSpotEnv(t, tc.skill, WithSpotChecks(SpotCheckConfig{Rate: tc.rate, Deterministic: []reputation.SkillID{"remote.det"}}))
				for _, p := range e.ids {
					e.del.behave[p] = spotAnswer(p, "x")
				}
				res, err := e.wait(t, e.submit(t, NewSkillTask(tc.skill, RawInput(nil), "")))
				if err != nil {
					t.Fatal(err)
				}
				synctest.Wait()
				var got uint64
				for _, pt := range e.trust.Peers() {
					got += pt.Successes
				}
				if got != tc.successes {
					t.Errorf("%d successes in trust; want %d", got, tc.successes)
				}
				if tr := e.trust.Trust(res.ExecutedBy); tc.successes == 0 && tr != 0.5 {
					t.Errorf("trust in %s = %v; want neutral 0.5", res.ExecutedBy, tr)
				}
				if m := e.c.metrics.Snapshot(); m.Completed == 0 {
					t.Errorf("metrics %+v; want the answer counted as completed", m)
				}
			})
		})
	}
}

// A match weighs 1/rate successes for the first answer, one for the
// checker that agreed: at rate 0.5, two and one. Tasks go until one is
// drawn for a check; the unchecked ones before it are no evidence.
func TestSpotCheckMatchWeighsOneOverRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newSpotEnv(t, "remote.det", WithSpotChecks(SpotCheckConfig{Rate: 0.5, Deterministic: []reputation.SkillID{"remote.det"}}))
		for _, p := range e.ids {
			e.del.behave[p] = spotAnswer(p, "right")
		}
		for i := 0; len(e.checks()) == 0; i++ {
			if i == 60 {
				t.Fatal("no spot check in 60 tasks at rate 0.5")
			}
			if _, err := e.wait(t, e.submit(t, NewSkillTask("remote.det", RawInput(nil), ""))); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
		}
		got := e.checks()
		if len(got) != 1 || got[0].Result != SpotCheckMatch || len(got[0].Checkers) != 1 {
			t.Fatalf("spot checks = %+v; want one match with one checker", got)
		}
		first, checker := got[0].First, got[0].Checkers[0]
		ref, err := reputation.NewGraph(e.self)
		if err != nil {
			t.Fatal(err)
		}
		one, two := e.ids[0], e.ids[1]
		ref.Record(one, "remote.det", reputation.OutcomeSuccess)
		ref.Record(two, "remote.det", reputation.OutcomeSuccess)
		ref.Record(two, "remote.det", reputation.OutcomeSuccess)
		if a, b := e.trust.Trust(first), ref.Trust(two); math.Abs(a-b) > 1e-3 {
			t.Errorf("trust in the first answer's node = %v; want %v, two successes", a, b)
		}
		if a, b := e.trust.Trust(checker), ref.Trust(one); math.Abs(a-b) > 1e-3 {
			t.Errorf("trust in the checker = %v; want %v, one success", a, b)
		}
		for _, p := range e.ids {
			if p != first && p != checker {
				if tr := e.trust.Trust(p); tr != 0.5 {
					t.Errorf("trust in %s, whose answers were not checked = %v; want neutral 0.5", p, tr)
				}
			}
		}
	})
}

func TestSpotCheckConfigIsValidated(t *testing.T) {
	for _, cfg := range []SpotCheckConfig{{Rate: -0.1}, {Rate: 1.5}, {MaxInFlight: -1}, {Deterministic: []reputation.SkillID{"Bad ID"}}} {
		if err := cfg.validate(); err == nil {
			t.Errorf("spot checks %+v were accepted", cfg)
		}
	}
	ok := SpotCheckConfig{Rate: 0.02, Deterministic: []reputation.SkillID{"remote.det"}, MaxInFlight: 4}
	if err := ok.validate(); err != nil {
		t.Errorf("spot checks %+v were refused: %v", ok, err)
	}
}
