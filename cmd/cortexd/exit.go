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

// exitError carries the exit code an error ends the command with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErrorf(format string, args ...any) error {
	return &exitError{exitUsage, fmt.Errorf(format, args...)}
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
			fmt.Fprintln(stderr, "Run 'cortexd --help' for usage.")
		}
	}
	return code
}
