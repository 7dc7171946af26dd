package modules

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	mocknet "github.com/libp2p/go-libp2p/p2p/net/mock"

	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/wasm"
	"github.com/cortexgrid/cortexd/pkg/wire"
)

func TestFetchGetsAnInstalledModuleAndItsManifest(t *testing.T) {
	e := newEngine(t)
	mod := echoModule(t)
	srv, cli := twoHosts(t)
	startServer(t, srv, Local{Store: installed(t, e, "text.echo", mod)}, ServerOptions{})
	m, got, err := Fetch(context.Background(), cli, srv.ID(), wasm.ModuleIDOf(mod), FetchOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, mod) || m.Name != "text.echo" || m.Module != wasm.ModuleIDOf(mod) {
		t.Fatalf("fetched %d bytes, manifest %+v; want the installed echo module", len(got), m)
	}
}

func TestFetchOfAModuleNotServedIsNotFound(t *testing.T) {
	e := newEngine(t)
	srv, cli := twoHosts(t)
	startServer(t, srv, Local{Store: installed(t, e, "text.echo", echoModule(t))}, ServerOptions{})
	_, _, err := Fetch(context.Background(), cli, srv.ID(), wasm.ModuleIDOf([]byte("other")), FetchOptions{})
	var se *StatusError
	if !errors.Is(err, ErrNotFound) || !errors.As(err, &se) || se.Status != StatusNotFound {
		t.Fatalf("fetch of an unknown hash: %v; want ErrNotFound", err)
	}
}

func TestAModuleFromALyingServerIsRefusedAndNotStored(t *testing.T) {
	e := newEngine(t)
	srv, cli := twoHosts(t)
	asked := padded(echoModule(t), 16)
	sent := echoModule(t)
	man, _ := json.Marshal(manifestOf("text.echo", asked)) // the manifest even names the hash asked for
	startServer(t, srv, lyingSource{man: man, mod: sent}, ServerOptions{})

	_, _, err := Fetch(context.Background(), cli, srv.ID(), wasm.ModuleIDOf(asked), FetchOptions{})
	if !errors.Is(err, wasm.ErrHashMismatch) {
		t.Fatalf("fetch from a server sending other bytes: %v; want ErrHashMismatch", err)
	}

	cache, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	reg := skill.NewRegistry()
	f, err := NewFetcher(cli, e, cache, reg, Options{Mode: ModeAny})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	err = f.FetchModule(context.Background(), srv.ID(), "text.echo", "", wasm.ModuleIDOf(asked))
	if !errors.Is(err, wasm.ErrHashMismatch) {
		t.Fatalf("FetchModule from a lying server: %v; want ErrHashMismatch", err)
	}
	if cache.Len() != 0 || reg.Has("text.echo") {
		t.Fatalf("after a refused module: %d cached, registered %v; want nothing kept", cache.Len(), reg.Has("text.echo"))
	}
}

func TestAResponseOverTheCapIsRefusedBeforeItsBodyIsRead(t *testing.T) {
	srv, cli := twoHosts(t)
	release := make(chan struct{})
	defer close(release)
	srv.SetStreamHandler(ProtocolModule, func(s network.Stream) {
		// Declare a 1 GiB frame, send nothing of it, and hold the stream
		// open: a reader that waited for the body would hang.
		_, _ = wire.NewReader(s, maxRequestFrame).ReadFrame()
		_, _ = s.Write(binary.AppendUvarint(nil, 1<<30))
		<-release
		_ = s.Reset()
	})
	start := time.Now()
	_, _, err := Fetch(context.Background(), cli, srv.ID(), wasm.ModuleIDOf([]byte("x")), FetchOptions{MaxModule: 1 << 20})
	if !errors.Is(err, wire.ErrMessageTooLarge) {
		t.Fatalf("fetch of a 1 GiB response: %v; want ErrMessageTooLarge", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("refusing took %s: the body was waited for", d)
	}
}

func TestAModuleOverTheFetchersCapIsRefused(t *testing.T) {
	e := newEngine(t)
	srv, cli := twoHosts(t)
	big := padded(echoModule(t), 200<<10)
	startServer(t, srv, Local{Store: installed(t, e, "text.big", big)}, ServerOptions{})
	_, _, err := Fetch(context.Background(), cli, srv.ID(), wasm.ModuleIDOf(big), FetchOptions{MaxModule: 64 << 10})
	if !errors.Is(err, wire.ErrMessageTooLarge) && !errors.Is(err, ErrMalformed) {
		t.Fatalf("fetch of a 200 KiB module with a 64 KiB cap: %v; want it refused as too large", err)
	}
}

func TestTheServerLimitsEachPeersFetchRate(t *testing.T) {
	e := newEngine(t)
	mod := echoModule(t)
	srv, cli := twoHosts(t)
	startServer(t, srv, Local{Store: installed(t, e, "text.echo", mod)}, ServerOptions{Rate: 0.01, Burst: 2})
	id := wasm.ModuleIDOf(mod)
	for i := range 2 {
		if _, _, err := Fetch(context.Background(), cli, srv.ID(), id, FetchOptions{}); err != nil {
			t.Fatalf("fetch %d within the burst: %v", i+1, err)
		}
	}
	_, _, err := Fetch(context.Background(), cli, srv.ID(), id, FetchOptions{})
	var se *StatusError
	if !errors.Is(err, ErrRefused) || !errors.As(err, &se) || se.Status != StatusRateLimited || se.RetryAfter <= 0 {
		t.Fatalf("third fetch past a burst of 2: %v; want rate limited with a retry hint", err)
	}
}

func TestConcurrentTasksForOneModuleShareOneFetch(t *testing.T) {
	e := newEngine(t)
	mod := echoModule(t)
	srv, cli := twoHosts(t)
	src := &countingSource{Source: Local{Store: installed(t, e, "text.echo", mod)}}
	startServer(t, srv, src, ServerOptions{Burst: 100})
	cache, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	reg := skill.NewRegistry()
	f, err := NewFetcher(cli, newEngine(t), cache, reg, Options{Mode: ModeAny})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	var wg sync.WaitGroup
	errs := make([]error, 8)
	for i := range errs {
		wg.Go(func() {
			errs[i] = f.FetchModule(context.Background(), srv.ID(), "text.echo", "1.0.0", wasm.ModuleIDOf(mod))
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("task %d: %v", i, err)
		}
	}
	if n := src.n.Load(); n != 1 {
		t.Fatalf("the server served %d fetches for 8 concurrent tasks; want 1", n)
	}
	out, err := reg.Lookup("text.echo", "1.0.0")
	if err != nil {
		t.Fatal(err)
	}
	got, err := out.Execute(context.Background(), skill.RawInput([]byte("hi")))
	if err != nil || string(got) != "hi" {
		t.Fatalf("the fetched skill ran to %q, %v; want hi", got, err)
	}
	if !cache.Has(wasm.ModuleIDOf(mod)) {
		t.Fatal("the fetched module is not in the cache")
	}
}

func TestTheFetchPolicyDecidesWhoseModulesAreFetched(t *testing.T) {
	a, b := peer.ID("peer-a"), peer.ID("peer-b")
	trust := func(p peer.ID) float64 {
		if p == a {
			return 0.8
		}
		return 0.2
	}
	cases := []struct {
		name string
		opts Options
		from peer.ID
		ok   bool
	}{
		{"off fetches from nobody", Options{Mode: ModeOff}, a, false},
		{"any fetches from a stranger", Options{Mode: ModeAny}, b, true},
		{"trusted fetches from a peer at the threshold", Options{Mode: ModeTrusted, MinTrust: 0.8, Trust: trust}, a, true},
		{"trusted does not fetch from a peer below it", Options{Mode: ModeTrusted, MinTrust: 0.5, Trust: trust}, b, false},
	}
	srv, _ := twoHosts(t)
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cache, err := OpenCache(t.TempDir(), 0)
			if err != nil {
				t.Fatal(err)
			}
			f, err := NewFetcher(srv, newEngine(t), cache, skill.NewRegistry(), tc.opts)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			err = f.CanFetch(tc.from)
			if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrNotAllowed)) {
				t.Fatalf("CanFetch = %v; want allowed %v", err, tc.ok)
			}
		})
	}
}

