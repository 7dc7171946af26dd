package workflow_test

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/skill"
	"github.com/cortexgrid/cortexd/pkg/store"
	"github.com/cortexgrid/cortexd/pkg/workflow"
)

// chainLen is the number of steps of each chain BenchmarkChainOverhead
// runs: echo tasks in a line, each taking the one before's output.
const chainLen = 8

// BenchmarkChainOverhead measures what a workflow costs per step over the
// same chain of tasks submitted one after another by the caller (submit,
// wait, submit the next with its output), in the same run, with the store
// off and on. ns/step is the time of one op over chainLen; the overhead
// per step is workflow's ns/step less plain's.
func BenchmarkChainOverhead(b *testing.B) {
	for _, storeOn := range []bool{false, true} {
		name := "store off"
		if storeOn {
			name = "store on"
		}
		b.Run(name, func(b *testing.B) {
			var opts []skill.CoordinatorOption
			var st *store.Store
			if storeOn {
				var err error
				st, err = store.Open(b.TempDir(), store.WithLogger(slog.New(slog.DiscardHandler)))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { st.Close() })
				opts = append(opts, skill.WithStore(st))
			}
			e := apitest.NewEngine(b, opts...)
			c := e.Coordinator
			wo := workflow.Options{MaxWorkflows: 1 << 20, KeepFinished: 64}
			if st != nil {
				wo.Store = st
			}
			w := workflow.New(c, wo)
			if err := w.Start(context.Background()); err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { w.Close() })
			ctx := context.Background()
			in := skill.SkillInput{Kind: grid.InputJSON, Data: []byte(`{"payload":"` + strings.Repeat("x", 200) + `"}`)}

			plain := func(b *testing.B, chooseID bool) {
				var commits uint64
				if st != nil {
					commits = st.Stats().Commits
				}
				for b.Loop() {
					cur := in
					for range chainLen {
						t := skill.NewSkillTask("echo", cur, "").WithMaxRetries(0)
						if chooseID {
							t.ID = grid.NewTaskID()
						}
						id, err := c.SubmitTask(ctx, t)
						if err != nil {
							b.Fatal(err)
						}
						res, err := c.Wait(ctx, id)
						if err != nil || !res.Success {
							b.Fatalf("%v %+v", err, res)
						}
						cur = skill.SkillInput{Kind: grid.InputJSON, Data: res.Output}
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*chainLen), "ns/step")
				if st != nil {
					b.ReportMetric(float64(st.Stats().Commits-commits)/float64(b.N*chainLen), "fsyncs/step")
				}
			}
			b.Run("plain", func(b *testing.B) { plain(b, false) })
			// The IDs chosen by the caller, as the engine chooses them.
			b.Run("plain chosen IDs", func(b *testing.B) { plain(b, true) })

			spec := "steps:\n  - {name: s0, skill: echo}\n"
			for i := 1; i < chainLen; i++ {
				spec += fmt.Sprintf("  - {name: s%d, skill: echo, depends_on: [s%d]}\n", i, i-1)
			}
			s, err := workflow.Parse([]byte(spec))
			if err != nil {
				b.Fatal(err)
			}
			b.Run("workflow", func(b *testing.B) {
				var commits uint64
				if st != nil {
					commits = st.Stats().Commits
				}
				for b.Loop() {
					tasks := make([]*skill.SkillTask, chainLen)
					for i := range tasks {
						tasks[i] = skill.NewSkillTask("echo", skill.SkillInput{Kind: grid.InputJSON, Data: []byte("null")}, "").WithMaxRetries(0)
					}
					tasks[0].Input = in
					id, err := w.Submit(ctx, s, tasks)
					if err != nil {
						b.Fatal(err)
					}
					got, err := w.Wait(ctx, id)
					if err != nil || got.State != workflow.StateSucceeded {
						b.Fatalf("%v %+v", err, got)
					}
				}
				b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*chainLen), "ns/step")
				if st != nil {
					b.ReportMetric(float64(st.Stats().Commits-commits)/float64(b.N*chainLen), "fsyncs/step")
				}
			})
		})
	}
}
