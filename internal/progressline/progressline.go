// Package progressline reads the progress reports of wasm and command
// skills: a line of the skill's stderr of the form
//
//	cortex:progress F message
//
// where F is a decimal number in [0, 1] (as strconv.ParseFloat reads it;
// NaN and infinities are not numbers here) and message, after one space,
// is optional free text, is a progress report (see skill.ReportProgress):
// the fraction of the work done and what the skill is doing. A line is at
// most MaxLine bytes, its newline included; a longer one, or one that does
// not parse, is an ordinary stderr line. The message is cut to 200 bytes
// of valid UTF-8. Progress lines are taken out of stderr; every other byte
// goes through unchanged.
package progressline

import (
	"bytes"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Prefix starts every progress line.
const Prefix = "cortex:progress "

// MaxLine is the most bytes of a progress line, its newline included.
const MaxLine = 256

// maxMessage is the most bytes of a report's message (the wire's cap).
const maxMessage = 200

// Parse reads one line, without its newline (a trailing "\r" is allowed),
// and reports whether it is a progress line.
func Parse(line []byte) (fraction float64, msg string, ok bool) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	if len(line) >= MaxLine || !bytes.HasPrefix(line, []byte(Prefix)) {
		return 0, "", false
	}
	rest := line[len(Prefix):]
	num, text, _ := bytes.Cut(rest, []byte(" "))
	f, err := strconv.ParseFloat(string(num), 64)
	if err != nil || math.IsNaN(f) || f < 0 || f > 1 {
		return 0, "", false
	}
	return f, cut(string(text)), true
}

// cut makes s valid UTF-8 of at most maxMessage bytes, cut on a rune
// boundary.
func cut(s string) string {
	if len(s) <= maxMessage && utf8.ValidString(s) {
		return s
	}
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= maxMessage {
		return s
	}
	n := maxMessage
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}

// Writer takes a skill's stderr: each progress line goes to its report
// func, and everything else to the next writer, unchanged and in order.
// It holds back at most MaxLine bytes: the start of a line that may still
// be a progress line. Call Flush once the skill is done. A Writer is not
// safe for concurrent use.
type Writer struct {
	next   io.Writer
	report func(fraction float64, msg string)
	line   []byte // the start of the current line, while it may be a progress line
	pass   bool   // the current line is not one: its bytes go straight through
}

// NewWriter returns a Writer that reports progress lines to report and
// writes the rest to next.
func NewWriter(next io.Writer, report func(fraction float64, msg string)) *Writer {
	return &Writer{next: next, report: report}
}

// Write implements io.Writer. It reports len(b) written unless next fails.
func (w *Writer) Write(b []byte) (int, error) {
	n := len(b)
	for len(b) > 0 {
		i := bytes.IndexByte(b, '\n')
		chunk := b
		if i >= 0 {
			chunk = b[:i+1]
		}
		b = b[len(chunk):]
		if err := w.take(chunk, i >= 0); err != nil {
			return n - len(b) - len(chunk), err
		}
	}
	return n, nil
}

// take handles chunk, a part of one line; eol says it ends the line.
func (w *Writer) take(chunk []byte, eol bool) error {
	if !w.pass {
		w.line = append(w.line, chunk...)
		body := w.line
		if eol {
			body = body[:len(body)-1]
		}
		switch {
		case len(w.line) > MaxLine || !couldBe(body):
			w.pass = true
			chunk = w.line
			w.line = w.line[:0]
		case eol:
			line := w.line
			w.line = w.line[:0]
			if f, msg, ok := Parse(line[:len(line)-1]); ok {
				w.report(f, msg)
				return nil
			}
			_, err := w.next.Write(line)
			return err
		default:
			return nil // held back: the line may still be a progress line
		}
	}
	if eol {
		w.pass = false
	}
	_, err := w.next.Write(chunk)
	return err
}

// couldBe reports whether b, the start of a line, may still be a progress
// line.
func couldBe(b []byte) bool {
	if len(b) <= len(Prefix) {
		return strings.HasPrefix(Prefix, string(b))
	}
	return bytes.HasPrefix(b, []byte(Prefix))
}

// Flush ends the last line, if it has no newline: a progress line is
// reported, anything else written to next.
func (w *Writer) Flush() error {
	line := w.line
	w.line, w.pass = w.line[:0], false
	if len(line) == 0 {
		return nil
	}
	if f, msg, ok := Parse(line); ok {
		w.report(f, msg)
		return nil
	}
	_, err := w.next.Write(line)
	return err
}
