package api

import (
	"crypto/rand"
	"fmt"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

func testPeers(t *testing.T, n int) []peer.ID {
	t.Helper()
	out := make([]peer.ID, n)
	for i := range out {
		_, pub, err := crypto.GenerateEd25519Key(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		if out[i], err = peer.IDFromPublicKey(pub); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestTaskLogKeepsTheCoordinatorsRanking checks that each attempt of a
// trace shows the candidates its event carried (at most traceCandidates,
// the chosen one marked, with the parts of the score), that a retry's
// error ends the attempt before, and that attempts stop at traceAttempts.
func TestTaskLogKeepsTheCoordinatorsRanking(t *testing.T) {
	ids := testPeers(t, 12)
	self, ps := ids[0], ids[1:]
	l := newTaskLog(nil, self)
	id := grid.NewTaskID()
	at := time.Now()
	ranking := func(n int, chosen peer.ID, count int) *skill.Ranking {
		rk := &skill.Ranking{Attempt: n, Considered: count + 3}
		rk.Candidates = append(rk.Candidates, skill.Candidate{Peer: chosen, Connected: true, Score: 0.9, Trust: 0.8,
			Parts: skill.ScoreParts{Trust: 0.8, Skill: 0.6, Success: 1, Latency: 0.7, Load: 0.5}})
		for i := 0; len(rk.Candidates) < count; i++ {
			if ps[i] != chosen {
				rk.Candidates = append(rk.Candidates, skill.Candidate{Peer: ps[i], Score: 0.5})
			}
		}
		return rk
	}
	ev := func(state skill.TaskState, n int, p peer.ID, rk *skill.Ranking, msg string) {
		at = at.Add(time.Millisecond)
		l.observe(skill.Event{TaskID: id, Skill: "echo", State: state, Peer: p, Attempt: n, Error: msg, At: at, Ranking: rk})
	}
	ev(skill.StateDelegated, 1, ps[0], ranking(1, ps[0], 11), "")
	ev(skill.StateRetrying, 1, ps[0], nil, "node A: execution failed: disk on fire")
	ev(skill.StateDelegated, 2, ps[1], ranking(2, ps[1], 3), "")
	ev(skill.StateSucceeded, 2, ps[1], nil, "")

	tr := l.trace(id)
	if len(tr.Attempts) != 2 {
		t.Fatalf("trace %+v; want 2 attempts", tr)
	}
	a1, a2 := tr.Attempts[0], tr.Attempts[1]
	if len(a1.Candidates) != traceCandidates || a1.Considered != 14 {
		t.Errorf("attempt 1 keeps %d candidates of %d considered; want %d of 14", len(a1.Candidates), a1.Considered, traceCandidates)
	}
	c := a1.Candidates[0]
	if !c.Chosen || c.Node != ps[0].String() || c.Parts.Skill != 0.6 || c.Parts.Latency != 0.7 || c.Score != 0.9 {
		t.Errorf("attempt 1's first candidate %+v; want the chosen node with its score and parts", c)
	}
	for _, c := range a1.Candidates[1:] {
		if c.Chosen {
			t.Errorf("attempt 1: %s marked chosen; it went to %s", c.Node, ps[0])
		}
	}
	if a1.Outcome != "retried" || a1.Error != "node A: execution failed: disk on fire" {
		t.Errorf("attempt 1 ended %q with %q; want retried with the retry event's error", a1.Outcome, a1.Error)
	}
	if len(a2.Candidates) != 3 || !a2.Candidates[0].Chosen || a2.Outcome != "succeeded" {
		t.Errorf("attempt 2 %+v; want 3 candidates, the first chosen, succeeded", a2)
	}

	// A ranking for another attempt than the event's is not shown.
	other := grid.NewTaskID()
	l.observe(skill.Event{TaskID: other, Skill: "echo", State: skill.StateDelegated, Peer: ps[0], Attempt: 2, At: at,
		Ranking: ranking(1, ps[0], 2)})
	if tr := l.trace(other); len(tr.Attempts) != 1 || len(tr.Attempts[0].Candidates) != 0 {
		t.Errorf("trace %+v; want one attempt without candidates", tr)
	}

	// Attempts stop at traceAttempts.
	many := grid.NewTaskID()
	for n := 1; n <= traceAttempts+5; n++ {
		p := ps[n%len(ps)]
		l.observe(skill.Event{TaskID: many, Skill: "echo", State: skill.StateDelegated, Peer: p, Attempt: n, At: at, Ranking: ranking(n, p, 2)})
		l.observe(skill.Event{TaskID: many, Skill: "echo", State: skill.StateRetrying, Peer: p, Attempt: n, At: at, Error: fmt.Sprint("failure ", n)})
	}
	if tr := l.trace(many); len(tr.Attempts) != traceAttempts {
		t.Errorf("%d attempts kept; want %d", len(tr.Attempts), traceAttempts)
	}
}

// TestSessionStoreIsBounded checks that sessions expire, end, and never
// number more than maxSessions: the one that would expire first goes.
func TestSessionStoreIsBounded(t *testing.T) {
	var ss sessionStore
	now := time.Now()
	first, err := ss.add(now)
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for i := range maxSessions {
		if last, err = ss.add(now.Add(time.Duration(i+1) * time.Second)); err != nil {
			t.Fatal(err)
		}
	}
	at := now.Add(time.Hour)
	if len(ss.m) != maxSessions || ss.valid(first, at) || !ss.valid(last, at) {
		t.Errorf("%d sessions, the oldest valid %v, the newest %v; want %d, false, true", len(ss.m), ss.valid(first, at), ss.valid(last, at), maxSessions)
	}
	if ss.valid(last, now.Add(sessionMaxAge+time.Hour)) {
		t.Error("a session is valid past its max age")
	}
	if !ss.end(last) || ss.valid(last, at) || ss.end(last) {
		t.Error("an ended session is still valid, or ends twice")
	}
}
