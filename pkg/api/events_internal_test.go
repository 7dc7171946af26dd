package api

import (
	"context"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// TestEventSinkKeepsFinalEvent checks that a single-task stream whose
// buffer is full still gets, and ends after, the task's final event.
func TestEventSinkKeepsFinalEvent(t *testing.T) {
	sink := newEventSink(2)
	for range 3 {
		sink.push(apiv1.Event{Type: "task", Task: &apiv1.Task{ID: "t", State: apiv1.StateRunning}})
	}
	sink.push(apiv1.Event{Type: "task", Task: &apiv1.Task{ID: "t", State: apiv1.StateSucceeded}})

	s := &Server{}
	s.life, s.stopLife = context.WithCancel(context.Background())
	defer s.stopLife()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("GET", "/v1/events?task=t", nil).WithContext(ctx)
	s.stream(rec, req, sink, true)
	if ctx.Err() != nil {
		t.Fatal("the stream did not end after the task's final event")
	}
	if body := rec.Body.String(); !strings.Contains(body, `"state":"succeeded"`) {
		t.Errorf("the final event is missing from the stream:\n%s", body)
	}
	if got := sink.dropped.Load(); got != 1 {
		t.Errorf("dropped %d events, want 1", got)
	}
}
