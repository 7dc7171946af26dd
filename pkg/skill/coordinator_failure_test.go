package skill

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// fDirectory is a Directory whose providers a test may change.
type fDirectory struct {
	mu sync.Mutex
	m  rtDirectory
}

func (d *fDirectory) Providers(s reputation.SkillID) []grid.Provider {
	d.mu.Lock()
	defer d.mu.Unlock()
	return verifiedAll(d.m[s])
}

func (d *fDirectory) set(m rtDirectory) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.m = m
}

// newFailEnv builds a coordinator whose Directory is dir, with a breaker
// that opens after failures and stays open 10 s.
func newFailEnv(tb testing.TB, dir *fDirectory, failures int, opts ...CoordinatorOption) *coEnv {
	tb.Helper()
	e := newCoEnv(tb, coEnvConfig{dir: rtDirectory{}, opts: append([]CoordinatorOption{WithCircuitBreaker(failures, 10*time.Second)}, opts...)})
	// newCoEnv takes an rtDirectory; swap in the changeable one.
	r, err := NewRouter(e.self, e.reg, dir, e.trust, e.metrics, e.c.LocalLoad, WithPeerGate(e.c.breakers))
	if err != nil {
		tb.Fatal(err)
	}
	e.c.router = r
	return e
}

// openBreaker fails tasks on p until its breaker opens.
func openBreaker(tb testing.TB, e *coEnv, p peer.ID, failures int) {
	tb.Helper()
	for range failures {
		_, err := e.wait(tb, e.submit(tb, NewSkillTask("remote.only", RawInput(nil), "").WithMaxRetries(0)))
		if !errors.Is(err, ErrDelegationFailed) {
			tb.Fatalf("Wait = %v; want ErrDelegationFailed", err)
		}
	}
	if st := e.c.Breakers(); len(st) != 1 || st[0].Peer != p || st[0].State != CircuitOpen || st[0].Failures != failures {
		tb.Fatalf("Breakers = %+v; want %s open after %d failures", st, p, failures)
	}
}

func TestCoordinatorBreakerKeepsTasksAwayFromAFailingPeer(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		a, b := ids[0], ids[1]
		dir := &fDirectory{m: rtDirectory{"remote.only": coRemoteDir(a).Providers("remote.only")}}
		e := newFailEnv(t, dir, 2)
		e.del.behave[a] = coFailWith(errors.New("connection reset"))
		e.del.behave[b] = coSucceedAs(b)
		openBreaker(t, e, a, 2)

		// b appears, and a still ranks first on score: the router skips a.
		dir.set(coRemoteDir(a, b))
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess)
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess)
		res, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput(nil), "")))
		if err != nil || res.ExecutedBy != b || res.Attempts != 1 {
			t.Fatalf("Wait = %+v, %v; want success on b at the first attempt", res, err)
		}
		if got, err := e.c.router.Route(NewSkillTask("remote.only", RawInput(nil), "")); err != nil || !slices.Equal(rtPeersOf(got), []peer.ID{b}) {
			t.Errorf("Route = %v, %v; want only b while a's breaker is open", rtPeersOf(got), err)
		}
		dir.set(coRemoteDir(a))
		_, err = e.c.router.Route(NewSkillTask("remote.only", RawInput(nil), ""))
		var nc *NoCapableNodeError
		if !errors.As(err, &nc) || nc.Reason != AllCircuitOpen {
			t.Errorf("Route with only a = %v; want a *NoCapableNodeError with reason AllCircuitOpen", err)
		}
	})
}

