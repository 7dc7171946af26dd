package skill

import (
	"errors"
	"strings"
	"testing"
	"testing/synctest"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// With a subscriber, each attempt's first event carries what the router
// ranked when the coordinator chose its node: the chosen node first, the
// nodes of earlier attempts left out, scores and their parts as used. The
// retry event names the error that ended the attempt before.
func TestCoordinatorEventsCarryTheRankingOfEachAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 3)
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...)})
		first := ids[0]
		for range 3 {
			e.trust.Record(first, "remote.only", reputation.OutcomeSuccess) // ranks first
		}
		e.del.behave[first] = coFailWith(errors.New("disk on fire"))
		for _, p := range ids[1:] {
			e.del.behave[p] = coSucceedAs(p)
		}
		ch := make(chan Event, 16)
		unsub := e.c.Subscribe(func(ev Event) { ch <- ev })
		id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))
		if _, err := e.wait(t, id); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		unsub()
		close(ch)
		rankings := map[int]*Ranking{}
		var retryErr string
		for ev := range ch {
			if ev.State == StateDelegated && ev.Ranking != nil {
				if ev.Ranking.Attempt != ev.Attempt {
					t.Errorf("event of attempt %d carries the ranking of attempt %d", ev.Attempt, ev.Ranking.Attempt)
				}
				rankings[ev.Attempt] = ev.Ranking
				if c := ev.Ranking.Candidates; len(c) == 0 || c[0].Peer != ev.Peer {
					t.Errorf("attempt %d went to %s; its ranking %+v does not have it first", ev.Attempt, ev.Peer, c)
				}
			}
			if ev.State == StateRetrying {
				retryErr = ev.Error
			}
		}
		r1, r2 := rankings[1], rankings[2]
		if r1 == nil || r2 == nil {
			t.Fatalf("rankings by attempt = %v; want one for attempts 1 and 2", rankings)
		}
		if len(r1.Candidates) != 3 || r1.Considered != 3 {
			t.Errorf("attempt 1 ranked %d of %d considered; want all 3 providers", len(r1.Candidates), r1.Considered)
		}
		for i, c := range r1.Candidates {
			p := c.Parts
			w := DefaultWeights()
			want := (w.Trust*p.Trust + w.Skill*p.Skill + w.Success*p.Success + w.Latency*p.Latency + w.Load*p.Load) / w.sum()
			if d := c.Score - want; d > 1e-9 || d < -1e-9 {
				t.Errorf("candidate %d: score %v, but its parts %+v weigh %v", i, c.Score, p, want)
			}
			if i > 0 && compareCandidates(r1.Candidates[i-1], c) > 0 {
				t.Errorf("attempt 1's candidates are not best first: %+v", r1.Candidates)
			}
		}
		if r1.Candidates[0].Parts.Trust <= r1.Candidates[1].Parts.Trust {
			t.Errorf("the trusted node's trust part %v is not above the next one's %v", r1.Candidates[0].Parts.Trust, r1.Candidates[1].Parts.Trust)
		}
		for _, c := range r2.Candidates {
			if c.Peer == first {
				t.Errorf("attempt 2's ranking holds %s, the node attempt 1 failed on", first)
			}
		}
		if !strings.Contains(retryErr, "disk on fire") {
			t.Errorf("retry event error = %q; want the cause, disk on fire", retryErr)
		}
	})
}

// WithRankingSize bounds the candidates an event carries; 0 makes none.
func TestCoordinatorRankingSize(t *testing.T) {
	for _, tc := range []struct {
		size, want int
	}{{2, 2}, {0, 0}} {
		synctest.Test(t, func(t *testing.T) {
			ids := rtPeers(t, 4)
			e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(ids...), opts: []CoordinatorOption{WithRankingSize(tc.size)}})
			for _, p := range ids {
				e.del.behave[p] = coSucceedAs(p)
			}
			ch := make(chan Event, 16)
			unsub := e.c.Subscribe(func(ev Event) { ch <- ev })
			id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))
			if _, err := e.wait(t, id); err != nil {
				t.Fatal(err)
			}
			synctest.Wait()
			unsub()
			close(ch)
			got := -1
			var chosen peer.ID
			for ev := range ch {
				if ev.State == StateDelegated {
					got, chosen = 0, ev.Peer
					if ev.Ranking != nil {
						got = len(ev.Ranking.Candidates)
						if ev.Ranking.Considered != 4 || ev.Ranking.Candidates[0].Peer != chosen {
							t.Errorf("ranking %+v; want 4 considered, the chosen %s first", ev.Ranking, chosen)
						}
					}
				}
			}
			if got != tc.want {
				t.Errorf("size %d: the delegated event carries %d candidates; want %d", tc.size, got, tc.want)
			}
		})
	}
}
