// Command shimbin is the shim of command skills alone, for the benchmark
// against the daemon's own binary as the shim (package shim says why it
// starts faster). A deployment would build the same main as
// cmd/cortexd-shim and point Options.Shim at it.
package main

import (
	"os"

	"github.com/cortexgrid/cortexd/pkg/command/shim"
)

func main() {
	if len(os.Args) < 2 || os.Args[1] != shim.Arg {
		os.Stderr.WriteString("cortexd-shim is internal: cortexd runs it to start a command skill\n")
		os.Exit(2)
	}
	os.Exit(shim.Main(os.Args[2:]))
}
