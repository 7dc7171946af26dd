package grid

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/libp2p/go-libp2p/core/crypto"
	crypto_pb "github.com/libp2p/go-libp2p/core/crypto/pb"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
)

// Test timings: announcements every 100 ms, valid for 1 s.
const (
	nodeTestInterval = 100 * time.Millisecond
	nodeTestTTL      = time.Second
)

func nodeTestLogger() *slog.Logger {
	if os.Getenv("CORTEX_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}

// newNodeT returns an unstarted node on loopback with short timings,
// closed at cleanup.
func newNodeT(tb testing.TB, opts ...NodeOption) *Node {
	tb.Helper()
	key, err := GenerateIdentity()
	if err != nil {
		tb.Fatal(err)
	}
	base := []NodeOption{
		WithListenAddrs("/ip4/127.0.0.1/tcp/0"),
		WithAnnounceInterval(nodeTestInterval),
		WithCapabilityTTL(nodeTestTTL),
		WithNodeLogger(nodeTestLogger()),
		withDiscoveryIntervals(100*time.Millisecond, 500*time.Millisecond),
	}
	n, err := NewNode(key, append(base, opts...)...)
	if err != nil {
		tb.Fatalf("NewNode: %v", err)
	}
	tb.Cleanup(func() {
		if err := n.Close(); err != nil {
			tb.Errorf("close node: %v", err)
		}
	})
	return n
}

// startNodeT returns a started node from newNodeT that speaks the task
// protocol, as a node with an orchestrator does: the handler resets every
// stream. Other nodes list it as a provider once identify shows that.
func startNodeT(tb testing.TB, opts ...NodeOption) *Node {
	tb.Helper()
	n := startBareNodeT(tb, opts...)
	speakTask(n)
	return n
}

// speakTask makes the started node n speak the task protocol, as an
// orchestrator would; the handler resets every stream.
func speakTask(n *Node) {
	n.Host().SetStreamHandler(wire.ProtocolTask, func(s network.Stream) { _ = s.Reset() })
}

// startBareNodeT returns a started node from newNodeT that speaks no task
// protocol.
func startBareNodeT(tb testing.TB, opts ...NodeOption) *Node {
	tb.Helper()
	n := newNodeT(tb, opts...)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		tb.Fatalf("Start: %v", err)
	}
	return n
}

func nodeAddrInfo(n *Node) peer.AddrInfo {
	return peer.AddrInfo{ID: n.ID(), Addrs: n.Host().Addrs()}
}

// pollUntil polls cond every 20 ms and fails the test if it is not true
// within d.
func pollUntil(tb testing.TB, d time.Duration, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("not within %s: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func offers(n *Node, skill reputation.SkillID, p peer.ID) bool {
	return slices.ContainsFunc(n.Providers(skill), func(pr Provider) bool { return pr.Peer == p })
}

func TestNodeTwoNodesSeeEachOthersCapabilities(t *testing.T) {
	a := startNodeT(t)
	a.SetCapabilities([]SkillCapability{{"hash.sha256", "1.0.0"}})
	a.SetLoadFunc(func() Load { return Load{QueueDepth: [NumLevels]int{0, 3, 0, 0}, InFlight: 2, Capacity: 4} })
	b := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(a)))
	b.SetCapabilities([]SkillCapability{{"text.upper", "2.1.0"}})

	pollUntil(t, 10*time.Second, "each node lists the other as a provider", func() bool {
		return offers(a, "text.upper", b.ID()) && offers(b, "hash.sha256", a.ID())
	})
	got := b.Providers("hash.sha256")
	want := Load{QueueDepth: [NumLevels]int{0, 3, 0, 0}, InFlight: 2, Capacity: 4}
	if len(got) != 1 || got[0].Version != "1.0.0" || got[0].Load != want || !got[0].Connected {
		t.Fatalf("b's providers of hash.sha256: %+v; want a, version 1.0.0, load %+v, connected", got, want)
	}
	if got := a.Providers("hash.sha256"); len(got) != 0 {
		t.Errorf("a lists itself: %+v", got)
	}
	peers := a.Peers()
	i := slices.IndexFunc(peers, func(p PeerInfo) bool { return p.Peer == b.ID() })
	if i < 0 || !peers[i].Connected || len(peers[i].Addrs) == 0 || !slices.Equal(peers[i].Skills, []SkillCapability{{"text.upper", "2.1.0"}}) {
		t.Fatalf("a.Peers() = %+v; want b connected, with addresses and text.upper", peers)
	}
}

