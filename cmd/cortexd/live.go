package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/mattn/go-isatty"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// isTerminal reports whether w is a terminal, where a status line that
// rewrites itself makes sense.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

// liveStatus keeps one line on a terminal up to date with a task's state,
// from the daemon's event stream.
type liveStatus struct {
	w      io.Writer
	start  time.Time
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	task apiv1.Task
}

var spinner = []rune("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏")

func startLiveStatus(ctx context.Context, c *client.Client, w io.Writer, t *apiv1.Task) *liveStatus {
	ctx, cancel := context.WithCancel(ctx)
	l := &liveStatus{w: w, start: time.Now(), cancel: cancel, task: *t}
	l.wg.Add(2)
	go l.watch(ctx, c)
	go l.draw(ctx)
	return l
}

// watch updates the state from the task's events. If the stream cannot be
// opened, the line still shows the elapsed time.
func (l *liveStatus) watch(ctx context.Context, c *client.Client) {
	defer l.wg.Done()
	s, err := c.Events(ctx, l.task.ID)
	if err != nil {
		return
	}
	context.AfterFunc(ctx, func() { _ = s.Close() })
	for {
		ev, err := s.Next()
		if err != nil {
			return
		}
		if ev.Task != nil && ev.Task.ID == l.task.ID {
			l.mu.Lock()
			l.task = *ev.Task
			l.mu.Unlock()
		}
	}
}

func (l *liveStatus) draw(ctx context.Context) {
	defer l.wg.Done()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for i := 0; ; i++ {
		l.mu.Lock()
		t := l.task
		l.mu.Unlock()
		where := ""
		if t.Node != "" {
			where = " on " + shortPeer(t.Node)
		}
		fmt.Fprintf(l.w, "\r\033[K%c %s %s%s, attempt %d, %s%s", spinner[i%len(spinner)], shortID(t.ID), t.State, where,
			max(t.Attempts, 1), time.Since(l.start).Round(100*time.Millisecond), progressBar(t.Progress))
		select {
		case <-ctx.Done():
			fmt.Fprint(l.w, "\r\033[K")
			return
		case <-tick.C:
		}
	}
}

// stop ends the updates and clears the line.
func (l *liveStatus) stop() {
	l.cancel()
	l.wg.Wait()
}

// progressBarWidth and progressMessageRunes bound the progress part of
// the status line.
const (
	progressBarWidth     = 20
	progressMessageRunes = 40
)

// progressBar is the status line's progress part, " [####----] 40% msg",
// or nothing if the skill has reported no progress.
func progressBar(p *apiv1.Progress) string {
	if p == nil {
		return ""
	}
	f := min(max(p.Fraction, 0), 1)
	full := int(f*progressBarWidth + 0.5)
	bar := " [" + strings.Repeat("#", full) + strings.Repeat("-", progressBarWidth-full) + "] " + strconv.Itoa(int(f*100)) + "%"
	if msg := printableLine(p.Message); msg != "" {
		if r := []rune(msg); len(r) > progressMessageRunes {
			msg = string(r[:progressMessageRunes-1]) + "…"
		}
		bar += " " + msg
	}
	return bar
}

// printableLine drops the control characters of a peer's message, which
// would break the status line (a peer chose them).
func printableLine(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return -1
		}
		return r
	}, s)
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
