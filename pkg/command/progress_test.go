package command_test

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/command"
	"github.com/cortexgrid/cortexd/pkg/skill"
)

// TestStderrProgressLinesAreReports runs a program that writes progress
// lines among other stderr lines: the lines of the form
// "cortex:progress F message" reach skill.ReportProgress, a bad one and
// the rest stay stderr.
func TestStderrProgressLinesAreReports(t *testing.T) {
	s := newSkill(t, command.Spec{Argv: sh(`echo "cortex:progress 0.25 reading" >&2
echo "warming up" >&2
echo "cortex:progress 0.75" >&2
echo "cortex:progress 7 not a fraction" >&2
cat; exit 3`)})
	var mu sync.Mutex
	var got []string
	ctx := skill.WithProgress(context.Background(), func(f float64, msg string) {
		mu.Lock()
		got = append(got, strings.TrimSpace(strings.Join([]string{strings.TrimRight(strings.TrimRight(formatF(f), "0"), "."), msg}, " ")))
		mu.Unlock()
	})
	_, err := s.Execute(ctx, skill.RawInput([]byte("x")))
	var ee *command.ExitError
	if !errors.As(err, &ee) {
		t.Fatalf("err %v, want an *ExitError", err)
	}
	if ee.Stderr != "warming up\ncortex:progress 7 not a fraction" {
		t.Errorf("stderr kept %q, want the lines that are not progress reports", ee.Stderr)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(got, "|") != "0.25 reading|0.75" {
		t.Errorf("reports %q, want 0.25 reading and 0.75", got)
	}
}

func formatF(f float64) string { return strconv.FormatFloat(f, 'f', 4, 64) }
