package config

import (
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// MaxTaskTimeout is the longest task timeout: the task protocol refuses
// deadlines more than a day ahead.
const MaxTaskTimeout = 24 * time.Hour

// ParsePeerIDs decodes a list of peer IDs, such as network.deny_peers.
// The error names the entry by key and index.
func ParsePeerIDs(key string, ss []string) ([]peer.ID, error) {
	out := make([]peer.ID, 0, len(ss))
	for i, s := range ss {
		id, err := parsePeerID(s)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
		}
		out = append(out, id)
	}
	return out, nil
}

func parsePeerID(s string) (peer.ID, error) {
	id, err := peer.Decode(s)
	if err != nil {
		return "", fmt.Errorf("%q is not a peer ID (such as 12D3KooW..., as `cortexd id` prints it): %v", s, err)
	}
	return id, nil
}

// validateAccess checks network.allow_peers, network.deny_peers and what
// they and network.swarm_key_file imply for the other network keys.
func (c *Config) validateAccess(p *problems) {
	n := c.Network
	peerSet := func(key string, ss []string) map[peer.ID]int {
		m := make(map[peer.ID]int, len(ss))
		for i, s := range ss {
			id, err := parsePeerID(s)
			if err != nil {
				p.add(fmt.Sprintf("%s[%d]", key, i), "%v", err)
				continue
			}
			m[id] = i
		}
		return m
	}
	allow := peerSet("network.allow_peers", n.AllowPeers)
	deny := peerSet("network.deny_peers", n.DenyPeers)
	for i, s := range n.DenyPeers {
		id, err := peer.Decode(s)
		if j, ok := allow[id]; ok && err == nil {
			p.add(fmt.Sprintf("network.deny_peers[%d]", i), "peer %s is also network.allow_peers[%d]: remove it from one of the lists", id, j)
		}
	}
	for i, s := range n.BootstrapPeers {
		ai, err := ParsePeerAddr(s)
		if err != nil {
			continue // reported already
		}
		key := fmt.Sprintf("network.bootstrap_peers[%d]", i)
		if j, ok := deny[ai.ID]; ok {
			p.add(key, "peer %s is network.deny_peers[%d]: a node cannot bootstrap from a peer it denies", ai.ID, j)
		} else if _, ok := allow[ai.ID]; !ok && len(allow) > 0 {
			p.add("network.allow_peers", "does not list bootstrap peer %s (%s): with an allow list, every bootstrap peer must be on it", ai.ID, key)
		}
		if n.SwarmKeyFile != "" && onlyQUIC(ai.Addrs) {
			p.add(key, "has only QUIC addresses, which a private network (network.swarm_key_file) cannot use: give its /tcp address")
		}
	}
	if n.SwarmKeyFile != "" {
		var tcp bool
		for _, s := range n.ListenAddrs {
			if a, err := multiaddr.NewMultiaddr(s); err == nil && !isQUIC(a) {
				tcp = true
			}
		}
		if !tcp && len(n.ListenAddrs) > 0 {
			p.add("network.listen_addrs", "lists only QUIC addresses, and a private network (network.swarm_key_file) uses TCP only: add a /tcp address")
		}
	}
}

func onlyQUIC(as []multiaddr.Multiaddr) bool {
	for _, a := range as {
		if !isQUIC(a) {
			return false
		}
	}
	return len(as) > 0
}

// isQUIC reports whether a runs over QUIC, which libp2p cannot combine
// with a pre-shared key.
func isQUIC(a multiaddr.Multiaddr) bool {
	for _, pr := range a.Protocols() {
		switch pr.Code {
		case multiaddr.P_QUIC, multiaddr.P_QUIC_V1, multiaddr.P_WEBTRANSPORT:
			return true
		}
	}
	return false
}
