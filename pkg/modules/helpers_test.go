package modules

import (
	"context"
	"os"
	"sync/atomic"
	"testing"

	"github.com/libp2p/go-libp2p/core/host"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// echoModule is the hand-written WASI echo command of pkg/wasm's tests.
func echoModule(t testing.TB) []byte {
	t.Helper()
	b, err := os.ReadFile("testdata/echo.wasm")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// padded returns module with a custom section of n bytes appended: a
// different, still valid module of about the size wanted.
func padded(module []byte, n int) []byte {
	name := []byte{3, 'p', 'a', 'd'}
	body := append(append([]byte{}, name...), make([]byte, n)...)
	out := append(append([]byte{}, module...), 0)
	for v := uint64(len(body)); ; {
		c := byte(v & 0x7f)
		v >>= 7
		if v != 0 {
			out = append(out, c|0x80)
			continue
		}
		out = append(out, c)
		break
	}
	return append(out, body...)
}

func manifestOf(name string, module []byte) wasm.Manifest {
	return wasm.Manifest{Name: reputation.SkillID(name), Version: "1.0.0", Module: wasm.ModuleIDOf(module), Deterministic: true}
}

// twoHosts returns two connected in-memory hosts.
func twoHosts(t testing.TB) (host.Host, host.Host) {
	t.Helper()
	mn, err := mocknet.FullMeshConnected(2)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mn.Close() })
	hs := mn.Hosts()
	return hs[0], hs[1]
}

func newEngine(t testing.TB) *wasm.Engine {
	t.Helper()
	e, err := wasm.NewEngine("", wasm.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close(context.Background()) })
	return e
}

// installed returns a Store in a temporary directory holding module as
// skill name.
func installed(t testing.TB, e *wasm.Engine, name string, module []byte) *wasm.Store {
	t.Helper()
	s, err := wasm.OpenStore(t.TempDir(), e.Options().MaxModule)
	if err != nil {
		t.Fatal(err)
	}
	p, err := wasm.Install(context.Background(), e, s, manifestOf(name, module), module)
	if err != nil {
		t.Fatal(err)
	}
	_ = p.Close(context.Background())
	return s
}

func startServer(t testing.TB, h host.Host, src Source, opts ServerOptions) *Server {
	t.Helper()
	s, err := NewServer(h, src, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// countingSource counts the modules it serves.
type countingSource struct {
	Source
	n atomic.Int32
}

func (c *countingSource) Module(id wasm.ModuleID) ([]byte, []byte, bool) {
	c.n.Add(1)
	return c.Source.Module(id)
}

// lyingSource answers every request with the same manifest and module,
// whatever was asked.
type lyingSource struct{ man, mod []byte }

func (l lyingSource) Module(wasm.ModuleID) ([]byte, []byte, bool) { return l.man, l.mod, true }
