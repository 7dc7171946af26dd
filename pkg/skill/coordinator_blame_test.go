package skill

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/libp2p/go-libp2p/core/peer"
)

// errPeerGone is what the orchestrator returns for a peer whose connection
// dropped while it held the task.
var errPeerGone = fmt.Errorf("delegate task to a peer: %w: read task stream: connection reset", grid.ErrPeerGone)

// A worker killed while it holds six delegated tasks, then back: its
// breaker keeps tasks away while it is down, its trust does not move, and
// the tasks run on it once its breaker lets a probe through.
func TestCoordinatorPeerThatWentAwayKeepsItsTrustAndGetsTasksBack(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		a := rtPeers(t, 1)[0]
		dir := &fDirectory{m: coRemoteDir(a)}
		e := newFailEnv(t, dir, 3, WithRetryBackoff(time.Second, time.Second))
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess) // trust 0.60, as in the field report
		before, rating := e.trust.Trust(a), e.trust.SkillRating(a, "remote.only")

		killed := make(chan struct{})
		held := make(chan struct{}, 6)
		e.del.behave[a] = func(ctx context.Context, _ *grid.RemoteTask) (*grid.RemoteResult, error) {
			held <- struct{}{}
			<-killed
			return nil, errPeerGone
		}
		var ids []TaskID
		for range 6 {
			ids = append(ids, e.submit(t, NewSkillTask("remote.only", RawInput([]byte("x")), "").WithTimeout(10*time.Minute)))
		}
		for range 6 {
			<-held
		}
		close(killed) // kill -9: every stream to a resets
		synctest.Wait()

		if got := e.trust.Trust(a); got != before || e.trust.SkillRating(a, "remote.only") != rating {
			t.Errorf("trust of a peer that went away = %.2f, rating %.2f; want them unchanged at %.2f, %.2f", got, e.trust.SkillRating(a, "remote.only"), before, rating)
		}
		m := e.c.Metrics().PerNode[a]
		if m.Failed != 0 || m.TimedOut != 0 || m.Unavailable != 6 {
			t.Errorf("metrics of a = %+v; want 6 unavailable, no failure", m.Metrics)
		}
		st := e.c.Breakers()
		if len(st) != 1 || st[0].State != CircuitOpen {
			t.Fatalf("Breakers = %+v; want a's open", st)
		}
		for _, id := range ids {
			if s := e.state(t, id); s.State != StateRetrying {
				t.Fatalf("task %s is %s; want retrying, waiting for a", id.Short(), s.State)
			}
		}

		// A task submitted meanwhile that cannot wait long says which node
		// it waits for and when that node is tried again.
		short := e.submit(t, NewSkillTask("remote.only", RawInput(nil), "").WithTimeout(2*time.Second))
		_, err := e.wait(t, short)
		var nc *NoCapableNodeError
		if !errors.Is(err, ErrTimeout) || !errors.As(err, &nc) || nc.Reason != AllCircuitOpen {
			t.Fatalf("Wait = %v; want ErrTimeout with a NoCapableNodeError for open breakers", err)
		}
		wantProbe := st[0].OpenedAt.Add(10 * time.Second)
		if len(nc.Blocked) != 1 || nc.Blocked[0].Peer != a || !nc.Blocked[0].ProbeAt.Equal(wantProbe) ||
			!strings.Contains(err.Error(), a.String()) || !strings.Contains(err.Error(), wantProbe.UTC().Format(time.TimeOnly)) {
			t.Errorf("error = %v, blocked %+v; want it to name %s and its probe at %s", err, nc.Blocked, a, wantProbe.UTC().Format(time.TimeOnly))
		}

		// a restarts with the same identity.
		e.del.mu.Lock()
		e.del.behave[a] = coSucceedAs(a)
		e.del.mu.Unlock()
		back := time.Now()
		for _, id := range ids {
			res, err := e.wait(t, id)
			if err != nil || res.ExecutedBy != a {
				t.Fatalf("Wait = %+v, %v; want success on a once it is back", res, err)
			}
		}
		if d := time.Since(back); d > 15*time.Second {
			t.Errorf("tasks ran %v after a came back; want within the 10 s open period and a backoff", d)
		}
		if got := e.trust.Trust(a); got <= before {
			t.Errorf("trust of a after 6 successes = %.2f; want above %.2f", got, before)
		}
	})
}

