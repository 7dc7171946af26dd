package test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// newSearchingNode is newHarnessNode for a node whose router asks the
// DHT (grid.Node.SearchProviders) when its capability table lists no
// provider, as the daemon wires it.
func newSearchingNode(t testing.TB, cfg harnessConfig) *harnessNode {
	t.Helper()
	h := &harnessNode{}
	t.Cleanup(func() {
		if err := h.Close(); err != nil {
			t.Errorf("close node %s: %v", h.ID.ShortString(), err)
		}
	})
	if err := h.startSearching(cfg); err != nil {
		t.Fatalf("start searching node: %v", err)
	}
	return h
}

func (h *harnessNode) startSearching(cfg harnessConfig) error {
	log := harnessLogger()
	ctx, cancel := context.WithTimeout(context.Background(), harnessWait)
	defer cancel()
	reg, err := harnessRegistry(cfg)
	if err != nil {
		return err
	}
	h.Reg = reg
	key, err := grid.GenerateIdentity()
	if err != nil {
		return fmt.Errorf("generate identity: %w", err)
	}
	opts := []grid.NodeOption{
		grid.WithListenAddrs("/ip4/127.0.0.1/tcp/0"),
		grid.WithAnnounceInterval(harnessAnnounce),
		grid.WithCapabilityTTL(harnessTTL),
		grid.WithNodeLogger(log),
	}
	for _, b := range cfg.bootstrap {
		opts = append(opts, grid.WithBootstrapPeers(b.addrInfo()))
	}
	if h.Node, err = grid.NewNode(key, append(opts, cfg.nodeOpts...)...); err != nil {
		return fmt.Errorf("new node: %w", err)
	}
	h.ID = h.Node.ID()
	h.addCloser(h.Node.Close)
	if err := h.Node.Start(ctx); err != nil {
		return fmt.Errorf("start node: %w", err)
	}
	fwd := &forwardingHandler{}
	if h.Orch, err = grid.NewOrchestrator(h.Node.Host(), fwd, grid.WithOrchLogger(log)); err != nil {
		return fmt.Errorf("new orchestrator: %w", err)
	}
	if err := h.Orch.Start(ctx); err != nil {
		return fmt.Errorf("start orchestrator: %w", err)
	}
	h.addCloser(h.Orch.Close)
	if h.Exec, err = skill.NewExecutor(reg, h.ID, skill.WithExecLogger(log)); err != nil {
		return fmt.Errorf("new executor: %w", err)
	}
	if h.Trust, err = reputation.NewGraph(h.ID, reputation.WithLogger(log)); err != nil {
		return fmt.Errorf("new trust graph: %w", err)
	}
	h.Metrics = grid.NewMetricsTracker()
	router, err := skill.NewRouter(h.ID, reg, h.Node, h.Trust, h.Metrics, nil,
		skill.WithSearcher(h.Node, 5*time.Second))
	if err != nil {
		return fmt.Errorf("new router: %w", err)
	}
	h.Coord, err = skill.NewCoordinator(skill.Deps{
		Self: h.ID, Registry: reg, Executor: h.Exec, Router: router,
		Metrics: h.Metrics, Trust: h.Trust, Remote: h.Orch,
	}, skill.WithLogger(log))
	if err != nil {
		return fmt.Errorf("new coordinator: %w", err)
	}
	if err := h.Coord.Start(ctx); err != nil {
		return fmt.Errorf("start coordinator: %w", err)
	}
	h.addCloser(h.Coord.Close)
	fwd.set(h.Coord)
	return nil
}

// With the capability gossip off, a requester finds the one node that
// offers a skill through the DHT's provider records, and delegates to it.
func TestDiscProviderDiscoveryWithGossipOff(t *testing.T) {
	off := []grid.NodeOption{grid.WithCapabilityGossip(false)}
	boot := newHarnessNode(t, harnessConfig{nodeOpts: off})
	worker := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"hash.sha256"}, bootstrap: []*harnessNode{boot}, nodeOpts: off})
	// The worker's provider record is in the DHT before the requester
	// starts: a lookup that found nothing is cached for 10 s.
	awaitCond(t, harnessWait, "the worker's provider record is in the DHT", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		found, err := boot.Node.FindProviders(ctx, "hash.sha256", 5)
		return err == nil && slices.ContainsFunc(found, func(ai peer.AddrInfo) bool { return ai.ID == worker.ID })
	})
	req := newSearchingNode(t, harnessConfig{bootstrap: []*harnessNode{boot}, nodeOpts: off})
	if ps := req.Node.Providers("hash.sha256"); len(ps) != 0 {
		t.Fatalf("the requester's capability table lists %+v with the gossip off", ps)
	}
	task, want := hashTask(t, []byte("found through the DHT"))
	res := req.run(t, task)
	if res.ExecutedBy != worker.ID || string(res.Output) != string(want) {
		t.Fatalf("ran on %s with output %s; want the worker and %s", res.ExecutedBy.ShortString(), res.Output, want)
	}
}
