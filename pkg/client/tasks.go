package client

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// Submit submits a task and returns its status right after acceptance.
func (c *Client) Submit(ctx context.Context, req apiv1.SubmitRequest) (*apiv1.Task, error) {
	var out apiv1.Task
	return &out, c.do(ctx, http.MethodPost, "/v1/tasks", req, &out)
}

// SubmitRaw submits a task whose input is the raw bytes of body, size of
// them (-1 if not known), sent as the request body with Content-Type
// application/octet-stream, so that they are not inflated by base64; req's
// other fields go in the query, its Input and InputBase64 are ignored. An
// input known to be over apiv1.MaxInputBytes is refused before anything
// is sent, with the error the API would answer.
func (c *Client) SubmitRaw(ctx context.Context, req apiv1.SubmitRequest, body io.Reader, size int64) (*apiv1.Task, error) {
	if size > apiv1.MaxInputBytes {
		return nil, &Error{Status: http.StatusRequestEntityTooLarge, Code: apiv1.CodeInputTooLarge,
			Message: fmt.Sprintf("the input is %d bytes, more than the %d bytes one task may carry", size, apiv1.MaxInputBytes)}
	}
	hr, err := c.newRequest(ctx, http.MethodPost, "/v1/tasks?"+req.Query().Encode(), nil)
	if err != nil {
		return nil, err
	}
	if size != 0 {
		hr.Body = io.NopCloser(body)
		hr.ContentLength = size
		if size < 0 {
			hr.ContentLength = -1 // chunked
		}
	}
	hr.Header.Set("Content-Type", "application/octet-stream")
	var out apiv1.Task
	return &out, c.doRequest(hr, &out)
}

// Task returns a task's status, with its result once it has one.
func (c *Client) Task(ctx context.Context, id string) (*apiv1.Task, error) {
	var out apiv1.Task
	return &out, c.do(ctx, http.MethodGet, "/v1/tasks/"+url.PathEscape(id), nil, &out)
}

// WaitOnce asks the daemon to wait up to timeout for the task to finish and
// returns its status then, terminal or not.
func (c *Client) WaitOnce(ctx context.Context, id string, timeout time.Duration) (*apiv1.Task, error) {
	var out apiv1.Task
	p := "/v1/tasks/" + url.PathEscape(id) + "/wait?timeout=" + url.QueryEscape(durationParam(timeout))
	return &out, c.do(ctx, http.MethodGet, p, nil, &out)
}

// Wait returns the task's status once it is terminal, asking the daemon to
// wait in rounds of at most 30 s, until ctx is done.
func (c *Client) Wait(ctx context.Context, id string) (*apiv1.Task, error) {
	for {
		round := 30 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			round = min(round, max(time.Until(dl), time.Millisecond))
		}
		t, err := c.WaitOnce(ctx, id, round)
		if err != nil {
			return nil, err
		}
		if apiv1.Terminal(t.State) {
			return t, nil
		}
		if err := ctx.Err(); err != nil {
			return t, fmt.Errorf("wait for task %s: %w", id, err)
		}
	}
}

// Cancel cancels a task and returns its status afterwards.
func (c *Client) Cancel(ctx context.Context, id string) (*apiv1.Task, error) {
	var out apiv1.Task
	return &out, c.do(ctx, http.MethodPost, "/v1/tasks/"+url.PathEscape(id)+"/cancel", nil, &out)
}

// ListOptions filter and page GET /v1/tasks.
type ListOptions struct {
	State string // one of the apiv1.State* values; empty: all
	Limit int    // 0: the server's default
	After string // the Next of the previous page
}

// Tasks lists tasks, newest first.
func (c *Client) Tasks(ctx context.Context, o ListOptions) (*apiv1.TaskList, error) {
	q := url.Values{}
	if o.State != "" {
		q.Set("state", o.State)
	}
	if o.Limit > 0 {
		q.Set("limit", strconv.Itoa(o.Limit))
	}
	if o.After != "" {
		q.Set("after", o.After)
	}
	p := "/v1/tasks"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out apiv1.TaskList
	return &out, c.do(ctx, http.MethodGet, p, nil, &out)
}

// EventStream reads server-sent events. Close it when done.
type EventStream struct {
	body io.ReadCloser
	r    *bufio.Reader
}

// Events opens GET /v1/events. With a non-empty taskID only that task's
// events come.
func (c *Client) Events(ctx context.Context, taskID string) (*EventStream, error) {
	p := "/v1/events"
	if taskID != "" {
		p += "?task=" + url.QueryEscape(taskID)
	}
	req, err := c.newRequest(ctx, http.MethodGet, p, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "text/event-stream")
	resp, err := c.send(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		defer resp.Body.Close()
		return nil, decodeError(resp)
	}
	return &EventStream{body: resp.Body, r: bufio.NewReader(resp.Body)}, nil
}

// Next returns the next event. It returns io.EOF when the server ended
// the stream.
func (s *EventStream) Next() (apiv1.Event, error) {
	var data strings.Builder
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			if errors.Is(err, io.ErrUnexpectedEOF) {
				err = io.EOF
			}
			return apiv1.Event{}, err
		}
		line = strings.TrimRight(line, "\r\n")
		switch {
		case line == "":
			if data.Len() == 0 {
				continue
			}
			var ev apiv1.Event
			if err := json.Unmarshal([]byte(data.String()), &ev); err != nil {
				return apiv1.Event{}, fmt.Errorf("decode event: %w", err)
			}
			return ev, nil
		case strings.HasPrefix(line, "data:"):
			if data.Len() > 0 {
				data.WriteByte('\n')
			}
			data.WriteString(strings.TrimPrefix(strings.TrimPrefix(line, "data:"), " "))
		}
		// Comments (": ping"), event names and ids need no handling: the
		// data carries the type.
	}
}

// Close ends the stream.
func (s *EventStream) Close() error { return s.body.Close() }
