package grid

import (
	"fmt"
	"net"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Gossipsub peer scoring and validation throttling for the capability
// topic. A node announces every 10 s by default, so an honest mesh peer
// relays a handful of messages a minute; the score rewards that, punishes
// invalid announcements hard and lasting, and leaves out what would punish
// honest peers of a small, quiet grid (mesh delivery rates).
//
// Score of a peer = topic score (capped at scoreTopicCap) + IP colocation
// + behaviour penalty, where the topic score of /cortex/capabilities/1.0.0
// (weight 1) is
//
//	P1 time in mesh:          +0.01 per second in the mesh, up to +10 (after ~17 min)
//	P2 first deliveries:      +1 per announcement first delivered by the peer, up to +20, decaying to 0 over ~10 min
//	P3 mesh deliveries:       off (weight 0): sparse traffic would penalize honest peers
//	P4 invalid announcements: -20 x (count)^2, decaying to 0 over ~1 h
//
// IP colocation: -5 x (peers on one IP - 4)^2 beyond 4 peers on one IP
// (the resource manager refuses a ninth connection from one IPv4 address:
// 8 peers on one address score -80, below the publish threshold);
// loopback and private addresses are exempt (colocationExempt; gossipsub
// itself skips loopback), so tests, containers and nodes sharing a host or
// a LAN are not penalized. Behaviour penalty (GRAFT during backoff, broken
// promises): -10 x (count - 4)^2, decaying over ~10 min. Scores decay every
// second, reach 0 below 0.01, and are kept 10 min after a peer disconnects
// (reconnecting does not reset a bad score).
//
// Thresholds: below -10 a peer gets no gossip (IHAVE/IWANT) from this node
// and its gossip is ignored; below -50 this node does not publish to it;
// below -100 every RPC from it is ignored (graylisted). One invalid
// announcement (-20) silences gossip with the peer for a while; three (-180)
// graylist it for about 4 minutes (the penalty decays to 1% in an hour). Peer exchange is off, so the PX threshold
// is only required by gossipsub to be set (+10).
//
// Validation runs inline, in gossipsub's validation workers (one per CPU),
// with the signature check: the validators are cheap (a parse and a table
// lookup, no I/O). gossipsub marks a message seen before it runs an
// asynchronous validator, so an asynchronous validation dropped for being
// over its concurrency limit or its timeout, as happened on a busy node of a
// 200-node grid, lost the message for good: every later copy was a
// duplicate, and the node never relayed it. Inline, a node too busy to keep
// up drops messages from the front of the pipeline (scoreValidateQueue
// waiting), before they are marked seen, so a later copy still counts;
// gossipsub does not count such drops against the sender.
//
// Buffers. A topic's reader (readLoop, opinionReadLoop) gets
// gossipSubBuffer messages of slack, and each peer's outbound queue holds
// gossipPeerQueue RPCs; past them gossipsub drops what arrives (the
// subscription's copy, or the RPC to that peer). Their defaults (32 each)
// lost 6% of the deliveries to the table and 6% of the relays in the same
// 200-node run: a starved process runs a reader or a peer's writer late,
// and a burst of announcements (many nodes joining at once) overflows 32.
// Both hold only messages that passed validation, so each is at most
// MaxAnnouncementSize (64 KiB) and in practice about 400 bytes: in the
// worst case, a stalled reader holds 64 MiB and a stalled peer's queue
// 8 MiB (against 2 MiB each at the defaults). An honest grid's messages
// are about 400 bytes, 400 KB and 50 KB.
const (
	scoreDecayInterval = time.Second
	scoreDecayToZero   = 0.01
	scoreRetain        = 10 * time.Minute
	scoreTopicCap      = 50

	scoreGossipThreshold    = -10
	scorePublishThreshold   = -50
	scoreGraylistThreshold  = -100
	scoreAcceptPXThreshold  = 10
	scoreOpportunisticGraft = 1

	scoreIPColocationWeight    = -5
	scoreIPColocationThreshold = 4
	scoreBehaviourWeight       = -10
	scoreBehaviourThreshold    = 4

	scoreValidateQueue = 256
	gossipSubBuffer    = 1024
	gossipPeerQueue    = 128
)

// colocationExempt are the networks exempt from the IP colocation
// penalty: loopback, and the private and link-local ranges (RFC 1918,
// RFC 4193, RFC 3927, RFC 4291), where one address often stands for
// several of one operator's nodes (containers, a test bed, a LAN behind
// one router) and from where no stranger on the Internet can connect.
var colocationExempt = mustCIDRs(
	"127.0.0.0/8", "::1/128",
	"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7",
	"169.254.0.0/16", "fe80::/10",
)

func mustCIDRs(cidrs ...string) []*net.IPNet {
	out := make([]*net.IPNet, len(cidrs))
	for i, c := range cidrs {
		_, n, err := net.ParseCIDR(c)
		if err != nil {
			panic(fmt.Sprintf("parse CIDR %q: %v", c, err)) // a constant above
		}
		out[i] = n
	}
	return out
}

// capabilityTopicScore is the score of one peer on the capability topic;
// see the table above.
func capabilityTopicScore() *pubsub.TopicScoreParams {
	return &pubsub.TopicScoreParams{
		TopicWeight: 1,

		TimeInMeshWeight:  0.01,
		TimeInMeshQuantum: time.Second,
		TimeInMeshCap:     1000,

		FirstMessageDeliveriesWeight: 1,
		FirstMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(10 * time.Minute),
		FirstMessageDeliveriesCap:    20,

		InvalidMessageDeliveriesWeight: -20,
		InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(time.Hour),
	}
}

// peerScoreParams are the peer score parameters; see the table above.
func peerScoreParams() *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		Topics:                      map[string]*pubsub.TopicScoreParams{CapabilityTopic: capabilityTopicScore(), OpinionTopic: capabilityTopicScore()},
		TopicScoreCap:               scoreTopicCap,
		AppSpecificScore:            func(peer.ID) float64 { return 0 },
		AppSpecificWeight:           1,
		IPColocationFactorWeight:    scoreIPColocationWeight,
		IPColocationFactorThreshold: scoreIPColocationThreshold,
		IPColocationFactorWhitelist: colocationExempt,
		BehaviourPenaltyWeight:      scoreBehaviourWeight,
		BehaviourPenaltyThreshold:   scoreBehaviourThreshold,
		BehaviourPenaltyDecay:       pubsub.ScoreParameterDecay(10 * time.Minute),
		DecayInterval:               scoreDecayInterval,
		DecayToZero:                 scoreDecayToZero,
		RetainScore:                 scoreRetain,
	}
}

func peerScoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             scoreGossipThreshold,
		PublishThreshold:            scorePublishThreshold,
		GraylistThreshold:           scoreGraylistThreshold,
		AcceptPXThreshold:           scoreAcceptPXThreshold,
		OpportunisticGraftThreshold: scoreOpportunisticGraft,
	}
}

// gossipOptions are the gossipsub options: signed messages and strict
// verification, the topic allowlist, peer scoring and validation limits.
func (n *Node) gossipOptions() []pubsub.Option {
	opts := []pubsub.Option{
		pubsub.WithMessageSignaturePolicy(pubsub.StrictSign),
		pubsub.WithSubscriptionFilter(pubsub.NewAllowlistSubscriptionFilter(CapabilityTopic, OpinionTopic)),
		pubsub.WithLogger(n.cfg.logger.With("component", "grid.pubsub")),
		pubsub.WithPeerScore(peerScoreParams(), peerScoreThresholds()),
		pubsub.WithValidateQueueSize(scoreValidateQueue),
		pubsub.WithPeerOutboundQueueSize(gossipPeerQueue),
		pubsub.WithRawTracer(&n.gtrace),
	}
	if n.cfg.scoreInspect != nil {
		opts = append(opts, pubsub.WithPeerScoreInspect(n.cfg.scoreInspect, scoreDecayInterval))
	}
	return opts
}

// validatorOptions are every topic validator's options: run inline (see
// Validation above).
func validatorOptions() []pubsub.ValidatorOpt {
	return []pubsub.ValidatorOpt{pubsub.WithValidatorInline(true)}
}

// withScoreInspect makes gossipsub report every peer's score to f every
// second. For tests.
func withScoreInspect(f func(map[peer.ID]float64)) NodeOption {
	return func(c *nodeConfig) { c.scoreInspect = f }
}
