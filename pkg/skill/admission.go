package skill

import (
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// PeerClass is how much this node lets a peer that sends it tasks use, as
// an AdmissionPolicy decides it.
type PeerClass uint8

// Peer classes, from least to most allowed.
const (
	// ClassRefused is a peer whose trust is below the accept threshold:
	// its tasks are rejected with grid.RejectTrustTooLow.
	ClassRefused PeerClass = iota
	// ClassStranger is a peer that has not earned trust here yet: no
	// evidence of its work, or trust below the known level. It gets the
	// stranger limits.
	ClassStranger
	// ClassKnown is a peer that has earned trust (or, with
	// AdmissionConfig.NoStrangers, any admitted peer). It gets the known
	// limits.
	ClassKnown
	// ClassTrusted is a peer the operator vouches for
	// (AdmissionConfig.Trusted): always admitted, with the known limits.
	ClassTrusted
)

var classNames = [...]string{"refused", "stranger", "known", "trusted"}

// String returns the class's name as the API spells it, e.g. "stranger".
func (c PeerClass) String() string {
	if int(c) < len(classNames) {
		return classNames[c]
	}
	return fmt.Sprintf("class(%d)", c)
}

// AdmissionTrust is what an AdmissionPolicy reads about peers.
// *reputation.Graph implements it.
type AdmissionTrust interface {
	Trust(p peer.ID) float64
	HasEvidence(p peer.ID) bool
}

// Defaults of AdmissionConfig, the safe setting for the public network: a
// stranger may hold 2 tasks and 4 MiB here, sending at most 5 tasks/s in
// bursts of 10, until its trust reaches 0.6.
const (
	DefaultKnownTrust       = 0.6
	DefaultStrangerRate     = rate.Limit(5)
	DefaultStrangerBurst    = 10
	DefaultStrangerMaxTasks = 2
	DefaultStrangerMaxBytes = 4 << 20
)

// DefaultStrangerLimits are the limits of a stranger by default.
var DefaultStrangerLimits = grid.PeerLimits{
	Rate: DefaultStrangerRate, Burst: DefaultStrangerBurst,
	MaxTasks: DefaultStrangerMaxTasks, MaxBytes: DefaultStrangerMaxBytes,
}

// DefaultKnownLimits are the limits of a known peer by default: the
// orchestrator's rate and in-flight defaults and 256 MiB.
var DefaultKnownLimits = grid.PeerLimits{
	Rate: grid.DefaultPeerRate, Burst: grid.DefaultPeerBurst,
	MaxTasks: grid.DefaultMaxInFlightPerPeer, MaxBytes: 256 << 20,
}

// AdmissionConfig configures an AdmissionPolicy. The zero value is not
// valid; start from DefaultAdmissionConfig.
type AdmissionConfig struct {
	// AcceptThreshold is the trust in [0, 1] a peer needs for its tasks to
	// be admitted at all; below it, ClassRefused.
	AcceptThreshold float64
	// KnownTrust is the trust in [AcceptThreshold, 1] at which a peer with
	// evidence is ClassKnown. It should be above the graph's neutral trust,
	// so that a peer must earn it.
	KnownTrust float64
	// Stranger and Known are the limits of each class. A refused peer is
	// held to the stranger limits too, so that its rejected requests cost
	// little.
	Stranger, Known grid.PeerLimits
	// Trusted are the peers the operator vouches for (pre-trusted, on the
	// allow list): ClassTrusted whatever their trust.
	Trusted []peer.ID
	// NoStrangers makes every admitted peer ClassKnown: for a private
	// network, where holding the network's key is membership.
	NoStrangers bool
	// DecayHalfLife is the trust graph's half-life, for the refusal
	// message (0: left out).
	DecayHalfLife time.Duration
}

// DefaultAdmissionConfig returns the defaults: DefaultAcceptThreshold,
// DefaultKnownTrust, DefaultStrangerLimits and DefaultKnownLimits.
func DefaultAdmissionConfig() AdmissionConfig {
	return AdmissionConfig{
		AcceptThreshold: DefaultAcceptThreshold, KnownTrust: DefaultKnownTrust,
		Stranger: DefaultStrangerLimits, Known: DefaultKnownLimits,
	}
}

func (c *AdmissionConfig) validate() error {
	var errs []error
	if !(c.AcceptThreshold >= 0 && c.AcceptThreshold <= 1) {
		errs = append(errs, fmt.Errorf("accept threshold is %v; it must be in [0, 1]", c.AcceptThreshold))
	}
	if !(c.KnownTrust >= c.AcceptThreshold && c.KnownTrust <= 1) {
		errs = append(errs, fmt.Errorf("known trust is %v; it must be in [accept threshold %v, 1]", c.KnownTrust, c.AcceptThreshold))
	}
	errs = append(errs, validLimits("stranger", c.Stranger), validLimits("known", c.Known))
	return errors.Join(errs...)
}

func validLimits(class string, l grid.PeerLimits) error {
	var errs []error
	if l.Rate != rate.Inf && (!(l.Rate > 0) || math.IsInf(float64(l.Rate), 0) || l.Burst < 1) {
		errs = append(errs, fmt.Errorf("%s rate %v/s burst %d: want a positive rate and burst, or rate.Inf", class, float64(l.Rate), l.Burst))
	}
	if l.MaxTasks < 1 {
		errs = append(errs, fmt.Errorf("%s max tasks is %d; it must be at least 1", class, l.MaxTasks))
	}
	if l.MaxBytes < 1 {
		errs = append(errs, fmt.Errorf("%s max bytes is %d; it must be at least 1", class, l.MaxBytes))
	}
	return errors.Join(errs...)
}

// AdmissionPolicy sorts the peers that send this node tasks into classes
// from their trust, and gives each class its limits. It implements
// grid.PeerPolicy, whose limits the orchestrator enforces before a task
// reaches the coordinator; the coordinator's HandleTask calls Check, which
// refuses peers below the accept threshold. The classes, in order:
//
//   - ClassTrusted: listed in AdmissionConfig.Trusted. Known limits, never
//     refused.
//   - ClassRefused: trust below AcceptThreshold.
//   - ClassKnown: the graph has evidence about the peer and its trust is
//     at least KnownTrust, or NoStrangers is set. Known limits.
//   - ClassStranger: everyone else, such as a peer never seen before
//     (neutral trust, no evidence). Stranger limits.
//
// A peer earns trust by running this node's tasks well, or through the
// reputation others give it; a peer that only sends tasks stays a
// stranger unless the operator vouches for it. Trust changes are seen at
// once: the policy keeps no state of its own. It is safe for concurrent
// use and never blocks.
type AdmissionPolicy struct {
	trust   AdmissionTrust
	cfg     AdmissionConfig
	trusted map[peer.ID]struct{}
}

var _ grid.PeerPolicy = (*AdmissionPolicy)(nil)

// NewAdmissionPolicy returns the policy cfg describes over trust. It
// checks cfg, reporting every problem at once.
func NewAdmissionPolicy(trust AdmissionTrust, cfg AdmissionConfig) (*AdmissionPolicy, error) {
	errs := []error{cfg.validate()}
	if trust == nil {
		errs = append(errs, errors.New("trust source is nil"))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("new admission policy: %w", err)
	}
	p := &AdmissionPolicy{trust: trust, cfg: cfg, trusted: make(map[peer.ID]struct{}, len(cfg.Trusted))}
	for _, id := range cfg.Trusted {
		p.trusted[id] = struct{}{}
	}
	p.cfg.Trusted = nil // the set is the copy
	return p, nil
}

// Classify returns p's class and its trust now.
func (a *AdmissionPolicy) Classify(p peer.ID) (PeerClass, float64) {
	tr := a.trust.Trust(p)
	if _, ok := a.trusted[p]; ok {
		return ClassTrusted, tr
	}
	switch {
	case tr < a.cfg.AcceptThreshold:
		return ClassRefused, tr
	case a.cfg.NoStrangers || (tr >= a.cfg.KnownTrust && a.trust.HasEvidence(p)):
		return ClassKnown, tr
	}
	return ClassStranger, tr
}

// LimitsOf returns the limits of a class: the known limits for known and
// trusted peers, the stranger limits for the others.
func (a *AdmissionPolicy) LimitsOf(c PeerClass) grid.PeerLimits {
	if c >= ClassKnown {
		return a.cfg.Known
	}
	return a.cfg.Stranger
}

// PeerLimits implements grid.PeerPolicy.
func (a *AdmissionPolicy) PeerLimits(p peer.ID) grid.PeerLimits {
	c, _ := a.Classify(p)
	return a.LimitsOf(c)
}

// PeerAdmission returns p's class and limits, for `cortexd peers`.
func (a *AdmissionPolicy) PeerAdmission(p peer.ID) (PeerClass, grid.PeerLimits) {
	c, _ := a.Classify(p)
	return c, a.LimitsOf(c)
}

// Check returns nil if p's tasks may be admitted, or a *grid.RejectError
// with grid.RejectTrustTooLow that says how p can get back in.
func (a *AdmissionPolicy) Check(p peer.ID) error {
	c, tr := a.Classify(p)
	if c != ClassRefused {
		return nil
	}
	fade := "as its failures fade"
	if a.cfg.DecayHalfLife > 0 {
		fade = fmt.Sprintf("as its failures fade (half-life %s)", a.cfg.DecayHalfLife)
	}
	// The orchestrator cuts a reject message at 256 bytes: keep it short.
	return reject(grid.RejectTrustTooLow, 0,
		"requester trust %.2f is below this node's accept threshold %.2f: it rises %s or as the peer runs this node's tasks well; or list it in trust.pre_trusted here",
		tr, a.cfg.AcceptThreshold, fade)
}

// AcceptThreshold returns the trust a peer needs to be admitted.
func (a *AdmissionPolicy) AcceptThreshold() float64 { return a.cfg.AcceptThreshold }
