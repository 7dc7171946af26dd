package test

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// The scale harness: N whole nodes (grid.Node with DHT and gossip,
// orchestrator, coordinator, executor; loopback TCP, this process), three
// of them a bootstrap set that stays up, half of the rest offering echo
// and half submitting echo tasks, under a steady task load and churn: a
// share of the nodes, bootstrap set aside, is closed each minute and as
// many new ones (new identities, same roles) start. It measures what
// docs/scale.md models from. The CI size runs as a test; `make scale` runs
// the big one:
//
//	go test -run TestScale -timeout 60m ./test/ -args -scale.nodes 200 -scale.duration 5m
var (
	scaleNodes    = flag.Int("scale.nodes", 20, "nodes in TestScale's grid, the bootstrap set included")
	scaleDuration = flag.Duration("scale.duration", time.Minute, "how long TestScale's load and churn run")
	scaleChurn    = flag.Float64("scale.churn", 0.10, "share of the nodes replaced per minute in TestScale")
	scaleRate     = flag.Float64("scale.rate", 20, "echo tasks per second TestScale submits")
	scaleProfile  = flag.String("scale.profile", "", "directory TestScale writes goroutine and heap profiles of the idle grid to")
	scaleAnnounce = flag.Duration("scale.announce", grid.DefaultAnnounceInterval, "announce interval of TestScale's nodes (their TTL is 3 times it)")
	scaleConnLow  = flag.Int("scale.connlow", 24, "connections a TestScale node trims back to (bootstrap nodes: 4 times -scale.connhigh)")
	scaleConnHigh = flag.Int("scale.connhigh", 48, "connections above which a TestScale node trims (bootstrap nodes: 8 times it)")
	scaleStrict   = flag.Bool("scale.strict", false, "fail TestScale when a goal of issue 15 is missed (make scale sets it)")
)

// Roles in the scale grid.
const (
	roleBoot   = iota // bootstrap set: offers nothing, never churned
	roleWorker        // offers echo
	roleClient        // submits echo tasks, offers nothing
)

// scaleMember is one node of the scale grid and its role.
type scaleMember struct {
	h     *harnessNode
	role  int
	start time.Time
	gone  atomic.Bool // closed by churn (or at the end)
	unsub func()
}

// scaleGrid is the running grid and what it measured.
type scaleGrid struct {
	t    testing.TB
	boot []*harnessNode

	mu      sync.Mutex
	members []*scaleMember // every member ever started, in start order

	propMu  sync.Mutex
	probe   *scaleProbe // the capability change being timed
	propLat []time.Duration
	propMis int // receivers that did not see a probe within scaleProbeWait

	discLat  []time.Duration // new node: start to every live worker listed
	discMiss int
	dhtLat   []time.Duration
	dhtMiss  int

	tasks     atomic.Int64
	succeeded atomic.Int64
	failed    atomic.Int64
	orphaned  atomic.Int64 // the submitter itself was churned away
	lost      atomic.Int64 // the submitter is up and Wait never returned
	failures  sync.Map     // error text -> *atomic.Int64
}

// scaleProbe is one timed capability change: node from announces version v
// of skill scale.probe at sent, and each receiver up at sent reports once.
type scaleProbe struct {
	from peer.ID
	v    string
	sent time.Time
	seen map[peer.ID]bool
	want map[peer.ID]bool
}

const (
	scaleProbeSkill = reputation.SkillID("scale.probe")
	scaleProbeWait  = 5 * time.Second
	scaleTaskWait   = 30 * time.Second // a task's timeout; Wait gives it 15 s more
	scaleMeshFloor  = 0.99             // share of client-worker pairs the load may start with
)

