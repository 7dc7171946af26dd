package command

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// Errors callers branch on with errors.Is. The executor reports all but
// ErrInvalidSpec and ErrUnsupported (which New returns) as
// execution_failed.
var (
	// ErrInvalidSpec: a Spec field is missing or wrong; the message names
	// every bad field.
	ErrInvalidSpec = errors.New("invalid command skill")
	// ErrUnsupported: command skills need Linux.
	ErrUnsupported = errors.New("command skills are not supported on this system")
	// ErrFailed: the program exited with a non-zero code or was killed by
	// a signal it did not get from us; the error is an *ExitError.
	ErrFailed = errors.New("command failed")
	// ErrOutputTooLarge: the program wrote more than Spec.MaxOutput bytes
	// to stdout; its process group was killed.
	ErrOutputTooLarge = errors.New("command output too large")
	// ErrStart: the shim could not confine or start the program (a bad
	// path, a denied exec, a limit the system refused); nothing ran.
	ErrStart = errors.New("command did not start")
	// ErrEscaped: a process the program started left its process group
	// (setsid or setpgid) and still held its stdout or stderr after the
	// group was killed. It was not killed.
	ErrEscaped = errors.New("a process left the command's process group")
)

// StderrTail is how many bytes of a failed program's stderr an error
// keeps: the last ones.
const StderrTail = 4 << 10

// ExitError is a program that exited with a non-zero code or was killed
// by a signal. It wraps ErrFailed.
type ExitError struct {
	Skill reputation.SkillID
	// ExitCode is the exit code, or -1 if a signal killed the program.
	ExitCode int
	// Signal names the signal that killed it ("SIGSEGV"); empty for an
	// exit.
	Signal string
	// Hint says which limit a signal likely comes from ("CPU time limit
	// 2s"); it may be empty.
	Hint string
	// Stderr is the last StderrTail bytes of stderr, made printable.
	Stderr string
}

func (e *ExitError) Error() string {
	var b strings.Builder
	if e.Signal != "" {
		fmt.Fprintf(&b, "command skill %q was killed by %s", e.Skill, e.Signal)
		if e.Hint != "" {
			fmt.Fprintf(&b, " (%s)", e.Hint)
		}
	} else {
		fmt.Fprintf(&b, "command skill %q exited with code %d", e.Skill, e.ExitCode)
	}
	b.WriteString(stderrSuffix(e.Stderr))
	return b.String()
}

// Unwrap makes errors.Is(err, ErrFailed) true.
func (e *ExitError) Unwrap() error { return ErrFailed }

func stderrSuffix(s string) string {
	if s == "" {
		return "; stderr was empty"
	}
	return "; stderr: " + s
}

// tailWriter keeps the last StderrTail bytes written to it and counts
// the rest. It is not safe for concurrent use.
type tailWriter struct {
	buf   []byte // a ring once full
	next  int    // where the next byte goes once full
	total int64
}

func (w *tailWriter) Write(b []byte) (int, error) {
	n := len(b)
	w.total += int64(n)
	if len(b) >= StderrTail {
		w.buf = append(w.buf[:0], b[len(b)-StderrTail:]...)
		w.next = 0
		return n, nil
	}
	if room := StderrTail - len(w.buf); room > 0 {
		k := min(room, len(b))
		w.buf = append(w.buf, b[:k]...)
		b = b[k:]
	}
	for len(b) > 0 {
		k := copy(w.buf[w.next:], b)
		w.next = (w.next + k) % StderrTail
		b = b[k:]
	}
	return n, nil
}

// String returns the tail, made printable; if more was written, it says
// how much was left out first.
func (w *tailWriter) String() string {
	tail := append(append([]byte(nil), w.buf[w.next:]...), w.buf[:w.next]...)
	s := printable(tail)
	if skipped := w.total - int64(len(tail)); skipped > 0 {
		s = fmt.Sprintf("[%d earlier bytes left out] %s", skipped, strings.ToValidUTF8(s, ""))
	}
	return strings.TrimRight(s, "\n")
}

// printable makes untrusted text safe to log: valid UTF-8, and control
// characters other than newline and tab (terminal escapes among them)
// replaced by U+FFFD.
func printable(b []byte) string {
	s := strings.ToValidUTF8(string(b), string(utf8.RuneError))
	return strings.Map(func(r rune) rune {
		if r != '\n' && r != '\t' && unicode.IsControl(r) {
			return utf8.RuneError
		}
		return r
	}, s)
}