// A malformed result is a wrong result.
func TestCoordinatorRecordsWrongResults(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		a, b := ids[0], ids[1]
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(a, b)})
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess) // a ranks first
		e.del.behave[a] = coFailWith(fmt.Errorf("delegate: %w: output of 17000000 bytes is over the limit", grid.ErrInvalidResult))
		e.del.behave[b] = coSucceedAs(b)

		res, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput([]byte("x")), "")))
		if err != nil || res.ExecutedBy != b || res.Attempts != 2 {
			t.Fatalf("Wait = %+v, %v; want success on b after a's wrong result", res, err)
		}
		pt := coPeerTrust(t, e.trust, a)
		if pt.WrongResults != 1 || pt.Failures != 0 || pt.Unsatisfaction < 3.9 {
			t.Errorf("trust record of a = %+v; want 1 wrong result weighing 4 failures", pt)
		}
		if m := e.c.Metrics().PerNode[a]; m.Failed != 1 || m.Unavailable != 0 {
			t.Errorf("metrics of a = %+v; want the wrong result counted failed", m.Metrics)
		}
	})
}

// coCheckedSkill fails on this node and accepts only the output "ok" from
// a peer: the task goes to peers, and their outputs are checked.
type coCheckedSkill struct{}

func (coCheckedSkill) Descriptor() Descriptor { return Descriptor{ID: "remote.only", Version: "1.0.0"} }

func (coCheckedSkill) Execute(context.Context, SkillInput) ([]byte, error) {
	return nil, errors.New("not here")
}

func (coCheckedSkill) CheckOutput(_ SkillInput, out []byte) error {
	if string(out) != "ok" {
		return fmt.Errorf("output %q is not \"ok\"", out)
	}
	return nil
}

var _ OutputChecker = coCheckedSkill{}

func TestCoordinatorRecordsOutputsThatFailTheSkillsChecksAsWrong(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		a, b := ids[0], ids[1]
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(a, b)})
		if err := e.reg.Register(coCheckedSkill{}); err != nil {
			t.Fatal(err)
		}
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess) // a ranks above b
		answer := func(p peer.ID, out string) func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) {
			return func(_ context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
				return &grid.RemoteResult{ID: t.ID, Success: true, Output: []byte(out), Executor: p}, nil
			}
		}
		e.del.behave[a] = answer(a, "wrong")
		e.del.behave[b] = answer(b, "ok")

		res, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput(nil), "")))
		if err != nil || res.ExecutedBy != b || string(res.Output) != "ok" {
			t.Fatalf("Wait = %+v, %v; want b's checked output", res, err)
		}
		if pt := coPeerTrust(t, e.trust, a); pt.WrongResults != 1 || pt.Successes != 1 {
			t.Errorf("trust record of a = %+v; want its wrong output recorded as a wrong result", pt)
		}
		if pt := coPeerTrust(t, e.trust, b); pt.Successes != 1 || pt.WrongResults != 0 {
			t.Errorf("trust record of b = %+v; want 1 success", pt)
		}
	})
}

// coInvalidSkill refuses its input as the user's mistake.
type coInvalidSkill struct{}

func (coInvalidSkill) Descriptor() Descriptor {
	return Descriptor{ID: "test.invalid", Version: "1.0.0"}
}

func (coInvalidSkill) Execute(context.Context, SkillInput) ([]byte, error) {
	return nil, fmt.Errorf("%w: field x is missing", ErrInvalidInput)
}