func TestScale(t *testing.T) {
	n := *scaleNodes
	if n < 6 {
		t.Fatalf("-scale.nodes %d: use at least 6", n)
	}
	if testing.Short() {
		t.Skip("the scale harness runs for a minute; -short skips it")
	}
	raiseFileLimit(t)
	base := sampleProcess()
	g := &scaleGrid{t: t}
	t.Cleanup(g.closeAll)

	startAt := time.Now()
	for range 3 {
		g.boot = append(g.boot, g.add(roleBoot).h)
	}
	g.startMany(n - 3)
	t.Logf("%d nodes up in %s", n, time.Since(startAt).Round(time.Millisecond))
	g.awaitMesh(2 * time.Minute)
	t.Logf("load starts %s after the first start: %s", time.Since(startAt).Round(time.Millisecond), g.gossipStats())

	// Idle cost, before any load: the process's growth over its state
	// before the first node, per node.
	time.Sleep(5 * time.Second)
	idle := sampleProcess()
	writeProfiles(t, *scaleProfile)
	perNode := func(a, b uint64) float64 { return float64(a-min(a, b)) / float64(n) / (1 << 20) }
	t.Logf("idle: %.1f MB RSS, %.1f MB heap in use, %.0f goroutines per node",
		perNode(idle.rss, base.rss), perNode(idle.heap, base.heap), float64(idle.goroutines-base.goroutines)/float64(n))

	ctx, stop := context.WithTimeout(context.Background(), *scaleDuration)
	defer stop()
	var wg sync.WaitGroup
	wg.Go(func() { g.load(ctx, &wg) })
	wg.Go(func() { g.churn(ctx, &wg) })
	wg.Go(func() { g.probes(ctx) })
	wg.Go(func() { g.lookups(ctx) })
	wg.Wait()
	busy := sampleProcess()

	r := g.report(n, idle, base, busy)
	t.Log("\n" + r.String())
	t.Logf("after the load: %s", g.gossipStats())
	if r.lost != 0 {
		t.Errorf("%d tasks lost: their submitter is up and Wait never returned", r.lost)
	}
	if r.tasks == 0 {
		t.Fatal("no task was submitted")
	}
	// A small CI grid under the race detector holds the success floor of
	// 99%; the goals of issue 15 are checked with -scale.strict.
	if r.successRate() < 0.99 {
		t.Errorf("success %.2f%%; want at least 99%%", 100*r.successRate())
	}
	if *scaleStrict {
		if r.successRate() < 0.999 {
			t.Errorf("goal: success %.3f%%; want at least 99.9%%", 100*r.successRate())
		}
		if r.propP99 > time.Second {
			t.Errorf("goal: capability propagation p99 %s; want at most 1s", r.propP99)
		}
		if r.idleRSS > 15 {
			t.Errorf("goal: idle RSS %.1f MB per node; want at most 15", r.idleRSS)
		}
	}
}

// raiseFileLimit lifts RLIMIT_NOFILE to what the kernel allows: each
// loopback TCP connection costs two descriptors in this process, one per
// end, and a few hundred hosts meshing pass the usual 20k.
func raiseFileLimit(t testing.TB) {
	var lim syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		t.Logf("file limit: %v", err)
		return
	}
	want := lim.Max
	if b, err := os.ReadFile("/proc/sys/fs/nr_open"); err == nil {
		if v, err := strconv.ParseUint(strings.TrimSpace(string(b)), 10, 64); err == nil && v > want {
			want = v // root may raise the hard limit up to nr_open
		}
	}
	raised := syscall.Rlimit{Cur: want, Max: want}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised); err != nil {
		raised = syscall.Rlimit{Cur: lim.Max, Max: lim.Max}
		_ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &raised)
	}
	_ = syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	t.Logf("file descriptor limit: %d", lim.Cur)
}

// add starts one member with role; a start failure fails the test.
func (g *scaleGrid) add(role int) *scaleMember {
	m, err := g.startMember(role)
	if err != nil {
		g.t.Fatalf("start node: %v", err)
	}
	return m
}

// startMany starts k members, alternately workers and clients, a few at a
// time.
func (g *scaleGrid) startMany(k int) {
	var wg sync.WaitGroup
	sem := make(chan struct{}, 4)
	errs := make(chan error, k)
	for i := range k {
		role := roleWorker
		if i%2 == 1 {
			role = roleClient
		}
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if _, err := g.startMember(role); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		g.t.Fatalf("start node: %v", err)
	}
}

