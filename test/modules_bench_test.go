package test

import (
	"context"
	"testing"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/modules"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

func moduleBenchHost(b *testing.B) host.Host {
	b.Helper()
	h, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = h.Close() })
	return h
}

// BenchmarkFetchedModuleFirstRun measures the first task of a wasm skill
// on a node that lacks it: fetch the Go-built guest (~2.3 MB) from a
// peer over libp2p on loopback, verify its sha256 and manifest, compile
// it (no compilation cache), register it and run one task. Baselines in
// the same run: "already-there" runs one task of the skill compiled
// before the timer; "fetch-verify" is the transfer and checks alone.
//
//	go test -run XXX -bench FetchedModuleFirstRun -benchtime 5x ./test/
func BenchmarkFetchedModuleFirstRun(b *testing.B) {
	mod := wasmGuestModule(b)
	id := wasm.ModuleIDOf(mod)
	srvEngine, err := wasm.NewEngine("", wasm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srvEngine.Close(context.Background()) })
	st, ready := installGuest(b, srvEngine, "text.upper", "upper")
	srv, cli := moduleBenchHost(b), moduleBenchHost(b)
	server, err := modules.NewServer(srv, modules.Local{Store: st}, modules.ServerOptions{Rate: 1e6, Burst: 1e6, Logger: harnessLogger()})
	if err != nil {
		b.Fatal(err)
	}
	if err := server.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = server.Close() })
	if err := cli.Connect(context.Background(), peer.AddrInfo{ID: srv.ID(), Addrs: srv.Addrs()}); err != nil {
		b.Fatal(err)
	}
	input := skill.RawInput([]byte("hello"))
	run := func(b *testing.B, s skill.Skill) {
		if out, err := s.Execute(context.Background(), input); err != nil || string(out) != "HELLO" {
			b.Fatalf("run: %q, %v", out, err)
		}
	}
	b.Run("already-there", func(b *testing.B) {
		for b.Loop() {
			run(b, ready)
		}
	})
	b.Run("fetch-verify", func(b *testing.B) {
		b.SetBytes(int64(len(mod)))
		for b.Loop() {
			if _, _, err := modules.Fetch(context.Background(), cli, srv.ID(), id, modules.FetchOptions{}); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("fetch-verify-compile-run", func(b *testing.B) {
		b.SetBytes(int64(len(mod)))
		for b.Loop() {
			firstRun(b, cli, srv.ID(), id, run)
		}
	})
}

// firstRun is one node's first task of the skill: a fresh engine, cache
// and registry, so nothing is compiled or stored yet.
func firstRun(b *testing.B, h host.Host, from peer.ID, id wasm.ModuleID, run func(*testing.B, skill.Skill)) {
	e, err := wasm.NewEngine("", wasm.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer e.Close(context.Background())
	cache, err := modules.OpenCache(b.TempDir(), 0)
	if err != nil {
		b.Fatal(err)
	}
	reg := skill.NewRegistry()
	f, err := modules.NewFetcher(h, e, cache, reg, modules.Options{Mode: modules.ModeAny, Logger: harnessLogger()})
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := f.FetchModule(context.Background(), from, "text.upper", "", id); err != nil {
		b.Fatal(err)
	}
	s, err := reg.Lookup("text.upper", "")
	if err != nil {
		b.Fatal(err)
	}
	run(b, s)
}
