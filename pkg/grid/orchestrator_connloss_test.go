package grid

import (
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// abandoningHandler is an orchHandler that implements TaskAbandoner.
type abandoningHandler struct {
	*orchHandler
	abandons chan *RemoteTask
}

func (h *abandoningHandler) AbandonTask(_ peer.ID, t *RemoteTask) { h.abandons <- t }

// When a task stream fails, a handler that implements TaskAbandoner is
// told with AbandonTask, for the very request HandleTask got (so that it
// can tell it from a newer request for the same ID), and not with
// CancelTask, which it would record as the requester's cancel.
func TestOrchestratorStreamLossAbandonsTasks(t *testing.T) {
	base := newOrchHandler()
	holdTasks(base)
	h := &abandoningHandler{orchHandler: base, abandons: make(chan *RemoteTask, 16)}
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	startOrchestrator(t, serverH, h)
	client := startOrchestrator(t, clientH, nil)
	const n = 3
	errc := make(chan error, n)
	for i := range n {
		task := &RemoteTask{ID: NewTaskID(), Skill: "text.echo", Input: []byte{byte(i)}, InputKind: InputRaw, Priority: 100, Deadline: time.Now().Add(30 * time.Second), Attempt: 1, Requester: clientH.ID()}
		go func() {
			_, err := client.Delegate(orchCtx(t), serverH.ID(), task)
			errc <- err
		}()
	}
	got := make(map[*RemoteTask]bool)
	for range n {
		got[orchRecv(t, base.tasks, 5*time.Second, "a task reaching the executor")] = true
	}
	if err := serverH.Network().ClosePeer(clientH.ID()); err != nil {
		t.Fatal(err)
	}
	for range n {
		orchRecv(t, errc, 5*time.Second, "Delegate returning")
	}
	for range n {
		ab := orchRecv(t, h.abandons, 5*time.Second, "AbandonTask for an orphaned task")
		if !got[ab] {
			t.Fatalf("AbandonTask got %p (%s), not a request HandleTask got", ab, ab.ID.Short())
		}
		delete(got, ab)
	}
	select {
	case id := <-base.cancels:
		t.Fatalf("CancelTask(%s) on a stream loss, want AbandonTask only", id.Short())
	default:
	}
}