func (g *scaleGrid) startMember(role int) (*scaleMember, error) {
	cfg := harnessConfig{
		bootstrap: g.boot,
		workers:   4,
		// The daemon's announcement timing (-scale.announce), not the other
		// tests' short one.
		// Connections capped at 48 a node (trimmed to 24): in one process
		// each costs two descriptors, and the hard limit here is 20k.
		nodeOpts: []grid.NodeOption{
			grid.WithAnnounceInterval(*scaleAnnounce), grid.WithCapabilityTTL(0),
			grid.WithConnManager(*scaleConnLow, *scaleConnHigh, 30*time.Second),
		},
		orchOpts:  []grid.OrchestratorOption{grid.WithPeerPolicy(unlimitedRate)},
		startWait: time.Minute, // hundreds of nodes starting share two cores
	}
	if role == roleBoot {
		// Every node dials the bootstrap set first: like real bootstrap
		// nodes, they keep more connections.
		cfg.nodeOpts[2] = grid.WithConnManager(4**scaleConnHigh, 8**scaleConnHigh, 30*time.Second)
	}
	if role == roleWorker {
		cfg.builtins = []reputation.SkillID{"echo"}
	}
	h := &harnessNode{}
	if err := h.start(cfg); err != nil {
		_ = h.Close()
		return nil, err
	}
	m := &scaleMember{h: h, role: role, start: time.Now()}
	m.unsub = h.Node.OnPeerEvent(func(ev grid.PeerEvent) { g.observe(h.ID, ev) })
	g.mu.Lock()
	g.members = append(g.members, m)
	g.mu.Unlock()
	return m, nil
}

// live returns the members up now with one of roles (all if none).
func (g *scaleGrid) live(roles ...int) []*scaleMember {
	g.mu.Lock()
	defer g.mu.Unlock()
	var out []*scaleMember
	for _, m := range g.members {
		if !m.gone.Load() && (len(roles) == 0 || slices.Contains(roles, m.role)) {
			out = append(out, m)
		}
	}
	return out
}

// kill closes m as churn does: its peers see its connections drop.
func (g *scaleGrid) kill(m *scaleMember) {
	if m.gone.Swap(true) {
		return
	}
	m.unsub()
	if err := m.h.Close(); err != nil {
		g.t.Logf("close %s: %v", m.h.ID.ShortString(), err)
	}
}

func (g *scaleGrid) closeAll() {
	g.mu.Lock()
	ms := slices.Clone(g.members)
	g.mu.Unlock()
	var wg sync.WaitGroup
	for _, m := range ms {
		wg.Go(func() { g.kill(m) })
	}
	wg.Wait()
}