// coHugeSkill returns more than one task message can carry.
type coHugeSkill struct{}

func (coHugeSkill) Descriptor() Descriptor { return Descriptor{ID: "test.huge", Version: "1.0.0"} }

func (coHugeSkill) Execute(context.Context, SkillInput) ([]byte, error) {
	return make([]byte, wire.MaxTaskOutput+1), nil
}

// What the user caused, and limits that no node could meet, count against
// no node: no trust record, no failure in metrics, no retry.
func TestCoordinatorChargesNoNodeForUserMistakesAndLimits(t *testing.T) {
	tests := []struct {
		name    string
		behave  func(context.Context, *grid.RemoteTask) (*grid.RemoteResult, error) // of peer a
		task    *SkillTask
		cancel  bool  // cancel the task once a holds it
		wantErr error // nil: ErrCanceled
	}{
		{name: "a peer that finds the input invalid", behave: coFailedResult(grid.CodeInvalidInput),
			task: NewSkillTask("remote.only", RawInput(nil), ""), wantErr: ErrInvalidInput},
		{name: "a peer that refuses the input as invalid", behave: coFailWith(&grid.RejectError{Reason: grid.RejectInvalidInput}),
			task: NewSkillTask("remote.only", RawInput(nil), ""), wantErr: ErrInvalidInput},
		{name: "a request too large for a frame", behave: coFailWith(fmt.Errorf("delegate: request frame of 17000000 bytes (max 16777216): %w", wire.ErrMessageTooLarge)),
			task: NewSkillTask("remote.only", RawInput(nil), ""), wantErr: ErrTooLarge},
		{name: "a local skill that finds the input invalid",
			task: NewSkillTask("test.invalid", RawInput(nil), ""), wantErr: ErrInvalidInput},
		{name: "a local skill whose output is over the wire limit",
			task: NewSkillTask("test.huge", RawInput(nil), ""), wantErr: ErrTooLarge},
		{name: "the user cancels a delegated task", behave: coBlockUntilDone,
			task: NewSkillTask("remote.only", RawInput(nil), ""), cancel: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(rtPeers(t, 1)...)})
				a := e.c.router.dir.Providers("remote.only")[0].Peer
				for _, s := range []Skill{coInvalidSkill{}, coHugeSkill{}} {
					if err := e.reg.Register(s); err != nil {
						t.Fatal(err)
					}
				}
				e.del.behave[a] = tc.behave
				id := e.submit(t, tc.task.WithMaxRetries(3))
				if tc.cancel {
					synctest.Wait()
					if err := e.c.Cancel(id); err != nil {
						t.Fatal(err)
					}
				}
				res, err := e.wait(t, id)
				want := tc.wantErr
				if want == nil {
					want = ErrCanceled
				}
				if !errors.Is(err, want) {
					t.Fatalf("Wait = %v; want %v", err, want)
				}
				if res.Attempts != 1 {
					t.Errorf("attempts = %d; want 1: no retry fixes it", res.Attempts)
				}
				synctest.Wait()
				if pts := e.trust.Peers(); len(pts) != 0 {
					t.Errorf("trust records = %+v; want none", pts)
				}
				for p, m := range e.c.Metrics().PerNode {
					if m.Failed+m.TimedOut+m.Unavailable+m.Rejected != 0 {
						t.Errorf("metrics of %s = %+v; want no fault counted", p, m.Metrics)
					}
				}
				if st := e.c.Breakers(); len(st) != 0 {
					t.Errorf("Breakers = %+v; want none", st)
				}
			})
		})
	}
}

