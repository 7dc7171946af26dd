package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/cortexgrid/cortexd/pkg/client"
)

// Exit codes of the cortexd command.
const (
	exitOK          = 0
	exitFailed      = 1 // the task failed or was canceled; the daemon refused; any other error
	exitUsage       = 2 // bad flag, argument or command
	exitUnreachable = 3 // no daemon answered
	exitTimeout     = 4 // the task timed out, or waiting for it did
)

// exitError carries the exit code an error ends the command with. A
// usage error may carry the line that shows the command's usage.
type exitError struct {
	code  int
	err   error
	usage string // "cortexd task submit SKILL [flags]", shown under the error
	help  string // the command whose --help to point to: "cortexd task submit"
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitError{code: exitUsage, err: fmt.Errorf(format, args...)}
}

// silentError ends the command with a code and prints nothing more: the
// command already said what happened (e.g. a failed task's result).
type silentError struct{ code int }

func (e *silentError) Error() string { return fmt.Sprintf("exit status %d", e.code) }

// exitCode maps an error to the process exit code.
func exitCode(err error) int {
	var se *silentError
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &se):
		return se.code
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, client.ErrUnreachable):
		return exitUnreachable
	case errors.Is(err, context.DeadlineExceeded):
		return exitTimeout
	}
	return exitFailed
}

// report prints err as one line (or a few, for a list of config problems)
// and returns the exit code. It never prints a stack trace.
func report(err error, stderr io.Writer) int {
	code := exitCode(err)
	var se *silentError
	if err != nil && !errors.As(err, &se) {
		msg := strings.TrimSpace(err.Error())
		fmt.Fprintln(stderr, "cortexd: "+msg)
		if code == exitUsage {
			help := "cortexd"
			var ee *exitError
			if errors.As(err, &ee) {
				if ee.usage != "" {
					fmt.Fprintln(stderr, "Usage: "+ee.usage)
				}
				if ee.help != "" {
					help = ee.help
				}
			}
			fmt.Fprintf(stderr, "Run '%s --help' for usage.\n", help)
		}
	}
	return code
}
