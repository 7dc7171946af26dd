package grid

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
	"google.golang.org/protobuf/proto"
)

// OpinionTopic is the gossipsub topic trust opinions travel on.
const OpinionTopic = "/cortex/trust/1.0.0"

// Limits on a trust opinion message; larger ones are rejected.
const (
	MaxOpinionEntries = 64
	MaxOpinionsSize   = 8 << 10
	maxOpinionPeerID  = 64 // bytes of one binary peer ID
	opinionPPM        = 1_000_000
	// maxOpinionAge is how old an opinion's timestamp may be, beyond
	// maxClockSkew, before it counts as a replay.
	maxOpinionAge = time.Hour
	// DefaultOpinionInterval is how often a node shares its opinions
	// unless WithTrustOpinions says otherwise.
	DefaultOpinionInterval = 30 * time.Second
	// A receiver accepts from one author a burst of opinionBurst messages,
	// then one per opinionInterval / opinionBurst of its own interval: a
	// grid's nodes should share the interval (a sender up to four times
	// faster still gets through); extra messages are dropped.
	opinionBurst = 4
	// maxOpinionAuthors bounds the per-author state a receiver keeps.
	maxOpinionAuthors = maxCapPeers
)

// errOpinionLimited is not a fault of the relaying peer: an author over
// its rate, or a full author table. It is ignored, not rejected.
var errOpinionLimited = errors.New("trust opinion over the author's rate")

// OpinionGraph is the trust graph whose opinions a Node shares on the
// grid and to which it feeds the opinions it receives.
// *reputation.Graph implements it. Both methods must be safe for
// concurrent use and must not call into the Node.
type OpinionGraph interface {
	// LocalOpinions returns this node's normalized local trust vector, at
	// most max entries (the largest).
	LocalOpinions(max int) map[peer.ID]float64
	// SetPeerOpinions replaces the opinions from shared.
	SetPeerOpinions(from peer.ID, local map[peer.ID]float64)
}

// WithTrustOpinions makes the node share g's normalized local trust
// vector on OpinionTopic every interval (DefaultOpinionInterval if 0) and
// give g what other nodes share (see docs/protocol.md, trust opinions).
// It needs the capability gossip (WithCapabilityGossip). Default: off.
func WithTrustOpinions(g OpinionGraph, interval time.Duration) NodeOption {
	return func(c *nodeConfig) {
		c.opinions = g
		c.opinionInterval = interval
		if interval == 0 {
			c.opinionInterval = DefaultOpinionInterval
		}
	}
}

// opinionMsg is a validated TrustOpinions message.
type opinionMsg struct {
	seq   uint64
	stamp time.Time
	local map[peer.ID]float64
}

// parseOpinions checks an opinion message's size and fields: at most
// MaxOpinionEntries entries of valid peer IDs, none twice, none naming the
// author. Entries of weight 0 are dropped.
func parseOpinions(author peer.ID, data []byte) (*opinionMsg, error) {
	if len(data) > MaxOpinionsSize {
		return nil, fmt.Errorf("%w: trust opinions of %d bytes, the limit is %d", errAnnTooLarge, len(data), MaxOpinionsSize)
	}
	var m cortexv1.TrustOpinions
	if err := proto.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: trust opinions: %w", errAnnMalformed, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: trust opinions: %s", errAnnMalformed, fmt.Sprintf(format, args...))
	}
	if len(m.Opinions) > MaxOpinionEntries {
		return nil, bad("%d entries, the limit is %d", len(m.Opinions), MaxOpinionEntries)
	}
	o := &opinionMsg{seq: m.Sequence, local: make(map[peer.ID]float64, len(m.Opinions))}
	if m.TimestampUnixMs > 0 {
		o.stamp = time.UnixMilli(m.TimestampUnixMs)
	}
	seen := make(map[peer.ID]struct{}, len(m.Opinions))
	for i, e := range m.Opinions {
		if len(e.PeerId) > maxOpinionPeerID {
			return nil, bad("entry %d: peer ID of %d bytes, the limit is %d", i, len(e.PeerId), maxOpinionPeerID)
		}
		p, err := peer.IDFromBytes(e.PeerId)
		if err != nil {
			return nil, bad("entry %d: %v", i, err)
		}
		if p == author {
			return nil, bad("entry %d is the author's opinion of itself", i)
		}
		if _, dup := seen[p]; dup {
			return nil, bad("entry %d: peer %s is listed twice", i, p)
		}
		seen[p] = struct{}{}
		if e.WeightPpm > opinionPPM {
			return nil, bad("entry %d: weight %d ppm is over %d", i, e.WeightPpm, opinionPPM)
		}
		if e.WeightPpm > 0 {
			o.local[p] = float64(e.WeightPpm)
		}
	}
	return o, nil
}

