package store

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

func remoteTask(from peer.ID, n int) *RemoteRecord {
	return &RemoteRecord{
		From: from, ID: taskID(n), Skill: "echo", Attempt: 1,
		Deadline: t0.Add(time.Minute), ReceivedAt: t0.Add(time.Duration(n) * time.Millisecond),
	}
}

func ids(rs []RemoteRecord) []grid.TaskID {
	var out []grid.TaskID
	for _, r := range rs {
		out = append(out, r.ID)
	}
	return out
}

func TestRemoteRecordsAndPendingDeliveries(t *testing.T) {
	dir := t.TempDir()
	s := openStore(t, dir)
	ctx := context.Background()
	alice, bob, self := newPeer(t), newPeer(t), newPeer(t)
	for _, r := range []*RemoteRecord{remoteTask(alice, 1), remoteTask(alice, 2), remoteTask(alice, 3), remoteTask(bob, 1)} {
		if err := s.AcceptRemote(ctx, r); err != nil {
			t.Fatalf("accept remote: %v", err)
		}
	}
	if err := s.AcceptRemote(ctx, remoteTask(alice, 1)); !errors.Is(err, ErrExists) {
		t.Fatalf("repeated request: %v, want ErrExists", err)
	}
	res := Result{Success: true, Output: []byte("hi"), ExecutedBy: self, Duration: time.Millisecond}
	if err := s.FinishRemote(ctx, alice, taskID(1), res, false); err != nil {
		t.Fatalf("finish 1: %v", err)
	}
	fail := Result{Code: grid.CodeTimeout, Error: "deadline passed", ExecutedBy: self}
	if err := s.FinishRemote(ctx, alice, taskID(2), fail, false); err != nil {
		t.Fatalf("finish 2: %v", err)
	}
	if err := s.FinishRemote(ctx, bob, taskID(1), res, true); err != nil {
		t.Fatalf("finish bob's: %v", err)
	}
	if err := s.FinishRemote(ctx, alice, taskID(1), res, false); !errors.Is(err, ErrFinished) {
		t.Fatalf("second result: %v, want ErrFinished", err)
	}
	if err := s.FinishRemote(ctx, alice, taskID(9), res, false); !errors.Is(err, ErrNotFound) {
		t.Fatalf("result of an unknown task: %v, want ErrNotFound", err)
	}
	if err := s.MarkDelivered(ctx, alice, taskID(3)); !errors.Is(err, ErrInvalid) {
		t.Fatalf("mark a running task delivered: %v, want ErrInvalid", err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}

	s = openStore(t, dir)
	got, err := s.Remote(alice, taskID(1))
	if err != nil {
		t.Fatalf("lookup of a known request: %v", err)
	}
	if got.State != StateSucceeded || got.Delivered || string(got.Result.Output) != "hi" || got.From != alice {
		t.Fatalf("lookup gave %+v; want alice's succeeded, undelivered, output hi", got)
	}
	if got, err := s.Remote(alice, taskID(2)); err != nil || got.State != StateTimedOut {
		t.Fatalf("lookup of the timed-out task: %s, %v; want timed_out", got.State, err)
	}
	if _, err := s.Remote(bob, taskID(2)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("lookup of another peer's ID: %v, want ErrNotFound", err)
	}
	pending, err := s.PendingDeliveries(alice)
	if err != nil {
		t.Fatalf("pending: %v", err)
	}
	if want := []grid.TaskID{taskID(1), taskID(2)}; !reflect.DeepEqual(ids(pending), want) {
		t.Fatalf("pending for alice %v, want %v", ids(pending), want)
	}
	if pending, err := s.PendingDeliveries(bob); err != nil || len(pending) != 0 {
		t.Fatalf("pending for bob (delivered): %v, %v; want none", ids(pending), err)
	}
	live, err := s.RecoverRemote()
	if err != nil {
		t.Fatalf("recover remote: %v", err)
	}
	if len(live) != 1 || live[0].From != alice || live[0].ID != taskID(3) || live[0].State != StateQueued {
		t.Fatalf("recovered %+v, want alice's task 3, queued", live)
	}
	if err := s.MarkDelivered(ctx, alice, taskID(1)); err != nil {
		t.Fatalf("mark delivered: %v", err)
	}
	if err := s.MarkDelivered(ctx, alice, taskID(1)); err != nil {
		t.Fatalf("mark delivered twice: %v", err)
	}
	pending, err = s.PendingDeliveries(alice)
	if err != nil || !reflect.DeepEqual(ids(pending), []grid.TaskID{taskID(2)}) {
		t.Fatalf("pending after delivery: %v, %v; want task 2 only", ids(pending), err)
	}
}

func TestAcceptRemoteRefusesBadRecords(t *testing.T) {
	s := openStore(t, t.TempDir())
	long := peer.ID(make([]byte, 300))
	cases := []struct {
		name string
		rec  *RemoteRecord
	}{
		{"a record without a sender is refused", &RemoteRecord{ID: taskID(1)}},
		{"a sender ID longer than 255 bytes is refused", &RemoteRecord{From: long, ID: taskID(1)}},
		{"a zero task ID is refused", &RemoteRecord{From: "p"}},
		{"a nil record is refused", nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if err := s.AcceptRemote(context.Background(), c.rec); !errors.Is(err, ErrInvalid) {
				t.Fatalf("accept remote: %v, want ErrInvalid", err)
			}
		})
	}
}

func TestForgetRemoteLetsTheTaskBeAcceptedAgain(t *testing.T) {
	s := openStore(t, t.TempDir())
	ctx := context.Background()
	alice, self := newPeer(t), newPeer(t)
	if err := s.AcceptRemote(ctx, remoteTask(alice, 1)); err != nil {
		t.Fatalf("accept: %v", err)
	}
	if err := s.AcceptRemote(ctx, remoteTask(alice, 2)); err != nil {
		t.Fatalf("accept: %v", err)
	}
	res := Result{Code: grid.CodeCanceled, Error: "requester connection lost", ExecutedBy: self}
	if err := s.FinishRemote(ctx, alice, taskID(1), res, false); err != nil {
		t.Fatalf("finish: %v", err)
	}
	for _, n := range []int{1, 2, 9} { // finished, live, unknown
		if err := s.ForgetRemote(ctx, alice, taskID(n)); err != nil {
			t.Fatalf("forget %d: %v", n, err)
		}
		if _, err := s.Remote(alice, taskID(n)); !errors.Is(err, ErrNotFound) {
			t.Fatalf("task %d after ForgetRemote: %v, want ErrNotFound", n, err)
		}
	}
	if p, err := s.PendingDeliveries(alice); err != nil || len(p) != 0 {
		t.Fatalf("pending deliveries after forgetting: %v, %v; want none", ids(p), err)
	}
	if live, err := s.RecoverRemote(); err != nil || len(live) != 0 {
		t.Fatalf("live remote tasks after forgetting: %v, %v; want none", ids(live), err)
	}
	if err := s.AcceptRemote(ctx, remoteTask(alice, 1)); err != nil {
		t.Fatalf("accept a forgotten task again: %v", err)
	}
}
