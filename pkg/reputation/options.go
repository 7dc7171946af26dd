package reputation

import (
	"errors"
	"fmt"
	"log/slog"
	"math"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// ErrInvalidOption is wrapped by every problem NewGraph finds in its options.
var ErrInvalidOption = errors.New("invalid trust graph option")

// Option configures a Graph.
type Option func(*config)

type config struct {
	preTrusted []peer.ID
	neutral    float64
	damping    float64
	epsilon    float64
	maxIter    int
	interval   time.Duration
	halfLife   time.Duration
	logger     *slog.Logger
}

func defaults() config {
	return config{
		neutral:  0.5,
		damping:  0.1,
		epsilon:  0.001,
		maxIter:  20,
		interval: 2 * time.Second,
		halfLife: time.Hour,
		logger:   slog.Default(),
	}
}

// WithPreTrusted adds peers to the pre-trusted set, over which the
// EigenTrust prior p is uniform. This node is always pre-trusted.
func WithPreTrusted(peers ...peer.ID) Option {
	return func(c *config) { c.preTrusted = append(c.preTrusted, peers...) }
}

// WithNeutralTrust sets the trust of a peer about which nothing is known, in
// [0, 1]. The default is 0.5.
func WithNeutralTrust(v float64) Option { return func(c *config) { c.neutral = v } }

// WithDamping sets a, the weight of the pre-trusted distribution in each
// EigenTrust iteration, in (0, 1]. The default is 0.1.
func WithDamping(a float64) Option { return func(c *config) { c.damping = a } }

// WithEpsilon sets the convergence threshold: iteration stops once the L1
// distance between successive vectors is below it. The default is 0.001.
func WithEpsilon(e float64) Option { return func(c *config) { c.epsilon = e } }

// WithMaxIterations caps the EigenTrust iterations per recomputation. The
// default is 20.
func WithMaxIterations(n int) Option { return func(c *config) { c.maxIter = n } }

// WithRecomputeInterval sets how often the goroutine started by Start
// recomputes global trust. The default is 2 s.
func WithRecomputeInterval(d time.Duration) Option { return func(c *config) { c.interval = d } }

// WithDecayHalfLife sets the time over which evidence loses half its weight.
// The default is one hour.
func WithDecayHalfLife(d time.Duration) Option { return func(c *config) { c.halfLife = d } }

// WithLogger sets the logger. The default is slog.Default().
func WithLogger(l *slog.Logger) Option { return func(c *config) { c.logger = l } }

// validate returns every problem with c, joined.
func (c *config) validate(self peer.ID) error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf(format+": %w", append(args, ErrInvalidOption)...))
	}
	if self == "" {
		bad("this node's peer ID is empty")
	}
	for i, p := range c.preTrusted {
		if p == "" {
			bad("pre-trusted peer %d is an empty peer ID", i)
		}
	}
	if math.IsNaN(c.neutral) || c.neutral < 0 || c.neutral > 1 {
		bad("neutral trust %v is outside [0, 1]", c.neutral)
	}
	if math.IsNaN(c.damping) || c.damping <= 0 || c.damping > 1 {
		bad("damping %v is outside (0, 1]", c.damping)
	}
	if math.IsNaN(c.epsilon) || c.epsilon <= 0 {
		bad("epsilon %v must be positive", c.epsilon)
	}
	if c.maxIter < 1 {
		bad("maximum iterations %d must be at least 1", c.maxIter)
	}
	if c.interval <= 0 {
		bad("recompute interval %v must be positive", c.interval)
	}
	if c.halfLife <= 0 {
		bad("decay half-life %v must be positive", c.halfLife)
	}
	if c.logger == nil {
		bad("logger is nil")
	}
	return errors.Join(errs...)
}
