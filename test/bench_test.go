package test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"
	"github.com/libp2p/go-libp2p/p2p/muxer/yamux"
	"github.com/libp2p/go-libp2p/p2p/security/noise"
	"github.com/libp2p/go-libp2p/p2p/transport/tcp"
	"golang.org/x/time/rate"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// The task-path benchmarks: two hosts on loopback (TCP, Noise, yamux), a
// 200-byte input echoed back. The raw rows are the baselines the
// orchestrator rows are compared with, measured in the same run:
//
//	go test -run XXX -bench . -benchtime 3s -benchmem ./test/
//
// Latency rows report p50-us and p99-us; concurrent rows report req/s or
// tasks/s.

const echoProtocol protocol.ID = "/cortex/bench/echo/1.0.0"

// unlimitedRate is the default peer limits without the rate limit: the
// benchmarks measure the task path, not the limit.
var unlimitedRate = grid.FixedLimits{Rate: rate.Inf, MaxTasks: grid.DefaultMaxInFlightPerPeer, MaxBytes: grid.DefaultPeerMaxBytes}

const (
	benchInput   = 200
	benchCallers = 64
)

// echoHandler is a grid.TaskHandler whose reply returns the input.
type echoHandler struct{}

func (echoHandler) HandleTask(_ peer.ID, t *grid.RemoteTask, reply grid.Replier) error {
	reply.Reply(&grid.RemoteResult{ID: t.ID, Success: true, Output: t.Input})
	return nil
}

func (echoHandler) CancelTask(peer.ID, grid.TaskID) {}

// queuedEchoHandler echoes too, but the way an executor does: HandleTask
// only queues the task, and worker goroutines reply later, so that every
// task costs an accepting ack and a result on the wire.
type queuedEchoHandler struct {
	jobs chan queuedEcho
}

type queuedEcho struct {
	t     *grid.RemoteTask
	reply grid.Replier
}

func newQueuedEchoHandler(b *testing.B, workers int) *queuedEchoHandler {
	h := &queuedEchoHandler{jobs: make(chan queuedEcho, 4096)}
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for j := range h.jobs {
				j.reply.Reply(&grid.RemoteResult{ID: j.t.ID, Success: true, Output: j.t.Input})
			}
		})
	}
	b.Cleanup(func() { close(h.jobs); wg.Wait() })
	return h
}

func (h *queuedEchoHandler) HandleTask(_ peer.ID, t *grid.RemoteTask, reply grid.Replier) error {
	select {
	case h.jobs <- queuedEcho{t, reply}:
		return nil
	default:
		return &grid.RejectError{Reason: grid.RejectQueueFull}
	}
}

func (*queuedEchoHandler) CancelTask(peer.ID, grid.TaskID) {}

// serveRawEcho answers length-prefixed frames on s with the same frame
// until the stream ends.
func serveRawEcho(s network.Stream) {
	defer s.Close()
	br := bufio.NewReader(s)
	var buf []byte
	for {
		n, err := binary.ReadUvarint(br)
		if err != nil || n > 1<<20 {
			return
		}
		buf = binary.AppendUvarint(buf[:0], n)
		hdr := len(buf)
		buf = append(buf, make([]byte, n)...)
		if _, err := io.ReadFull(br, buf[hdr:]); err != nil {
			return
		}
		if _, err := s.Write(buf); err != nil {
			return
		}
	}
}

// rawClient does request/response echoes on one stream.
type rawClient struct {
	s   network.Stream
	br  *bufio.Reader
	req []byte
	buf []byte
}

func newRawClient(h host.Host, p peer.ID) (*rawClient, error) {
	s, err := h.NewStream(context.Background(), p, echoProtocol)
	if err != nil {
		return nil, fmt.Errorf("open echo stream: %w", err)
	}
	input := bytes.Repeat([]byte{'x'}, benchInput)
	return &rawClient{s: s, br: bufio.NewReaderSize(s, 512), req: append(binary.AppendUvarint(nil, benchInput), input...)}, nil
}

func (c *rawClient) echo() error {
	if _, err := c.s.Write(c.req); err != nil {
		return fmt.Errorf("write echo: %w", err)
	}
	n, err := binary.ReadUvarint(c.br)
	if err != nil {
		return fmt.Errorf("read echo length: %w", err)
	}
	if cap(c.buf) < int(n) {
		c.buf = make([]byte, n)
	}
	if _, err := io.ReadFull(c.br, c.buf[:n]); err != nil {
		return fmt.Errorf("read echo: %w", err)
	}
	if int(n) != benchInput {
		return fmt.Errorf("echo of %d bytes, want %d", n, benchInput)
	}
	return nil
}

// benchPair is a client and a server host with the raw echo protocol and
// an orchestrator (echo handler) on each side.
type benchPair struct {
	client, server   host.Host
	clientO, serverO *grid.Orchestrator
}

// newBenchPair builds a pair for one benchmark run, closed when it ends,
// whose server orchestrator runs tasks with th (echoHandler if nil).
func newBenchPair(b *testing.B, th grid.TaskHandler) *benchPair {
	b.Helper()
	if th == nil {
		th = echoHandler{}
	}
	p := &benchPair{client: benchHost(b), server: benchHost(b)}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.client.Connect(ctx, peer.AddrInfo{ID: p.server.ID(), Addrs: p.server.Addrs()}); err != nil {
		b.Fatalf("connect hosts: %v", err)
	}
	p.server.SetStreamHandler(echoProtocol, serveRawEcho)
	quiet := grid.WithOrchLogger(slog.New(slog.DiscardHandler))
	// The default per-peer rate limit (20k/s) is below what one client
	// reaches here; the benchmark measures the transport, not the limit.
	p.serverO = benchOrchestrator(b, p.server, th, quiet, grid.WithPeerPolicy(unlimitedRate))
	p.clientO = benchOrchestrator(b, p.client, nil, quiet)
	return p
}

