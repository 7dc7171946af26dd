package grid

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
	pubsub "github.com/libp2p/go-libp2p-pubsub"
	"github.com/libp2p/go-libp2p/core/event"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
	"google.golang.org/protobuf/proto"
)

// CapabilityTopic is the gossipsub topic capability announcements travel on.
const CapabilityTopic = "/cortex/capabilities/1.0.0"

// Limits on a capability announcement; larger ones are rejected.
const (
	MaxAnnouncementSize = 64 << 10
	MaxAnnouncedSkills  = 256
	MaxSkillIDLen       = reputation.MaxSkillIDLen
	MaxSkillVersionLen  = 64
	maxAnnouncedAddrs   = 32
	maxAnnouncedTTL     = time.Hour
)

// ErrBadSkillID is wrapped by the errors for a malformed skill ID. It is
// reputation.ErrInvalidSkillID: the rule lives with the SkillID type.
var ErrBadSkillID = reputation.ErrInvalidSkillID

// Errors from validating an announcement. errAnnStale is not a fault: a
// replay or a late copy, ignored rather than rejected.
var (
	errAnnTooLarge  = errors.New("announcement too large")
	errAnnMalformed = errors.New("malformed announcement")
	errAnnStale     = errors.New("stale announcement")
	errAnnTableFull = errors.New("capability table full")
)

func checkSkillID(id reputation.SkillID) error { return id.Validate() }

// SkillCapability is one skill a node offers, at one version.
type SkillCapability struct {
	ID      reputation.SkillID
	Version string
}

// SkillModules maps a node's wasm skills to the sha256 of their modules.
// A SkillCapability stays two fields (tests and callers spell it
// unkeyed); the module hash travels beside it, in the announcement's
// SkillCapability.module_sha256.
type SkillModules map[SkillCapability][32]byte

func compareSkills(a, b SkillCapability) int {
	return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Version, b.Version))
}

func sameSkill(a, b SkillCapability) bool { return compareSkills(a, b) == 0 }

// PeerInfo is what the node knows about one peer: from its announcements,
// the peerstore and the host's connections. Skills is shared: do not modify
// it.
type PeerInfo struct {
	Peer      peer.ID
	Addrs     []multiaddr.Multiaddr
	Skills    []SkillCapability // nil if the peer has not announced any
	Load      Load              // as the peer announced it: a hint, not a fact
	LastSeen  time.Time         // of its last announcement; zero if none
	Connected bool
	// Relayed: every connection to the peer goes through a relay (a
	// limited connection), as before or after a failed hole punch.
	Relayed bool
	// Verified says that identify, over a connection, showed the peer
	// speaks the task protocol (wire.ProtocolTask).
	Verified bool
	// Candidate says the peer announced skills and is neither verified
	// nor known not to speak the task protocol: Providers lists it, and
	// opening a task stream to it is the check (see Providers). A peer
	// with skills that is neither Verified nor Candidate was found not to
	// speak the protocol: it is no provider for a while.
	Candidate bool
}

// PeerEventKind says what happened to a peer.
type PeerEventKind uint8

// Peer event kinds.
const (
	PeerJoined              PeerEventKind = iota + 1 // first announcement seen
	PeerLeft                                         // its entry expired
	PeerCapabilitiesChanged                          // it announced a different skill set
	PeerConnected                                    // a connection opened
	PeerDisconnected                                 // its last connection closed
)

var peerEventNames = [...]string{"", "joined", "left", "capabilities-changed", "connected", "disconnected"}

// String returns a short lowercase name, such as "joined".
func (k PeerEventKind) String() string {
	if int(k) < len(peerEventNames) && k > 0 {
		return peerEventNames[k]
	}
	return fmt.Sprintf("peer-event(%d)", uint8(k))
}

// PeerEvent is one change to what the node knows about a peer.
type PeerEvent struct {
	Kind   PeerEventKind
	Peer   peer.ID
	Skills []SkillCapability // for PeerJoined and PeerCapabilitiesChanged; do not modify
	Time   time.Time
}

// SetCapabilities sets the skills this node offers. Invalid entries are
// logged and dropped, duplicates merged, and at most MaxAnnouncedSkills
// kept. If the set changed, the node announces it at once and provides the
// new skills in the DHT. Before Start it only records the set.
func (n *Node) SetCapabilities(skills []SkillCapability) {
	clean := make([]SkillCapability, 0, len(skills))
	for _, s := range skills {
		if err := checkSkillID(s.ID); err != nil {
			n.log.Warn("skill not announced", "err", err)
			continue
		}
		if len(s.Version) > MaxSkillVersionLen {
			n.log.Warn("skill not announced: version longer than 64 bytes", "skill", s.ID)
			continue
		}
		clean = append(clean, s)
	}
	slices.SortFunc(clean, compareSkills)
	clean = slices.CompactFunc(clean, sameSkill)
	if len(clean) > MaxAnnouncedSkills {
		n.log.Warn("too many skills: announcing the first ones", "skills", len(clean), "max", MaxAnnouncedSkills)
		clean = clean[:MaxAnnouncedSkills]
	}
	if old := n.skills.Swap(&clean); slices.Equal(*old, clean) {
		return
	}
	nudge(n.announceNow)
	nudge(n.provideNow)
}

