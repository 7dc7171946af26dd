// Command reactor is a Go-built WASI reactor for pkg/wasm's benchmarks:
// built with -buildmode=c-shared, it is instantiated once and its export
// "run" is called per task, the alternative to a fresh instance per task.
package main

import "bytes"

var buf = []byte("hello, grid")

// run upper-cases a buffer n times and returns its length: about the work
// of the command guest's "upper" mode, without the I/O.
//
//go:wasmexport run
func run(n int32) int32 {
	var out []byte
	for range n {
		out = bytes.ToUpper(buf)
	}
	return int32(len(out))
}

func main() {}
