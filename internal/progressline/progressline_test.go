package progressline

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestParse(t *testing.T) {
	long := "cortex:progress 0.5 " + strings.Repeat("x", MaxLine)
	cases := []struct {
		line string
		f    float64
		msg  string
		ok   bool
	}{
		{"cortex:progress 0.5 halfway", 0.5, "halfway", true},
		{"cortex:progress 1", 1, "", true},
		{"cortex:progress 0", 0, "", true},
		{"cortex:progress 0.25 two words\r", 0.25, "two words", true},
		{"cortex:progress 1e-1 sci", 0.1, "sci", true},
		{"cortex:progress 1.5 over", 0, "", false},
		{"cortex:progress -0.1 under", 0, "", false},
		{"cortex:progress NaN", 0, "", false},
		{"cortex:progress Inf", 0, "", false},
		{"cortex:progress half", 0, "", false},
		{"cortex:progress ", 0, "", false},
		{"cortex:progress", 0, "", false},
		{" cortex:progress 0.5", 0, "", false},
		{"CORTEX:PROGRESS 0.5", 0, "", false},
		{"error: disk full", 0, "", false},
		{long, 0, "", false},
	}
	for _, c := range cases {
		f, msg, ok := Parse([]byte(c.line))
		if ok != c.ok || f != c.f || msg != c.msg {
			t.Errorf("Parse(%.40q) = %v, %q, %v; want %v, %q, %v", c.line, f, msg, ok, c.f, c.msg, c.ok)
		}
	}
	// A message is cut to 200 bytes of valid UTF-8.
	_, msg, ok := Parse([]byte("cortex:progress 0.5 " + strings.Repeat("é", 110) + "\xff"))
	if !ok || len(msg) != 200 || msg != strings.Repeat("é", 100) {
		t.Errorf("long message: %d bytes %q, %v", len(msg), msg, ok)
	}
}

type report struct {
	f   float64
	msg string
}

func run(chunks ...string) (string, []report) {
	var out bytes.Buffer
	var got []report
	w := NewWriter(&out, func(f float64, msg string) { got = append(got, report{f, msg}) })
	for _, c := range chunks {
		if n, err := w.Write([]byte(c)); n != len(c) || err != nil {
			panic("short write")
		}
	}
	_ = w.Flush()
	return out.String(), got
}

func TestWriterTakesProgressLinesOutOfStderr(t *testing.T) {
	out, got := run("starting\ncortex:progress 0.1 load", "ing\nwarn: slow\ncortex:progress 0.5\n", "cortex:pro", "gress 2 bad\ncortex:progress 0.9 end")
	if out != "starting\nwarn: slow\ncortex:progress 2 bad\n" {
		t.Errorf("stderr kept %q", out)
	}
	want := []report{{0.1, "loading"}, {0.5, ""}, {0.9, "end"}}
	if len(got) != len(want) {
		t.Fatalf("reports %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("reports %v, want %v", got, want)
		}
	}
}

func TestWriterPassesLongLinesThrough(t *testing.T) {
	long := "cortex:progress 0.5 " + strings.Repeat("y", 2*MaxLine) + "\n"
	out, got := run(long[:100], long[100:300], long[300:], "x\n")
	if out != long+"x\n" || len(got) != 0 {
		t.Errorf("a %d-byte line: kept %d bytes, reports %v; want it all kept and none reported", len(long), len(out), got)
	}
	// Ordinary text is not held back.
	var buf bytes.Buffer
	w := NewWriter(&buf, func(float64, string) { t.Error("reported") })
	_, _ = w.Write([]byte("partial line"))
	if buf.String() != "partial line" {
		t.Errorf("an ordinary partial line was held back: %q written", buf.String())
	}
}

// FuzzWriter checks that whatever a skill writes, in whatever chunks, the
// bytes that are not progress lines come out unchanged and in order, and
// every report is in [0, 1] with a message of at most 200 bytes of UTF-8.
func FuzzWriter(f *testing.F) {
	f.Add([]byte("a\ncortex:progress 0.5 x\nb"), uint8(3))
	f.Add([]byte("cortex:progress 1\r\ncortex:progress 0.3"), uint8(1))
	f.Add([]byte(strings.Repeat("cortex:progress 0.1 ", 20)+"\n"), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, step uint8) {
		var out bytes.Buffer
		w := NewWriter(&out, func(fr float64, msg string) {
			if !(fr >= 0 && fr <= 1) || math.IsNaN(fr) || len(msg) > 200 || !utf8.ValidString(msg) {
				t.Fatalf("report %v %q out of bounds", fr, msg)
			}
		})
		n := int(step%32) + 1
		for b := data; len(b) > 0; {
			k := min(n, len(b))
			if _, err := w.Write(b[:k]); err != nil {
				t.Fatal(err)
			}
			b = b[k:]
		}
		_ = w.Flush()
		// Expected: the input with its progress lines removed.
		var want bytes.Buffer
		lines := bytes.SplitAfter(data, []byte("\n"))
		for _, l := range lines {
			body := bytes.TrimSuffix(l, []byte("\n"))
			if len(l) <= MaxLine {
				if _, _, ok := Parse(body); ok {
					continue
				}
			}
			want.Write(l)
		}
		if !bytes.Equal(out.Bytes(), want.Bytes()) {
			t.Fatalf("kept %q, want %q", out.Bytes(), want.Bytes())
		}
	})
}