// SetFetchesModules sets whether this node's announcements say that it
// fetches the modules of wasm skills it lacks (see ModuleFetchers), and
// announces at once if that changed.
func (n *Node) SetFetchesModules(on bool) {
	if n.table.selfFetches.Swap(on) != on {
		nudge(n.announceNow)
	}
}

// SetSkillModules sets the module hashes of this node's wasm skills,
// announced with the skills SetCapabilities sets (hashes of skills not
// among them are not announced), and announces at once if they changed.
func (n *Node) SetSkillModules(mods SkillModules) {
	clean := make(SkillModules, len(mods))
	for k, v := range mods {
		if v != ([32]byte{}) {
			clean[k] = v
		}
	}
	if old := n.table.selfModules.Swap(&clean); old == nil || !maps.Equal(*old, clean) {
		nudge(n.announceNow)
	}
}

// ModuleFetchers returns the peers (verified or candidates, as Providers
// has them), not yet expired, that
// announce they fetch modules and do not offer skill themselves, if skill
// is a wasm skill (this node or a peer announces it with a module hash);
// nil otherwise. Their Version is empty: a fetcher runs whichever version
// a task's module is. This node is never among them.
func (n *Node) ModuleFetchers(skill reputation.SkillID) []Provider {
	fs := *n.table.fetchers.Load()
	if len(fs) == 0 || !n.isWasmSkill(skill) {
		return nil
	}
	now := time.Now()
	out := make([]Provider, 0, len(fs))
	for _, slot := range fs {
		e := slot.entry.Load()
		if !now.Before(e.expires) || !slot.provider(now) || !e.fetches || e.offers(skill) {
			continue
		}
		out = append(out, Provider{Peer: e.peer, Load: e.load, LastSeen: e.lastSeen, Connected: n.table.connected(e.peer), Verified: slot.verified.Load()})
	}
	return out
}

func (n *Node) isWasmSkill(skill reputation.SkillID) bool {
	if own := n.table.selfModules.Load(); own != nil {
		for s := range *own {
			if s.ID == skill {
				return true
			}
		}
	}
	for _, r := range (*n.table.index.Load())[skill] {
		if r.module != ([32]byte{}) {
			return true
		}
	}
	return false
}

// ModuleHolders returns the verified peers whose unexpired announcements
// list a wasm skill with module id: where else a module may be fetched.
func (n *Node) ModuleHolders(id [32]byte) []peer.ID {
	if id == ([32]byte{}) {
		return nil
	}
	var out []peer.ID
	for _, e := range n.table.entries(time.Now()) {
		for _, m := range e.modules {
			if e.verified && m == id {
				out = append(out, e.peer)
				break
			}
		}
	}
	slices.Sort(out)
	return out
}

// AnnouncedModule returns the module p announces for skill (at version,
// or at any version if version is empty), if p announces it as a wasm
// skill.
func (n *Node) AnnouncedModule(p peer.ID, skill reputation.SkillID, version string) ([32]byte, bool) {
	e := n.table.entry(p, time.Now())
	if e == nil {
		return [32]byte{}, false
	}
	for _, s := range e.skills {
		if m, ok := e.modules[s]; ok && s.ID == skill && (version == "" || s.Version == version) {
			return m, true
		}
	}
	return [32]byte{}, false
}

// Offers reports whether p is among Providers(skill) at version (at any
// version if version is empty). It takes one lock and does not allocate.
func (n *Node) Offers(p peer.ID, skill reputation.SkillID, version string) bool {
	return n.table.offers(p, skill, version, time.Now())
}

// SetLoadFunc sets the function the node calls at each announcement to
// report its load. It must be fast and safe to call from any goroutine.
func (n *Node) SetLoadFunc(f func() Load) { n.loadFn.Store(&f) }

// Providers returns the peers whose announcements, not yet expired, offer
// skill, one per (peer, version), verified or not. An announcement is
// signed by its author, so it makes the author a candidate; Verified says
// identify, over a connection, showed it speaks the task protocol
// (wire.ProtocolTask). A task goes to a candidate only through a task
// stream, whose multistream negotiation fails if the peer does not speak
// the protocol: the orchestrator then returns ErrNotProvider, and the peer
// is left out of Providers for notProviderFor (as it is while identify,
// over a live connection, shows it does not speak the protocol). This
// node is never among them. It takes no lock and allocates only the
// returned slice.
func (n *Node) Providers(skill reputation.SkillID) []Provider {
	return n.table.providers(skill, time.Now())
}

// AppendProviders appends Providers(skill) to dst and returns the extended
// slice: a caller that reuses dst allocates nothing.
func (n *Node) AppendProviders(dst []Provider, skill reputation.SkillID) []Provider {
	return n.table.appendProviders(dst, skill, time.Now())
}

