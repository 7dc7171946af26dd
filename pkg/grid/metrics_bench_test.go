package grid

import (
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"
)

// benchParallelism makes RunParallel use 32 goroutines per P: 64 on the
// 2-core machine the goals are stated for.
const benchParallelism = 32

// BenchmarkMetricsRecordCompleted measures RecordCompleted from many
// goroutines, against the cheapest thing a tracker could do instead: one
// counter increment behind one mutex.
//
//	go test -run '^$' -bench 'Metrics' -benchmem -benchtime 1s ./pkg/grid/
func BenchmarkMetricsRecordCompleted(b *testing.B) {
	b.Run("baseline=mutex-counter", func(b *testing.B) {
		var mu sync.Mutex
		var n uint64
		b.SetParallelism(benchParallelism)
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				n++
				mu.Unlock()
			}
		})
		if n != uint64(b.N) {
			b.Fatalf("counted %d, want %d", n, b.N)
		}
	})
	for _, nodes := range []int{1, 16} {
		b.Run(fmt.Sprintf("nodes=%d", nodes), func(b *testing.B) {
			m := NewMetricsTracker()
			ids := benchNodes(nodes)
			for _, id := range ids {
				m.RecordCompleted(id, time.Millisecond) // create the state outside the timed loop
			}
			var worker atomic.Uint32
			b.SetParallelism(benchParallelism)
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				i := int(worker.Add(1))
				for pb.Next() {
					m.RecordCompleted(ids[i%len(ids)], time.Duration(i&1023)*time.Microsecond)
					i++
				}
			})
			b.StopTimer()
			if got := m.Snapshot().Completed; got != uint64(b.N+nodes) {
				b.Fatalf("completed %d, want %d", got, b.N+nodes)
			}
		})
	}
}

// BenchmarkMetricsNode measures the router's read, Node, while other
// goroutines record: the readers and recorders share the same nodes.
func BenchmarkMetricsNode(b *testing.B) {
	m := NewMetricsTracker()
	ids := benchNodes(8)
	for _, id := range ids {
		m.RecordCompleted(id, time.Millisecond)
	}
	var worker atomic.Uint32
	b.SetParallelism(benchParallelism)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		i := int(worker.Add(1))
		record := i%4 == 0 // one goroutine in four records, the others read
		for pb.Next() {
			id := ids[i%len(ids)]
			if record {
				m.RecordCompleted(id, time.Millisecond)
			} else if _, ok := m.Node(id); !ok {
				b.Error("Node() lost a node")
			}
			i++
		}
	})
}

func benchNodes(n int) []peer.ID {
	ids := make([]peer.ID, n)
	for i := range ids {
		ids[i] = peer.ID(fmt.Sprintf("12D3KooWbenchnode%032d", i))
	}
	return ids
}
