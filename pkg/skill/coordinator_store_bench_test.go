package skill

import (
	"context"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/store"
	"github.com/libp2p/go-libp2p/core/peer"
)

// BenchmarkStoreLocalEcho measures what persistence costs on the local
// task path, in one run: echo tasks submitted and waited for by 64
// concurrent submitters (SubmitTask then Wait), with the store off and on.
// With the store, each task is on disk before SubmitTask returns (Accept)
// and its result before Wait returns; fsyncs/task is the store's commits
// per accepted task (issue 5's goal: under 0.05, by group commit).
//
//	go test -run '^$' -bench StoreLocalEcho -benchtime 2s ./pkg/skill/
func BenchmarkStoreLocalEcho(b *testing.B) {
	echo := func(e *coEnv) func(ctx context.Context) error {
		return func(ctx context.Context) error {
			id, err := e.c.SubmitTask(ctx, NewSkillTask("echo", coBenchInput, ""))
			if err != nil {
				return err
			}
			res, err := e.c.Wait(ctx, id)
			if err == nil && len(res.Output) != len(coBenchInput.Data) {
				b.Errorf("output %q, want the input", res.Output)
			}
			return err
		}
	}
	b.Run("store off", func(b *testing.B) {
		e := newCoEnv(b, coEnvConfig{workers: coBenchWorkers()})
		coRunSubmitters(b, echo(e))
	})
	b.Run("store on", func(b *testing.B) {
		st, err := store.Open(b.TempDir(), store.WithLogger(coQuiet))
		if err != nil {
			b.Fatal(err)
		}
		defer st.Close()
		e := newCoEnv(b, coEnvConfig{workers: coBenchWorkers(), opts: []CoordinatorOption{WithStore(st)}})
		before := st.Stats()
		coRunSubmitters(b, echo(e))
		after := st.Stats()
		b.ReportMetric(float64(after.Commits-before.Commits)/float64(b.N), "fsyncs/task")
		b.ReportMetric(float64(after.Writes-before.Writes)/float64(b.N), "writes/task")
	})
}

// loopDelegator delegates to another coordinator in the same process, as
// the orchestrator does over a stream: HandleTask, then its reply.
type loopDelegator struct {
	from peer.ID
	to   *DelegationCoordinator
}

func (l *loopDelegator) Delegate(ctx context.Context, _ peer.ID, t *grid.RemoteTask) (*grid.RemoteResult, error) {
	ch := make(chan *grid.RemoteResult, 1)
	if err := l.to.HandleTask(l.from, t, grid.ReplyFunc(func(r *grid.RemoteResult) { ch <- r })); err != nil {
		return nil, err
	}
	select {
	case r := <-ch:
		return r, nil
	case <-ctx.Done():
		l.to.CancelTask(l.from, t.ID)
		return nil, ctx.Err()
	}
}

// stBenchPair builds a requester that has no skill and an executor that
// has echo, the requester delegating to the executor in process; with
// stores if withStore. It returns the requester and the stores.
func stBenchPair(b *testing.B, withStore bool) (*DelegationCoordinator, []*store.Store) {
	b.Helper()
	ids := rtPeers(b, 2)
	req, exe := ids[0], ids[1]
	var stores []*store.Store
	newCoord := func(self peer.ID, reg *Registry, del grid.Delegator, dir Directory) *DelegationCoordinator {
		trust, err := reputation.NewGraph(self, reputation.WithLogger(coQuiet))
		if err != nil {
			b.Fatal(err)
		}
		exec, err := NewExecutor(reg, self, WithWorkers(coBenchWorkers()), WithExecLogger(coQuiet))
		if err != nil {
			b.Fatal(err)
		}
		opts := []CoordinatorOption{WithLogger(coQuiet)}
		if withStore {
			st, err := store.Open(b.TempDir(), store.WithLogger(coQuiet))
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { _ = st.Close() })
			stores = append(stores, st)
			opts = append(opts, WithStore(st))
		}
		d := Deps{Self: self, Registry: reg, Executor: exec, Trust: trust}
		if del != nil {
			d.Remote, d.Directory = del, dir
		}
		c, err := NewCoordinator(d, opts...)
		if err != nil {
			b.Fatal(err)
		}
		if err := c.Start(context.Background()); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = c.Close() })
		return c
	}
	executor := newCoord(exe, rtRegistry(b), nil, nil)
	dir := rtDirectory{"echo": {{Peer: exe, Version: builtinVersion, Connected: true, Load: grid.Load{Capacity: 64}}}}
	requester := newCoord(req, NewRegistry(), &loopDelegator{from: req, to: executor}, dir)
	return requester, stores
}

// BenchmarkStoreRemoteEcho is BenchmarkStoreLocalEcho for tasks delegated
// to a peer, in process (no network: what is measured is the two
// coordinators and, with the store on, both nodes' stores). fsyncs/task
// counts the commits of both stores.
//
//	go test -run '^$' -bench StoreRemoteEcho -benchtime 2s ./pkg/skill/
func BenchmarkStoreRemoteEcho(b *testing.B) {
	for _, on := range []bool{false, true} {
		name := "store off"
		if on {
			name = "store on"
		}
		b.Run(name, func(b *testing.B) {
			c, stores := stBenchPair(b, on)
			var before uint64
			for _, st := range stores {
				before += st.Stats().Commits
			}
			coRunSubmitters(b, func(ctx context.Context) error {
				id, err := c.SubmitTask(ctx, NewSkillTask("echo", coBenchInput, ""))
				if err != nil {
					return err
				}
				res, err := c.Wait(ctx, id)
				if err == nil && len(res.Output) != len(coBenchInput.Data) {
					b.Errorf("output %q, want the input", res.Output)
				}
				return err
			})
			if on {
				var after uint64
				for _, st := range stores {
					after += st.Stats().Commits
				}
				b.ReportMetric(float64(after-before)/float64(b.N), "fsyncs/task")
			}
		})
	}
}
