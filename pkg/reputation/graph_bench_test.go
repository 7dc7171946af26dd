package reputation

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// benchParallelism makes RunParallel use 32 goroutines per P: 64 on the
// 2-core machine the goals are stated for.
const benchParallelism = 32

// BenchmarkRecord measures Record from many goroutines over 16 peers,
// against a map of counters behind one mutex, the simplest alternative.
//
//	go test -run '^$' -bench 'Record|Trust' -benchmem ./pkg/reputation/
func BenchmarkRecord(b *testing.B) {
	ids := peers(b, 16)
	b.Run("baseline=mutex-map", func(b *testing.B) {
		var mu sync.Mutex
		m := make(map[peer.ID]float64)
		runParallel(b, func(i int) {
			mu.Lock()
			m[ids[i%len(ids)]]++
			mu.Unlock()
		})
	})
	b.Run("graph", func(b *testing.B) {
		g, _ := newTestGraph(b)
		for _, p := range ids {
			g.Record(p, "echo", OutcomeSuccess)
		}
		runParallel(b, func(i int) {
			o := OutcomeSuccess
			if i%16 == 0 {
				o = OutcomeFailure
			}
			g.Record(ids[i%len(ids)], "echo", o)
		})
	})
}

// BenchmarkTrust measures the router's read, Trust (and, in the last case,
// SkillRating as well), while one call in eight records an outcome and
// recomputation runs every 10 ms, against a map behind a sync.RWMutex.
func BenchmarkTrust(b *testing.B) {
	ids := peers(b, 16)
	b.Run("baseline=rwmutex-map", func(b *testing.B) {
		var mu sync.RWMutex
		m := make(map[peer.ID]float64)
		for _, p := range ids {
			m[p] = 0.5
		}
		var sink atomic.Uint64
		runParallel(b, func(i int) {
			p := ids[i%len(ids)]
			if i%8 == 0 {
				mu.Lock()
				m[p] += 0.001
				mu.Unlock()
				return
			}
			mu.RLock()
			v := m[p]
			mu.RUnlock()
			if v < 0 {
				sink.Add(1)
			}
		})
	})
	for _, withSkill := range []bool{false, true} {
		name := "graph"
		if withSkill {
			name = "graph+skill-rating"
		}
		b.Run(name, func(b *testing.B) {
			g, _ := newTestGraph(b, WithRecomputeInterval(10*time.Millisecond))
			for _, p := range ids {
				g.Record(p, "echo", OutcomeSuccess)
			}
			if err := g.Start(b.Context()); err != nil {
				b.Fatal(err)
			}
			runParallel(b, func(i int) {
				p := ids[i%len(ids)]
				if i%8 == 0 {
					g.Record(p, "echo", OutcomeSuccess)
					return
				}
				if g.Trust(p) < 0 || withSkill && g.SkillRating(p, "echo") < -1 {
					b.Error("out of range")
				}
			})
		})
	}
}

// runParallel runs op(i) b.N times from 64 goroutines (on 2 Ps), each
// goroutine counting i up from its own start.
func runParallel(b *testing.B, op func(i int)) {
	b.Helper()
	var worker atomic.Uint32
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1))
		for pb.Next() {
			op(i)
			i++
		}
	})
}
