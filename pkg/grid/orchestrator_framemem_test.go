package grid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p"
	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"
	"github.com/libp2p/go-libp2p/core/peer"
	rcmgr "github.com/libp2p/go-libp2p/p2p/host/resource-manager"

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// slowFrame writes, on s, the length prefix of a frame of size bytes and
// then all of its body but the last KiB, in 64 KiB pieces a few
// milliseconds apart, as a peer on a slow link would. It stops at the
// first write error (the executor reset the stream).
func slowFrame(s network.Stream, size int) {
	if _, err := s.Write(binary.AppendUvarint(nil, uint64(size))); err != nil {
		return
	}
	piece := bytes.Repeat([]byte{0x0a}, 64<<10)
	for sent := 0; sent+len(piece) <= size-1<<10; sent += len(piece) {
		if _, err := s.Write(piece); err != nil {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestOrchestratorFramesArrivingCountAgainstTheNodeBudget has 4 identities
// open 8 task streams each and send 2 MiB of real bytes of a large frame
// on each, slowly, to a node whose byte budget is 1 MiB. The frames still
// arriving are charged to the budget: the executor's heap grows by at most
// the budget and some slack, not by the 64 MiB that arrived, the streams
// over the budget are reset, and once the flood is gone a task runs again.
func TestOrchestratorFramesArrivingCountAgainstTheNodeBudget(t *testing.T) {
	const (
		identities = 4
		perPeer    = 8
		frameSize  = 2 << 20
		budget     = 1 << 20
		slack      = 12 << 20
	)
	p := newOrchPair(t, WithNodeByteBudget(budget))
	hosts := make([]host.Host, identities)
	for i := range hosts {
		hosts[i] = newOrchHost(t)
		connectOrchHosts(t, hosts[i], p.serverH)
	}
	before := heapInUse()
	var (
		mu      sync.Mutex
		streams []network.Stream
		wg      sync.WaitGroup
		peak    int64
	)
	done := make(chan struct{})
	go func() { // the node's charge, sampled while the flood runs
		for {
			select {
			case <-done:
				return
			case <-time.After(time.Millisecond):
				mu.Lock()
				peak = max(peak, p.server.nodeBytes.Load())
				mu.Unlock()
			}
		}
	}()
	for _, h := range hosts {
		for range perPeer {
			s := rawTaskStream(t, h, p.serverH.ID())
			mu.Lock()
			streams = append(streams, s)
			mu.Unlock()
			wg.Go(func() { slowFrame(s, frameSize) })
		}
	}
	wg.Wait()
	time.Sleep(200 * time.Millisecond) // let the executor read what came
	after := heapInUse()
	close(done)
	mu.Lock()
	defer mu.Unlock()
	growth := int64(after) - int64(before)
	t.Logf("%d streams sent %d MiB each; executor-side heap in use %d MiB -> %d MiB; node charge peaked at %d KiB",
		len(streams), frameSize>>20, before>>20, after>>20, peak>>10)
	if growth > budget+slack {
		t.Fatalf("heap in use grew by %d MiB under frames still arriving, want at most %d MiB (budget %d MiB + %d MiB slack)",
			growth>>20, (budget+slack)>>20, budget>>20, slack>>20)
	}
	if peak > budget {
		t.Fatalf("the node's charge reached %d bytes, over its budget of %d", peak, budget)
	}
	for _, s := range streams {
		_ = s.Reset()
	}
	orchEventually(t, 5*time.Second, "the frames' charge given back", func() bool { return p.server.nodeBytes.Load() == 0 })
	if _, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("after the flood")); err != nil {
		t.Fatalf("task after the flood: %v", err)
	}
}

// TestOrchestratorFramesArrivingAreReservedWithTheResourceManager gives the
// executor a resource manager whose streams may hold 512 KiB: a frame of 1
// MiB is refused with a stream reset once its first 512 KiB are in, a
// frame of 256 KiB on the next stream runs, and what was reserved is given
// back.
func TestOrchestratorFramesArrivingAreReservedWithTheResourceManager(t *testing.T) {
	limits := rcmgr.DefaultLimits.AutoScale().ToPartialLimitConfig()
	limits.Stream.Memory = 512 << 10
	rm, err := rcmgr.NewResourceManager(rcmgr.NewFixedLimiter(limits.Build(rcmgr.DefaultLimits.AutoScale())), rcmgr.WithMetricsDisabled())
	if err != nil {
		t.Fatal(err)
	}
	serverH, err := libp2p.New(libp2p.ListenAddrStrings("/ip4/127.0.0.1/tcp/0"), libp2p.DisableRelay(), libp2p.ResourceManager(rm))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = serverH.Close() })
	startOrchestrator(t, serverH, newOrchHandler())
	clientH := newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	client := startOrchestrator(t, clientH, nil)

	big := rawTaskStream(t, clientH, serverH.ID())
	slowFrame(big, 1<<20)
	if _, err := big.Read(make([]byte, 1)); !errors.Is(err, network.ErrReset) {
		t.Fatalf("read after a frame over the stream's memory = %v, want the stream reset", err)
	}
	task := &RemoteTask{ID: NewTaskID(), Skill: "text.echo", Input: bytes.Repeat([]byte{'y'}, 256<<10), InputKind: InputRaw,
		Priority: 100, Deadline: time.Now().Add(30 * time.Second), Attempt: 1, Requester: clientH.ID()}
	res, err := client.Delegate(orchCtx(t), serverH.ID(), task)
	if err != nil {
		t.Fatalf("task of 256 KiB after the refusal: %v", err)
	}
	if !bytes.Equal(res.Output, task.Input) {
		t.Fatalf("task of 256 KiB came back changed")
	}
	err = rm.ViewProtocol(wire.ProtocolTask, func(s network.ProtocolScope) error {
		if mem := s.Stat().Memory; mem != 0 {
			return errors.New("task protocol still holds memory")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestOrchestratorOutputOverTheFrameLimitIsInvalidInput has the handler
// return more than one result frame of the executor carries: the requester
// gets a failure with code invalid input (never charged, not retried) that
// names the limit, not an execution failure.
func TestOrchestratorOutputOverTheFrameLimitIsInvalidInput(t *testing.T) {
	const maxMsg = 64 << 10
	p := newOrchPair(t, WithMaxMessageSize(maxMsg))
	p.handler.set(func(_ peer.ID, t *RemoteTask, reply func(*RemoteResult)) error {
		reply(&RemoteResult{ID: t.ID, Success: true, Output: make([]byte, maxMsg)})
		return nil
	})
	res, err := p.client.Delegate(orchCtx(t), p.serverH.ID(), p.task("x"))
	if err != nil {
		t.Fatalf("Delegate: %v", err)
	}
	limit := strconv.Itoa(maxMsg - 4<<10)
	if res.Success || res.ErrorCode != CodeInvalidInput || !strings.Contains(res.ErrorMessage, limit) {
		t.Fatalf("result = success %v, code %v, %q; want code invalid input naming the limit of %s bytes", res.Success, res.ErrorCode, res.ErrorMessage, limit)
	}
}