func TestCoordinatorRefusesAnInputOverTheWireLimitAtSubmit(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(rtPeers(t, 1)...)})
		for _, skill := range []reputation.SkillID{"remote.only", "echo"} {
			_, err := e.c.SubmitTask(context.Background(), NewSkillTask(skill, RawInput(make([]byte, wire.MaxTaskInput+1)), ""))
			if !errors.Is(err, ErrTooLarge) || !errors.Is(err, ErrInvalidInput) || !strings.Contains(err.Error(), strconv.Itoa(wire.MaxTaskInput)) {
				t.Errorf("SubmitTask(%s) of %d bytes = %v; want ErrTooLarge naming the limit %d", skill, wire.MaxTaskInput+1, err, wire.MaxTaskInput)
			}
		}
		if calls := e.del.Calls(); len(calls) != 0 {
			t.Errorf("calls = %+v; want none", calls)
		}
		if m := e.c.Metrics(); m.Submitted != 0 {
			t.Errorf("metrics = %+v; want nothing submitted", m.Metrics)
		}
		// At the limit it goes.
		e.del.behave[e.c.router.dir.Providers("remote.only")[0].Peer] = func(_ context.Context, t *grid.RemoteTask) (*grid.RemoteResult, error) {
			return &grid.RemoteResult{ID: t.ID, Success: true}, nil
		}
		if _, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput(make([]byte, wire.MaxTaskInput)), ""))); err != nil {
			t.Errorf("a task at the limit: %v", err)
		}
	})
}

func TestExecutorRefusesAnOutputOverTheWireLimit(t *testing.T) {
	reg := NewRegistry()
	if err := reg.Register(coHugeSkill{}); err != nil {
		t.Fatal(err)
	}
	self := rtPeers(t, 1)[0]
	ex, err := NewExecutor(reg, self, WithExecLogger(coQuiet))
	if err != nil {
		t.Fatal(err)
	}
	res := ex.Run(context.Background(), NewSkillTask("test.huge", RawInput(nil), self))
	if res.Success || res.Code != grid.CodeInvalidInput || res.Output != nil || !strings.Contains(res.Error, strconv.Itoa(wire.MaxTaskOutput)) {
		t.Errorf("Run = success %v, code %v, %d bytes, %q; want invalid input naming the limit %d and no output", res.Success, res.Code, len(res.Output), res.Error, wire.MaxTaskOutput)
	}
}

func coPeerTrust(tb testing.TB, g *reputation.Graph, p peer.ID) reputation.PeerTrust {
	tb.Helper()
	for _, pt := range g.Peers() {
		if pt.Peer == p {
			return pt
		}
	}
	tb.Fatalf("no trust record of %s", p)
	return reputation.PeerTrust{}
}

// The coordinator is the one retry engine, and its retries are counted:
// by the queue for the ones that run here, by the metrics for all.
func TestCoordinatorCountsItsRetries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ids := rtPeers(t, 2)
		a, b := ids[0], ids[1]
		e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(a, b)})
		e.trust.Record(a, "remote.only", reputation.OutcomeSuccess) // a ranks first
		e.del.behave[a] = coFailedResult(grid.CodeExecutionFailed)
		e.del.behave[b] = coSucceedAs(b)
		if _, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput(nil), ""))); err != nil {
			t.Fatal(err)
		}
		if _, err := e.wait(t, e.submit(t, NewSkillTask("test.fail", RawInput(nil), "").WithMaxRetries(2))); !errors.Is(err, ErrDelegationFailed) {
			t.Fatalf("Wait = %v; want ErrDelegationFailed after 3 local attempts", err)
		}
		m := e.c.Metrics()
		if m.Retried != 3 || m.PerNode[b].Retried != 1 || m.PerNode[e.self].Retried != 2 || m.PerNode[a].Retried != 0 {
			t.Errorf("metrics count %d retries (a %d, b %d, this node %d); want 3: 1 on b, 2 here",
				m.Retried, m.PerNode[a].Retried, m.PerNode[b].Retried, m.PerNode[e.self].Retried)
		}
		if qs := e.c.QueueStats(); qs.Retried != 2 || qs.Enqueued != 3 || qs.Failed != 3 {
			t.Errorf("queue stats = %+v; want 3 enqueued, 3 failed, 2 of them retries", qs)
		}
	})
}

