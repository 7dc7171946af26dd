package api

import (
	"cmp"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// peers answers GET /v1/peers: every peer the node knows, and every
// denied peer, with its access, its admission class and limits, what it
// holds here, what this node has in flight to it and has seen of its tasks
// there, and how old its last announcement is.
func (s *Server) peers(w http.ResponseWriter, _ *http.Request) {
	infos := s.deps.Node.Peers()
	acc := s.accessLists()
	circuits := s.circuits()
	seen := s.peerSeen()
	out := make([]apiv1.Peer, 0, len(infos)+len(acc.deny))
	listed := make(map[peer.ID]bool, len(infos))
	for _, pi := range infos {
		listed[pi.Peer] = true
		out = append(out, apiv1.Peer{
			ID:        pi.Peer.String(),
			Addrs:     addrStrings(pi.Addrs),
			Connected: pi.Connected,
			Relayed:   pi.Relayed,
			Verified:  pi.Verified,
			Provider:  providerState(pi),
			Trust:     s.deps.Trust.Trust(pi.Peer),
			Skills:    capStrings(pi.Skills),
			Load:      loadOf(pi.Load),
			LastSeen:  pi.LastSeen,
			Access:    acc.of(pi.Peer),
		})
		circuits.fill(&out[len(out)-1], pi.Peer)
		seen.fill(&out[len(out)-1], pi.Peer, pi.LastSeen)
		s.fillAdmission(&out[len(out)-1], pi.Peer)
	}
	for p := range acc.deny {
		if !listed[p] {
			out = append(out, apiv1.Peer{ID: p.String(), Addrs: []string{}, Skills: []string{},
				Trust: s.deps.Trust.Trust(p), Access: apiv1.AccessDenied})
			circuits.fill(&out[len(out)-1], p)
			seen.fill(&out[len(out)-1], p, time.Time{})
			s.fillAdmission(&out[len(out)-1], p)
		}
	}
	slices.SortFunc(out, func(a, b apiv1.Peer) int { return cmp.Compare(a.ID, b.ID) })
	writeJSON(w, http.StatusOK, out)
}

// breakerLister is what Deps.Tasks implements when it keeps per-peer
// circuit breakers; *skill.DelegationCoordinator does.
type breakerLister interface {
	Breakers() []skill.BreakerState
}

// circuitMap holds the peers whose breaker is not plainly closed.
type circuitMap map[peer.ID]skill.BreakerState

func (s *Server) circuits() circuitMap {
	bl, ok := s.deps.Tasks.(breakerLister)
	if !ok {
		return nil
	}
	st := bl.Breakers()
	m := make(circuitMap, len(st))
	for _, b := range st {
		m[b.Peer] = b
	}
	return m
}

// fill sets the circuit fields of out for p; a peer without a breaker
// entry is closed.
func (m circuitMap) fill(out *apiv1.Peer, p peer.ID) {
	b := m[p]
	out.Circuit, out.CircuitFailures = b.State.String(), b.Failures
}

// access is one snapshot of the allow and deny lists.
type access struct {
	allow, deny map[peer.ID]struct{}
}

func (s *Server) accessLists() access {
	if s.deps.Gate == nil {
		return access{}
	}
	allow, deny := s.deps.Gate.AccessLists()
	a := access{allow: make(map[peer.ID]struct{}, len(allow)), deny: make(map[peer.ID]struct{}, len(deny))}
	for _, p := range allow {
		a.allow[p] = struct{}{}
	}
	for _, p := range deny {
		a.deny[p] = struct{}{}
	}
	return a
}

// of returns p's access, as apiv1.Peer.Access reports it.
func (a access) of(p peer.ID) string {
	if _, ok := a.deny[p]; ok {
		return apiv1.AccessDenied
	}
	if _, ok := a.allow[p]; !ok && len(a.allow) > 0 {
		return apiv1.AccessNotAllowed
	}
	return apiv1.AccessAllowed
}

// denyPeer answers POST /v1/peers/{peer}/deny: the node closes its
// connections to the peer and refuses new ones until it is allowed again
// or the daemon restarts.
func (s *Server) denyPeer(w http.ResponseWriter, r *http.Request) {
	s.changeAccess(w, r, s.deps.Gate.DenyPeer)
}

// allowPeer answers POST /v1/peers/{peer}/allow: it undoes a deny and, on
// a node with an allow list, adds the peer to it, until the daemon
// restarts.
func (s *Server) allowPeer(w http.ResponseWriter, r *http.Request) {
	s.changeAccess(w, r, s.deps.Gate.AllowPeer)
}

func (s *Server) changeAccess(w http.ResponseWriter, r *http.Request, change func(peer.ID) error) {
	p, err := peer.Decode(r.PathValue("peer"))
	if err != nil {
		s.writeError(w, r, badRequest("%.80q is not a peer ID (such as 12D3KooW..., as `cortexd peers` lists them): %v", r.PathValue("peer"), err))
		return
	}
	if err := change(p); err != nil {
		if errors.Is(err, grid.ErrSelfDenied) {
			err = badRequest("%s is this node's own peer ID: a node cannot deny itself", p)
		}
		s.writeError(w, r, err)
		return
	}
	acc := s.accessLists()
	s.log.Info("peer access changed through the API", "peer", p, "access", acc.of(p))
	writeJSON(w, http.StatusOK, apiv1.PeerAccess{Peer: p.String(), Access: acc.of(p), AllowList: len(acc.allow) > 0})
}

// providerState is apiv1.Peer.Provider for pi.
func providerState(pi grid.PeerInfo) string {
	switch {
	case len(pi.Skills) == 0:
		return ""
	case pi.Verified:
		return apiv1.ProviderVerified
	case pi.Candidate:
		return apiv1.ProviderCandidate
	default:
		return apiv1.ProviderRefused
	}
}