// awaitMesh waits until every client lists every worker as an echo
// provider, the state the load starts from, for at most d. Past d it goes
// on if at least scaleMeshFloor of the client-worker pairs list each
// other, saying how many do not and why, and fails otherwise. (At 200
// nodes on 2 cores a few pairs are always between an entry's expiry and
// the next announcement; under churn the tables are never all full.)
func (g *scaleGrid) awaitMesh(d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		missing, pairs := 0, 0
		workers := g.live(roleWorker)
		for _, c := range g.live(roleClient) {
			missing += len(workers) - g.listed(c.h, workers)
			pairs += len(workers)
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			refused, unknown, shape := g.whyUnlisted()
			msg := fmt.Sprintf("after %s, %d of %d client-worker pairs still do not see each other: %d with the worker's entry refused, %d with no entry; %s; %s",
				d, missing, pairs, refused, unknown, shape, g.gossipStats())
			if float64(pairs-missing) < scaleMeshFloor*float64(pairs) {
				g.t.Fatal(msg)
			}
			g.t.Log(msg + "; going on")
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// whyUnlisted counts, over the client-worker pairs where the client does
// not list the worker as an echo provider, those where the client holds
// the worker's entry (so it refused it: identify or a task stream said it
// does not speak the task protocol) and those where it holds none (the
// announcement has not arrived).
func (g *scaleGrid) whyUnlisted() (refused, unknown int, shape string) {
	workers := g.live(roleWorker)
	clients := g.live(roleClient)
	missedBy := make(map[peer.ID]int, len(workers))
	deaf, someMiss := 0, 0
	for _, c := range clients {
		ps := c.h.Node.Providers("echo")
		infos := c.h.Node.Peers()
		miss := 0
		for _, w := range workers {
			if slices.ContainsFunc(ps, func(p grid.Provider) bool { return p.Peer == w.h.ID }) {
				continue
			}
			miss++
			missedBy[w.h.ID]++
			if slices.ContainsFunc(infos, func(pi grid.PeerInfo) bool { return pi.Peer == w.h.ID && len(pi.Skills) > 0 }) {
				refused++
			} else {
				unknown++
			}
		}
		if miss > 0 {
			someMiss++
		}
		if miss*10 >= len(workers)*9 {
			deaf++
		}
	}
	mute := 0
	for _, k := range missedBy {
		if k*10 >= len(clients)*9 {
			mute++
		}
	}
	type nodePeers struct{ topic, conns int }
	var np []nodePeers
	for _, m := range g.live() {
		np = append(np, nodePeers{m.h.Node.GossipStats().TopicPeers, len(m.h.Node.Host().Network().Conns())})
	}
	slices.SortFunc(np, func(a, b nodePeers) int { return a.topic - b.topic })
	var low []string
	for _, x := range np[:min(5, len(np))] {
		low = append(low, fmt.Sprintf("%d/%d", x.topic, x.conns))
	}
	shape = fmt.Sprintf("%d of %d clients miss a worker, %d miss 90%% or more; %d of %d workers are missed by 90%% of clients or more; topic peers per node median %d, fewest (topic peers/connections) %s",
		someMiss, len(clients), deaf, mute, len(workers), np[len(np)/2].topic, strings.Join(low, " "))
	// A node out of the gossip (no topic peer): why can it not dial a
	// bootstrap node?
	for _, m := range g.live() {
		if m.h.Node.GossipStats().TopicPeers > 0 {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err := m.h.Node.Host().Connect(ctx, g.boot[0].addrInfo())
		cancel()
		var protos []string
		for _, c := range m.h.Node.Host().Network().Conns() {
			protos = append(protos, fmt.Sprintf("%s:%d streams", c.RemotePeer().ShortString(), len(c.GetStreams())))
		}
		shape += fmt.Sprintf("; %s (role %d, up %s) has no topic peer, connections [%s], %d peers with addresses; dialling a bootstrap node: %v",
			m.h.ID.ShortString(), m.role, time.Since(m.start).Round(time.Second), strings.Join(protos, " "), len(m.h.Node.Host().Peerstore().PeersWithAddrs()), err)
		break
	}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		shape += fmt.Sprintf("; %d descriptors open", len(fds))
	}
	return refused, unknown, shape
}

// gossipStats reports the connections per live member, mean and max, and
// what gossipsub did with the messages every member ever started received
// (grid.GossipStats, summed): where announcements were lost. (It reads no
// metrics registry: gathering 200 nodes' metrics on 2 busy cores took
// minutes.)
func (g *scaleGrid) gossipStats() string {
	ms := g.live()
	if len(ms) == 0 {
		return "no live node"
	}
	sum, most := 0, 0
	for _, m := range ms {
		c := len(m.h.Node.Host().Network().Conns())
		sum += c
		most = max(most, c)
	}
	g.mu.Lock()
	all := slices.Clone(g.members)
	g.mu.Unlock()
	var s grid.GossipStats
	for _, m := range all {
		x := m.h.Node.GossipStats()
		s.Validated += x.Validated
		s.Delivered += x.Delivered
		s.Duplicates += x.Duplicates
		s.Rejected += x.Rejected
		s.Ignored += x.Ignored
		s.Throttled += x.Throttled
		s.QueueFull += x.QueueFull
		s.BadSignature += x.BadSignature
		s.Undeliverable += x.Undeliverable
		s.DroppedRPCs += x.DroppedRPCs
		s.Grafts += x.Grafts
		s.Prunes += x.Prunes
	}
	return fmt.Sprintf("%.1f connections per node, at most %d; gossip over %d nodes: %d validated, %d delivered, %d duplicates, "+
		"%d rejected, %d ignored, %d throttled, %d queue full, %d bad signature, %d undeliverable, %d RPCs dropped, %d grafts, %d prunes",
		float64(sum)/float64(len(ms)), most, len(all), s.Validated, s.Delivered, s.Duplicates,
		s.Rejected, s.Ignored, s.Throttled, s.QueueFull, s.BadSignature, s.Undeliverable, s.DroppedRPCs, s.Grafts, s.Prunes)
}

// listed counts the workers that h's capability table lists for echo.
func (g *scaleGrid) listed(h *harnessNode, workers []*scaleMember) int {
	ps := h.Node.Providers("echo")
	k := 0
	for _, w := range workers {
		if slices.ContainsFunc(ps, func(p grid.Provider) bool { return p.Peer == w.h.ID }) {
			k++
		}
	}
	return k
}

// load submits echo tasks at -scale.rate from random live clients until
// ctx ends, each followed by its own waiter.
func (g *scaleGrid) load(ctx context.Context, wg *sync.WaitGroup) {
	tick := time.NewTicker(time.Duration(float64(time.Second) / *scaleRate))
	defer tick.Stop()
	input := bytes.Repeat([]byte{'x'}, 200)
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		cs := g.live(roleClient)
		if len(cs) == 0 {
			continue
		}
		c := cs[rand.IntN(len(cs))]
		wg.Go(func() { g.runTask(c, input) })
	}
}

func (g *scaleGrid) runTask(c *scaleMember, input []byte) {
	task := skill.NewSkillTask("echo", skill.RawInput(input), "").WithTimeout(scaleTaskWait)
	id, err := c.h.Coord.SubmitTask(context.Background(), task)
	if err != nil {
		if c.gone.Load() {
			return // churned away as it submitted: never accepted
		}
		g.tasks.Add(1)
		g.fail(err)
		return
	}
	g.tasks.Add(1)
	ctx, cancel := context.WithTimeout(context.Background(), scaleTaskWait+15*time.Second)
	defer cancel()
	res, err := c.h.Coord.Wait(ctx, id)
	switch {
	case c.gone.Load():
		g.orphaned.Add(1)
	case ctx.Err() != nil:
		g.lost.Add(1)
	case err != nil:
		g.fail(err)
	case !bytes.Equal(res.Output, input):
		g.fail(errors.New("wrong output"))
	default:
		g.succeeded.Add(1)
	}
}

func (g *scaleGrid) fail(err error) {
	g.failed.Add(1)
	v, _ := g.failures.LoadOrStore(err.Error(), new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

// churn replaces -scale.churn of the nodes per minute, one at a time,
// spread over the minute: a random non-bootstrap member is closed and a
// new one with its role starts; the new one's discovery of every live
// worker is timed.
func (g *scaleGrid) churn(ctx context.Context, wg *sync.WaitGroup) {
	perMin := *scaleChurn * float64(*scaleNodes-3)
	if perMin <= 0 {
		return
	}
	tick := time.NewTicker(time.Duration(float64(time.Minute) / perMin))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		ms := g.live(roleWorker, roleClient)
		if len(ms) == 0 {
			continue
		}
		old := ms[rand.IntN(len(ms))]
		g.kill(old)
		m, err := g.startMember(old.role)
		if err != nil {
			g.t.Errorf("churn: start node: %v", err)
			continue
		}
		wg.Go(func() { g.timeDiscovery(m) })
	}
}

// timeDiscovery records how long m takes to list every worker that was up
// when it started and still is.
func (g *scaleGrid) timeDiscovery(m *scaleMember) {
	g.mu.Lock()
	var want []*scaleMember
	for _, w := range g.members {
		if w.role == roleWorker && w != m && !w.gone.Load() {
			want = append(want, w)
		}
	}
	g.mu.Unlock()
	limit := time.Now().Add(60 * time.Second)
	for time.Now().Before(limit) && !m.gone.Load() {
		up := slices.DeleteFunc(slices.Clone(want), func(w *scaleMember) bool { return w.gone.Load() })
		if g.listed(m.h, up) == len(up) {
			g.propMu.Lock()
			g.discLat = append(g.discLat, time.Since(m.start))
			g.propMu.Unlock()
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !m.gone.Load() {
		g.propMu.Lock()
		g.discMiss++
		g.propMu.Unlock()
	}
}

// probes times capability propagation: a random live member announces a
// new version of skill scale.probe (SetCapabilities publishes at once),
// every member up then reports when its table has it, and after
// scaleProbeWait the ones that did not are counted; then the next.
func (g *scaleGrid) probes(ctx context.Context) {
	for v := 1; ; v++ {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		ms := g.live()
		from := ms[rand.IntN(len(ms))]
		p := &scaleProbe{from: from.h.ID, v: strconv.Itoa(v), seen: map[peer.ID]bool{}, want: map[peer.ID]bool{}}
		for _, m := range ms {
			if m != from {
				p.want[m.h.ID] = true
			}
		}
		caps := append(capabilitiesOf(from.h.Reg), grid.SkillCapability{ID: scaleProbeSkill, Version: p.v})
		g.propMu.Lock()
		g.probe = p
		p.sent = time.Now()
		g.propMu.Unlock()
		from.h.Node.SetCapabilities(caps)
		select {
		case <-ctx.Done():
		case <-time.After(scaleProbeWait):
		}
		g.closeProbe()
	}
}

// observe is every member's peer-event callback.
func (g *scaleGrid) observe(self peer.ID, ev grid.PeerEvent) {
	if ev.Kind != grid.PeerJoined && ev.Kind != grid.PeerCapabilitiesChanged {
		return
	}
	g.propMu.Lock()
	defer g.propMu.Unlock()
	p := g.probe
	if p == nil || ev.Peer != p.from || !p.want[self] || p.seen[self] {
		return
	}
	if slices.ContainsFunc(ev.Skills, func(s grid.SkillCapability) bool { return s.ID == scaleProbeSkill && s.Version == p.v }) {
		p.seen[self] = true
		g.propLat = append(g.propLat, ev.Time.Sub(p.sent))
	}
}

// closeProbe ends the current probe, counting the receivers that did not
// see it and are still up.
func (g *scaleGrid) closeProbe() {
	up := map[peer.ID]bool{}
	for _, m := range g.live() {
		up[m.h.ID] = true
	}
	g.propMu.Lock()
	defer g.propMu.Unlock()
	p := g.probe
	g.probe = nil
	if p == nil {
		return
	}
	for id := range p.want {
		if up[id] && !p.seen[id] {
			g.propMis++
		}
	}
}

// lookups times DHT provider lookups for echo from random live members,
// one every second.
func (g *scaleGrid) lookups(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Second):
		}
		ms := g.live()
		m := ms[rand.IntN(len(ms))]
		lctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		start := time.Now()
		ais, err := m.h.Node.FindProviders(lctx, "echo", 20)
		d := time.Since(start)
		cancel()
		if ctx.Err() != nil {
			return
		}
		g.propMu.Lock()
		if err != nil || len(ais) == 0 {
			g.dhtMiss++
		} else {
			g.dhtLat = append(g.dhtLat, d)
		}
		g.propMu.Unlock()
	}
}

// writeProfiles writes goroutine (grouped by stack) and heap profiles to
// dir, if set.
func writeProfiles(t testing.TB, dir string) {
	if dir == "" {
		return
	}
	for _, p := range []struct {
		name  string
		debug int
	}{{"goroutine", 1}, {"heap", 0}} {
		path := filepath.Join(dir, "scale-idle-"+p.name+".pprof")
		f, err := os.Create(path)
		if err != nil {
			t.Errorf("profile: %v", err)
			return
		}
		if err := pprof.Lookup(p.name).WriteTo(f, p.debug); err != nil {
			t.Errorf("profile %s: %v", p.name, err)
		}
		_ = f.Close()
		t.Logf("wrote %s", path)
	}
}

// processSample is the process's memory and goroutines at one moment.
type processSample struct {
	rss, heap  uint64
	goroutines int
}

func sampleProcess() processSample {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := processSample{heap: ms.HeapInuse, goroutines: runtime.NumGoroutine()}
	if f, err := os.Open("/proc/self/status"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if kb, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
				v, _ := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(kb), " kB"), 10, 64)
				s.rss = v << 10
			}
		}
		_ = f.Close()
	}
	return s
}