// Peers returns every peer the node is connected to or holds an unexpired
// announcement from, sorted by peer ID.
func (n *Node) Peers() []PeerInfo {
	rt := n.rt.Load()
	known := n.table.entries(time.Now())
	byID := make(map[peer.ID]int, len(known))
	out := make([]PeerInfo, 0, len(known))
	for _, e := range known {
		byID[e.peer] = len(out)
		out = append(out, PeerInfo{Peer: e.peer, Addrs: e.addrs, Skills: e.skills, Load: e.load, LastSeen: e.lastSeen,
			Verified: e.verified, Candidate: !e.verified && e.provider && len(e.skills) > 0})
	}
	if rt != nil {
		for _, p := range rt.host.Network().Peers() {
			if _, ok := byID[p]; !ok {
				byID[p] = len(out)
				out = append(out, PeerInfo{Peer: p, Verified: speaksTask(rt.host, p)})
			}
		}
		for i := range out {
			out[i].Connected = hostConnected(rt.host, out[i].Peer)
			out[i].Relayed = IsRelayed(rt.host, out[i].Peer)
			if addrs := rt.host.Peerstore().Addrs(out[i].Peer); len(addrs) > 0 {
				out[i].Addrs = addrs
			}
		}
	}
	slices.SortFunc(out, func(a, b PeerInfo) int { return cmp.Compare(a.Peer, b.Peer) })
	return out
}

// OnPeerEvent calls fn for each peer event, in order, from one goroutine of
// the node's. fn must not block for long: events queue behind it, and past
// 4096 queued events new ones are dropped. fn may be called once more after
// unsubscribe returns, if an event was being delivered.
func (n *Node) OnPeerEvent(fn func(PeerEvent)) (unsubscribe func()) {
	return n.hub.subscribe(fn)
}

// nudge does a non-blocking send on a channel of capacity 1.
func nudge(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// capAnnouncement is a validated CapabilityAnnouncement.
type capAnnouncement struct {
	seq    uint64
	skills []SkillCapability // sorted, no duplicates
	load   Load
	addrs  []multiaddr.Multiaddr
	ttl    time.Duration // 0: the receiver's default
	stamp  time.Time     // when the author sent it; zero if it did not say
	// fetches says the author runs wasm skills it lacks by fetching them;
	// modules are the module hashes of its wasm skills (nil if none).
	fetches bool
	modules SkillModules
}

// parseAnnouncement checks an announcement's size and fields. It does not
// look at the sequence number.
func parseAnnouncement(data []byte) (*capAnnouncement, error) {
	if len(data) > MaxAnnouncementSize {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", errAnnTooLarge, len(data), MaxAnnouncementSize)
	}
	var m cortexv1.CapabilityAnnouncement
	if err := proto.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%w: %w", errAnnMalformed, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", errAnnMalformed, fmt.Sprintf(format, args...))
	}
	if len(m.Skills) > MaxAnnouncedSkills {
		return nil, bad("%d skills, the limit is %d", len(m.Skills), MaxAnnouncedSkills)
	}
	if len(m.QueueDepth) != NumLevels {
		return nil, bad("%d queue depths, want %d", len(m.QueueDepth), NumLevels)
	}
	if len(m.Addrs) > maxAnnouncedAddrs {
		return nil, bad("%d addresses, the limit is %d", len(m.Addrs), maxAnnouncedAddrs)
	}
	a := &capAnnouncement{seq: m.Sequence, skills: make([]SkillCapability, len(m.Skills))}
	for i, s := range m.Skills {
		if err := checkSkillID(reputation.SkillID(s.GetSkillId())); err != nil {
			return nil, bad("%v", err)
		}
		if len(s.GetVersion()) > MaxSkillVersionLen {
			return nil, bad("skill %s version is %d bytes, the limit is %d", s.GetSkillId(), len(s.GetVersion()), MaxSkillVersionLen)
		}
		a.skills[i] = SkillCapability{ID: reputation.SkillID(s.GetSkillId()), Version: s.GetVersion()}
		switch h := s.GetModuleSha256(); len(h) {
		case 0:
		case 32:
			if a.modules == nil {
				a.modules = SkillModules{}
			}
			a.modules[a.skills[i]] = [32]byte(h)
		default:
			return nil, bad("skill %s module sha256 is %d bytes, want 32", s.GetSkillId(), len(h))
		}
	}
	a.fetches = m.FetchesModules
	slices.SortFunc(a.skills, compareSkills)
	if len(slices.CompactFunc(slices.Clone(a.skills), sameSkill)) != len(a.skills) {
		return nil, bad("a skill is listed twice")
	}
	for i, d := range m.QueueDepth {
		a.load.QueueDepth[i] = int(d)
	}
	a.load.InFlight, a.load.Capacity = int(m.InFlight), int(m.WorkerCapacity)
	a.addrs = make([]multiaddr.Multiaddr, 0, len(m.Addrs))
	for _, b := range m.Addrs {
		ma, err := multiaddr.NewMultiaddrBytes(b)
		if err != nil {
			return nil, bad("address: %v", err)
		}
		a.addrs = append(a.addrs, ma)
	}
	if m.TtlSeconds > 0 {
		a.ttl = min(time.Duration(m.TtlSeconds)*time.Second, maxAnnouncedTTL)
	}
	if m.TimestampUnixMs > 0 {
		a.stamp = time.UnixMilli(m.TimestampUnixMs)
	}
	return a, nil
}

