package grid

import (
	"context"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"
)

// The DHT fallback. The capability gossip is the fast path; a node whose
// gossip has not arrived (just started, or cut off from the mesh) or that
// runs without it (WithCapabilityGossip(false)) asks the DHT's provider
// records instead, through SearchProviders. Lookups are bounded and cached:
const (
	searchRate      = 2               // lookups started per second, at most
	searchBurst     = 4               // ... with bursts of this many
	searchParallel  = 2               // lookups running at once
	searchHitTTL    = 5 * time.Minute // a lookup that found a provider is reused this long
	searchMissTTL   = 10 * time.Second
	searchTimeout   = 10 * time.Second // one lookup, verification included
	searchMaxFound  = 20               // providers taken from one lookup
	searchVerifyPar = 4                // dials at once to verify what a lookup found
	searchQueue     = 16               // lookups waiting to start
	maxSearchCache  = 256              // skills cached
)

// searchEntry is one skill's lookup: in flight until done is closed, then
// its result, valid until until. peers and until are written once, before
// done is closed.
type searchEntry struct {
	skill reputation.SkillID
	done  chan struct{}
	peers []peer.ID
	at    time.Time // when the lookup ended
	until time.Time
}

// providerSearch caches lookups and bounds how many start. It is safe for
// concurrent use.
type providerSearch struct {
	hitTTL, missTTL time.Duration
	lim             *rate.Limiter
	reqs            chan *searchEntry // to searchLoop
	mu              sync.Mutex
	cache           map[reputation.SkillID]*searchEntry
}

func newProviderSearch(hitTTL, missTTL time.Duration) *providerSearch {
	return &providerSearch{
		hitTTL:  hitTTL,
		missTTL: missTTL,
		lim:     rate.NewLimiter(searchRate, searchBurst),
		reqs:    make(chan *searchEntry, searchQueue),
		cache:   make(map[reputation.SkillID]*searchEntry),
	}
}

// entry returns skill's lookup: a cached one, one in flight, or a new one
// queued for searchLoop. It returns nil when no lookup may start now (the
// rate limit, the cache or the queue is full).
func (s *providerSearch) entry(skill reputation.SkillID, now time.Time) *searchEntry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.cache[skill]; ok {
		select {
		case <-e.done:
			if now.Before(e.until) {
				return e
			}
			delete(s.cache, skill)
		default:
			return e // in flight
		}
	}
	if len(s.cache) >= maxSearchCache {
		for k, e := range s.cache {
			select {
			case <-e.done:
				if !now.Before(e.until) {
					delete(s.cache, k)
				}
			default:
			}
		}
		if len(s.cache) >= maxSearchCache {
			return nil
		}
	}
	if !s.lim.AllowN(now, 1) {
		return nil
	}
	e := &searchEntry{skill: skill, done: make(chan struct{})}
	select {
	case s.reqs <- e:
		s.cache[skill] = e
		return e
	default:
		return nil
	}
}

// SearchProviders returns the providers of skill that the DHT's provider
// records name and that pass the identify gate (connected once, speaking
// the task protocol, as Providers requires), looking them up if no recent
// lookup is cached. It blocks until the lookup ends or ctx is done, and
// returns nil then, if the node is not started, if skill is not a valid
// skill ID, or if the lookup limits (2 a second, bursts of 4) allow none
// now. Results are cached 5 minutes, misses 10 seconds; a lookup that ctx
// gives up on goes on, and serves later calls. It is for skills the
// capability table does not list: the providers carry no version and no
// load, and LastSeen is when the lookup ended.
func (n *Node) SearchProviders(ctx context.Context, skill reputation.SkillID) []Provider {
	rt := n.rt.Load()
	if rt == nil || checkSkillID(skill) != nil {
		return nil
	}
	e := n.search.entry(skill, time.Now())
	if e == nil {
		rt.metrics.lookup("limited")
		n.log.Debug("DHT provider lookup not started: over the lookup limits", "skill", skill)
		return nil
	}
	select {
	case <-e.done:
	case <-ctx.Done():
		return nil
	}
	out := make([]Provider, 0, len(e.peers))
	for _, p := range e.peers {
		if n.gater.allowed(p) && speaksTask(rt.host, p) {
			out = append(out, Provider{Peer: p, LastSeen: e.at, Connected: hostConnected(rt.host, p), Verified: true})
		}
	}
	return out
}

