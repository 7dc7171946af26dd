package skill

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// Searcher finds providers of a skill that the Directory does not list:
// *grid.Node does, through the DHT's provider records, verified as the
// Directory's are. SearchProviders returns what it found, blocking until a
// lookup ends or ctx is done; it caches, and bounds its own lookups.
type Searcher interface {
	SearchProviders(ctx context.Context, skill reputation.SkillID) []grid.Provider
}

// gossipReporter is implemented by a Searcher that says whether this node
// hears the capability gossip at all (*grid.Node should: false with
// grid.WithCapabilityGossip(false)). Without it the gossip is taken to be
// on.
type gossipReporter interface {
	CapabilityGossip() bool
}

// cachePeeker is implemented by a Searcher that can say what its recent
// lookups found without starting one. The router's cross-checks use it
// when it is there; otherwise they ask SearchProviders with a deadline of
// peekWait.
type cachePeeker interface {
	CachedProviders(skill reputation.SkillID) []grid.Provider
}

// DefaultSearchWait is how long Route waits for a Searcher by default.
const DefaultSearchWait = 2 * time.Second

// Cross-checking the Directory against the Searcher, without waiting: at
// most once per peekEvery per skill, a Route asks the Searcher what its
// cache holds (see cachePeeker), or else calls SearchProviders with a
// deadline of peekWait, which returns what the cache holds and may start
// a lookup, within the Searcher's own limits, for later Routes.
const (
	peekEvery    = time.Second
	peekWait     = time.Millisecond
	maxPeekCache = 256 // skills remembered
)

// WithSearcher makes the router ask s for providers beyond the
// Directory's. When the Directory lists no provider but this node, and
// this node does not offer the skill (just started, or cut off from the
// gossip), Route waits at most wait (DefaultSearchWait if wait is 0) for
// the answer; a lookup still running then goes on, and its result serves
// the next Route. While the Directory is still filling (a *grid.Node in
// its first announce interval, see warmingDirectory), Route waits as
// long for the Directory to list a provider too, so a task submitted as a
// node starts does not fail for want of the gossip it is about to hear. Otherwise Route does not wait: when the Directory lists
// remote providers, or this node offers the skill but hears no gossip (s
// says so, see gossipReporter), it folds in the providers that s's recent
// lookups found, asking s at most once a second per skill. Providers found
// this way carry no version (a task that names one is not sent to them)
// and no announced load. Default: no Searcher.
func WithSearcher(s Searcher, wait time.Duration) RouterOption {
	return func(c *routerConfig) {
		c.searcher = nil
		if s != nil {
			c.searcher = &dhtSearch{s: s, peeks: make(map[reputation.SkillID]peekEntry)}
		}
		if wait != 0 {
			c.searchWait = wait
		}
	}
}

// dhtSearch is the router's Searcher: s, with what its cross-checks found
// remembered per skill. It is safe for concurrent use.
type dhtSearch struct {
	s     Searcher
	mu    sync.RWMutex
	peeks map[reputation.SkillID]peekEntry
}

type peekEntry struct {
	at    time.Time
	found []grid.Provider
}

func (d *dhtSearch) SearchProviders(ctx context.Context, skill reputation.SkillID) []grid.Provider {
	return d.s.SearchProviders(ctx, skill)
}

// gossipOff reports whether s says this node hears no capability gossip.
func (d *dhtSearch) gossipOff() bool {
	g, ok := d.s.(gossipReporter)
	return ok && !g.CapabilityGossip()
}

// peek returns the providers of skill that s's lookups have found, asking
// s without waiting if the last answer is over peekEvery old.
func (d *dhtSearch) peek(skill reputation.SkillID, now time.Time) []grid.Provider {
	d.mu.RLock()
	e, ok := d.peeks[skill]
	d.mu.RUnlock()
	if ok && now.Sub(e.at) < peekEvery {
		return e.found
	}
	var found []grid.Provider
	if c, ok := d.s.(cachePeeker); ok {
		found = c.CachedProviders(skill)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), peekWait)
		found = d.s.SearchProviders(ctx, skill)
		cancel()
	}
	d.mu.Lock()
	if len(d.peeks) >= maxPeekCache {
		clear(d.peeks)
	}
	d.peeks[skill] = peekEntry{at: now, found: found}
	d.mu.Unlock()
	return found
}

// providersOrSearch returns provs, the Directory's providers of s, and
// those the Searcher adds (see WithSearcher). local says whether this node
// offers s.
func (r *Router) providersOrSearch(provs []grid.Provider, s reputation.SkillID, local bool) []grid.Provider {
	d, _ := r.search.(*dhtSearch)
	if d == nil {
		return provs
	}
	remote := false
	for i := range provs {
		if provs[i].Peer != r.self {
			remote = true
			break
		}
	}
	var found []grid.Provider
	switch {
	case !remote && !local:
		if r.warming() {
			return r.awaitProvider(d, provs, s)
		}
		ctx, cancel := context.WithTimeout(context.Background(), r.waitFor)
		found = d.SearchProviders(ctx, s)
		cancel()
	case remote || d.gossipOff():
		found = d.peek(s, time.Now())
	}
	return mergeProviders(provs, found)
}

// warmingDirectory is implemented by a Directory that says whether its
// table may still be filling (*grid.Node: just started).
type warmingDirectory interface {
	CapabilitiesWarming() bool
}

var _ warmingDirectory = (*grid.Node)(nil)

// warming reports whether the router's Directory says it is still filling.
func (r *Router) warming() bool {
	w, ok := r.dir.(warmingDirectory)
	return ok && w.CapabilitiesWarming()
}

// warmPoll is how often awaitProvider looks at the Directory again.
const warmPoll = 100 * time.Millisecond

// awaitProvider is providersOrSearch for a node whose Directory is still
// filling and lists no remote provider of s: it waits up to the search
// wait for the Searcher to find one or for the Directory to list one (the
// gossip of a node that just joined brings each provider within an
// announce interval), whichever comes first. A task for a skill nobody
// offers fails after the wait instead of at once, during warm-up only.
func (r *Router) awaitProvider(d *dhtSearch, provs []grid.Provider, s reputation.SkillID) []grid.Provider {
	deadline := time.Now().Add(r.waitFor)
	for {
		step := min(warmPoll, time.Until(deadline))
		if step <= 0 {
			return provs
		}
		ctx, cancel := context.WithTimeout(context.Background(), step)
		found := d.SearchProviders(ctx, s)
		if len(found) > 0 {
			cancel()
			return mergeProviders(provs, found)
		}
		<-ctx.Done() // a cached miss returns at once: pace the loop
		cancel()
		if now := r.providers(s); slices.ContainsFunc(now, func(p grid.Provider) bool { return p.Peer != r.self }) {
			return now
		}
	}
}

// mergeProviders returns provs and the providers of found that provs does
// not list. provs is not changed, and no copy is made when found adds
// nothing (the common case: the DHT names the peers the gossip lists).
// found is short (a lookup keeps at most 20), so a scan beats a map.
func mergeProviders(provs, found []grid.Provider) []grid.Provider {
	var out []grid.Provider
	for _, p := range found {
		if slices.ContainsFunc(provs, func(q grid.Provider) bool { return q.Peer == p.Peer }) {
			continue
		}
		if out == nil {
			out = append(make([]grid.Provider, 0, len(provs)+len(found)), provs...)
		}
		out = append(out, p)
	}
	if out == nil {
		return provs
	}
	return out
}
