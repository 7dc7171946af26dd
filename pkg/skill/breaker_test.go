package skill

import (
	"errors"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

func TestBreakerOpensAfterConsecutiveFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := rtPeers(t, 1)[0]
		bs := newBreakerSet(breakerConfig{failures: 3, openFor: 10 * time.Second})
		for i := range 2 {
			bs.record(p, breakerFailure, time.Now())
			if !bs.Allow(p) {
				t.Fatalf("breaker refused the peer after %d failures, want it closed until 3", i+1)
			}
		}
		bs.record(p, breakerSuccess, time.Now()) // resets the count
		for range 2 {
			bs.record(p, breakerFailure, time.Now())
		}
		if !bs.Allow(p) {
			t.Fatal("a success did not reset the count of consecutive failures")
		}
		opened := time.Now()
		bs.record(p, breakerFailure, opened)
		if bs.Allow(p) || bs.reserve(p) {
			t.Fatal("breaker allows the peer after 3 consecutive failures")
		}
		st := bs.states(time.Now())
		if len(st) != 1 || st[0].Peer != p || st[0].State != CircuitOpen || st[0].Failures != 3 || !st[0].OpenedAt.Equal(opened) {
			t.Fatalf("states = %+v; want %s open with 3 failures since %v", st, p, opened)
		}
		time.Sleep(10*time.Second - time.Nanosecond)
		if bs.Allow(p) {
			t.Fatal("breaker half-opened before its open period ended")
		}
	})
}

func TestBreakerHalfOpenLetsOneProbeThrough(t *testing.T) {
	for _, tc := range []struct {
		name   string
		probe  breakerResult
		want   CircuitState
		allows bool
	}{
		{"a probe that succeeds closes the breaker", breakerSuccess, CircuitClosed, true},
		{"a probe that fails opens it again", breakerFailure, CircuitOpen, false},
		{"a probe that tells nothing frees the probe", breakerNeutral, CircuitHalfOpen, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := rtPeers(t, 1)[0]
				bs := newBreakerSet(breakerConfig{failures: 1, openFor: 10 * time.Second})
				bs.record(p, breakerFailure, time.Now())
				time.Sleep(10 * time.Second)
				if !bs.Allow(p) {
					t.Fatal("breaker does not allow a probe once its open period is over")
				}
				if !bs.reserve(p) {
					t.Fatal("reserve refused the first probe")
				}
				if bs.Allow(p) || bs.reserve(p) {
					t.Fatal("breaker allows a second probe while the first runs")
				}
				at := time.Now()
				bs.record(p, tc.probe, at)
				if got := bs.Allow(p); got != tc.allows {
					t.Errorf("Allow after the probe = %v, want %v", got, tc.allows)
				}
				st := bs.states(time.Now())
				switch {
				case tc.want == CircuitClosed && len(st) != 0:
					t.Errorf("states = %+v; want none (closed, no failures)", st)
				case tc.want != CircuitClosed && (len(st) != 1 || st[0].State != tc.want):
					t.Errorf("states = %+v; want %s", st, tc.want)
				case tc.want == CircuitOpen && !st[0].OpenedAt.Equal(at):
					t.Errorf("reopened at %v, want %v", st[0].OpenedAt, at)
				}
			})
		})
	}
}

func TestBreakerGivesUpAProbeThatNeverReports(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := rtPeers(t, 1)[0]
		bs := newBreakerSet(breakerConfig{failures: 1, openFor: time.Second})
		bs.record(p, breakerFailure, time.Now())
		time.Sleep(time.Second)
		if !bs.reserve(p) {
			t.Fatal("reserve refused the probe")
		}
		time.Sleep(time.Second)
		if !bs.reserve(p) {
			t.Fatal("a probe that never reported holds the breaker after an open period")
		}
	})
}

func TestBreakerCountsOnlyFaultsInTheWork(t *testing.T) {
	for _, tc := range []struct {
		name string
		o    outcome
		want breakerResult
	}{
		{"a success clears it", outcome{kind: kindSuccess}, breakerSuccess},
		{"a failed attempt counts", outcome{kind: kindRetry, trust: reputation.OutcomeFailure, code: grid.CodeExecutionFailed}, breakerFailure},
		{"a timeout on the peer counts", outcome{kind: kindRetry, trust: reputation.OutcomeTimeout, code: grid.CodeTimeout}, breakerFailure},
		{"the task's deadline counts", outcome{kind: kindTimeout, trust: reputation.OutcomeTimeout}, breakerFailure},
		{"a rejection for a full queue does not count", outcome{kind: kindRejected, code: codeRejected, err: &grid.RejectError{Reason: grid.RejectQueueFull}}, breakerNeutral},
		{"refused input does not count", outcome{kind: kindFatal, code: grid.CodeInvalidInput, err: ErrInvalidInput}, breakerNeutral},
		{"a cancellation does not count", outcome{kind: kindCanceled, code: grid.CodeCanceled}, breakerNeutral},
		{"a skill the peer no longer has does not count", outcome{kind: kindRetry, code: grid.CodeUnknownSkill}, breakerNeutral},
		{"an attempt that never started does not count", outcome{kind: kindRejected, unstarted: true, err: errors.New("queue full")}, breakerNeutral},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := breakerResultOf(tc.o); got != tc.want {
				t.Errorf("breakerResultOf = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestBreakerRejectionsNeverOpenIt(t *testing.T) {
	p := rtPeers(t, 1)[0]
	bs := newBreakerSet(breakerConfig{failures: 2, openFor: time.Second})
	for range 10 {
		bs.record(p, breakerResultOf(outcome{kind: kindRejected, code: codeRejected}), time.Now())
	}
	if !bs.Allow(p) || len(bs.states(time.Now())) != 0 {
		t.Fatalf("rejections opened the breaker: %+v", bs.states(time.Now()))
	}
}

func TestBreakerDisabledAllowsEveryPeer(t *testing.T) {
	p := rtPeers(t, 1)[0]
	bs := newBreakerSet(breakerConfig{})
	for range 10 {
		bs.record(p, breakerFailure, time.Now())
	}
	if bs != nil || !bs.Allow(p) || !bs.reserve(p) || len(bs.states(time.Now())) != 0 {
		t.Fatal("a disabled breaker set refuses a peer or keeps state")
	}
}
