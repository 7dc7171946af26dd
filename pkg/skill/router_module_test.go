package skill

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/libp2p/go-libp2p/core/peer"
)

// rtModuleDirectory is an rtFetchDirectory that also says which module
// each peer announces for each skill at each version.
type rtModuleDirectory struct {
	rtFetchDirectory
	mods map[peer.ID]map[grid.SkillCapability][32]byte
}

func (d rtModuleDirectory) AnnouncedModule(p peer.ID, s reputation.SkillID, version string) ([32]byte, bool) {
	for c, m := range d.mods[p] {
		if c.ID == s && (version == "" || c.Version == version) {
			return m, true
		}
	}
	return [32]byte{}, false
}

var _ ModuleDirectory = rtModuleDirectory{}

func rtHash(b byte) [32]byte { return [32]byte{b} }

// rtModuleDir has providers a and b of text.upper 1.0.0 announcing module
// 2, c announcing module 1 (they disagree), d announcing module 3 for
// version 2.0.0, e offering text.upper 1.0.0 as no wasm skill, and
// fetcher f.
func rtModuleDir(a, b, c, d, e, f peer.ID) rtModuleDirectory {
	idle := grid.Load{Capacity: 4}
	v1 := grid.SkillCapability{ID: "text.upper", Version: "1.0.0"}
	v2 := grid.SkillCapability{ID: "text.upper", Version: "2.0.0"}
	prov := func(p peer.ID, v string) grid.Provider {
		return grid.Provider{Peer: p, Version: v, Load: idle} // not connected: the fetcher ranks first
	}
	return rtModuleDirectory{
		rtFetchDirectory: rtFetchDirectory{
			rtDirectory: rtDirectory{"text.upper": {prov(a, "1.0.0"), prov(b, "1.0.0"), prov(c, "1.0.0"), prov(d, "2.0.0"), prov(e, "1.0.0")}},
			fetchers:    []grid.Provider{{Peer: f, Load: idle, Connected: true}},
			wasm:        map[reputation.SkillID]bool{"text.upper": true},
		},
		mods: map[peer.ID]map[grid.SkillCapability][32]byte{
			a: {v1: rtHash(2)}, b: {v1: rtHash(2)}, c: {v1: rtHash(1)}, d: {v2: rtHash(3)},
		},
	}
}

func TestAnnouncedModuleNamesTheModuleThePeerWillRun(t *testing.T) {
	ids := rtPeers(t, 7)
	self, a, b, c, d, e, f := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6]
	dir := rtModuleDir(a, b, c, d, e, f)
	r := newRtRouter(t, self, dir, nil, nil, nil)
	v1 := NewSkillTask("text.upper", RawInput(nil), self).WithVersion("1.0.0")
	tests := []struct {
		name string
		task *SkillTask
		to   peer.ID
		want [32]byte
	}{
		{"a provider gets the module it announces", v1, c, rtHash(1)},
		{"a peer with only another version is asked as a fetcher", v1, d, rtHash(2)},
		{"a provider of the skill as no wasm skill gets no module", v1, e, [32]byte{}},
		{"a fetcher gets the module most providers of the version announce", v1, f, rtHash(2)},
		{"a fetcher of another version gets that version's module", NewSkillTask("text.upper", RawInput(nil), self).WithVersion("2.0.0"), f, rtHash(3)},
		{"a fetcher of a version no one announces gets no module", NewSkillTask("text.upper", RawInput(nil), self).WithVersion("9.0.0"), f, [32]byte{}},
		{"a skill no one announces a module for gets none", NewSkillTask("remote.only", RawInput(nil), self), f, [32]byte{}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := r.announcedModule(tc.task, tc.to); got != tc.want {
				t.Fatalf("module %x, want %x", got[:1], tc.want[:1])
			}
		})
	}
	t.Run("a tie goes to the smaller hash", func(t *testing.T) {
		tie := rtModuleDir(a, b, c, d, e, f)
		tie.mods[b] = map[grid.SkillCapability][32]byte{{ID: "text.upper", Version: "1.0.0"}: rtHash(1)} // a: 2, b and c: 1
		tie.mods[a] = map[grid.SkillCapability][32]byte{{ID: "text.upper", Version: "1.0.0"}: rtHash(9)}
		tie.mods[c] = map[grid.SkillCapability][32]byte{{ID: "text.upper", Version: "1.0.0"}: rtHash(9)} // 9 twice, 1 once
		if got := newRtRouter(t, self, tie, nil, nil, nil).announcedModule(v1, f); got != rtHash(9) {
			t.Fatalf("module %x, want 09 (announced twice)", got[:1])
		}
		tie.mods[c] = map[grid.SkillCapability][32]byte{{ID: "text.upper", Version: "1.0.0"}: rtHash(4)} // 9, 1, 4 once each
		if got := newRtRouter(t, self, tie, nil, nil, nil).announcedModule(v1, f); got != rtHash(1) {
			t.Fatalf("module %x, want 01 (the smallest of a three-way tie)", got[:1])
		}
	})
	t.Run("a Directory that announces no modules names none", func(t *testing.T) {
		if got := newRtRouter(t, self, dir.rtFetchDirectory, nil, nil, nil).announcedModule(v1, c); got != ([32]byte{}) {
			t.Fatalf("module %x, want none", got[:1])
		}
	})
}

