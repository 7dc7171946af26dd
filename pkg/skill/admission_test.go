package skill

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// adTask is a request from a peer for skill with JSON input in.
func adTask(skill, in string) *grid.RemoteTask {
	return &grid.RemoteTask{ID: grid.NewTaskID(), Skill: skill, Input: []byte(in), InputKind: grid.InputJSON, Deadline: time.Now().Add(time.Minute)}
}

// adGraph returns a trust graph for self with the default neutral trust.
func adGraph(tb testing.TB, self peer.ID) *reputation.Graph {
	tb.Helper()
	g, err := reputation.NewGraph(self, reputation.WithLogger(coQuiet))
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

// adRecordUntil records outcome o for p until p's trust crosses want (up
// for a success, down otherwise).
func adRecordUntil(tb testing.TB, g *reputation.Graph, p peer.ID, o reputation.Outcome, want float64) {
	tb.Helper()
	for range 1000 {
		tr := g.Trust(p)
		if (o == reputation.OutcomeSuccess && tr >= want) || (o != reputation.OutcomeSuccess && tr < want) {
			return
		}
		g.Record(p, "echo", o)
	}
	tb.Fatalf("trust of %s stuck at %.3f, want past %.3f", p, g.Trust(p), want)
}

func TestAdmissionPolicyClassifiesPeersByTrust(t *testing.T) {
	ids := rtPeers(t, 6)
	self, fresh, earned, failing, vouched, member := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5]
	g := adGraph(t, self)
	adRecordUntil(t, g, earned, reputation.OutcomeSuccess, DefaultKnownTrust)
	adRecordUntil(t, g, failing, reputation.OutcomeFailure, DefaultAcceptThreshold)
	adRecordUntil(t, g, vouched, reputation.OutcomeFailure, DefaultAcceptThreshold)

	cfg := DefaultAdmissionConfig()
	cfg.Trusted = []peer.ID{vouched}
	pol, err := NewAdmissionPolicy(g, cfg)
	if err != nil {
		t.Fatal(err)
	}
	open := cfg
	open.NoStrangers = true
	private, err := NewAdmissionPolicy(g, open)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		pol    *AdmissionPolicy
		p      peer.ID
		class  PeerClass
		limits grid.PeerLimits
	}{
		{"a peer never seen before is a stranger with the stranger limits", pol, fresh, ClassStranger, DefaultStrangerLimits},
		{"a peer whose work earned trust is known with the full limits", pol, earned, ClassKnown, DefaultKnownLimits},
		{"a peer below the accept threshold is refused and held to the stranger limits", pol, failing, ClassRefused, DefaultStrangerLimits},
		{"a peer the operator vouches for is trusted whatever its trust", pol, vouched, ClassTrusted, DefaultKnownLimits},
		{"on a private network a member never seen before is known", private, member, ClassKnown, DefaultKnownLimits},
		{"on a private network a member below the threshold is still refused", private, failing, ClassRefused, DefaultStrangerLimits},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, lim := tc.pol.PeerAdmission(tc.p)
			if c != tc.class || lim != tc.limits {
				t.Fatalf("PeerAdmission = %v %+v, want %v %+v (trust %.3f)", c, lim, tc.class, tc.limits, g.Trust(tc.p))
			}
			if got := tc.pol.PeerLimits(tc.p); got != tc.limits {
				t.Errorf("PeerLimits = %+v, want %+v", got, tc.limits)
			}
			err := tc.pol.Check(tc.p)
			var rej *grid.RejectError
			switch {
			case tc.class == ClassRefused && (!errors.As(err, &rej) || rej.Reason != grid.RejectTrustTooLow):
				t.Errorf("Check = %v, want RejectTrustTooLow", err)
			case tc.class != ClassRefused && err != nil:
				t.Errorf("Check = %v, want nil", err)
			}
		})
	}
}

