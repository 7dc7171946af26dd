package grid

import (
	"bytes"
	"encoding/binary"
	"errors"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/network"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// taskEnv is t's request as the generated code builds it.
func taskEnv(t *RemoteTask) *cortexv1.Envelope {
	return &cortexv1.Envelope{Body: &cortexv1.Envelope_Request{Request: &cortexv1.TaskRequest{
		TaskId: t.ID[:], SkillId: t.Skill, SkillVersion: t.Version, Input: t.Input,
		InputKind: cortexv1.InputKind(t.InputKind), Priority: uint32(t.Priority),
		DeadlineUnixMs: t.Deadline.UnixMilli(), MinTrust: t.MinTrust, Attempt: uint32(t.Attempt),
		Requester: []byte(t.Requester),
	}}}
}

// TestOrchestratorPromiseFloodIsBoundedByWhatArrives opens 1000 task
// streams from 10 identities, each sending a length prefix of 16 MiB - 1
// and then 11 bytes, and keeps them open: the executor's heap in use may
// grow by at most 64 MB, since a frame costs what has arrived, not what it
// promises.
func TestOrchestratorPromiseFloodIsBoundedByWhatArrives(t *testing.T) {
	const (
		identities = 10
		perPeer    = 100
		heapBound  = 64 << 20
	)
	serverH := newOrchHost(t)
	startOrchestrator(t, serverH, newOrchHandler())
	hosts := make([]host.Host, identities)
	for i := range hosts {
		hosts[i] = newOrchHost(t)
		connectOrchHosts(t, hosts[i], serverH)
	}
	promise := append(binary.AppendUvarint(nil, wire.DefaultMaxMessageSize-1), bytes.Repeat([]byte{0x0a}, 11)...)

	before := heapInUse()
	var (
		mu      sync.Mutex
		streams []network.Stream
		wg      sync.WaitGroup
	)
	for _, h := range hosts {
		wg.Go(func() {
			for range perPeer {
				s, err := h.NewStream(orchCtx(t), serverH.ID(), wire.ProtocolTask)
				if err != nil {
					continue // the executor may refuse a peer's extra streams
				}
				_, _ = s.Write(promise)
				mu.Lock()
				streams = append(streams, s)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, s := range streams {
			_ = s.Reset()
		}
	})
	time.Sleep(500 * time.Millisecond) // let the executor read what came
	after := heapInUse()
	growth := int64(after) - int64(before)
	t.Logf("%d streams opened; executor-side heap in use %d MiB -> %d MiB", len(streams), before>>20, after>>20)
	if growth > heapBound {
		t.Fatalf("heap in use grew by %d MiB under the flood, want at most %d MiB", growth>>20, heapBound>>20)
	}
}

func heapInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// TestOrchestratorStalledFrameResetsTheStream starts a frame and stalls it
// past the frame timeout: the executor resets the stream. A stream idle
// between frames for longer is left alone.
func TestOrchestratorStalledFrameResetsTheStream(t *testing.T) {
	p := newOrchPair(t, WithFrameTimeout(200*time.Millisecond))
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)

	idle := rawTaskStream(t, rogue, p.serverH.ID())
	stalled := rawTaskStream(t, rogue, p.serverH.ID())
	if _, err := stalled.Write(binary.AppendUvarint(nil, 1000)); err != nil {
		t.Fatal(err)
	}
	_, err := stalled.Read(make([]byte, 1))
	if !errors.Is(err, network.ErrReset) {
		t.Fatalf("read on a stalled frame = %v, want the stream reset", err)
	}
	// The idle stream, three frame timeouts later, still serves a task.
	task := p.task("after a pause")
	if _, err := idle.Write(envelopeFrame(t, taskEnv(task))); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(idle, 0)
	if _, err := r.ReadFrame(); err != nil {
		t.Fatalf("idle stream after the pause: %v", err)
	}
}
