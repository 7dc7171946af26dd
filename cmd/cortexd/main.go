// Command cortexd is the cortex grid daemon and its command-line client.
//
// Exit codes: 0 success; 1 the task failed (or was canceled), or the daemon
// refused the request; 2 usage error; 3 daemon unreachable; 4 timed out.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/cortexgrid/cortexd/pkg/command"
)

func main() {
	// A command skill's shim: before signal handlers, config or goroutines
	// of our own, as it confines itself and becomes the program.
	if len(os.Args) > 1 && os.Args[1] == command.ShimArg {
		os.Exit(command.ShimMain(os.Args[2:]))
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(report(err, os.Stderr))
}