// A peer that gives a task back unrun (it stopped it, or no longer has the
// skill) is not blamed, and its breaker does not count it: the task moves
// on, and metrics count the attempt as rejected.
func TestCoordinatorDoesNotBlameAPeerThatGaveATaskBackUnrun(t *testing.T) {
	for _, code := range []grid.ErrorCode{grid.CodeCanceled, grid.CodeUnknownSkill} {
		t.Run(code.String(), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ids := rtPeers(t, 2)
				a, b := ids[0], ids[1]
				e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(a, b)})
				e.trust.Record(a, "remote.only", reputation.OutcomeSuccess) // a ranks first
				before := e.trust.Trust(a)
				e.del.behave[a] = coFailedResult(code)
				e.del.behave[b] = coSucceedAs(b)
				res, err := e.wait(t, e.submit(t, NewSkillTask("remote.only", RawInput(nil), "")))
				if err != nil || res.ExecutedBy != b {
					t.Fatalf("Wait = %+v, %v; want success on b", res, err)
				}
				if got := e.trust.Trust(a); got != before {
					t.Errorf("trust of a = %.2f; want it unchanged at %.2f", got, before)
				}
				if m := e.c.Metrics().PerNode[a]; m.Rejected != 1 || m.Failed+m.TimedOut+m.Unavailable != 0 {
					t.Errorf("metrics of a = %+v; want 1 rejected, no fault", m.Metrics)
				}
				if st := e.c.Breakers(); len(st) != 0 {
					t.Errorf("Breakers = %+v; want none", st)
				}
			})
		})
	}
}

func TestCoordinatorRefusalBelowTrustNamesTheNodeAndItsTrust(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{dir: coRemoteDir(rtPeers(t, 1)...)})
	a := e.c.router.dir.Providers("remote.only")[0].Peer
	_, err := e.c.SubmitTask(context.Background(), NewSkillTask("remote.only", RawInput(nil), "").WithMinTrust(0.9))
	var nc *NoCapableNodeError
	if !errors.As(err, &nc) || nc.Reason != AllBelowTrust {
		t.Fatalf("SubmitTask = %v; want a NoCapableNodeError for low trust", err)
	}
	if len(nc.Blocked) != 1 || nc.Blocked[0].Peer != a || nc.Blocked[0].Trust != 0.5 ||
		!strings.Contains(err.Error(), a.String()) || !strings.Contains(err.Error(), "trust 0.50 is below 0.90") {
		t.Errorf("error = %v, blocked %+v; want it to name %s and its trust 0.50 against 0.90", err, nc.Blocked, a)
	}
}

