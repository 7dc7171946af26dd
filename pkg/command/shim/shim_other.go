//go:build !linux

package shim

import (
	"fmt"
	"os"
)

// Spec is what the shim needs; there is no shim on this system.
type Spec struct{}

// Main returns 125: command skills need Linux.
func Main([]string) int {
	fmt.Fprintln(os.Stderr, "cortexd: "+Arg+": command skills need Linux")
	return 125
}