func TestAdmissionPolicyGivesAStrangerASmallBudgetAndAKnownPeerTheFullOne(t *testing.T) {
	ids := rtPeers(t, 3)
	g := adGraph(t, ids[0])
	stranger, known := ids[1], ids[2]
	adRecordUntil(t, g, known, reputation.OutcomeSuccess, DefaultKnownTrust)
	pol, err := NewAdmissionPolicy(g, DefaultAdmissionConfig())
	if err != nil {
		t.Fatal(err)
	}
	// The same burst of requests, through a token bucket of each peer's
	// rate as the orchestrator keeps one: the stranger runs out, the known
	// peer does not.
	const burst = 50
	allowed := func(p peer.ID) int {
		l := pol.PeerLimits(p)
		lim := rate.NewLimiter(l.Rate, l.Burst)
		n := 0
		for range burst {
			if lim.Allow() {
				n++
			}
		}
		return n
	}
	if n := allowed(stranger); n > DefaultStrangerBurst+1 {
		t.Errorf("a stranger got %d of %d requests through, want at most its burst %d", n, burst, DefaultStrangerBurst)
	}
	if n := allowed(known); n != burst {
		t.Errorf("a known peer got %d of %d requests through, want all", n, burst)
	}
	sl, kl := pol.PeerLimits(stranger), pol.PeerLimits(known)
	if sl.MaxTasks != 2 || sl.MaxBytes != 4<<20 {
		t.Errorf("stranger limits %+v, want 2 tasks and 4 MiB", sl)
	}
	if kl.MaxTasks <= sl.MaxTasks || kl.MaxBytes <= sl.MaxBytes {
		t.Errorf("known limits %+v are not above the stranger's %+v", kl, sl)
	}
	// Once the stranger's work earns trust, its limits grow.
	adRecordUntil(t, g, stranger, reputation.OutcomeSuccess, DefaultKnownTrust)
	if c, _ := pol.PeerAdmission(stranger); c != ClassKnown {
		t.Errorf("after earning trust the stranger is %v, want known", c)
	}
}

func TestAdmissionPolicyRefusesABadConfig(t *testing.T) {
	g := adGraph(t, rtPeers(t, 1)[0])
	tests := []struct {
		name string
		mod  func(*AdmissionConfig)
		want string
	}{
		{"a known trust below the accept threshold", func(c *AdmissionConfig) { c.KnownTrust = 0.05 }, "known trust"},
		{"a stranger rate without a burst", func(c *AdmissionConfig) { c.Stranger.Burst = 0 }, "stranger rate"},
		{"a known class without tasks", func(c *AdmissionConfig) { c.Known.MaxTasks = 0 }, "known max tasks"},
		{"a stranger without bytes", func(c *AdmissionConfig) { c.Stranger.MaxBytes = 0 }, "stranger max bytes"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			cfg := DefaultAdmissionConfig()
			tc.mod(&cfg)
			if _, err := NewAdmissionPolicy(g, cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewAdmissionPolicy = %v, want an error about %s", err, tc.want)
			}
		})
	}
}

func TestHandleTaskAppliesTheAdmissionPolicy(t *testing.T) {
	ids := rtPeers(t, 2)
	failing, vouched := ids[0], ids[1]
	e := newCoEnv(t, coEnvConfig{})
	adRecordUntil(t, e.trust, failing, reputation.OutcomeFailure, DefaultAcceptThreshold)
	adRecordUntil(t, e.trust, vouched, reputation.OutcomeFailure, DefaultAcceptThreshold)
	cfg := DefaultAdmissionConfig()
	cfg.Trusted = []peer.ID{vouched}
	cfg.DecayHalfLife = time.Hour
	pol, err := NewAdmissionPolicy(e.trust, cfg)
	if err != nil {
		t.Fatal(err)
	}
	c, err := NewCoordinator(Deps{Self: e.self, Registry: e.reg, Executor: coExecutor(t, e.reg, e.self), Trust: e.trust},
		WithLogger(coQuiet), WithAdmission(pol))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })

	var rej *grid.RejectError
	err = c.HandleTask(failing, adTask("echo", `"x"`), grid.ReplyFunc(func(*grid.RemoteResult) {}))
	if !errors.As(err, &rej) || rej.Reason != grid.RejectTrustTooLow {
		t.Fatalf("HandleTask from a peer below the threshold = %v, want RejectTrustTooLow", err)
	}
	for _, want := range []string{"below this node's accept threshold 0.10", "half-life 1h0m0s", "trust.pre_trusted"} {
		if !strings.Contains(rej.Message, want) {
			t.Errorf("refusal %q does not say %q", rej.Message, want)
		}
	}
	if len(rej.Message) > 256 {
		t.Errorf("refusal is %d bytes; the orchestrator cuts it at 256", len(rej.Message))
	}
	rs := newCoReplies()
	if err := c.HandleTask(vouched, adTask("echo", `"x"`), grid.ReplyFunc(rs.reply)); err != nil {
		t.Fatalf("HandleTask from a vouched-for peer below the threshold = %v, want admitted", err)
	}
	if res := <-rs.ch; !res.Success {
		t.Fatalf("vouched-for peer's result %+v, want success", res)
	}
}

func TestNewCoordinatorRefusesBothAThresholdAndAPolicy(t *testing.T) {
	e := newCoEnv(t, coEnvConfig{})
	pol, err := NewAdmissionPolicy(e.trust, DefaultAdmissionConfig())
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewCoordinator(Deps{Self: e.self, Registry: e.reg, Executor: coExecutor(t, e.reg, e.self), Trust: e.trust},
		WithAcceptThreshold(0.2), WithAdmission(pol))
	if err == nil || !strings.Contains(err.Error(), "admission policy") {
		t.Fatalf("NewCoordinator = %v, want an error about setting both", err)
	}
}