// buildAnnouncement encodes this node's current capabilities.
func (n *Node) buildAnnouncement(addrs []multiaddr.Multiaddr, now time.Time) ([]byte, error) {
	skills := *n.skills.Load()
	var load Load
	if f := n.loadFn.Load(); f != nil && *f != nil {
		load = (*f)()
	}
	m := &cortexv1.CapabilityAnnouncement{
		Skills:          make([]*cortexv1.SkillCapability, len(skills)),
		QueueDepth:      make([]uint32, NumLevels),
		InFlight:        capClampU32(load.InFlight),
		WorkerCapacity:  capClampU32(load.Capacity),
		Sequence:        n.seq.Add(1),
		TimestampUnixMs: now.UnixMilli(),
		TtlSeconds:      uint32((n.cfg.ttl() + time.Second - 1) / time.Second),
		FetchesModules:  n.table.selfFetches.Load(),
	}
	var mods SkillModules
	if p := n.table.selfModules.Load(); p != nil {
		mods = *p
	}
	for i, s := range skills {
		m.Skills[i] = &cortexv1.SkillCapability{SkillId: string(s.ID), Version: s.Version}
		if h, ok := mods[s]; ok {
			m.Skills[i].ModuleSha256 = h[:]
		}
	}
	for i, d := range load.QueueDepth {
		m.QueueDepth[i] = capClampU32(d)
	}
	for _, a := range addrs[:min(len(addrs), maxAnnouncedAddrs)] {
		m.Addrs = append(m.Addrs, a.Bytes())
	}
	b, err := proto.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encode capability announcement: %w", err)
	}
	return b, nil
}

func capClampU32(v int) uint32 {
	if v < 0 {
		return 0
	}
	return uint32(min(int64(v), math.MaxUint32))
}

// capEntry is one peer's last announcement. It is immutable once stored.
type capEntry struct {
	peer     peer.ID
	skills   []SkillCapability
	load     Load
	addrs    []multiaddr.Multiaddr
	seq      uint64
	lastSeen time.Time
	expires  time.Time
	fetches  bool         // it fetches the modules of wasm skills it lacks
	modules  SkillModules // of its wasm skills; nil if none
}

// offers reports whether the entry lists skill, at any version.
func (e *capEntry) offers(skill reputation.SkillID) bool {
	return slices.ContainsFunc(e.skills, func(s SkillCapability) bool { return s.ID == skill })
}

// capSlot holds a peer's current entry; readers load it without a lock.
// verified says that identify showed the peer speaks the task protocol.
// refused is the time (Unix ns) until which the peer is no provider: a
// task stream to it failed to negotiate the protocol, or identify over a
// live connection showed it does not speak it. A slot neither verified
// nor refused is a candidate: a provider until a task stream says not.
type capSlot struct {
	entry    atomic.Pointer[capEntry]
	verified atomic.Bool
	refused  atomic.Int64
}

// provider reports whether the slot's peer is a provider (verified or a
// candidate) at now.
func (s *capSlot) provider(now time.Time) bool {
	return s.verified.Load() || s.refused.Load() <= now.UnixNano()
}

type capRef struct {
	slot    *capSlot
	version string
	module  [32]byte // zero unless a wasm skill
}

// capIndex maps each skill to the slots offering it. It is rebuilt, never
// changed, when a peer's skill set changes or a peer comes or goes.
type capIndex map[reputation.SkillID][]capRef

// capTable is the table of who offers what. Writers hold mu; Providers
// reads index and slots atomically.
//
// It is bounded twice: at most maxPeers entries, and at most maxRefs
// (peer, skill) pairs over all of them. When an announcement from a new
// peer, or a grown skill set, does not fit, the table evicts the entries it
// least wants to keep (see keepScore) if they rank below the newcomer, and
// ignores the newcomer otherwise. The sequence number of a peer lives in
// its entry and goes with it; a replay of an announcement older than its
// own TTL (by its timestamp) is ignored.
type capTable struct {
	self      peer.ID
	ttl       time.Duration // for announcements that carry none
	connected func(peer.ID) bool
	emit      func(PeerEvent)
	// speaks reports whether identify showed that p speaks the task
	// protocol; nil counts every peer as verified (table unit tests).
	// refutes reports whether identify, over a live connection, showed
	// that p does not; nil: never.
	speaks  func(peer.ID) bool
	refutes func(peer.ID) bool
	// notProvider is called, outside mu, when a peer with skills becomes
	// refused; nil: nothing. recheck asks for a task stream over the
	// connection to a peer that identify refuted (it may be stale); it
	// must not block or call back into the table; nil: nothing.
	notProvider func(p peer.ID, why string)
	recheck     func(p peer.ID)
	// trust is this node's trust in p in [0, 1]; nil gives every peer
	// neutralKeepTrust.
	trust    func(peer.ID) float64
	maxPeers int
	maxRefs  int
	index    atomic.Pointer[capIndex]
	// fetchers are the slots whose entries said they fetch modules,
	// rebuilt with index; selfFetches is what this node announces.
	fetchers    atomic.Pointer[[]*capSlot]
	selfFetches atomic.Bool
	selfModules atomic.Pointer[SkillModules]

	mu      sync.RWMutex // read-locked by the lookups on every remote task's path (entry, offers)
	slots   map[peer.ID]*capSlot
	refs    int      // (peer, skill) pairs in slots
	victims []victim // eviction candidates, worst first; see nextVictimLocked
	scanned time.Time
}

func newCapTable(self peer.ID, ttl time.Duration, connected func(peer.ID) bool, emit func(PeerEvent)) *capTable {
	t := &capTable{
		self:      self,
		ttl:       ttl,
		connected: connected,
		emit:      emit,
		maxPeers:  maxCapPeers,
		maxRefs:   maxCapSkillRefs,
		slots:     make(map[peer.ID]*capSlot),
	}
	t.index.Store(&capIndex{})
	t.fetchers.Store(&[]*capSlot{})
	return t
}