// scaleReport is what TestScale prints.
type scaleReport struct {
	nodes, started                       int
	tasks, succeeded, failed, lost, orph int64
	failures                             map[string]int64
	propP50, propP99                     time.Duration
	propN, propMiss                      int
	discP50, discMax                     time.Duration
	discN, discMiss                      int
	dhtP50, dhtP99                       time.Duration
	dhtN, dhtMiss                        int
	idleRSS, idleHeap, idleGoroutines    float64
	busyRSS, busyGoroutines              float64
}

func (r scaleReport) successRate() float64 {
	done := r.succeeded + r.failed + r.lost
	if done == 0 {
		return 0
	}
	return float64(r.succeeded) / float64(done)
}

func (g *scaleGrid) report(n int, idle, base, busy processSample) scaleReport {
	per := func(a, b uint64) float64 { return float64(a-min(a, b)) / float64(n) / (1 << 20) }
	g.mu.Lock()
	started := len(g.members)
	g.mu.Unlock()
	g.propMu.Lock()
	defer g.propMu.Unlock()
	r := scaleReport{
		nodes: n, started: started,
		tasks: g.tasks.Load(), succeeded: g.succeeded.Load(), failed: g.failed.Load(),
		lost: g.lost.Load(), orph: g.orphaned.Load(), failures: map[string]int64{},
		propN: len(g.propLat), propMiss: g.propMis,
		discN: len(g.discLat), discMiss: g.discMiss,
		dhtN: len(g.dhtLat), dhtMiss: g.dhtMiss,
		idleRSS: per(idle.rss, base.rss), idleHeap: per(idle.heap, base.heap),
		idleGoroutines: float64(idle.goroutines-base.goroutines) / float64(n),
		busyRSS:        per(busy.rss, base.rss), busyGoroutines: float64(busy.goroutines-base.goroutines) / float64(n),
	}
	r.propP50, r.propP99 = quantile(g.propLat, 0.5), quantile(g.propLat, 0.99)
	r.discP50, r.discMax = quantile(g.discLat, 0.5), quantile(g.discLat, 1)
	r.dhtP50, r.dhtP99 = quantile(g.dhtLat, 0.5), quantile(g.dhtLat, 0.99)
	g.failures.Range(func(k, v any) bool { r.failures[k.(string)] = v.(*atomic.Int64).Load(); return true })
	return r
}

