package test

import (
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/multiformats/go-multiaddr"
	manet "github.com/multiformats/go-multiaddr/net"
)

// blackholeProxy is a TCP proxy on loopback that forwards every connection
// it accepts to one target address, and that can cut the path off without
// closing anything: while it is blackholed, no byte moves in either
// direction, and both ends see a connection that is up but silent, as
// across a network partition. Bytes the ends write meanwhile wait in the
// proxy (one buffer per direction) and in the kernel's socket buffers, and
// are delivered in order once it heals, as TCP retransmission would after a
// real partition. Its methods are safe for concurrent use.
type blackholeProxy struct {
	ln     net.Listener
	target string

	// flow is held for writing while blackholed: every forwarding write
	// holds it for reading, so Blackhole returns only once no write is
	// under way, and none starts until Heal.
	flow sync.RWMutex

	mu      sync.Mutex
	holed   bool
	closed  bool
	conns   map[net.Conn]struct{}
	wg      sync.WaitGroup
	accepts atomic.Int64 // connections accepted
	moved   atomic.Int64 // bytes forwarded, both directions
}

// newBlackholeProxy starts a proxy to target (host:port) on 127.0.0.1; it
// is closed at cleanup.
func newBlackholeProxy(t testing.TB, target string) *blackholeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("proxy listen: %v", err)
	}
	p := &blackholeProxy{ln: ln, target: target, conns: make(map[net.Conn]struct{})}
	p.wg.Add(1)
	go p.acceptLoop()
	t.Cleanup(p.Close)
	return p
}

// Multiaddr is the proxy's listen address as a TCP multiaddr.
func (p *blackholeProxy) Multiaddr() multiaddr.Multiaddr {
	ma, err := manet.FromNetAddr(p.ln.Addr())
	if err != nil {
		panic(fmt.Sprintf("proxy address %v: %v", p.ln.Addr(), err)) // a TCP address always converts
	}
	return ma
}

// Accepted is the number of connections the proxy has accepted.
func (p *blackholeProxy) Accepted() int64 { return p.accepts.Load() }

// Forwarded is the number of bytes the proxy has forwarded.
func (p *blackholeProxy) Forwarded() int64 { return p.moved.Load() }

// Blackhole stops forwarding in both directions, without closing any
// connection. When it returns, no forwarding write is under way.
func (p *blackholeProxy) Blackhole() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holed || p.closed {
		return
	}
	p.holed = true
	p.flow.Lock()
}

// Heal resumes forwarding, starting with what was held.
func (p *blackholeProxy) Heal() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.holed {
		p.holed = false
		p.flow.Unlock()
	}
}

// Close stops accepting, closes every proxied connection and waits for the
// proxy's goroutines. It is idempotent.
func (p *blackholeProxy) Close() {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.closed = true
	if p.holed {
		p.holed = false
		p.flow.Unlock()
	}
	_ = p.ln.Close()
	for c := range p.conns {
		_ = c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

func (p *blackholeProxy) acceptLoop() {
	defer p.wg.Done()
	for {
		in, err := p.ln.Accept()
		if err != nil {
			return // closed
		}
		p.accepts.Add(1)
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			_ = in.Close()
			continue
		}
		if !p.track(in, out) {
			return
		}
		p.wg.Add(2)
		go p.pipe(out, in)
		go p.pipe(in, out)
	}
}

// track records a proxied pair so that Close can close it; it reports
// false, having closed both, if the proxy is closed.
func (p *blackholeProxy) track(cs ...net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		for _, c := range cs {
			_ = c.Close()
		}
		return false
	}
	for _, c := range cs {
		p.conns[c] = struct{}{}
	}
	return true
}

// pipe copies src to dst, each write waiting while the proxy is
// blackholed. When either side fails, both are closed, as the far end of
// a closed TCP connection would see.
func (p *blackholeProxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	defer func() {
		_ = src.Close()
		_ = dst.Close()
		p.mu.Lock()
		delete(p.conns, src)
		delete(p.conns, dst)
		p.mu.Unlock()
	}()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.flow.RLock()
			_, werr := dst.Write(buf[:n])
			p.flow.RUnlock()
			if werr != nil {
				return
			}
			p.moved.Add(int64(n))
		}
		if err != nil {
			return // EOF, a reset or Close: the other side goes too
		}
	}
}