func TestNodeFiveNodesFindAUniqueSkillThroughABootstrapNode(t *testing.T) {
	boot := startNodeT(t)
	nodes := []*Node{boot}
	for range 4 {
		nodes = append(nodes, startNodeT(t, WithBootstrapPeers(nodeAddrInfo(boot))))
	}
	second, fifth := nodes[1], nodes[4]
	fifth.SetCapabilities([]SkillCapability{{"only.fifth", "1"}})

	pollUntil(t, 15*time.Second, "node 2 lists node 5 as the provider of only.fifth", func() bool {
		return offers(second, "only.fifth", fifth.ID())
	})
	// Rendezvous discovery through the DHT connects nodes that were only
	// told about the bootstrap node.
	pollUntil(t, 20*time.Second, "node 2 connects to node 5 directly", func() bool {
		return hostConnected(second.Host(), fifth.ID())
	})
	pollUntil(t, 10*time.Second, "node 2 sees node 5 as connected", func() bool {
		ps := second.Providers("only.fifth")
		return len(ps) == 1 && ps[0].Connected
	})
}

func TestNodeSkillSetWhileRunningBecomesVisible(t *testing.T) {
	a := startNodeT(t)
	b := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(a)))
	events := make(chan PeerEvent, 64)
	unsub := b.OnPeerEvent(func(ev PeerEvent) {
		if ev.Peer == a.ID() {
			events <- ev
		}
	})
	defer unsub()

	a.SetCapabilities([]SkillCapability{{"echo", "1"}})
	pollUntil(t, 10*time.Second, "b sees a's first skill", func() bool { return offers(b, "echo", a.ID()) })
	a.SetCapabilities([]SkillCapability{{"echo", "1"}, {"image.resize", "1"}})
	pollUntil(t, 10*time.Second, "b sees the skill a added while running", func() bool {
		return offers(b, "image.resize", a.ID())
	})

	var seen []PeerEventKind
	timeout := time.After(10 * time.Second)
	for !slices.Contains(seen, PeerCapabilitiesChanged) {
		select {
		case ev := <-events:
			seen = append(seen, ev.Kind)
			if ev.Kind == PeerCapabilitiesChanged && !slices.Contains(ev.Skills, SkillCapability{"image.resize", "1"}) {
				t.Fatalf("capabilities-changed event without the new skill: %+v", ev)
			}
		case <-timeout:
			t.Fatalf("events for a: %v; want a capabilities-changed event", seen)
		}
	}
}

func TestNodeThatStopsAnnouncingAgesOut(t *testing.T) {
	a := startNodeT(t)
	a.SetCapabilities([]SkillCapability{{"echo", "1"}})
	b := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(a)))
	left := make(chan time.Time, 1)
	defer b.OnPeerEvent(func(ev PeerEvent) {
		if ev.Peer == a.ID() && ev.Kind == PeerLeft {
			left <- ev.Time
		}
	})()
	pollUntil(t, 10*time.Second, "b sees a", func() bool { return offers(b, "echo", a.ID()) })

	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	ps := b.Providers("echo") // the last announcement a made
	if len(ps) != 1 {
		t.Fatalf("a vanished from b's table before its TTL ran out: %+v", ps)
	}
	lastSeen := ps[0].LastSeen
	pollUntil(t, 5*nodeTestTTL, "a ages out of b's table", func() bool { return len(b.Providers("echo")) == 0 })
	if age := time.Since(lastSeen); age < nodeTestTTL {
		t.Fatalf("a's entry left after %s, before its TTL of %s", age, nodeTestTTL)
	}
	select {
	case <-left:
	case <-time.After(5 * time.Second):
		t.Fatal("no left event for a")
	}
}

