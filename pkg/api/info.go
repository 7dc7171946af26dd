package api

import (
	"cmp"
	"net/http"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

func (s *Server) identity(w http.ResponseWriter, _ *http.Request) {
	n := s.deps.Node
	id := n.ID()
	out := apiv1.Identity{ID: id.String(), Version: s.version, Addrs: []string{}}
	for _, a := range n.Addrs() { // they end in /p2p/<id> already
		out.Addrs = append(out.Addrs, a.String())
	}
	if h, ok := n.(interface{ Host() host.Host }); ok && h.Host() != nil {
		for _, p := range h.Host().Mux().Protocols() {
			out.Protocols = append(out.Protocols, string(p))
		}
		slices.Sort(out.Protocols)
	}
	if nv, ok := n.(NATView); ok {
		if st, err := nv.NATStatus(); err == nil {
			out.NAT = natOf(st)
		}
	}
	writeJSON(w, http.StatusOK, out)
}

// NATView is what the identity endpoint asks a Node that knows its
// reachability; *grid.Node has it.
type NATView interface {
	NATStatus() (grid.NATStatus, error)
}

var _ NATView = (*grid.Node)(nil)

func natOf(st grid.NATStatus) *apiv1.NAT {
	out := &apiv1.NAT{Reachability: st.Reachability, RelayService: st.RelayService, Relays: []string{},
		RelayAddrs: addrStrings(st.RelayAddrs), DirectPeers: st.DirectPeers, RelayedPeers: []string{}}
	for _, r := range st.Relays {
		out.Relays = append(out.Relays, r.String())
	}
	for _, p := range st.RelayedPeers {
		out.RelayedPeers = append(out.RelayedPeers, p.String())
	}
	if len(st.Reachable) > 0 {
		out.ReachableAddrs = addrStrings(st.Reachable)
	}
	if len(st.Unreachable) > 0 {
		out.UnreachableAddrs = addrStrings(st.Unreachable)
	}
	return out
}

func addrStrings(as []multiaddr.Multiaddr) []string {
	out := make([]string, 0, len(as))
	for _, a := range as {
		out = append(out, a.String())
	}
	return out
}

func capStrings(cs []grid.SkillCapability) []string {
	out := make([]string, 0, len(cs))
	for _, c := range cs {
		if c.Version == "" {
			out = append(out, string(c.ID))
			continue
		}
		out = append(out, string(c.ID)+"@"+c.Version)
	}
	return out
}

func loadOf(l grid.Load) apiv1.Load {
	return apiv1.Load{Queued: l.QueueDepth, InFlight: l.InFlight, Capacity: l.Capacity, Utilization: l.Utilization()}
}

// skills merges the local registry with what verified peers announce
// (the providers the router may pick). A wasm skill
// only peers offer gets the module its providers announce at its version,
// when Deps.Node is a ModuleView.
func (s *Server) skills(w http.ResponseWriter, _ *http.Request) {
	self := s.deps.Node.ID().String()
	byID := map[string]*apiv1.Skill{}
	get := func(id string) *apiv1.Skill {
		sk, ok := byID[id]
		if !ok {
			sk = &apiv1.Skill{ID: id, Providers: []string{}}
			byID[id] = sk
		}
		return sk
	}
	for _, d := range s.deps.Skills.List() {
		sk := get(string(d.ID))
		sk.Version, sk.Description, sk.Local, sk.InputSchema = d.Version, d.Description, true, d.InputSchema
		sk.Providers = append(sk.Providers, self)
		if s.deps.Installer != nil {
			if info, ok := s.deps.Installer.Describe(d.ID); ok {
				describeInto(sk, info)
			}
		}
	}
	remote := map[string][]peer.ID{} // skill -> the peers that offer it
	for _, pi := range s.deps.Node.Peers() {
		if !pi.Verified && !pi.Candidate {
			continue // found not to speak the task protocol: no provider, as the router has it
		}
		for _, c := range pi.Skills {
			sk := get(string(c.ID))
			if sk.Version == "" {
				sk.Version = c.Version
			}
			if !slices.Contains(sk.Providers, pi.Peer.String()) {
				sk.Providers = append(sk.Providers, pi.Peer.String())
				remote[sk.ID] = append(remote[sk.ID], pi.Peer)
			}
		}
	}
	mv, _ := s.deps.Node.(ModuleView)
	out := make([]apiv1.Skill, 0, len(byID))
	for _, sk := range byID {
		slices.Sort(sk.Providers)
		if mv != nil && !sk.Local {
			if m, ok := announcedModule(mv, remote[sk.ID], reputation.SkillID(sk.ID), sk.Version); ok {
				sk.Module = wasm.ModuleID(m).String()
			}
		}
		out = append(out, *sk)
	}
	slices.SortFunc(out, func(a, b apiv1.Skill) int { return cmp.Compare(a.ID, b.ID) })
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) metrics(w http.ResponseWriter, _ *http.Request) {
	snap := s.deps.Tasks.Metrics()
	out := apiv1.Metrics{
		Tasks:   taskMetrics(snap.Metrics),
		Queue:   queueStats(s.deps.Tasks.QueueStats()),
		PerNode: make(map[string]apiv1.TaskMetrics, len(snap.PerNode)),
	}
	for id, nm := range snap.PerNode {
		out.PerNode[id.String()] = taskMetrics(nm.Metrics)
	}
	for _, pi := range s.deps.Node.Peers() {
		if pi.Connected {
			out.Peers++
		}
	}
	writeJSON(w, http.StatusOK, out)
}

func taskMetrics(m grid.Metrics) apiv1.TaskMetrics {
	return apiv1.TaskMetrics{
		Submitted: m.Submitted, Completed: m.Completed, Failed: m.Failed, TimedOut: m.TimedOut,
		Unavailable: m.Unavailable, Rejected: m.Rejected, Retried: m.Retried,
		SuccessRate: m.SuccessRate(), FailureRate: m.FailureRate(),
		MinMS: msOf(m.MinExec), MaxMS: msOf(m.MaxExec), AvgMS: msOf(m.AvgExec),
		P50MS: msOf(m.P50), P95MS: msOf(m.P95), P99MS: msOf(m.P99),
	}
}

func msOf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func queueStats(q grid.QueueStats) apiv1.QueueStats {
	depth := make(map[string]int, grid.NumLevels)
	for l := range grid.NumLevels {
		depth[grid.Level(l).String()] = q.Depth[l]
	}
	return apiv1.QueueStats{
		Depth: depth, InFlight: q.InFlight,
		Enqueued: q.Enqueued, Completed: q.Completed, Failed: q.Failed, Retried: q.Retried,
		TimedOut: q.TimedOut, Rejected: q.Rejected,
	}
}

func (s *Server) trustAll(w http.ResponseWriter, _ *http.Request) {
	pts := s.deps.Trust.Peers()
	out := make([]apiv1.TrustEntry, 0, len(pts))
	for _, pt := range pts {
		out = append(out, trustEntry(pt))
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) trustOne(w http.ResponseWriter, r *http.Request) {
	p, err := peer.Decode(r.PathValue("peer"))
	if err != nil {
		s.writeError(w, r, badRequest("%q is not a peer ID: %v", r.PathValue("peer"), err))
		return
	}
	if ov, ok := s.deps.Trust.(opinionView); ok {
		pt, _ := ov.PeerTrustOf(p)
		e := trustEntry(pt)
		for _, o := range ov.OpinionsOf(p) {
			e.Opinions = append(e.Opinions, apiv1.TrustOpinion{From: o.From.String(), Share: o.Share,
				FromGlobal: o.FromGlobal, Freshness: o.Freshness, Received: o.Received})
		}
		writeJSON(w, http.StatusOK, e)
		return
	}
	for _, pt := range s.deps.Trust.Peers() {
		if pt.Peer == p {
			writeJSON(w, http.StatusOK, trustEntry(pt))
			return
		}
	}
	// A peer without history has the neutral trust that Trust reports.
	writeJSON(w, http.StatusOK, apiv1.TrustEntry{Peer: p.String(), Trust: s.deps.Trust.Trust(p)})
}

// opinionView is a TrustView that also holds other peers' opinions;
// *reputation.Graph is one.
type opinionView interface {
	PeerTrustOf(p peer.ID) (reputation.PeerTrust, bool)
	OpinionsOf(p peer.ID) []reputation.Opinion
}

var _ opinionView = (*reputation.Graph)(nil)

func trustEntry(pt reputation.PeerTrust) apiv1.TrustEntry {
	e := apiv1.TrustEntry{
		Peer: pt.Peer.String(), Trust: pt.Trust, Global: pt.Global, PreTrusted: pt.PreTrusted,
		Successes: pt.Successes, Failures: pt.Failures, Timeouts: pt.Timeouts, WrongResults: pt.WrongResults,
		LastOutcome: pt.LastOutcome, Satisfaction: pt.Satisfaction, Unsatisfaction: pt.Unsatisfaction,
	}
	if len(pt.Skills) > 0 {
		e.Ratings = make(map[string]float64, len(pt.Skills))
		for k, v := range pt.Skills {
			e.Ratings[string(k)] = v
		}
	}
	return e
}
