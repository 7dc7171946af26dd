package api

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

func TestFailureReasonOfInvalidInput(t *testing.T) {
	p, err := peer.Decode("12D3KooWKMU7oXdsZLYbPbvzwSKT1rWsB9SSZT9vhubpopCyMzNe")
	if err != nil {
		t.Fatal(err)
	}
	const why = `invalid input for skill "hash.sha256": /data: got number, want string`
	rej := &grid.RejectError{Reason: grid.RejectInvalidInput, Message: why}
	rejected := fmt.Errorf("task 1ddaccb08baa: %w", fmt.Errorf("%w: peer %s: %w", skill.ErrInvalidInput, p, rej))
	failed := fmt.Errorf("task 85f86b249287: %w", fmt.Errorf("%w: peer %s: %s", skill.ErrInvalidInput, p, "run skill: "+why))
	local := fmt.Errorf("task 85f86b249287: %w", fmt.Errorf("%w: %s", skill.ErrInvalidInput, "run skill: "+why))
	cases := []struct {
		name string
		st   skill.TaskStatus
		want string
	}{
		{"a peer's rejection gives its message", skill.TaskStatus{Peer: p, Err: rejected, Error: rejected.Error()}, why},
		{"a peer's rejection read back as text gives its message", skill.TaskStatus{Peer: p, Error: rejected.Error()}, why},
		{"a peer's failed result gives its message", skill.TaskStatus{Peer: p, Err: failed, Error: failed.Error()}, "run skill: " + why},
		{"a local run's failure gives the executor's message", skill.TaskStatus{Peer: p, Err: local, Error: local.Error()}, "run skill: " + why},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := failureReason(tc.st, apiv1.CodeInvalidInput, tc.st.Error); got != tc.want {
				t.Errorf("reason %q, want %q", got, tc.want)
			}
		})
	}
	if got := failureReason(skill.TaskStatus{Err: errors.New("x")}, apiv1.CodeExecution, "x"); got != "" {
		t.Errorf("reason of an execution failure %q, want none", got)
	}
}

func TestRefusedInputIsToldOnce(t *testing.T) {
	p, err := peer.Decode("12D3KooWKMU7oXdsZLYbPbvzwSKT1rWsB9SSZT9vhubpopCyMzNe")
	if err != nil {
		t.Fatal(err)
	}
	const why = `invalid input for skill "hash.sha256": /data: got number, want string`
	rej := &grid.RejectError{Reason: grid.RejectInvalidInput, Message: why}
	chain := fmt.Errorf("task 1ddaccb08baa: %w", fmt.Errorf("%w: peer %s: delegate task 1ddaccb08baa to %s: %w", skill.ErrInvalidInput, p, p, rej))
	task := taskOf(skill.TaskStatus{State: skill.StateFailed, Peer: p, Err: chain, Error: chain.Error()})
	if task.Error == nil || task.Error.Message != "node "+p.String()+" refused the input: "+why {
		t.Fatalf("error %+v; want the peer's refusal said once", task.Error)
	}
	if n := strings.Count(task.Error.Message, p.String()); n != 1 {
		t.Errorf("message names the peer %d times: %s", n, task.Error.Message)
	}
}