// check validates an announcement from author before it changes any state:
// fields, then, for other nodes, that it is fresh (its sequence newer than
// the stored entry's, its timestamp within its TTL) and that the table has
// room for it or would evict a worse entry for it. Errors wrap
// errAnnTooLarge, errAnnMalformed (both faults), errAnnStale or
// errAnnTableFull (not).
func (t *capTable) check(author peer.ID, data []byte, now time.Time) (*capAnnouncement, error) {
	a, err := parseAnnouncement(data)
	if err != nil {
		return nil, err
	}
	if author == t.self {
		return a, nil
	}
	if err := t.stale(a, now); err != nil {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	slot, known := t.slots[author]
	grow := len(a.skills)
	if known {
		e := slot.entry.Load()
		if a.seq <= e.seq {
			return nil, fmt.Errorf("%w: sequence %d is not newer than %d", errAnnStale, a.seq, e.seq)
		}
		grow -= len(e.skills)
	}
	if !t.fitsLocked(known, grow) && !t.wouldEvictLocked(t.keepScore(author), now) {
		return nil, fmt.Errorf("%w: %d peers, %d skill entries", errAnnTableFull, len(t.slots), t.refs)
	}
	return a, nil
}

// stale reports, as errAnnStale, an announcement whose own timestamp says
// it expired already: a replay. Announcements without a timestamp pass.
func (t *capTable) stale(a *capAnnouncement, now time.Time) error {
	if a.stamp.IsZero() {
		return nil
	}
	ttl := a.ttl
	if ttl <= 0 {
		ttl = t.ttl
	}
	if age := now.Sub(a.stamp); age > ttl+maxClockSkew {
		return fmt.Errorf("%w: sent %s ago, valid for %s (clocks may differ by %s)", errAnnStale, age.Round(time.Second), ttl, maxClockSkew)
	}
	return nil
}

// apply stores a checked announcement, evicting worse entries if the table
// is full. Announcements from this node, ones no newer than the stored
// entry, and ones that no longer fit are ignored. It reports whether the
// table changed.
func (t *capTable) apply(author peer.ID, a *capAnnouncement, now time.Time) bool {
	if author == t.self {
		return false
	}
	ttl := a.ttl
	if ttl <= 0 {
		ttl = t.ttl
	}
	e := &capEntry{peer: author, skills: a.skills, load: a.load, addrs: a.addrs, seq: a.seq, lastSeen: now, expires: now.Add(ttl), fetches: a.fetches, modules: a.modules}
	var ev PeerEvent
	t.mu.Lock()
	defer t.mu.Unlock()
	slot, ok := t.slots[author]
	var old *capEntry
	grow := len(e.skills)
	if ok {
		old = slot.entry.Load()
		if a.seq <= old.seq {
			return false
		}
		grow -= len(old.skills)
	}
	if !t.fitsLocked(ok, grow) && !t.makeRoomLocked(author, ok, grow, now) {
		return false
	}
	t.refs += grow
	switch {
	case !ok:
		slot = &capSlot{}
		slot.verified.Store(t.speaks == nil || t.speaks(author))
		if !slot.verified.Load() && t.refutes != nil && t.refutes(author) {
			slot.refused.Store(now.Add(notProviderFor).UnixNano())
			t.askRecheck(author)
		}
		slot.entry.Store(e)
		t.slots[author] = slot
		t.rebuildLocked()
		ev = PeerEvent{Kind: PeerJoined, Peer: author, Skills: e.skills, Time: now}
	case !slices.Equal(old.skills, e.skills):
		slot.entry.Store(e)
		t.rebuildLocked()
		ev = PeerEvent{Kind: PeerCapabilitiesChanged, Peer: author, Skills: e.skills, Time: now}
	case old.fetches != e.fetches || !maps.Equal(old.modules, e.modules):
		slot.entry.Store(e)
		t.rebuildLocked()
	default:
		slot.entry.Store(e) // same skills: the index still points at the slot
	}
	if ev.Kind != 0 {
		t.emit(ev) // under mu, so events keep the table's order
	}
	return true
}

// notProviderFor is how long a peer found not to speak the task protocol
// stays out of Providers, unless identify shows it speaks it sooner.
const notProviderFor = 5 * time.Minute

// setVerified records whether p speaks the task protocol, as identify or
// a task stream showed: ok verifies it; !ok refuses it until
// notProviderFor from now. why says how a task stream found it (empty for
// identify, which a recheck may overturn: not logged). It reports whether
// p has an entry.
func (t *capTable) setVerified(p peer.ID, ok bool, why string) bool {
	now := time.Now()
	t.mu.Lock()
	slot, known := t.slots[p]
	tell := false
	if known {
		slot.verified.Store(ok)
		if ok {
			slot.refused.Store(0)
		} else {
			tell = why != "" && len(slot.entry.Load().skills) > 0
			slot.refused.Store(now.Add(notProviderFor).UnixNano())
		}
	}
	t.mu.Unlock()
	if tell && t.notProvider != nil {
		t.notProvider(p, why)
	}
	return known
}

// reverify asks speaks and refutes again for every unverified entry, in
// case an identify event was missed: one that speaks the protocol is
// verified, and a refused one that is still connected and still does not
// stays refused.
func (t *capTable) reverify(now time.Time) {
	if t.speaks == nil {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for p, slot := range t.slots {
		switch {
		case slot.verified.Load():
		case t.speaks(p):
			slot.verified.Store(true)
			slot.refused.Store(0)
		case t.refutes != nil && t.refutes(p):
			slot.refused.Store(now.Add(notProviderFor).UnixNano())
			t.askRecheck(p)
		}
	}
}

func (t *capTable) askRecheck(p peer.ID) {
	if t.recheck != nil {
		t.recheck(p)
	}
}

// remove drops p's entry, if any, and emits PeerLeft for it.
func (t *capTable) remove(p peer.ID, now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.dropLocked(p, now) {
		t.rebuildLocked()
	}
}

// dropLocked deletes p's entry and emits PeerLeft; the caller rebuilds the
// index. It reports whether p had an entry.
func (t *capTable) dropLocked(p peer.ID, now time.Time) bool {
	slot, ok := t.slots[p]
	if !ok {
		return false
	}
	t.refs -= len(slot.entry.Load().skills)
	delete(t.slots, p)
	t.emit(PeerEvent{Kind: PeerLeft, Peer: p, Time: now})
	return true
}

// expire removes entries past their expiry.
func (t *capTable) expire(now time.Time) {
	t.mu.Lock()
	defer t.mu.Unlock()
	removed := false
	for p, slot := range t.slots {
		if now.Before(slot.entry.Load().expires) {
			continue
		}
		removed = t.dropLocked(p, now) || removed
	}
	if removed {
		t.rebuildLocked()
	}
}

func (t *capTable) rebuildLocked() {
	ids := make([]peer.ID, 0, len(t.slots))
	for p := range t.slots {
		ids = append(ids, p)
	}
	slices.Sort(ids)
	idx := make(capIndex)
	var fetchers []*capSlot
	for _, p := range ids {
		slot := t.slots[p]
		e := slot.entry.Load()
		for _, s := range e.skills {
			idx[s.ID] = append(idx[s.ID], capRef{slot: slot, version: s.Version, module: e.modules[s]})
		}
		if e.fetches {
			fetchers = append(fetchers, slot)
		}
	}
	t.index.Store(&idx)
	t.fetchers.Store(&fetchers)
}

func (t *capTable) providers(skill reputation.SkillID, now time.Time) []Provider {
	refs := (*t.index.Load())[skill]
	if len(refs) == 0 {
		return nil
	}
	return t.appendProviders(make([]Provider, 0, len(refs)), skill, now)
}

// appendProviders appends providers(skill, now) to out.
func (t *capTable) appendProviders(out []Provider, skill reputation.SkillID, now time.Time) []Provider {
	refs := (*t.index.Load())[skill]
	for _, r := range refs {
		e := r.slot.entry.Load()
		if !now.Before(e.expires) || !r.slot.provider(now) {
			continue
		}
		out = append(out, Provider{Peer: e.peer, Version: r.version, Load: e.load, LastSeen: e.lastSeen, Connected: t.connected(e.peer), Verified: r.slot.verified.Load()})
	}
	return out
}

// capView is an entry with whether its peer is verified, and whether it
// is a provider (verified or a candidate).
type capView struct {
	*capEntry
	verified, provider bool
}

// entries returns the unexpired entries.
func (t *capTable) entries(now time.Time) []capView {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]capView, 0, len(t.slots))
	for _, slot := range t.slots {
		if e := slot.entry.Load(); now.Before(e.expires) {
			out = append(out, capView{e, slot.verified.Load(), slot.provider(now)})
		}
	}
	return out
}

