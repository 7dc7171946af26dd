package wasm

import (
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/cortexgrid/cortexd/pkg/reputation"
)

// Errors callers branch on with errors.Is.
var (
	// ErrInvalidManifest: a manifest field is missing or wrong; the message
	// names every bad field.
	ErrInvalidManifest = errors.New("invalid wasm skill manifest")
	// ErrNotWasm: the bytes are not a WebAssembly binary (no "\0asm" magic).
	ErrNotWasm = errors.New("not a WebAssembly module")
	// ErrHashMismatch: the module's sha256 is not the one expected.
	ErrHashMismatch = errors.New("module sha256 mismatch")
	// ErrModuleTooLarge: the module is over the node's module size cap.
	ErrModuleTooLarge = errors.New("module too large")
	// ErrCompile: wazero refused the module, or it is not a WASI command
	// this node can run (see Engine.Compile).
	ErrCompile = errors.New("module does not compile")
	// ErrInputTooLarge: a task's input is over the skill's input limit.
	ErrInputTooLarge = errors.New("input too large")
	// ErrOutputTooLarge: the module wrote more to stdout than its output
	// limit; it was stopped.
	ErrOutputTooLarge = errors.New("output too large")
	// ErrFailed: the module exited with a non-zero code or trapped; the
	// error is a *RunError.
	ErrFailed = errors.New("wasm module failed")
	// ErrClosed: the engine or the program is closed.
	ErrClosed = errors.New("wasm engine closed")
	// ErrNotFound: no such manifest or module in the store.
	ErrNotFound = errors.New("not found in the wasm store")
	// ErrExists: a different manifest with that name and version is stored.
	ErrExists = errors.New("already in the wasm store")
)

// StderrTail is how many bytes of a failed module's stderr a RunError
// keeps: the last ones, where a runtime prints its panic or fatal error.
const StderrTail = 4 << 10

// RunError is a module that exited with a non-zero code or trapped. It
// wraps ErrFailed. The executor reports it as execution_failed.
type RunError struct {
	Skill reputation.SkillID
	// ExitCode is the code the module passed to proc_exit; 0 for a trap.
	ExitCode uint32
	// Trap is wazero's description of a trap ("wasm error: unreachable",
	// with the start of the wasm stack trace); empty for an exit.
	Trap string
	// Stderr is the last StderrTail bytes the module wrote to stderr; if
	// it wrote more, they follow its first 512 bytes and a line saying how
	// many were skipped in between. Control characters other than newline
	// and tab are replaced.
	Stderr string
	// MemoryLimit is the memory the module had; a module that ran out of
	// it usually says so on stderr ("out of memory") or traps.
	MemoryLimit Size
}

func (e *RunError) Error() string {
	var b strings.Builder
	if e.Trap != "" {
		fmt.Fprintf(&b, "wasm skill %q trapped (memory limit %s): %s", e.Skill, e.MemoryLimit, e.Trap)
	} else {
		fmt.Fprintf(&b, "wasm skill %q exited with code %d (memory limit %s)", e.Skill, e.ExitCode, e.MemoryLimit)
	}
	if e.Stderr != "" {
		b.WriteString("; stderr: ")
		b.WriteString(e.Stderr)
	} else {
		b.WriteString("; stderr was empty")
	}
	return b.String()
}

// Unwrap makes errors.Is(err, ErrFailed) true.
func (e *RunError) Unwrap() error { return ErrFailed }

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

// maxTrapText bounds the trap text a RunError keeps: the message and the
// first frames of the wasm stack trace.
const maxTrapText = 1 << 10

func trapText(err error) string {
	s := printable([]byte(err.Error()))
	if len(s) > maxTrapText {
		s = strings.ToValidUTF8(s[:maxTrapText], "") + " ..."
	}
	return s
}