// buildOpinions encodes local, the largest MaxOpinionEntries entries, in
// parts per million.
func buildOpinions(local map[peer.ID]float64, seq uint64, now time.Time) ([]byte, error) {
	type entry struct {
		p peer.ID
		c float64
	}
	all := make([]entry, 0, len(local))
	var sum float64
	for p, c := range local {
		if c > 0 && !math.IsInf(c, 0) {
			all = append(all, entry{p, c})
			sum += c
		}
	}
	slices.SortFunc(all, func(a, b entry) int { return cmp.Or(cmp.Compare(b.c, a.c), cmp.Compare(a.p, b.p)) })
	all = all[:min(len(all), MaxOpinionEntries)]
	m := &cortexv1.TrustOpinions{Sequence: seq, TimestampUnixMs: now.UnixMilli()}
	for _, e := range all {
		w := uint32(min(math.Round(e.c/sum*opinionPPM), opinionPPM))
		if w == 0 {
			continue
		}
		m.Opinions = append(m.Opinions, &cortexv1.TrustOpinion{PeerId: []byte(e.p), WeightPpm: w})
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode trust opinions: %w", err)
	}
	return b, nil
}

// opinionGate is the receiver's per-author state: a rate limiter and the
// last sequence number accepted. It is safe for concurrent use.
type opinionGate struct {
	every time.Duration // refill period of one message

	mu      sync.Mutex
	authors map[peer.ID]*opinionAuthor
}

type opinionAuthor struct {
	lim     *rate.Limiter
	lastSeq uint64
	seen    time.Time
}

func newOpinionGate(interval time.Duration) *opinionGate {
	return &opinionGate{every: max(interval/opinionBurst, time.Millisecond), authors: make(map[peer.ID]*opinionAuthor)}
}

// admit checks o from author against the author's rate and its last
// sequence number, and takes one message off its allowance. Errors wrap
// errAnnStale or errOpinionLimited: neither is a fault of the relay.
func (g *opinionGate) admit(author peer.ID, o *opinionMsg, now time.Time) error {
	if !o.stamp.IsZero() && now.Sub(o.stamp) > maxOpinionAge+maxClockSkew {
		return fmt.Errorf("%w: trust opinions sent %s ago", errAnnStale, now.Sub(o.stamp).Round(time.Second))
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	a := g.authors[author]
	if a == nil {
		if len(g.authors) >= maxOpinionAuthors && !g.forgetIdleLocked(now) {
			return fmt.Errorf("%w: %d authors tracked", errOpinionLimited, len(g.authors))
		}
		a = &opinionAuthor{lim: rate.NewLimiter(rate.Every(g.every), opinionBurst)}
		g.authors[author] = a
	}
	if o.seq <= a.lastSeq {
		return fmt.Errorf("%w: trust opinions sequence %d is not newer than %d", errAnnStale, o.seq, a.lastSeq)
	}
	if !a.lim.AllowN(now, 1) {
		return fmt.Errorf("%w: more than %d messages, then one per %s", errOpinionLimited, opinionBurst, g.every)
	}
	a.lastSeq, a.seen = o.seq, now
	return nil
}

// forgetIdleLocked drops the authors not heard from for maxOpinionAge and
// reports whether it dropped any.
func (g *opinionGate) forgetIdleLocked(now time.Time) bool {
	n := len(g.authors)
	for p, a := range g.authors {
		if now.Sub(a.seen) > maxOpinionAge {
			delete(g.authors, p)
		}
	}
	return len(g.authors) < n
}

// checkOpinion is the opinion topic's check for topicValidator.
func (n *Node) checkOpinion(author peer.ID, data []byte, now time.Time) (any, error) {
	o, err := parseOpinions(author, data)
	if err != nil {
		return nil, err
	}
	if author == n.id {
		return o, nil
	}
	if err := n.opGate.admit(author, o, now); err != nil {
		return nil, err
	}
	return o, nil
}

// opinionReadLoop feeds validated opinions to the trust graph.
func (n *Node) opinionReadLoop(ctx context.Context, rt *nodeRuntime) {
	for {
		msg, err := rt.opSub.Next(ctx)
		if err != nil {
			return // canceled
		}
		author := msg.GetFrom()
		o, ok := msg.ValidatorData.(*opinionMsg)
		if !ok || author == n.id || !n.gater.allowed(author) {
			continue
		}
		n.cfg.opinions.SetPeerOpinions(author, o.local)
	}
}

// opinionLoop shares this node's opinions every opinion interval, and not
// while it has none to share and shared none before.
func (n *Node) opinionLoop(ctx context.Context, rt *nodeRuntime) {
	tick := time.NewTicker(n.cfg.opinionInterval)
	defer tick.Stop()
	seq := uint64(time.Now().UnixNano()) // a restarted node outranks its previous run
	sharedAny := false
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		local := n.cfg.opinions.LocalOpinions(MaxOpinionEntries)
		if len(local) == 0 && !sharedAny {
			continue
		}
		seq++
		data, err := buildOpinions(local, seq, time.Now())
		if err == nil {
			err = rt.opTopic.Publish(ctx, data)
		}
		if err != nil {
			if ctx.Err() == nil {
				n.log.Warn("publish trust opinions failed", "err", err)
			}
			continue
		}
		sharedAny = len(local) > 0
	}
}