// entry returns p's unexpired entry, nil if there is none. It does not
// allocate: it is on the path of every remote task.
func (t *capTable) entry(p peer.ID, now time.Time) *capEntry {
	t.mu.RLock()
	defer t.mu.RUnlock()
	slot, ok := t.slots[p]
	if !ok {
		return nil
	}
	if e := slot.entry.Load(); now.Before(e.expires) {
		return e
	}
	return nil
}

// offers reports whether p's entry, unexpired and a provider's (verified
// or a candidate), offers skill at version (any if empty), as providers
// would list it.
func (t *capTable) offers(p peer.ID, skill reputation.SkillID, version string, now time.Time) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	slot, ok := t.slots[p]
	if !ok || !slot.provider(now) {
		return false
	}
	e := slot.entry.Load()
	if !now.Before(e.expires) {
		return false
	}
	for _, s := range e.skills {
		if s.ID == skill && (version == "" || s.Version == version) {
			return true
		}
	}
	return false
}

// refused reports whether p has an entry and is refused at now.
func (t *capTable) refused(p peer.ID, now time.Time) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	slot, ok := t.slots[p]
	return ok && !slot.provider(now)
}

func (t *capTable) size() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.slots)
}

// maxQueuedPeerEvents bounds the events waiting for a slow subscriber.
const maxQueuedPeerEvents = 4096

// peerEventHub queues peer events and delivers them, in order, from one
// goroutine to every subscriber.
type peerEventHub struct {
	mu    sync.Mutex
	subs  map[uint64]func(PeerEvent)
	next  uint64
	queue []PeerEvent
	wake  chan struct{}
}

func newPeerEventHub() *peerEventHub {
	return &peerEventHub{subs: make(map[uint64]func(PeerEvent)), wake: make(chan struct{}, 1)}
}

