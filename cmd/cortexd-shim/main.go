// Command cortexd-shim starts the programs of cortexd's command skills:
// cortexd runs it with the hidden argument __exec-shim when
// skills.command_shim names it. It is the shim alone (package
// pkg/command/shim), so it starts in about 1 ms, where cortexd's own binary,
// the default shim, spends about 10 ms in package initializers.
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
