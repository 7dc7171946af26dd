package skill

import (
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// BenchmarkHandleTaskEcho admits peers' echo tasks and waits for each
// reply, with the default record of sent results (4096 entries, every
// add past the bound evicting the oldest) against one of a single entry,
// the baseline, which is about what admission cost before the record.
func BenchmarkHandleTaskEcho(b *testing.B) {
	for _, bc := range []struct {
		name string
		opts []CoordinatorOption
	}{
		{"record=1", []CoordinatorOption{WithRecentResults(1, 0, time.Nanosecond)}},
		{"record=default", nil},
	} {
		b.Run(bc.name, func(b *testing.B) {
			e := newCoEnv(b, coEnvConfig{opts: bc.opts})
			from := e.peers[0]
			done := make(chan *grid.RemoteResult, 1)
			reply := func(r *grid.RemoteResult) { done <- r }
			in := []byte(`"hello"`)
			b.ReportAllocs()
			for b.Loop() {
				rt := &grid.RemoteTask{ID: grid.NewTaskID(), Skill: "echo", Input: in, InputKind: grid.InputJSON, Deadline: time.Now().Add(time.Minute), Attempt: 1}
				if err := e.c.HandleTask(from, rt, grid.ReplyFunc(reply)); err != nil {
					b.Fatal(err)
				}
				<-done
			}
		})
	}
}