func TestCacheKeepsItsBudgetLeastRecentlyUsedOutFirst(t *testing.T) {
	dir := t.TempDir()
	mods := [][]byte{padded(echoModule(t), 1000), padded(echoModule(t), 1001), padded(echoModule(t), 1002)}
	budget := int64(len(mods[0]) + len(mods[1]) + 10) // two fit, not three
	c, err := OpenCache(dir, budget)
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range mods[:2] {
		if err := c.Put(manifestOf("text.echo", m), m); err != nil {
			t.Fatal(err)
		}
	}
	if _, _, err := c.Get(wasm.ModuleIDOf(mods[0])); err != nil { // 0 is now the most recent
		t.Fatal(err)
	}
	if err := c.Put(manifestOf("text.echo", mods[2]), mods[2]); err != nil {
		t.Fatal(err)
	}
	want := map[int]bool{0: true, 1: false, 2: true}
	check := func(c *Cache, when string) {
		t.Helper()
		for i, keep := range want {
			if c.Has(wasm.ModuleIDOf(mods[i])) != keep {
				t.Fatalf("%s: module %d cached %v, want %v", when, i, !keep, keep)
			}
		}
		if c.Bytes() > budget {
			t.Fatalf("%s: %d bytes cached, over the budget of %d", when, c.Bytes(), budget)
		}
	}
	check(c, "after the third put")
	reopened, err := OpenCache(dir, budget)
	if err != nil {
		t.Fatal(err)
	}
	check(reopened, "after reopening")
	if err := c.Put(manifestOf("text.huge", padded(echoModule(t), int(budget))), padded(echoModule(t), int(budget))); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("put of a module over the whole budget: %v; want ErrTooLarge", err)
	}
}

func TestAModuleTheRequesterDoesNotServeIsFetchedFromAPeerAnnouncingIt(t *testing.T) {
	mn, err := mocknet.FullMeshConnected(3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = mn.Close() })
	hs := mn.Hosts()
	requester, holder, node := hs[0], hs[1], hs[2]
	e := newEngine(t)
	mod := echoModule(t)
	id := wasm.ModuleIDOf(mod)
	startServer(t, requester, Local{}, ServerOptions{}) // serves nothing
	startServer(t, holder, Local{Store: installed(t, e, "text.echo", mod)}, ServerOptions{})
	cache, err := OpenCache(t.TempDir(), 0)
	if err != nil {
		t.Fatal(err)
	}
	reg := skill.NewRegistry()
	f, err := NewFetcher(node, e, cache, reg, Options{Mode: ModeAny,
		Holders: func(h [32]byte) []peer.ID {
			if h == id {
				return []peer.ID{requester.ID(), holder.ID()}
			}
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = f.Close() })
	if err := f.FetchModule(context.Background(), requester.ID(), "text.echo", "", id); err != nil {
		t.Fatal(err)
	}
	if !reg.Has("text.echo") || !cache.Has(id) {
		t.Fatal("the module fetched from the holder is not registered and cached")
	}
}
