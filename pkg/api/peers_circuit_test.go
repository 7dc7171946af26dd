package api_test

import "testing"

func TestAPIPeersShowTheirCircuitBreaker(t *testing.T) {
	e := newEngine(t)
	h := server(t, e).Handler()
	other := connectedPeer(t, e)
	p, ok := peerEntry(t, h, other.ID())
	if !ok {
		t.Fatal("the connected peer is not listed")
	}
	if p.Circuit != "closed" || p.CircuitFailures != 0 {
		t.Errorf("circuit = %q with %d failures; want closed with none for a peer that never failed", p.Circuit, p.CircuitFailures)
	}
}