func TestCoordinatorBreakerProbesOnceWhenHalfOpen(t *testing.T) {
	for _, tc := range []struct {
		name    string
		probeOK bool
	}{
		{"a probe that succeeds closes the breaker and the waiting tasks run", true},
		{"a probe that fails opens the breaker again", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				a := rtPeers(t, 1)[0]
				dir := &fDirectory{m: coRemoteDir(a)}
				e := newFailEnv(t, dir, 2, WithRetryBackoff(time.Second, time.Second))
				e.del.behave[a] = coFailWith(errors.New("connection reset"))
				openBreaker(t, e, a, 2)

				// Two tasks wait: a's breaker is open, and a is the only provider.
				// MinTrust 0: a's falling trust must not rule it out.
				first := e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithMaxRetries(0).WithTimeout(time.Minute).WithMinTrust(0))
				second := e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithMaxRetries(0).WithTimeout(time.Minute).WithMinTrust(0))
				if st := e.state(t, first); st.State != StateRetrying || st.Attempts != 0 {
					t.Fatalf("state of a task with no usable provider = %s after %d attempts; want retrying after 0", st.State, st.Attempts)
				}
				release := make(chan struct{})
				e.del.mu.Lock()
				e.del.behave[a] = func(ctx context.Context, rt *grid.RemoteTask) (*grid.RemoteResult, error) {
					<-release
					if tc.probeOK {
						return coSucceedAs(a)(ctx, rt)
					}
					return nil, errors.New("connection reset")
				}
				e.del.mu.Unlock()
				calls := len(e.del.Calls())
				time.Sleep(12 * time.Second) // the open period ends; both tasks look again within 1.5 s
				synctest.Wait()
				if got := len(e.del.Calls()) - calls; got != 1 {
					t.Fatalf("%d attempts went to the half-open peer, want 1 probe", got)
				}
				close(release)
				synctest.Wait()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
				defer cancel()
				_, err1 := e.c.Wait(ctx, first)
				_, err2 := e.c.Wait(ctx, second)
				if tc.probeOK {
					if err1 != nil || err2 != nil {
						t.Fatalf("Wait = %v, %v; want both tasks to succeed once the probe closed the breaker", err1, err2)
					}
					if st := e.c.Breakers(); len(st) != 0 {
						t.Errorf("Breakers = %+v; want none once the probe succeeded", st)
					}
					return
				}
				// The probe failed and reopened the breaker: the other task
				// waited another open period for its own probe.
				if !errors.Is(err1, ErrDelegationFailed) || !errors.Is(err2, ErrDelegationFailed) {
					t.Fatalf("Wait = %v, %v; want both to fail on a", err1, err2)
				}
				probes := e.del.Calls()[calls:]
				if len(probes) != 2 || probes[1].at.Sub(probes[0].at) < 10*time.Second {
					t.Errorf("probes = %+v; want 2, at least an open period (10 s) apart", probes)
				}
			})
		})
	}
}

func TestCoordinatorRejectionsDoNotTripTheBreaker(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := rtPeers(t, 1)[0]
		e := newFailEnv(t, &fDirectory{m: coRemoteDir(a)}, 2)
		e.del.behave[a] = coFailWith(&grid.RejectError{Reason: grid.RejectQueueFull})
		for range 5 {
			task := NewSkillTask("remote.only", RawInput(nil), "").WithMaxRetries(0).WithTimeout(5 * time.Second)
			if _, err := e.wait(t, e.submit(t, task)); !errors.Is(err, ErrTimeout) {
				t.Fatalf("Wait = %v; want ErrTimeout: a refused task asks again until its deadline", err)
			}
		}
		e.del.behave[a] = coFailWith(&grid.RejectError{Reason: grid.RejectInvalidInput})
		if _, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))); !errors.Is(err, ErrInvalidInput) {
			t.Fatalf("Wait = %v; want ErrInvalidInput", err)
		}
		if st := e.c.Breakers(); len(st) != 0 {
			t.Errorf("Breakers = %+v; want none after rejections and refused input", st)
		}
	})
}

func TestCoordinatorRetryPolicy(t *testing.T) {
	t.Run("a code the policy does not retry fails the task at once", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ids := rtPeers(t, 2)
			e := newFailEnv(t, &fDirectory{m: coRemoteDir(ids...)}, 5)
			for _, p := range ids {
				e.del.behave[p] = func(_ context.Context, rt *grid.RemoteTask) (*grid.RemoteResult, error) {
					return &grid.RemoteResult{ID: rt.ID, ErrorCode: grid.CodeExecutionFailed, ErrorMessage: "boom"}, nil
				}
			}
			task := NewSkillTask("remote.only", RawInput(nil), "").WithRetry(RetryPolicy{MaxAttempts: 4, RetryOn: []grid.ErrorCode{grid.CodeInternal}})
			res, err := e.wait(t, e.submit(t, task))
			if !errors.Is(err, ErrDelegationFailed) || res.Attempts != 1 || res.Code != grid.CodeExecutionFailed {
				t.Fatalf("Wait = %+v, %v; want ErrDelegationFailed after 1 attempt with code execution failed", res, err)
			}
		})
	})
	t.Run("a retried code waits the task's backoff and moves to another peer", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ids := rtPeers(t, 2)
			a, b := ids[0], ids[1]
			e := newFailEnv(t, &fDirectory{m: coRemoteDir(ids...)}, 5)
			e.trust.Record(a, "remote.only", reputation.OutcomeSuccess) // a ranks first
			e.del.behave[a] = coFailWith(errors.New("connection reset"))
			e.del.behave[b] = coSucceedAs(b)
			task := NewSkillTask("remote.only", RawInput(nil), "").WithMaxRetries(0).
				WithRetry(RetryPolicy{MaxAttempts: 2, BaseBackoff: 2 * time.Second, MaxBackoff: 2 * time.Second, RetryOn: []grid.ErrorCode{grid.CodeInternal}})
			start := time.Now()
			res, err := e.wait(t, e.submit(t, task))
			if err != nil || res.ExecutedBy != b || res.Attempts != 2 {
				t.Fatalf("Wait = %+v, %v; want success on b after 2 attempts (MaxAttempts overrides MaxRetries)", res, err)
			}
			calls := e.del.Calls()
			if d := calls[1].at.Sub(start); d < time.Second || d > 3*time.Second {
				t.Errorf("second attempt after %v, want the task's 2 s backoff ±50%%", d)
			}
		})
	})
	t.Run("a policy that cannot hold is refused at submission", func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{})
		for _, p := range []RetryPolicy{
			{MaxAttempts: -1},
			{BaseBackoff: time.Second, MaxBackoff: time.Millisecond},
			{RetryOn: []grid.ErrorCode{grid.CodeInvalidInput}},
		} {
			if _, err := e.c.SubmitTask(context.Background(), coSleepTask(t, e.self, 0).WithRetry(p)); !errors.Is(err, ErrInvalidInput) {
				t.Errorf("SubmitTask with %+v = %v; want ErrInvalidInput", p, err)
			}
		}
	})
}

