package api_test

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// readEvents reads the events of one stream until stop says so. It may
// run on a goroutine of its own: it reports failures with t.Error.
func readEvents(t *testing.T, ctx context.Context, url string, stop func(apiv1.Event) bool) []apiv1.Event {
	req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer resp.Body.Close()
	var got []apiv1.Event
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok {
			continue
		}
		var ev apiv1.Event
		if err := json.Unmarshal([]byte(data), &ev); err != nil {
			t.Errorf("event %q: %v", data, err)
			return got
		}
		got = append(got, ev)
		if stop(ev) {
			return got
		}
	}
	t.Errorf("stream %s ended after %d events: %v", url, len(got), sc.Err())
	return got
}

// TestAPIEventTypesSelectProgress: ?types=task leaves progress events out,
// ?types=progress has only them, and GET /v1/tasks/{id} shows the last
// report.
func TestAPIEventTypesSelectProgress(t *testing.T) {
	e := newEngine(t)
	s := server(t, e)
	base := serve(t, s, loopbackListener(t))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tasks := make(chan []apiv1.Event, 1)
	progress := make(chan []apiv1.Event, 1)
	go func() {
		tasks <- readEvents(t, ctx, base+"/v1/events?types=task", func(ev apiv1.Event) bool {
			return ev.Task != nil && apiv1.Terminal(ev.Task.State)
		})
	}()
	go func() {
		n := 0
		progress <- readEvents(t, ctx, base+"/v1/events?types=progress", func(ev apiv1.Event) bool { n++; return n == 2 })
	}()
	time.Sleep(200 * time.Millisecond) // both streams subscribed
	resp, err := http.Post(base+"/v1/tasks", "application/json", strings.NewReader(`{"skill":"debug.sleep","input":{"ms":450}}`))
	if err != nil {
		t.Fatal(err)
	}
	var task apiv1.Task
	err = json.NewDecoder(resp.Body).Decode(&task)
	resp.Body.Close()
	if err != nil || task.ID == "" {
		t.Fatalf("submit: %d, %v", resp.StatusCode, err)
	}
	for _, ev := range <-tasks {
		if ev.Type != "task" || ev.Task.ID != task.ID {
			t.Errorf("types=task stream got %s event %+v", ev.Type, ev.Task)
		}
	}
	for _, ev := range <-progress {
		if ev.Type != "progress" || ev.Task.ID != task.ID || ev.Task.Progress == nil {
			t.Errorf("types=progress stream got %s event %+v", ev.Type, ev.Task)
		}
	}
	resp, err = http.Get(base + "/v1/tasks/" + task.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got apiv1.Task
	err = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if got.Progress == nil || got.Progress.Fraction < 0.6 || !strings.HasPrefix(got.Progress.Message, "slept ") {
		t.Errorf("GET /v1/tasks/{id} progress %+v, want the last report of the 450 ms sleep", got.Progress)
	}
}
