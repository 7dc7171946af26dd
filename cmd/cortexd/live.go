package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"sync"
	"time"

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
		fmt.Fprintf(l.w, "\r\033[K%c %s %s%s, attempt %d, %s", spinner[i%len(spinner)], shortID(t.ID), t.State, where,
			max(t.Attempts, 1), time.Since(l.start).Round(100*time.Millisecond))
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

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