func TestNodeFindProvidersThroughTheDHT(t *testing.T) {
	boot := startNodeT(t)
	a := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(boot)))
	b := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(boot)))
	a.SetCapabilities([]SkillCapability{{"dht.only", "1"}})

	var found []peer.AddrInfo
	pollUntil(t, 20*time.Second, "b finds a in the DHT", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		var err error
		found, err = b.FindProviders(ctx, "dht.only", 5)
		return err == nil && slices.ContainsFunc(found, func(ai peer.AddrInfo) bool { return ai.ID == a.ID() })
	})
	if slices.ContainsFunc(found, func(ai peer.AddrInfo) bool { return ai.ID == b.ID() }) {
		t.Errorf("FindProviders returned the caller itself: %v", found)
	}
	if _, err := b.FindProviders(context.Background(), "Not Valid", 1); !errors.Is(err, ErrBadSkillID) {
		t.Errorf("FindProviders with a bad skill ID: %v, want ErrBadSkillID", err)
	}
}

func TestNewNodeReportsEveryBadOption(t *testing.T) {
	key, err := GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		key  crypto.PrivKey
		opts []NodeOption
		errs int
	}{
		{"the defaults are valid", key, nil, 0},
		{"a missing key is refused", nil, nil, 1},
		{"a listen address that is not a multiaddr is refused", key, []NodeOption{WithListenAddrs("tcp://0.0.0.0:4001")}, 1},
		{"the public IPFS DHT prefix is refused", key, []NodeOption{WithDHTPrefix("/ipfs")}, 1},
		{"an unknown DHT mode is refused", key, []NodeOption{WithDHTMode("relay")}, 1},
		{"a TTL no longer than the interval is refused", key, []NodeOption{WithAnnounceInterval(time.Second), WithCapabilityTTL(time.Second)}, 1},
		{"MaxConns below the high watermark is refused", key, []NodeOption{WithConnManager(10, 50, 0), WithResourceLimits(ResourceLimits{MaxConns: 20})}, 1},
		{"a bootstrap peer without an address is refused", key, []NodeOption{WithBootstrapPeers(peer.AddrInfo{ID: randomPeerID(t)})}, 1},
		{"every problem is reported at once", nil, []NodeOption{WithDHTMode("x"), WithRendezvous(""), WithConnManager(5, 1, 0), WithResourceLimits(ResourceLimits{MaxMemory: -1})}, 5},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			n, err := NewNode(c.key, c.opts...)
			if got := countJoinedErrs(err); got != c.errs {
				t.Fatalf("NewNode: %d problems (%v), want %d", got, err, c.errs)
			}
			if c.errs == 0 && n.Host() != nil {
				t.Fatal("NewNode built a host: it must do no I/O")
			}
		})
	}
}

// countJoinedErrs counts the leaf errors in err's tree of joined errors.
func countJoinedErrs(err error) int {
	if err == nil {
		return 0
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		n := 0
		for _, e := range j.Unwrap() {
			n += countJoinedErrs(e)
		}
		return n
	}
	if inner := errors.Unwrap(err); inner != nil {
		return countJoinedErrs(inner)
	}
	return 1
}

func TestNodeLifecycle(t *testing.T) {
	ctx := context.Background()
	t.Run("close before start is fine and start after close fails", func(t *testing.T) {
		n := newNodeT(t)
		if err := n.Close(); err != nil {
			t.Fatal(err)
		}
		if err := n.Start(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Start after Close: %v, want ErrClosed", err)
		}
	})
	t.Run("a second start fails and close is idempotent", func(t *testing.T) {
		n := startNodeT(t)
		if err := n.Start(ctx); !errors.Is(err, ErrNodeStarted) {
			t.Fatalf("second Start: %v, want ErrNodeStarted", err)
		}
		if len(n.Addrs()) == 0 {
			t.Fatal("no addresses")
		}
		if _, err := peer.AddrInfoFromP2pAddr(n.Addrs()[0]); err != nil {
			t.Fatalf("address %s lacks /p2p: %v", n.Addrs()[0], err)
		}
		for range 2 {
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		}
	})
	t.Run("a failed start tears down what it built", func(t *testing.T) {
		// A valid multiaddr that no transport can listen on.
		n := newNodeT(t, WithListenAddrs("/ip4/127.0.0.1/udp/0"))
		if err := n.Start(ctx); err == nil {
			t.Fatal("Start without a usable listen address succeeded")
		}
		if n.Host() != nil {
			t.Fatal("host still set after a failed Start")
		}
		if _, err := n.FindProviders(ctx, "echo", 1); !errors.Is(err, ErrNodeNotStarted) {
			t.Fatalf("FindProviders after a failed Start: %v, want ErrNodeNotStarted", err)
		}
	})
	t.Run("a start canceled while dialing bootstrap peers tears down", func(t *testing.T) {
		boot := startNodeT(t)
		n := newNodeT(t, WithBootstrapPeers(nodeAddrInfo(boot)))
		canceled, cancel := context.WithCancel(ctx)
		cancel()
		if err := n.Start(canceled); !errors.Is(err, context.Canceled) {
			t.Fatalf("Start with a canceled context: %v, want context.Canceled", err)
		}
		if n.Host() != nil {
			t.Fatal("host still set after a canceled Start")
		}
	})
	t.Run("close waits for a concurrent start", func(t *testing.T) {
		n := newNodeT(t)
		var wg sync.WaitGroup
		wg.Go(func() { _ = n.Start(ctx) }) // may lose the race to Close
		wg.Go(func() { _ = n.Close() })
		wg.Wait()
		if err := n.Start(ctx); !errors.Is(err, ErrClosed) {
			t.Fatalf("Start after Close: %v, want ErrClosed", err)
		}
	})
}

