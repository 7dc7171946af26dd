package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"
)

// TestStopDevnetUnlocksEachNodeAfterItsShutdown checks that a node's repo
// stays locked until that node has stopped, and that a slow node does not
// use up the next node's grace period.
func TestStopDevnetUnlocksEachNodeAfterItsShutdown(t *testing.T) {
	var steps []string
	node := func(name string, slow bool) devnetNode {
		return devnetNode{
			name:  name,
			grace: 50 * time.Millisecond,
			shutdown: func(ctx context.Context) error {
				if ctx.Err() != nil {
					steps = append(steps, "late "+name)
				}
				steps = append(steps, "stop "+name)
				if slow {
					<-ctx.Done() // uses up its whole grace period
					return fmt.Errorf("%s: %w", name, ctx.Err())
				}
				return nil
			},
			unlock: func() { steps = append(steps, "unlock "+name) },
		}
	}
	err := stopDevnet([]devnetNode{node("1", false), node("2", true)})
	want := []string{"stop 2", "unlock 2", "stop 1", "unlock 1"}
	if !slices.Equal(steps, want) {
		t.Errorf("steps %q, want %q", steps, want)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("err %v, want node 2's deadline", err)
	}
}
