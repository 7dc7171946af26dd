package grid

import (
	"context"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"
	"time"
)

func TestCallHeapKeepsTheEarliestFirst(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	base := time.Now()
	var h callHeap
	var in []*call
	for step := range 5000 {
		if len(in) == 0 || r.IntN(3) > 0 {
			c := &call{due: base.Add(time.Duration(r.IntN(1000)) * time.Millisecond)}
			h.push(c)
			in = append(in, c)
		} else {
			i := r.IntN(len(in))
			h.remove(in[i])
			h.remove(in[i]) // a second remove does nothing
			in = slices.Delete(in, i, i+1)
		}
		if len(h) != len(in) {
			t.Fatalf("step %d: %d in the heap, want %d", step, len(h), len(in))
		}
		for i, c := range h {
			if c.hpos != i+1 {
				t.Fatalf("step %d: call at %d has hpos %d", step, i, c.hpos)
			}
			if p := (i - 1) / 2; i > 0 && h[i].due.Before(h[p].due) {
				t.Fatalf("step %d: heap order broken at %d", step, i)
			}
		}
	}
}

// Calls on one stream share its timer: one sent after the timer was set
// for a later call still ends at its own deadline, and each ends at its own.
func TestOrchestratorCallsOnOneStreamEndAtTheirOwnDeadlines(t *testing.T) {
	p := newOrchPair(t)
	holdTasks(p.handler)
	p.client.cfg.resultGrace = 0
	start := time.Now()
	offsets := []time.Duration{900 * time.Millisecond, 300 * time.Millisecond, 600 * time.Millisecond}
	type end struct {
		i   int
		err error
		at  time.Duration
	}
	ends := make(chan end, len(offsets))
	for i, d := range offsets {
		task := p.task("x")
		task.Deadline = start.Add(d)
		p.client.DelegateAsync(context.Background(), p.serverH.ID(), task, func(_ *RemoteResult, err error) {
			ends <- end{i: i, err: err, at: time.Since(start)}
		})
		orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	}
	var order []int
	for range offsets {
		e := orchRecv(t, ends, 5*time.Second, "a call ending")
		if !errors.Is(e.err, context.DeadlineExceeded) {
			t.Fatalf("call %d ended with %v, want context.DeadlineExceeded", e.i, e.err)
		}
		if e.at < offsets[e.i] {
			t.Fatalf("call %d ended after %s, before its deadline %s", e.i, e.at, offsets[e.i])
		}
		order = append(order, e.i)
	}
	if !slices.Equal(order, []int{1, 2, 0}) {
		t.Fatalf("calls ended in order %v, want by deadline [1 2 0]", order)
	}
	p.client.mu.RLock()
	out := p.client.out[p.serverH.ID()]
	p.client.mu.RUnlock()
	out.mu.Lock()
	left := len(out.timers)
	out.mu.Unlock()
	if left != 0 {
		t.Fatalf("%d calls left on the stream's timer", left)
	}
}

// An answered call leaves the stream's timer at once, not at its deadline.
func TestOrchestratorAnsweredCallLeavesTheTimer(t *testing.T) {
	p := newOrchPair(t)
	replies := holdTasks(p.handler)
	task := p.task("x")
	out := newAsyncOutcome()
	p.client.DelegateAsync(orchCtx(t), p.serverH.ID(), task, out.done)
	got := orchRecv(t, p.handler.tasks, 5*time.Second, "the task reaching the executor")
	p.client.mu.RLock()
	st := p.client.out[p.serverH.ID()]
	p.client.mu.RUnlock()
	st.mu.Lock()
	n := len(st.timers)
	st.mu.Unlock()
	if n != 1 {
		t.Fatalf("%d calls on the stream's timer while one is pending", n)
	}
	reply, _ := replies.Load(got.ID)
	reply.(func(*RemoteResult))(&RemoteResult{ID: got.ID, Success: true, Output: []byte("x")})
	if ev := orchRecv(t, out.ch, 5*time.Second, "done being called"); ev.err != nil {
		t.Fatalf("done(%v, %v), want a result", ev.res, ev.err)
	}
	st.mu.Lock()
	n = len(st.timers)
	st.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d calls left on the stream's timer after the answer", n)
	}
}
