package main

import (
	"strings"
	"testing"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

func TestProgressBar(t *testing.T) {
	cases := []struct {
		p    *apiv1.Progress
		want string
	}{
		{nil, ""},
		{&apiv1.Progress{Fraction: 0}, " [--------------------] 0%"},
		{&apiv1.Progress{Fraction: 0.42, Message: "slept 630 of 1500 ms"}, " [########------------] 42% slept 630 of 1500 ms"},
		{&apiv1.Progress{Fraction: 1, Message: "a\x1b[2Jb\r"}, " [####################] 100% a[2Jb"},
		{&apiv1.Progress{Fraction: 0.5, Message: "0123456789012345678901234567890123456789ABC"}, " [##########----------] 50% 012345678901234567890123456789012345678…"},
	}
	for _, c := range cases {
		if got := progressBar(c.p); got != c.want {
			t.Errorf("progressBar(%+v) = %q, want %q", c.p, got, c.want)
		}
	}
}

func TestPrintStatusShowsProgress(t *testing.T) {
	var out strings.Builder
	a := &app{stdout: &out}
	a.printStatus(&apiv1.Task{ID: "t1", State: "delegated", Level: "normal", Attempts: 1, Node: "peer",
		Progress: &apiv1.Progress{Fraction: 0.5, Message: "half\x07way"}})
	if want := "t1 delegated (normal priority, attempt 1, on peer, 50% done: halfway)\n"; out.String() != want {
		t.Errorf("printStatus = %q, want %q", out.String(), want)
	}
}