func (h *peerEventHub) subscribe(fn func(PeerEvent)) func() {
	h.mu.Lock()
	id := h.next
	h.next++
	h.subs[id] = fn
	h.mu.Unlock()
	return sync.OnceFunc(func() {
		h.mu.Lock()
		delete(h.subs, id)
		h.mu.Unlock()
	})
}

func (h *peerEventHub) publish(ev PeerEvent) {
	h.mu.Lock()
	if len(h.subs) == 0 {
		h.mu.Unlock()
		return
	}
	if len(h.queue) < maxQueuedPeerEvents {
		h.queue = append(h.queue, ev)
	}
	h.mu.Unlock()
	nudge(h.wake)
}

func (h *peerEventHub) run(ctx context.Context) {
	var batch []PeerEvent
	var fns []func(PeerEvent)
	for {
		select {
		case <-ctx.Done():
			return
		case <-h.wake:
		}
		h.mu.Lock()
		batch, h.queue = h.queue, batch[:0]
		fns = fns[:0]
		for _, fn := range h.subs {
			fns = append(fns, fn)
		}
		h.mu.Unlock()
		for _, ev := range batch {
			for _, fn := range fns {
				fn(ev)
			}
		}
		clear(batch)
	}
}

// joinGossip starts gossipsub (gossipOptions: signed messages, strict
// verification, peer scoring, validation limits), registers the
// announcement validator and joins the capability topic, and with
// WithTrustOpinions the trust opinion topic.
func (n *Node) joinGossip(ctx context.Context, rt *nodeRuntime) error {
	ps, err := pubsub.NewGossipSub(ctx, rt.host, n.gossipOptions()...)
	if err != nil {
		return fmt.Errorf("start gossipsub: %w", err)
	}
	rt.ps = ps
	if err := ps.RegisterTopicValidator(CapabilityTopic, n.validateMessage(rt.metrics), validatorOptions()...); err != nil {
		return fmt.Errorf("register capability validator: %w", err)
	}
	if rt.topic, err = ps.Join(CapabilityTopic); err != nil {
		return fmt.Errorf("join %s: %w", CapabilityTopic, err)
	}
	if rt.events, err = rt.topic.EventHandler(); err != nil {
		return fmt.Errorf("watch %s peers: %w", CapabilityTopic, err)
	}
	if rt.sub, err = rt.topic.Subscribe(pubsub.WithBufferSize(gossipSubBuffer)); err != nil {
		return fmt.Errorf("subscribe to %s: %w", CapabilityTopic, err)
	}
	if n.cfg.opinions == nil {
		return nil
	}
	if err := ps.RegisterTopicValidator(OpinionTopic, n.topicValidator("trust opinion", rt.metrics.opinion, n.checkOpinion), validatorOptions()...); err != nil {
		return fmt.Errorf("register trust opinion validator: %w", err)
	}
	if rt.opTopic, err = ps.Join(OpinionTopic); err != nil {
		return fmt.Errorf("join %s: %w", OpinionTopic, err)
	}
	if rt.opSub, err = rt.opTopic.Subscribe(pubsub.WithBufferSize(gossipSubBuffer)); err != nil {
		return fmt.Errorf("subscribe to %s: %w", OpinionTopic, err)
	}
	return nil
}

// validateMessage returns the capability topic's validator: it parses and
// checks an announcement before anything stores it, and hands the parsed
// form to readLoop.
func (n *Node) validateMessage(m *nodeMetrics) func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult {
	return n.topicValidator("capability announcement", m.announcement, func(author peer.ID, data []byte, now time.Time) (any, error) {
		a, err := n.table.check(author, data, now)
		if err != nil {
			return nil, err // not a typed nil in an interface
		}
		return a, nil
	})
}

// gossipCheck parses and checks a message from author before anything
// stores it. Errors wrapping errAnnStale, errAnnTableFull or
// errOpinionLimited are not faults; any other is.
type gossipCheck func(author peer.ID, data []byte, now time.Time) (any, error)

// topicValidator is the one validator rule of every gossip topic: a message
// authored by a denied peer is ignored (its relay is not at fault); check
// decides the rest; a stale message, one over its author's rate or one
// that finds the receiver's table full is ignored (dropped, not relayed,
// nobody penalized); any other error rejects the message, which penalizes
// the peer that relayed it. Faults are the sender's, so they log at Debug.
// count (nil-safe) counts what peers send by result.
func (n *Node) topicValidator(what string, count func(result string), check gossipCheck) func(context.Context, peer.ID, *pubsub.Message) pubsub.ValidationResult {
	return func(_ context.Context, from peer.ID, msg *pubsub.Message) pubsub.ValidationResult {
		author := msg.GetFrom()
		tally := count
		if author == n.id {
			tally = func(string) {} // count only what peers send
		}
		if author != n.id && !n.gater.allowed(author) {
			tally("ignored")
			return pubsub.ValidationIgnore
		}
		v, err := check(author, msg.Data, time.Now())
		switch {
		case err == nil:
			msg.ValidatorData = v
			tally("accepted")
			return pubsub.ValidationAccept
		case errors.Is(err, errAnnStale) || errors.Is(err, errAnnTableFull) || errors.Is(err, errOpinionLimited):
			tally("ignored")
			n.log.Debug(what+" ignored", "author", author, "via", from, "err", err)
			return pubsub.ValidationIgnore
		default:
			tally("rejected")
			n.log.Debug("invalid "+what+" rejected", "author", author, "via", from, "err", err)
			return pubsub.ValidationReject
		}
	}
}

