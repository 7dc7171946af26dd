package reputation

import "testing"

func TestAnswerEvidence(t *testing.T) {
	for _, tc := range []struct {
		rate   float64
		c      Check
		o      Outcome
		weight float64
		ok     bool
	}{
		{0, Unchecked, OutcomeSuccess, 1, true},
		{0, CheckMatched, OutcomeSuccess, 1, true},
		{0, CheckWrong, OutcomeWrongResult, 1, true},
		{0.02, Unchecked, 0, 0, false},
		{0.02, CheckMatched, OutcomeSuccess, 50, true},
		{0.02, CheckWrong, OutcomeWrongResult, 1, true},
		{1, Unchecked, 0, 0, false},
		{1, CheckMatched, OutcomeSuccess, 1, true},
		{0.001, CheckMatched, OutcomeSuccess, maxCheckWeight, true},
	} {
		o, w, ok := AnswerEvidence(tc.rate, tc.c)
		if o != tc.o || w != tc.weight || ok != tc.ok {
			t.Errorf("AnswerEvidence(%v, %v) = %v, %v, %v; want %v, %v, %v", tc.rate, tc.c, o, w, ok, tc.o, tc.weight, tc.ok)
		}
	}
}

// An honest peer checked at rate 0.1 once in ten answers ends where ten
// successes under no checks would; unchecked answers move nothing.
func TestRecordAnswerKeepsExpectedEvidence(t *testing.T) {
	ids := peers(t, 3)
	g, err := NewGraph(ids[0], WithLogger(quietLogger))
	if err != nil {
		t.Fatal(err)
	}
	for range 9 {
		g.RecordAnswer(ids[1], "s", 0.1, Unchecked)
	}
	if tr := g.Trust(ids[1]); tr != 0.5 {
		t.Fatalf("trust after 9 unchecked answers = %v; want neutral 0.5", tr)
	}
	g.RecordAnswer(ids[1], "s", 0.1, CheckMatched)
	for range 10 {
		g.RecordAnswer(ids[2], "s", 0, Unchecked)
	}
	a, b := g.Trust(ids[1]), g.Trust(ids[2])
	if d := a - b; d > 1e-3 || d < -1e-3 {
		t.Errorf("trust after one match at rate 0.1 = %v; after 10 answers without checks = %v; want equal", a, b)
	}
	if ra, rb := g.SkillRating(ids[1], "s"), g.SkillRating(ids[2], "s"); ra-rb > 1e-3 || rb-ra > 1e-3 {
		t.Errorf("skill rating %v against %v; want equal", ra, rb)
	}
	for _, pt := range g.Peers() {
		if pt.Peer == ids[1] && pt.Successes != 1 {
			t.Errorf("lifetime successes after one match = %d; want 1", pt.Successes)
		}
	}
	g.RecordAnswer(ids[2], "s", 0.1, CheckWrong)
	if tr := g.Trust(ids[2]); tr >= b {
		t.Errorf("trust after a wrong result = %v; want below %v", tr, b)
	}
}
