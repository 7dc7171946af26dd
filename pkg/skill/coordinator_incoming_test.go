package skill

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// ciModuleSkill is a wasm-like skill: it upper-cases its input and names
// a module hash.
type ciModuleSkill struct {
	id   reputation.SkillID
	hash [32]byte
}

func (s ciModuleSkill) Descriptor() Descriptor { return Descriptor{ID: s.id, Version: "1.0.0"} }
func (s ciModuleSkill) ModuleSHA256() [32]byte { return s.hash }
func (s ciModuleSkill) Execute(_ context.Context, in SkillInput) ([]byte, error) {
	return bytes.ToUpper(in.Data), nil
}

// ciFetcher fetches by registering a ciModuleSkill once release is
// closed, or fails with err.
type ciFetcher struct {
	reg     *Registry
	refuse  error
	err     error
	release chan struct{}
	calls   chan [32]byte
}

func (f *ciFetcher) CanFetch(peer.ID) error { return f.refuse }

func (f *ciFetcher) FetchModule(ctx context.Context, _ peer.ID, s reputation.SkillID, _ string, module [32]byte) error {
	f.calls <- module
	select {
	case <-f.release:
	case <-ctx.Done():
		return ctx.Err()
	}
	if f.err != nil {
		return f.err
	}
	return f.reg.Register(ciModuleSkill{id: s, hash: module})
}

func ciTask(skill string, module byte) *grid.RemoteTask {
	t := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: skill, Input: []byte("hi"), InputKind: grid.InputRaw,
		Deadline: time.Now().Add(time.Minute), Attempt: 1}
	t.ModuleSHA256[0] = module
	return t
}

func newCiHandler(t *testing.T, f *ciFetcher) (*coEnv, *FetchingHandler) {
	t.Helper()
	e := newCoEnv(t, coEnvConfig{})
	f.reg = e.reg
	if f.release == nil {
		f.release = make(chan struct{})
	}
	f.calls = make(chan [32]byte, 16)
	h := NewFetchingHandler(e.c, f)
	t.Cleanup(func() { _ = h.Close() })
	return e, h
}

func ciResult(t *testing.T, r *coReplies) *grid.RemoteResult {
	t.Helper()
	select {
	case res := <-r.ch:
		return res
	case <-time.After(10 * time.Second):
		t.Fatal("no result")
		return nil
	}
}

func TestFetchingHandlerRunsATaskOnceItsModuleIsFetched(t *testing.T) {
	f := &ciFetcher{}
	e, h := newCiHandler(t, f)
	r := newCoReplies()
	if err := h.HandleTask(e.peers[0], ciTask("text.upper", 9), grid.ReplyFunc(r.reply)); err != nil {
		t.Fatalf("HandleTask: %v; want the task accepted while its module is fetched", err)
	}
	if got := <-f.calls; got[0] != 9 {
		t.Fatalf("fetched module %x, want the task's", got)
	}
	close(f.release)
	if res := ciResult(t, r); !res.Success || string(res.Output) != "HI" {
		t.Fatalf("result %+v; want HI", res)
	}
	// The skill is here now: a task naming another module is refused, with both hashes.
	other := ciTask("text.upper", 8)
	err := h.HandleTask(e.peers[0], other, grid.ReplyFunc(r.reply))
	var rej *grid.RejectError
	if !errors.As(err, &rej) || rej.Reason != grid.RejectUnknownSkill ||
		!strings.Contains(rej.Message, fmt.Sprintf("%x", other.ModuleSHA256)) || !strings.Contains(rej.Message, "09000000") {
		t.Fatalf("a task naming another module: %v; want unknown skill naming both hashes", err)
	}
}

func TestFetchingHandlerFailsATaskWhoseModuleCannotBeFetched(t *testing.T) {
	f := &ciFetcher{err: errors.New("module abc not found on peer")}
	e, h := newCiHandler(t, f)
	close(f.release)
	r := newCoReplies()
	if err := h.HandleTask(e.peers[0], ciTask("text.upper", 9), grid.ReplyFunc(r.reply)); err != nil {
		t.Fatal(err)
	}
	if res := ciResult(t, r); res.Success || res.ErrorCode != grid.CodeUnknownSkill || !strings.Contains(res.ErrorMessage, "not found") {
		t.Fatalf("result %+v; want unknown_skill with the fetch's error", res)
	}
}

func TestFetchingHandlerRejectsAtOnceWhenThePolicyRefuses(t *testing.T) {
	f := &ciFetcher{refuse: errors.New("this node does not fetch modules (skills.fetch_modules is off)")}
	e, h := newCiHandler(t, f)
	err := h.HandleTask(e.peers[0], ciTask("text.upper", 9), grid.ReplyFunc(newCoReplies().reply))
	var rej *grid.RejectError
	if !errors.As(err, &rej) || rej.Reason != grid.RejectUnknownSkill || !strings.Contains(rej.Message, "fetch_modules is off") {
		t.Fatalf("HandleTask: %v; want unknown skill saying why", err)
	}
	if len(f.calls) != 0 {
		t.Fatal("a module was fetched for a refused peer")
	}
}

func TestFetchingHandlerAnswersACancelWhileFetching(t *testing.T) {
	f := &ciFetcher{}
	e, h := newCiHandler(t, f)
	r := newCoReplies()
	task := ciTask("text.upper", 9)
	if err := h.HandleTask(e.peers[0], task, grid.ReplyFunc(r.reply)); err != nil {
		t.Fatal(err)
	}
	<-f.calls
	if err := h.HandleTask(e.peers[0], task, grid.ReplyFunc(r.reply)); err == nil {
		t.Fatal("the same attempt again while fetching was accepted; want a duplicate")
	}
	h.CancelTask(e.peers[0], task.ID)
	if res := ciResult(t, r); res.ErrorCode != grid.CodeCanceled {
		t.Fatalf("result %+v; want canceled", res)
	}
	close(f.release)
	_ = h.Close() // waits for the fetch's goroutine, which must not answer again
	if n := r.count(); n != 1 {
		t.Fatalf("%d answers to one task; want 1", n)
	}
}
