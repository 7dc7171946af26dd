package wasm

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/skill"
)

// stderrModule writes text to stderr in one fd_write and exits with code.
func stderrModule(text string, code int32) []byte {
	b := []byte(text)
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	var body []byte
	for i := 0; i < len(b); i += 4 {
		body = cat(body, i32c(int32(16+i)), i32c(int32(binary.LittleEndian.Uint32(b[i:]))), store())
	}
	body = cat(body,
		i32c(0), i32c(16), store(), i32c(4), i32c(int32(len(text))), store(), // iovec {16, len}
		i32c(2), i32c(0), i32c(1), i32c(8), call(1), drop(),
		i32c(code), call(2),
	)
	return buildModule(modSpec{minPages: 1, start: "_start", body: body})
}

// TestRunTurnsStderrProgressLinesIntoReports has a module write progress
// lines and other lines to stderr: the progress lines reach
// skill.ReportProgress and are not in the failure's stderr.
func TestRunTurnsStderrProgressLinesIntoReports(t *testing.T) {
	e := newEngine(t, Options{})
	mod := stderrModule("cortex:progress 0.5 half\nreal error\ncortex:progress 1", 3)
	p := compile(t, e, manifestFor("progress.test", mod), mod)
	var got []string
	ctx := skill.WithProgress(context.Background(), func(f float64, msg string) {
		got = append(got, strings.TrimSpace(strings.Join([]string{map[float64]string{0.5: "0.5", 1: "1"}[f], msg}, " ")))
	})
	_, err := p.Run(ctx, nil)
	var re *RunError
	if !errors.As(err, &re) || re.ExitCode != 3 {
		t.Fatalf("error %v, want a *RunError with exit 3", err)
	}
	if strings.Contains(re.Stderr, "cortex:progress") || !strings.Contains(re.Stderr, "real error") {
		t.Errorf("stderr kept %q, want only the line that is not a progress report", re.Stderr)
	}
	if strings.Join(got, "|") != "0.5 half|1" {
		t.Errorf("reports %q, want 0.5 half and 1 (the last line has no newline)", got)
	}
}
