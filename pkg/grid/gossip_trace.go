package grid

import (
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	"github.com/prometheus/client_golang/prometheus"
)

// GossipStats counts what gossipsub did with the messages of every topic
// since Start: where an announcement that never reached the capability
// table was lost. Every field only grows.
type GossipStats struct {
	Validated     uint64 // first copies that entered validation (signature good)
	Delivered     uint64 // accepted and handed to the subscriber (and relayed)
	Duplicates    uint64 // later copies of a message already seen
	Rejected      uint64 // a validator rejected it (the relaying peer is penalized)
	Ignored       uint64 // a validator ignored it (stale, over a rate, denied author)
	Throttled     uint64 // dropped unvalidated: too many validations at once
	QueueFull     uint64 // dropped unvalidated: the validation queue was full
	BadSignature  uint64 // the signature did not verify
	Undeliverable uint64 // accepted, but this node's reader was too slow: lost to the table
	DroppedRPCs   uint64 // outbound RPCs dropped because a peer's send queue was full
	Grafts        uint64 // peers added to a topic mesh
	Prunes        uint64 // peers removed from a topic mesh
	TopicPeers    int    // now: peers known to subscribe to the capability topic
}

// gossipTracer is the pubsub.RawTracer behind GossipStats. pubsub calls it
// from its event loop and validation goroutines, so it only adds atomics.
type gossipTracer struct {
	validated, delivered, duplicates    atomic.Uint64
	rejected, ignored, throttled, qfull atomic.Uint64
	badSig, undeliverable, dropped      atomic.Uint64
	grafts, prunes                      atomic.Uint64
}

var _ pubsub.RawTracer = (*gossipTracer)(nil)

func (t *gossipTracer) stats() GossipStats {
	return GossipStats{
		Validated:     t.validated.Load(),
		Delivered:     t.delivered.Load(),
		Duplicates:    t.duplicates.Load(),
		Rejected:      t.rejected.Load(),
		Ignored:       t.ignored.Load(),
		Throttled:     t.throttled.Load(),
		QueueFull:     t.qfull.Load(),
		BadSignature:  t.badSig.Load(),
		Undeliverable: t.undeliverable.Load(),
		DroppedRPCs:   t.dropped.Load(),
		Grafts:        t.grafts.Load(),
		Prunes:        t.prunes.Load(),
	}
}

func (t *gossipTracer) ValidateMessage(*pubsub.Message)  { t.validated.Add(1) }
func (t *gossipTracer) DeliverMessage(*pubsub.Message)   { t.delivered.Add(1) }
func (t *gossipTracer) DuplicateMessage(*pubsub.Message) { t.duplicates.Add(1) }
func (t *gossipTracer) UndeliverableMessage(*pubsub.Message) {
	t.undeliverable.Add(1)
}
func (t *gossipTracer) DropRPC(*pubsub.RPC, peer.ID) { t.dropped.Add(1) }
func (t *gossipTracer) Graft(peer.ID, string)        { t.grafts.Add(1) }
func (t *gossipTracer) Prune(peer.ID, string)        { t.prunes.Add(1) }
func (t *gossipTracer) RejectMessage(_ *pubsub.Message, reason string) {
	switch reason {
	case pubsub.RejectValidationFailed:
		t.rejected.Add(1)
	case pubsub.RejectValidationIgnored:
		t.ignored.Add(1)
	case pubsub.RejectValidationThrottled:
		t.throttled.Add(1)
	case pubsub.RejectValidationQueueFull:
		t.qfull.Add(1)
	case pubsub.RejectInvalidSignature:
		t.badSig.Add(1)
	}
	// The rest (self origin, blacklisted, unexpected signature fields) are
	// rejected before validation and are not losses of honest messages.
}

func (t *gossipTracer) OnNewOutboundStream(peer.ID, protocol.ID)             {}
func (t *gossipTracer) OnClosedOutboundStream(peer.ID)                       {}
func (t *gossipTracer) Join(string)                                          {}
func (t *gossipTracer) Leave(string)                                         {}
func (t *gossipTracer) ThrottlePeer(peer.ID)                                 {}
func (t *gossipTracer) RecvRPC(*pubsub.RPC)                                  {}
func (t *gossipTracer) SendRPC(*pubsub.RPC, peer.ID)                         {}
func (t *gossipTracer) SendRPCCompleted(*pubsub.RPC, peer.ID, time.Duration) {}

// GossipStats reports what gossipsub did with the messages it received
// since Start (zero before Start or with WithCapabilityGossip(false)).
func (n *Node) GossipStats() GossipStats {
	s := n.gtrace.stats()
	if rt := n.rt.Load(); rt != nil && rt.ps != nil {
		s.TopicPeers = len(rt.ps.ListPeers(CapabilityTopic))
	}
	return s
}

// gossipCollector exports GossipStats as
// cortex_grid_gossip_messages_total{result}, cortex_grid_gossip_dropped_rpcs_total
// and cortex_grid_gossip_mesh_changes_total{change}.
type gossipCollector struct{ t *gossipTracer }

var (
	gossipMessagesDesc = prometheus.NewDesc("cortex_grid_gossip_messages_total",
		"Gossip messages received, by what gossipsub did with them: validated (first copy, signature good), delivered, duplicate, rejected, ignored, throttled and queue_full (dropped unvalidated: this node was too busy), bad_signature, undeliverable (this node's reader fell behind).",
		[]string{"result"}, nil)
	gossipDroppedDesc = prometheus.NewDesc("cortex_grid_gossip_dropped_rpcs_total",
		"Outbound gossip RPCs dropped because a peer's send queue was full.", nil, nil)
	gossipMeshDesc = prometheus.NewDesc("cortex_grid_gossip_mesh_changes_total",
		"Peers added to (graft) or removed from (prune) a gossip topic mesh.", []string{"change"}, nil)
)

func (c gossipCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- gossipMessagesDesc
	ch <- gossipDroppedDesc
	ch <- gossipMeshDesc
}

func (c gossipCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.t.stats()
	for _, m := range []struct {
		result string
		v      uint64
	}{
		{"validated", s.Validated}, {"delivered", s.Delivered}, {"duplicate", s.Duplicates},
		{"rejected", s.Rejected}, {"ignored", s.Ignored}, {"throttled", s.Throttled},
		{"queue_full", s.QueueFull}, {"bad_signature", s.BadSignature}, {"undeliverable", s.Undeliverable},
	} {
		ch <- prometheus.MustNewConstMetric(gossipMessagesDesc, prometheus.CounterValue, float64(m.v), m.result)
	}
	ch <- prometheus.MustNewConstMetric(gossipDroppedDesc, prometheus.CounterValue, float64(s.DroppedRPCs))
	ch <- prometheus.MustNewConstMetric(gossipMeshDesc, prometheus.CounterValue, float64(s.Grafts), "graft")
	ch <- prometheus.MustNewConstMetric(gossipMeshDesc, prometheus.CounterValue, float64(s.Prunes), "prune")
}