// The blame table: what each way an attempt can end on a peer tells the
// trust graph, the metrics and the breaker.
func TestClassifyRemoteBlamesOnlyThePeersOwnAnswers(t *testing.T) {
	p := rtPeers(t, 1)[0]
	r := &record{task: NewSkillTask("remote.only", RawInput(nil), "")}
	r.task.CreatedAt = time.Now()
	failed := func(code grid.ErrorCode) *grid.RemoteResult { return &grid.RemoteResult{ErrorCode: code} }
	reject := func(reason grid.RejectReason) error { return &grid.RejectError{Reason: reason} }
	expired, cancelExpired := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancelExpired()
	const (
		none = iota
		unavailable
		declined
	)
	tests := []struct {
		name    string
		ctx     context.Context
		res     *grid.RemoteResult
		err     error
		kind    outcomeKind
		trust   reputation.Outcome
		not     int           // none, unavailable or declined
		breaker breakerResult // what the breaker is told
	}{
		{"a peer whose stream reset is unavailable", nil, nil, errPeerGone, kindRetry, 0, unavailable, breakerFailure},
		{"a peer that sent no ack is unavailable", nil, nil, fmt.Errorf("x: %w", grid.ErrAckTimeout), kindRetry, 0, unavailable, breakerFailure},
		{"a peer that lost the lease is unavailable", nil, nil, fmt.Errorf("x: %w", grid.ErrLeaseExpired), kindRetry, 0, unavailable, breakerFailure},
		{"an unknown error is no evidence about the peer", nil, nil, errors.New("no route"), kindRetry, 0, unavailable, breakerFailure},
		{"a deadline passed with the peer gone is not late work", expired, nil, fmt.Errorf("%w: %w", grid.ErrPeerGone, context.DeadlineExceeded), kindTimeout, 0, unavailable, breakerFailure},
		{"a deadline passed on a peer that took the task is late work", expired, nil, context.DeadlineExceeded, kindTimeout, reputation.OutcomeTimeout, none, breakerFailure},
		{"a malformed result is a wrong result", nil, nil, fmt.Errorf("x: %w", grid.ErrInvalidResult), kindRetry, reputation.OutcomeWrongResult, none, breakerFailure},
		{"a failure the peer reports is a failure", nil, failed(grid.CodeExecutionFailed), nil, kindRetry, reputation.OutcomeFailure, none, breakerFailure},
		{"a timeout the peer reports is a timeout", nil, failed(grid.CodeTimeout), nil, kindRetry, reputation.OutcomeTimeout, none, breakerFailure},
		{"a peer that stopped the task declined it", nil, failed(grid.CodeCanceled), nil, kindRetry, 0, declined, breakerNeutral},
		{"a peer without the skill declined it", nil, failed(grid.CodeUnknownSkill), nil, kindRetry, 0, declined, breakerNeutral},
		{"invalid input is the user's", nil, failed(grid.CodeInvalidInput), nil, kindFatal, 0, none, breakerNeutral},
		{"a refused invalid input is the user's", nil, nil, reject(grid.RejectInvalidInput), kindFatal, 0, none, breakerNeutral},
		{"an input over what the peer lets us hold is a rejection", nil, nil, reject(grid.RejectTooLarge), kindRejected, 0, none, breakerNeutral},
		{"a request refused as malformed is no retry's to fix", nil, nil, reject(grid.RejectMalformed), kindFatal, 0, none, breakerNeutral},
		{"a request that arrived past its deadline is nobody's", nil, nil, reject(grid.RejectDeadlinePassed), kindTimeout, 0, none, breakerNeutral},
		{"a full queue is a rejection", nil, nil, reject(grid.RejectQueueFull), kindRejected, 0, none, breakerNeutral},
		{"a request too large for a frame is a limit", nil, nil, fmt.Errorf("x: %w", wire.ErrMessageTooLarge), kindFatal, 0, none, breakerNeutral},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx := tc.ctx
			if ctx == nil {
				ctx = context.Background()
			}
			o := classifyRemote(ctx, r, p, tc.res, tc.err, time.Millisecond)
			not := none
			switch {
			case o.unavailable && o.declined:
				t.Fatalf("outcome %+v is both unavailable and declined", o)
			case o.unavailable:
				not = unavailable
			case o.declined:
				not = declined
			}
			if o.kind != tc.kind || o.trust != tc.trust || not != tc.not || breakerResultOf(o) != tc.breaker {
				t.Errorf("outcome kind %d, trust %v, unavailable %v, declined %v, breaker %d; want kind %d, trust %v, class %d, breaker %d",
					o.kind, o.trust, o.unavailable, o.declined, breakerResultOf(o), tc.kind, tc.trust, tc.not, tc.breaker)
			}
			if tc.kind == kindFatal && !errors.Is(o.err, ErrInvalidInput) && !errors.Is(o.err, ErrDelegationFailed) {
				t.Errorf("error %v of a fatal outcome wraps neither ErrInvalidInput nor ErrDelegationFailed", o.err)
			}
		})
	}
}