// rtModuleDelegator succeeds as the peer it is sent to and keeps the
// module hash of each task it is sent.
type rtModuleDelegator struct {
	mu   sync.Mutex
	sent map[peer.ID][32]byte
}

func (d *rtModuleDelegator) Delegate(_ context.Context, p peer.ID, t *grid.RemoteTask) (*grid.RemoteResult, error) {
	d.mu.Lock()
	d.sent[p] = t.ModuleSHA256
	d.mu.Unlock()
	return &grid.RemoteResult{ID: t.ID, Success: true, Output: []byte("X"), ExecTime: time.Millisecond, Executor: p}, nil
}

func TestCoordinatorNamesTheAnnouncedModuleForAWasmSkillItLacks(t *testing.T) {
	ids := rtPeers(t, 7)
	self, a, b, c, d, e, f := ids[0], ids[1], ids[2], ids[3], ids[4], ids[5], ids[6]
	reg := rtRegistry(t) // no text.upper here
	trust, err := reputation.NewGraph(self, reputation.WithLogger(coQuiet))
	if err != nil {
		t.Fatal(err)
	}
	exec, err := NewExecutor(reg, self, WithWorkers(1), WithExecLogger(coQuiet))
	if err != nil {
		t.Fatal(err)
	}
	del := &rtModuleDelegator{sent: map[peer.ID][32]byte{}}
	coord, err := NewCoordinator(Deps{Self: self, Registry: reg, Executor: exec, Trust: trust, Remote: del,
		Directory: rtModuleDir(a, b, c, d, e, f)}, WithLogger(coQuiet))
	if err != nil {
		t.Fatal(err)
	}
	if err := coord.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = coord.Close() })
	id, err := coord.SubmitTask(context.Background(), NewSkillTask("text.upper", RawInput([]byte("x")), "").WithVersion("1.0.0"))
	if err != nil {
		t.Fatalf("SubmitTask: %v", err)
	}
	res, err := coord.Wait(context.Background(), id)
	if err != nil || !res.Success || res.ExecutedBy != f {
		t.Fatalf("Wait = %+v, %v; want success on the fetcher (the only connected candidate)", res, err)
	}
	del.mu.Lock()
	defer del.mu.Unlock()
	if got, ok := del.sent[f]; !ok || got != rtHash(2) {
		t.Fatalf("the fetcher was sent module %x (sent: %v), want 02, which two of the three providers announce", got[:1], ok)
	}
}
