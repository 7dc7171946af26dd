package skill

import (
	"context"
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

// DefaultSearchWait is how long Route waits for a Searcher by default.
const DefaultSearchWait = 2 * time.Second

// WithSearcher makes the router ask s for providers when the Directory
// lists none and this node does not offer the skill either (just started,
// or cut off from the gossip), waiting at most wait (DefaultSearchWait if
// wait is 0) for the answer. A lookup still running when the wait ends
// goes on, and its result serves the next Route. Providers found this way
// carry no version (a task that names one is not sent to them) and no
// announced load. Default: no Searcher.
func WithSearcher(s Searcher, wait time.Duration) RouterOption {
	return func(c *routerConfig) {
		c.searcher = s
		if wait != 0 {
			c.searchWait = wait
		}
	}
}

// providersOrSearch returns the Directory's providers of s, or, if it has
// none and this node does not offer s (local false), the Searcher's.
func (r *Router) providersOrSearch(s reputation.SkillID, local bool) []grid.Provider {
	provs := r.providers(s)
	if len(provs) > 0 || local || r.search == nil {
		return provs
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.waitFor)
	defer cancel()
	return r.search.SearchProviders(ctx, s)
}
