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
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(report(err, os.Stderr))
}
