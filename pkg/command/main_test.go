package command_test

import (
	"os"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/command"
)

// TestMain makes the test binary the shim: New's default shim is
// os.Executable(), which runs it with command.ShimArg.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == command.ShimArg {
		os.Exit(command.ShimMain(os.Args[2:]))
	}
	os.Exit(m.Run())
}
