// Package apitest builds a real single-node cortexd engine for tests of
// the API and its clients: a node on loopback, the trust graph, the
// registry with every built-in skill, the executor, queue, router,
// orchestrator and coordinator, wired as the daemon wires them.
package apitest

import (
	"context"
	"log/slog"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// Engine is a started engine. Its parts are closed by the test's cleanup.
type Engine struct {
	Node        *grid.Node
	Trust       *reputation.Graph
	Registry    *skill.Registry
	Coordinator *skill.DelegationCoordinator
}

// Deps returns the API dependencies of the engine.
func (e *Engine) Deps() api.Deps {
	return api.Deps{Tasks: e.Coordinator, Node: e.Node, Skills: e.Registry, Trust: e.Trust, Gate: e.Node}
}

// NewEngine starts an engine and registers its teardown with t.Cleanup.
// opts are added to the coordinator's (skill.WithStore, ...).
func NewEngine(t testing.TB, opts ...skill.CoordinatorOption) *Engine {
	t.Helper()
	ctx := context.Background()
	quiet := slog.New(slog.DiscardHandler)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	key, err := grid.GenerateIdentity()
	must(err)
	// A short announce interval, and the start waits out the node's warm-up
	// (grid.Node.CapabilitiesWarming, twice the interval here): until then a
	// task for a skill no node offers is accepted and waits for one, where
	// the API's tests expect the refusal.
	node, err := grid.NewNode(key, grid.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), grid.WithMDNS(false), grid.WithNodeLogger(quiet),
		grid.WithAnnounceInterval(100*time.Millisecond))
	must(err)
	must(node.Start(ctx))
	t.Cleanup(func() { node.Close() })
	for node.CapabilitiesWarming() {
		time.Sleep(10 * time.Millisecond)
	}
	trust, err := reputation.NewGraph(node.ID(), reputation.WithLogger(quiet))
	must(err)
	must(trust.Start(ctx))
	t.Cleanup(func() { trust.Close() })
	reg := skill.NewRegistry()
	for _, s := range skill.Builtins(skill.BuiltinOptions{DebugSleep: true}) {
		must(reg.Register(s))
	}
	exec, err := skill.NewExecutor(reg, node.ID(), skill.WithWorkers(4), skill.WithExecLogger(quiet))
	must(err)
	var coord *skill.DelegationCoordinator
	metrics := grid.NewMetricsTracker()
	router, err := skill.NewRouter(node.ID(), reg, node, trust, metrics, func() grid.Load { return coord.LocalLoad() })
	must(err)
	orch, err := grid.NewOrchestrator(node.Host(), nil, grid.WithOrchLogger(quiet))
	must(err)
	must(orch.Start(ctx))
	t.Cleanup(func() { orch.Close() })
	coord, err = skill.NewCoordinator(skill.Deps{Self: node.ID(), Registry: reg, Executor: exec, Router: router,
		Metrics: metrics, Trust: trust, Remote: orch}, append([]skill.CoordinatorOption{skill.WithLogger(quiet)}, opts...)...)
	must(err)
	must(coord.Start(ctx))
	t.Cleanup(func() { coord.Close() })
	return &Engine{Node: node, Trust: trust, Registry: reg, Coordinator: coord}
}
