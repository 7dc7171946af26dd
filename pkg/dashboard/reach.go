package dashboard

import (
	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// reachability is what this node's addresses say about who can reach it.
type reachability struct {
	Summary string
	Addrs   []reachAddr
}

type reachAddr struct {
	Addr, Kind string
}

// reachOf classifies the node's listen and observed addresses. The node
// does not report AutoNAT's verdict through the API, so this is what the
// addresses alone tell: a public address may still be firewalled.
func reachOf(addrs []string) reachability {
	var r reachability
	kinds := map[string]int{}
	for _, s := range addrs {
		kind := "unparsable"
		if a, err := multiaddr.NewMultiaddr(s); err == nil {
			switch {
			case isRelayed(a):
				kind = "relayed"
			case manet.IsIPLoopback(a):
				kind = "loopback"
			case manet.IsPrivateAddr(a):
				kind = "private"
			case manet.IsPublicAddr(a):
				kind = "public"
			default:
				kind = "other"
			}
		}
		kinds[kind]++
		r.Addrs = append(r.Addrs, reachAddr{s, kind})
	}
	switch {
	case kinds["public"] > 0:
		r.Summary = "public addresses: peers anywhere may dial it (unless a firewall stops them)"
	case kinds["relayed"] > 0:
		r.Summary = "reachable through a relay only"
	case kinds["private"] > 0:
		r.Summary = "private addresses only: peers on its networks can dial it; beyond a NAT only it can dial out"
	case kinds["loopback"] > 0:
		r.Summary = "loopback only: only nodes on this machine can reach it"
	default:
		r.Summary = "no addresses: it cannot be dialed"
	}
	return r
}

func isRelayed(a multiaddr.Multiaddr) bool {
	_, err := a.ValueForProtocol(multiaddr.P_CIRCUIT)
	return err == nil
}
