package test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

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
	req := newHarnessNode(t, harnessConfig{bootstrap: []*harnessNode{boot}, nodeOpts: off, dhtSearch: true})
	if ps := req.Node.Providers("hash.sha256"); len(ps) != 0 {
		t.Fatalf("the requester's capability table lists %+v with the gossip off", ps)
	}
	task, want := hashTask(t, []byte("found through the DHT"))
	res := req.run(t, task)
	if res.ExecutedBy != worker.ID || string(res.Output) != string(want) {
		t.Fatalf("ran on %s with output %s; want the worker and %s", res.ExecutedBy.ShortString(), res.Output, want)
	}
}