// searchLoop runs the lookups SearchProviders queues, searchParallel at a
// time. On return every lookup it took has ended; the ones still queued
// end empty.
func (n *Node) searchLoop(ctx context.Context, rt *nodeRuntime) {
	sem := make(chan struct{}, searchParallel)
	var wg sync.WaitGroup
	defer func() {
		wg.Wait()
		for {
			select {
			case e := <-n.search.reqs:
				n.finishSearch(e, nil, 0)
			default:
				return
			}
		}
	}()
	for {
		var e *searchEntry
		select {
		case <-ctx.Done():
			return
		case e = <-n.search.reqs:
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			n.finishSearch(e, nil, 0)
			return
		}
		wg.Go(func() {
			defer func() { <-sem }()
			peers, ran := n.lookup(ctx, rt, e.skill)
			switch {
			case !ran:
				rt.metrics.lookup("not_run")
				n.finishSearch(e, nil, 0) // not a miss: do not cache it
				return
			case len(peers) == 0:
				rt.metrics.lookup("none")
			default:
				rt.metrics.lookup("found")
			}
			n.finishSearch(e, peers, n.search.missTTL)
		})
	}
}

// lookup asks the DHT for providers of skill and returns those that pass
// the identify gate, dialling the ones not connected (a dial waits for
// identify). A node that just started has an empty routing table, and a
// lookup then ends at once with nothing: lookup waits for the table's
// first peer first. ran is false if the lookup could not run (no peer in
// the table within the time limit, or the node closing).
func (n *Node) lookup(ctx context.Context, rt *nodeRuntime, skill reputation.SkillID) (verified []peer.ID, ran bool) {
	ctx, cancel := context.WithTimeout(ctx, searchTimeout)
	defer cancel()
	if !waitForRoutingTable(ctx, rt) {
		n.log.Debug("DHT provider lookup not run: no peer in the routing table", "skill", skill)
		return nil, false
	}
	found, err := n.FindProviders(ctx, skill, searchMaxFound)
	if err != nil {
		n.log.Debug("DHT provider lookup failed", "skill", skill, "err", err)
		return nil, ctx.Err() == nil
	}
	sem := make(chan struct{}, searchVerifyPar)
	var wg sync.WaitGroup
	for _, ai := range found {
		if speaksTask(rt.host, ai.ID) && hostConnected(rt.host, ai.ID) {
			continue
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			n.dial(ctx, rt.host, ai)
		})
	}
	wg.Wait()
	var out []peer.ID
	for _, ai := range found {
		if speaksTask(rt.host, ai.ID) {
			out = append(out, ai.ID)
		}
	}
	n.log.Debug("DHT provider lookup done", "skill", skill, "found", len(found), "verified", len(out))
	return out, true
}

// waitForRoutingTable waits until the DHT's routing table holds a peer, or
// ctx is done; it reports whether it does.
func waitForRoutingTable(ctx context.Context, rt *nodeRuntime) bool {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for rt.dht.RoutingTable().Size() == 0 {
		select {
		case <-ctx.Done():
			return false
		case <-tick.C:
		}
	}
	return true
}

// finishSearch records e's result and wakes its waiters. A result with
// providers is cached for the hit TTL, one without for miss.
func (n *Node) finishSearch(e *searchEntry, peers []peer.ID, miss time.Duration) {
	now := time.Now()
	e.peers, e.at, e.until = peers, now, now.Add(miss)
	if len(peers) > 0 {
		e.until = now.Add(n.search.hitTTL)
	}
	close(e.done)
}

// CachedProviders returns what a recent lookup of skill found, without
// starting one or waiting; nil if none is cached or one is in flight.
func (n *Node) CachedProviders(skill reputation.SkillID) []Provider {
	rt := n.rt.Load()
	if rt == nil {
		return nil
	}
	n.search.mu.Lock()
	e, ok := n.search.cache[skill]
	n.search.mu.Unlock()
	if !ok {
		return nil
	}
	select {
	case <-e.done:
	default:
		return nil
	}
	if !time.Now().Before(e.until) {
		return nil
	}
	out := make([]Provider, 0, len(e.peers))
	for _, p := range e.peers {
		if n.gater.allowed(p) && speaksTask(rt.host, p) {
			out = append(out, Provider{Peer: p, LastSeen: e.at, Connected: hostConnected(rt.host, p), Verified: true})
		}
	}
	return out
}