func TestNodeIdentityIsCreatedOnceAndKeptPrivate(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys", "identity.key")
	k1, created, err := LoadOrCreateIdentity(path)
	if err != nil || !created {
		t.Fatalf("first LoadOrCreateIdentity: created=%v err=%v", created, err)
	}
	if k1.Type() != crypto_pb.KeyType_Ed25519 {
		t.Fatalf("key type %v, want Ed25519", k1.Type())
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %04o, want 0600", st.Mode().Perm())
	}
	k2, created, err := LoadOrCreateIdentity(path)
	if err != nil || created || !k1.Equals(k2) {
		t.Fatalf("second LoadOrCreateIdentity: created=%v err=%v same=%v", created, err, k1.Equals(k2))
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateIdentity(path); !errors.Is(err, ErrInsecureIdentityFile) {
		t.Fatalf("world-readable key: %v, want ErrInsecureIdentityFile", err)
	}
	b, err := MarshalIdentity(k1)
	if err != nil {
		t.Fatal(err)
	}
	k3, err := UnmarshalIdentity(b)
	if err != nil || !k1.Equals(k3) {
		t.Fatalf("round trip: %v", err)
	}
	if _, err := UnmarshalIdentity([]byte("not a key")); err == nil {
		t.Fatal("UnmarshalIdentity accepted garbage")
	}
}

func TestNodeCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	func() {
		a := startNodeT(t)
		b := startNodeT(t, WithBootstrapPeers(nodeAddrInfo(a)), WithMDNS(true))
		b.SetCapabilities([]SkillCapability{{"echo", "1"}})
		pollUntil(t, 10*time.Second, "a sees b", func() bool { return offers(a, "echo", b.ID()) })
		failed := newNodeT(t, WithListenAddrs("/ip4/127.0.0.1/udp/0"))
		if err := failed.Start(context.Background()); err == nil {
			t.Fatal("Start without a usable listen address succeeded")
		}
		canceled, cancel := context.WithCancel(context.Background())
		cancel()
		halfway := newNodeT(t, WithBootstrapPeers(nodeAddrInfo(a)))
		if err := halfway.Start(canceled); err == nil {
			t.Fatal("Start with a canceled context succeeded")
		}
		for _, n := range []*Node{a, b, failed, halfway} {
			if err := n.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}()
	// Gossipsub's goroutines end shortly after Close, on their own.
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if after := runtime.NumGoroutine(); after > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("%d goroutines before the nodes, %d after Close:\n%s", before, after, buf[:runtime.Stack(buf, true)])
	}
}

func TestNodeDiscoversLANPeersByMDNS(t *testing.T) {
	// A namespace of its own keeps nodes of other tests out of the way.
	ns := WithRendezvous("test/mdns/" + NewTaskID().Short())
	a := startNodeT(t, WithMDNS(true), ns)
	b := startNodeT(t, WithMDNS(true), ns)
	b.SetCapabilities([]SkillCapability{{"echo", "1"}})
	pollUntil(t, 15*time.Second, "a finds b by mDNS and sees its skill", func() bool {
		return hostConnected(a.Host(), b.ID()) && offers(a, "echo", b.ID())
	})
}
