package api_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/p2p/protocol/identify"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
)

// connectedPeer starts a second node that bootstraps from e's node, and
// returns it once the two are connected.
func connectedPeer(t testing.TB, e *apitest.Engine) *grid.Node {
	t.Helper()
	key, err := grid.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	n, err := grid.NewNode(key, grid.WithListenAddrs("/ip4/127.0.0.1/tcp/0"), grid.WithMDNS(false),
		grid.WithBootstrapPeers(peer.AddrInfo{ID: e.Node.ID(), Addrs: e.Node.Host().Addrs()}),
		grid.WithNodeLogger(slog.New(slog.DiscardHandler)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Start(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.Close() })
	// Start returns once the bootstrap dial succeeded; the first node may
	// see the connection a moment later.
	for e.Node.Host().Network().Connectedness(n.ID()) != network.Connected {
		if ctx.Err() != nil {
			t.Fatal("the second node did not connect to the first within 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
	return n
}

func peerEntry(t testing.TB, h http.Handler, id peer.ID) (apiv1.Peer, bool) {
	t.Helper()
	a := request(t, h, "GET", "/v1/peers", "")
	var peers []apiv1.Peer
	if a.status != 200 || json.Unmarshal(a.body, &peers) != nil {
		t.Fatalf("GET /v1/peers: %d %s", a.status, a.body)
	}
	for _, p := range peers {
		if p.ID == id.String() {
			return p, true
		}
	}
	return apiv1.Peer{}, false
}

func TestAPIDenyAndAllowAPeer(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()
	other := connectedPeer(t, e)
	id := other.ID()
	// dial connects the other node to the engine's and opens a stream, so
	// that the engine's side must have accepted the connection.
	dial := func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ctx = network.WithForceDirectDial(ctx, "test")
		if err := other.Host().Connect(ctx, peer.AddrInfo{ID: e.Node.ID(), Addrs: e.Node.Host().Addrs()}); err != nil {
			return err
		}
		s, err := other.Host().NewStream(ctx, e.Node.ID(), identify.ID)
		if err != nil {
			return err
		}
		return s.Close()
	}

	a := request(t, h, "POST", "/v1/peers/"+id.String()+"/deny", "")
	var acc apiv1.PeerAccess
	if a.status != 200 || json.Unmarshal(a.body, &acc) != nil || acc.Peer != id.String() || acc.Access != apiv1.AccessDenied || acc.AllowList {
		t.Fatalf("deny: %d %s", a.status, a.body)
	}
	if c := e.Node.Host().Network().Connectedness(id); c == network.Connected {
		t.Error("the denied peer is still connected")
	}
	if e.Node.PeerAllowed(id) {
		t.Error("the node still allows the denied peer")
	}
	if err := dial(); err == nil {
		t.Error("the denied peer connected again and opened a stream")
	}
	if p, ok := peerEntry(t, h, id); !ok || p.Access != apiv1.AccessDenied || p.Connected {
		t.Errorf("GET /v1/peers lists the denied peer as %+v (listed: %v), want denied and not connected", p, ok)
	}
	unseen, err := peer.Decode("12D3KooWJpPHJ3gu91QYVxBVfGWa7nGF3Qz3Q6zScHkpfrBCiAai")
	if err != nil {
		t.Fatal(err)
	}
	if a := request(t, h, "POST", "/v1/peers/"+unseen.String()+"/deny", ""); a.status != 200 {
		t.Fatalf("deny a peer never seen: %d %s", a.status, a.body)
	}
	if p, ok := peerEntry(t, h, unseen); !ok || p.Access != apiv1.AccessDenied {
		t.Errorf("a denied peer the node never saw is listed as %+v (listed: %v), want denied", p, ok)
	}

	a = request(t, h, "POST", "/v1/peers/"+id.String()+"/allow", "")
	if a.status != 200 || json.Unmarshal(a.body, &acc) != nil || acc.Access != apiv1.AccessAllowed {
		t.Fatalf("allow: %d %s", a.status, a.body)
	}
	// The other node may still hold the connection the engine closed, or
	// back off from the engine after the refused dial: retry for a while.
	deadline := time.Now().Add(10 * time.Second)
	for err := dial(); err != nil; err = dial() {
		if time.Now().After(deadline) {
			t.Fatalf("the allowed peer cannot connect: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if p, ok := peerEntry(t, h, id); ok && p.Access != apiv1.AccessAllowed {
		t.Errorf("the allowed peer is listed as %+v", p)
	}

	for _, tc := range []struct {
		name, path string
		status     int
		code       string
	}{
		{"a malformed peer ID is a 400", "/v1/peers/nope/deny", 400, apiv1.CodeInvalidRequest},
		{"denying the node itself is a 400", "/v1/peers/" + e.Node.ID().String() + "/deny", 400, apiv1.CodeInvalidRequest},
		{"a GET of the deny endpoint is a 405", "/v1/peers/" + id.String() + "/deny", 405, "method_not_allowed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			method := "POST"
			if tc.status == 405 {
				method = "GET"
			}
			a := request(t, h, method, tc.path, "")
			if a.status != tc.status || a.errorCode(t) != tc.code {
				t.Errorf("%s %s: %d %s, want %d %s", method, tc.path, a.status, a.body, tc.status, tc.code)
			}
		})
	}
}

// hiddenGate is a Network that is not a PeerGate.
type hiddenGate struct{ api.Network }

func TestAPIWithoutGateHasNoAccessEndpoints(t *testing.T) {
	e := newEngine(t)
	deps := e.Deps()
	deps.Node, deps.Gate = hiddenGate{e.Node}, nil
	s, err := api.New(deps)
	if err != nil {
		t.Fatal(err)
	}
	if a := request(t, s.Handler(), "POST", "/v1/peers/"+e.Node.ID().String()+"/deny", ""); a.status != 404 {
		t.Errorf("deny without a gate: %d %s, want 404", a.status, a.body)
	}
}

func TestAPIUnknownSkillMessage(t *testing.T) {
	h := server(t, newEngine(t)).Handler()
	a := request(t, h, "POST", "/v1/tasks", `{"skill":"nope.skill"}`)
	var eb apiv1.ErrorBody
	if err := json.Unmarshal(a.body, &eb); err != nil {
		t.Fatal(err)
	}
	if want := `unknown skill "nope.skill": no node on the grid offers it`; a.status != 404 || eb.Error.Code != apiv1.CodeUnknownSkill || eb.Error.Message != want {
		t.Errorf("submit of an unknown skill: %d %+v, want 404 unknown_skill %q", a.status, eb.Error, want)
	}
}