func (r scaleReport) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "scale: %d nodes (%d started in all, churn %.0f%%/min), %s of load at %.0f tasks/s\n",
		r.nodes, r.started, 100**scaleChurn, *scaleDuration, *scaleRate)
	fmt.Fprintf(&b, "  tasks            %d: %d succeeded, %d failed, %d lost, %d left with a churned submitter; success %.3f%%\n",
		r.tasks, r.succeeded, r.failed, r.lost, r.orph, 100*r.successRate())
	for k, v := range r.failures {
		fmt.Fprintf(&b, "    failure x%d: %s\n", v, k)
	}
	fmt.Fprintf(&b, "  propagation      p50 %s, p99 %s (%d receipts, %d not within %s)\n", r.propP50, r.propP99, r.propN, r.propMiss, scaleProbeWait)
	fmt.Fprintf(&b, "  new node sees    every worker: p50 %s, max %s (%d nodes, %d not within 60s)\n", r.discP50, r.discMax, r.discN, r.discMiss)
	fmt.Fprintf(&b, "  DHT lookup       p50 %s, p99 %s (%d lookups, %d found none)\n", r.dhtP50, r.dhtP99, r.dhtN, r.dhtMiss)
	fmt.Fprintf(&b, "  per node, idle   %.1f MB RSS, %.1f MB heap in use, %.0f goroutines\n", r.idleRSS, r.idleHeap, r.idleGoroutines)
	fmt.Fprintf(&b, "  per node, load   %.1f MB RSS, %.0f goroutines\n", r.busyRSS, r.busyGoroutines)
	return b.String()
}

// quantile returns the q-quantile of ds (0 if empty), by nearest rank.
func quantile(ds []time.Duration, q float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	i := int(q*float64(len(s)) + 0.5)
	return s[min(max(i-1, 0), len(s)-1)].Round(time.Millisecond)
}