func TestCoordinatorDegradesGracefully(t *testing.T) {
	t.Run("a local skill runs here when the only peer's breaker is open", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := rtPeers(t, 1)[0]
			dir := &fDirectory{m: coRemoteDir(a)}
			e := newFailEnv(t, dir, 2)
			e.del.behave[a] = coFailWith(errors.New("connection reset"))
			openBreaker(t, e, a, 2)
			dir.set(rtDirectory{"remote.only": coRemoteDir(a)["remote.only"], "debug.sleep": coRemoteDir(a)["remote.only"]})
			res, err := e.wait(t, e.submit(t, coSleepTask(t, "", 0)))
			if err != nil || res.ExecutedBy != e.self {
				t.Fatalf("Wait = %+v, %v; want success on this node", res, err)
			}
		})
	})
	t.Run("a remote-only task waits and runs when a provider appears", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			ids := rtPeers(t, 2)
			a, b := ids[0], ids[1]
			dir := &fDirectory{m: coRemoteDir(a)}
			// a's breaker stays open past the backoff, so a half-open probe
			// of a never comes first.
			e := newFailEnv(t, dir, 2, WithCircuitBreaker(2, 10*time.Minute))
			e.del.behave[a] = coFailWith(errors.New("connection reset"))
			e.del.behave[b] = coSucceedAs(b)
			openBreaker(t, e, a, 2)
			id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithTimeout(time.Minute))
			time.Sleep(5 * time.Second)
			if st := e.state(t, id); st.State != StateRetrying || st.Attempts != 0 {
				t.Fatalf("state = %s after %d attempts; want retrying after 0 while no provider is usable", st.State, st.Attempts)
			}
			dir.set(coRemoteDir(a, b))
			// The task sits out a backoff (up to the 30 s maximum, drawn at
			// random) before it looks at the providers again.
			res, err := e.waitUpTo(t, id, 50*time.Second)
			if err != nil || res.ExecutedBy != b || res.Attempts != 1 {
				t.Fatalf("Wait = %+v, %v; want success on b at the first attempt", res, err)
			}
		})
	})
	t.Run("a remote-only task fails at its deadline with the reason", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			a := rtPeers(t, 1)[0]
			e := newFailEnv(t, &fDirectory{m: coRemoteDir(a)}, 2)
			e.del.behave[a] = coFailWith(errors.New("connection reset"))
			openBreaker(t, e, a, 2)
			e.del.behave[a] = coSucceedAs(a) // would succeed, but its breaker stays open past the deadline
			start := time.Now()
			id := e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithTimeout(5*time.Second))
			res, err := e.wait(t, id)
			var nc *NoCapableNodeError
			if !errors.Is(err, ErrTimeout) || !errors.As(err, &nc) || nc.Reason != AllCircuitOpen {
				t.Fatalf("Wait = %v; want ErrTimeout wrapping a *NoCapableNodeError with reason AllCircuitOpen", err)
			}
			if d := time.Since(start); d != 5*time.Second {
				t.Errorf("failed after %v, want at the 5 s deadline", d)
			}
			if st := e.state(t, id); st.State != StateTimedOut || res.Attempts != 0 {
				t.Errorf("state = %s, attempts %d; want timed_out after 0 attempts", st.State, res.Attempts)
			}
		})
	})
	t.Run("a skill no node has ever offered is still refused at submission", func(t *testing.T) {
		e := newFailEnv(t, &fDirectory{}, 2)
		if _, err := e.c.SubmitTask(context.Background(), NewSkillTask("nobody.has.it", RawInput(nil), "")); !errors.Is(err, ErrUnknownSkill) {
			t.Fatalf("SubmitTask = %v; want ErrUnknownSkill", err)
		}
	})
}