// benchHost returns a host listening on 127.0.0.1 over TCP, Noise and
// yamux only, with a resource manager without limits (the stream-per-
// request row opens more streams per peer and protocol than the default
// limits allow).
func benchHost(b *testing.B) host.Host {
	b.Helper()
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(rcmgr.InfiniteLimits))
	if err != nil {
		b.Fatalf("new resource manager: %v", err)
	}
	h, err := libp2p.New(
		libp2p.ResourceManager(rm),
		libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"),
		libp2p.Transport(tcp.NewTCPTransport),
		libp2p.Security(noise.ID, noise.New),
		libp2p.Muxer(yamux.ID, yamux.DefaultTransport),
		libp2p.DisableRelay(),
	)
	if err != nil {
		b.Fatalf("new host: %v", err)
	}
	b.Cleanup(func() { _ = h.Close() })
	return h
}

func benchOrchestrator(b *testing.B, h host.Host, th grid.TaskHandler, opts ...grid.OrchestratorOption) *grid.Orchestrator {
	b.Helper()
	o, err := grid.NewOrchestrator(h, th, opts...)
	if err == nil {
		err = o.Start(context.Background())
	}
	if err != nil {
		b.Fatalf("start orchestrator: %v", err)
	}
	b.Cleanup(func() { _ = o.Close() })
	return o
}

func (p *benchPair) task() *grid.RemoteTask {
	return &grid.RemoteTask{
		Skill:     "text.echo",
		Input:     bytes.Repeat([]byte{'x'}, benchInput),
		InputKind: grid.InputRaw,
		Priority:  128,
		Attempt:   1,
		Requester: p.client.ID(),
	}
}

func (p *benchPair) delegate(ctx context.Context, t *grid.RemoteTask) error {
	t.ID = grid.NewTaskID()
	t.Deadline = time.Now().Add(time.Minute)
	res, err := p.clientO.Delegate(ctx, p.server.ID(), t)
	if err != nil {
		return err
	}
	if !res.Success || len(res.Output) != benchInput {
		return fmt.Errorf("bad echo result: %+v", res)
	}
	return nil
}

// latency runs op serially and reports its p50 and p99 in microseconds.
func latency(b *testing.B, op func() error) { _, _ = latencyOf(b, op) }

// throughput runs op from benchCallers goroutines, each with the state
// newCaller gives it, and reports operations per second as unit.
func throughput(b *testing.B, unit string, newCaller func() func() error) {
	b.ReportAllocs()
	procs := runtime.GOMAXPROCS(0)
	b.SetParallelism((benchCallers + procs - 1) / procs) // goroutines = parallelism x GOMAXPROCS
	var mu sync.Mutex
	callers := make([]func() error, 0, benchCallers)
	b.ResetTimer()
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		mu.Lock()
		op := newCaller()
		callers = append(callers, op)
		mu.Unlock()
		for pb.Next() {
			if err := op(); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), unit)
	b.ReportMetric(float64(len(callers)), "callers")
}

func BenchmarkRawReusedStreamSerial(b *testing.B) {
	p := newBenchPair(b, nil)
	c, err := newRawClient(p.client, p.server.ID())
	if err != nil {
		b.Fatal(err)
	}
	defer c.s.Close()
	latency(b, c.echo)
}

func BenchmarkOrchestratorSerial(b *testing.B) {
	p := newBenchPair(b, nil)
	t, ctx := p.task(), context.Background()
	latency(b, func() error { return p.delegate(ctx, t) })
}

func BenchmarkRawReusedStream64(b *testing.B) {
	p := newBenchPair(b, nil)
	var mu sync.Mutex
	var streams []network.Stream
	defer func() {
		for _, s := range streams {
			_ = s.Close()
		}
	}()
	throughput(b, "req/s", func() func() error {
		c, err := newRawClient(p.client, p.server.ID())
		if err != nil {
			return func() error { return err }
		}
		mu.Lock()
		streams = append(streams, c.s)
		mu.Unlock()
		return c.echo
	})
}

func BenchmarkOrchestrator64(b *testing.B) {
	p := newBenchPair(b, nil)
	ctx := context.Background()
	throughput(b, "tasks/s", func() func() error {
		t := p.task()
		return func() error { return p.delegate(ctx, t) }
	})
}

// BenchmarkOrchestrator64Queued is BenchmarkOrchestrator64 with an
// executor-like handler (two workers behind a channel), so that each task
// sends an ack and, later, its result.
func BenchmarkOrchestrator64Queued(b *testing.B) {
	p := newBenchPair(b, newQueuedEchoHandler(b, 2))
	ctx := context.Background()
	throughput(b, "tasks/s", func() func() error {
		t := p.task()
		return func() error { return p.delegate(ctx, t) }
	})
}

func BenchmarkStreamPerRequest64(b *testing.B) {
	p := newBenchPair(b, nil)
	throughput(b, "req/s", func() func() error {
		return func() error {
			c, err := newRawClient(p.client, p.server.ID())
			if err != nil {
				return err
			}
			defer c.s.Close()
			return c.echo()
		}
	})
}
