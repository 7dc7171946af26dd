package eventhub

import (
	"sync"
	"testing"
)

func TestHubDeliversInOrderDropsWhenFullAndDrainsOnClose(t *testing.T) {
	h := New[int](4)
	if h.Has() {
		t.Fatal("Has with no subscriber")
	}
	release := make(chan struct{})
	var mu sync.Mutex
	var got []int
	h.Subscribe(func(v int) {
		<-release // the first event holds the goroutine: the buffer fills
		mu.Lock()
		got = append(got, v)
		mu.Unlock()
	})
	if !h.Has() {
		t.Fatal("no Has after Subscribe")
	}
	for i := range 20 {
		h.Publish(i)
	}
	close(release)
	h.Close()
	mu.Lock()
	defer mu.Unlock()
	// At most 1 being delivered plus 4 buffered: the rest are dropped.
	if len(got) == 0 || len(got) > 5 {
		t.Fatalf("delivered %v, want 1 to 5 events", got)
	}
	for i := 1; i < len(got); i++ {
		if got[i] <= got[i-1] {
			t.Fatalf("delivered out of order: %v", got)
		}
	}
	if h.Has() {
		t.Fatal("Has after Close")
	}
	if unsub := h.Subscribe(func(int) { t.Error("called after Close") }); unsub == nil {
		t.Fatal("nil unsubscribe")
	}
	h.Publish(99)
}

func TestHubUnsubscribeStopsDeliveryAndCountsDrops(t *testing.T) {
	h := New[int](1)
	block := make(chan struct{})
	unsub := h.Subscribe(func(int) { <-block })
	for i := range 10 {
		h.Publish(i)
	}
	if d := h.Dropped(); d < 8 {
		t.Fatalf("dropped %d of 10 with a buffer of 1 and a blocked subscriber, want at least 8", d)
	}
	unsub()
	unsub() // twice is harmless
	if h.Has() {
		t.Fatal("Has after unsubscribe")
	}
	close(block)
	h.Close()
}
