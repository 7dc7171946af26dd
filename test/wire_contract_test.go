package test

import (
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// These tests speak the task protocol to a whole node (orchestrator,
// coordinator, executor) as other implementations would.

// wireRequest is a valid request for the echo skill from c.
func wireRequest(c *rawFrameClient, input string) *cortexv1.TaskRequest {
	id := grid.NewTaskID()
	return &cortexv1.TaskRequest{
		TaskId: id[:], SkillId: "echo", Input: []byte(input), InputKind: cortexv1.InputKind_INPUT_KIND_RAW,
		Priority: 96, DeadlineUnixMs: time.Now().Add(time.Minute).UnixMilli(), Attempt: 1, Requester: []byte(c.ID()),
	}
}

// futureRequestFrame is req as a newer node would send it: with a field
// this version does not know, followed by a message of a type it does not
// know (Envelope field 16).
func futureRequestFrame(t testing.TB, req *cortexv1.TaskRequest) []byte {
	t.Helper()
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	body = protowire.AppendBytes(protowire.AppendTag(body, 40, protowire.BytesType), []byte("a newer field"))
	env := protowire.AppendBytes(protowire.AppendTag(nil, 1, protowire.BytesType), body)
	newType := protowire.AppendBytes(protowire.AppendTag(nil, 16, protowire.BytesType), []byte{0x08, 0x01})
	return append(protowire.AppendBytes(nil, env), protowire.AppendBytes(nil, newType)...)
}

// readResults reads c's stream until every task in want has its result,
// and returns the error that ended it early, if any.
func readResults(c *rawFrameClient, want map[string]string) error {
	for len(want) > 0 {
		env, err := c.next()
		if err != nil {
			return err
		}
		if ack := env.GetAck(); ack != nil && !ack.GetAccepted() {
			return errors.New("rejected: " + ack.GetMessage())
		}
		if res := env.GetResult(); res != nil {
			id := string(res.GetTaskId())
			if exp, ok := want[id]; ok && res.GetSuccess() && string(res.GetOutput()) == exp {
				delete(want, id)
			}
		}
	}
	return nil
}

// TestWireFutureRequesterIsServed sends a node requests the way a newer
// version would, then half-closes the stream: every task runs, every
// result comes back, and the node then closes its side.
func TestWireFutureRequesterIsServed(t *testing.T) {
	x := newHarnessNode(t, harnessConfig{builtins: []reputation.SkillID{"echo"}})
	c := rawTaskClient(t, x)
	first := wireRequest(c, "first")
	env, err := c.exchange(t, futureRequestFrame(t, first))
	if err != nil {
		t.Fatalf("a future request: %v", err)
	}
	want := map[string]string{string(first.TaskId): "first"}
	if res := env.GetResult(); res != nil {
		delete(want, string(res.GetTaskId()))
	}
	for _, in := range []string{"second", "third"} {
		req := wireRequest(c, in)
		want[string(req.TaskId)] = in
		if _, err := c.s.Write(futureRequestFrame(t, req)); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.s.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if err := readResults(c, want); err != nil {
		t.Fatalf("results after half-closing, %d missing: %v", len(want), err)
	}
	for {
		if _, err := c.next(); err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after the last result the stream ended with %v, want EOF", err)
			}
			break
		}
	}
	if st := x.Orch.Stats(); st.Unknown < 6 {
		t.Fatalf("orchestrator stats %+v: want every unknown field and message type counted", st)
	}
}