// readLoop applies validated announcements to the table.
func (n *Node) readLoop(ctx context.Context, rt *nodeRuntime) {
	for {
		msg, err := rt.sub.Next(ctx)
		if err != nil {
			return // canceled
		}
		author := msg.GetFrom()
		a, ok := msg.ValidatorData.(*capAnnouncement)
		if !ok || author == n.id || !n.gater.allowed(author) { // denied since validation
			continue
		}
		now := time.Now()
		if !n.table.apply(author, a, now) {
			continue
		}
		if hostConnected(rt.host, author) {
			if len(a.skills) > 0 && n.table.refused(author, now) {
				// Refused, and still claiming skills: ask its connection
				// again (checkLoop limits this to once per checkEvery).
				n.requestCheck(author)
			}
			continue
		}
		if len(a.addrs) > 0 {
			// Where a task stream to a candidate dials.
			ttl := a.ttl
			if ttl <= 0 {
				ttl = n.cfg.ttl()
			}
			rt.host.Peerstore().AddAddrs(author, a.addrs, ttl)
		}
	}
}

// topicEventLoop asks announceLoop for an early announcement when a
// newcomer joins the topic, so that it learns this node's skills without
// waiting a whole interval. A peer whose announcement the table holds is
// no newcomer: it is reconnecting (connections are trimmed and redialled
// all the time), and an announcement goes to the whole grid, so
// announcing for each such join multiplied the gossip by up to 4.
//
// Of the newcomer's topic peers, about earlyAnnouncers answer: each with
// probability earlyAnnouncers / (its own topic peers), all of them in a
// small grid. A newcomer meets 25-50 nodes of a large one, and each early
// announcement goes to the whole grid: at 200 nodes with 10% churn a
// minute, all of them answering sent 2.5 times as many announcements as
// the 30 s interval.
func (n *Node) topicEventLoop(ctx context.Context, rt *nodeRuntime) {
	for {
		ev, err := rt.events.NextPeerEvent(ctx)
		if err != nil {
			return // canceled
		}
		if ev.Type == pubsub.PeerJoin && n.table.entry(ev.Peer, time.Now()) == nil &&
			answerNewcomer(len(rt.ps.ListPeers(CapabilityTopic)), rand.Float64()) {
			nudge(n.peerJoined)
		}
	}
}

// earlyAnnouncers is about how many of a newcomer's topic peers announce
// early for it (see topicEventLoop).
const earlyAnnouncers = 6

// answerNewcomer reports whether a node with topicPeers peers on the topic
// announces early for a newcomer, given a uniform draw u in [0, 1).
func answerNewcomer(topicPeers int, u float64) bool {
	return topicPeers <= earlyAnnouncers || u*float64(topicPeers) < earlyAnnouncers
}

// announceLoop publishes this node's capabilities at start, on change,
// every interval and soon after a newcomer joins the topic (at most every
// quarter interval for joins), and expires stale table entries.
func (n *Node) announceLoop(ctx context.Context, rt *nodeRuntime) {
	interval := n.cfg.announceInterval
	spacing := interval / 4
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	expiry := time.NewTicker(min(max(n.cfg.ttl()/4, 10*time.Millisecond), 5*time.Second))
	defer expiry.Stop()
	late := time.NewTimer(time.Hour)
	late.Stop()
	lateArmed := false
	var last time.Time
	announce := func() {
		n.announce(ctx, rt)
		last = time.Now()
		ticker.Reset(interval)
	}
	announce()
	for {
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			announce()
		case <-n.announceNow:
			announce()
		case <-n.peerJoined:
			if wait := spacing - time.Since(last); wait <= 0 {
				announce()
			} else if !lateArmed {
				late.Reset(wait)
				lateArmed = true
			}
		case <-late.C:
			lateArmed = false
			announce()
		case now := <-expiry.C:
			n.table.expire(now)
			n.table.reverify(now)
		}
	}
}

func (n *Node) announce(ctx context.Context, rt *nodeRuntime) {
	data, err := n.buildAnnouncement(rt.host.Addrs(), time.Now())
	if err == nil {
		err = rt.topic.Publish(ctx, data)
	}
	if err != nil && ctx.Err() == nil {
		n.log.Warn("publish capabilities failed", "err", err)
	}
}

// connEventLoop turns the host's connection events into peer events.
func (n *Node) connEventLoop(ctx context.Context, rt *nodeRuntime) {
	for {
		select {
		case <-ctx.Done():
			return
		case e, ok := <-rt.connSub.Out():
			if !ok {
				return
			}
			if n.onIdentify(e) {
				continue
			}
			ev, ok := e.(event.EvtPeerConnectednessChanged)
			if !ok {
				continue
			}
			switch ev.Connectedness {
			case network.Connected, network.Limited:
				if !n.gater.allowed(ev.Peer) {
					// Denied while its connection was being set up.
					_ = rt.host.Network().ClosePeer(ev.Peer)
					continue
				}
				n.hub.publish(PeerEvent{Kind: PeerConnected, Peer: ev.Peer, Time: time.Now()})
			case network.NotConnected:
				n.hub.publish(PeerEvent{Kind: PeerDisconnected, Peer: ev.Peer, Time: time.Now()})
			}
		}
	}
}
