package client

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// SubmitWorkflow submits a workflow, spec being its JSON (workflow.Parse
// reads YAML into a spec that json.Marshal writes), and returns its status
// right after acceptance.
func (c *Client) SubmitWorkflow(ctx context.Context, spec json.RawMessage) (*apiv1.Workflow, error) {
	var out apiv1.Workflow
	return &out, c.do(ctx, http.MethodPost, "/v1/workflows", spec, &out)
}

// Workflow returns a workflow's status.
func (c *Client) Workflow(ctx context.Context, id string) (*apiv1.Workflow, error) {
	var out apiv1.Workflow
	return &out, c.do(ctx, http.MethodGet, "/v1/workflows/"+url.PathEscape(id), nil, &out)
}

// WaitWorkflowOnce asks the daemon to wait up to timeout for the workflow
// to finish and returns its status then, finished or not.
func (c *Client) WaitWorkflowOnce(ctx context.Context, id string, timeout time.Duration) (*apiv1.Workflow, error) {
	var out apiv1.Workflow
	p := "/v1/workflows/" + url.PathEscape(id) + "/wait?timeout=" + url.QueryEscape(durationParam(timeout))
	return &out, c.do(ctx, http.MethodGet, p, nil, &out)
}

// WaitWorkflow returns the workflow's status once it has finished, asking
// the daemon to wait in rounds of at most 30 s, until ctx is done.
func (c *Client) WaitWorkflow(ctx context.Context, id string) (*apiv1.Workflow, error) {
	for {
		round := 30 * time.Second
		if dl, ok := ctx.Deadline(); ok {
			round = min(round, max(time.Until(dl), time.Millisecond))
		}
		w, err := c.WaitWorkflowOnce(ctx, id, round)
		if err != nil {
			return nil, err
		}
		if w.State != apiv1.WorkflowRunning {
			return w, nil
		}
		if err := ctx.Err(); err != nil {
			return w, fmt.Errorf("wait for workflow %s: %w", id, err)
		}
	}
}

// CancelWorkflow cancels a workflow and returns its status after.
func (c *Client) CancelWorkflow(ctx context.Context, id string) (*apiv1.Workflow, error) {
	var out apiv1.Workflow
	return &out, c.do(ctx, http.MethodPost, "/v1/workflows/"+url.PathEscape(id)+"/cancel", nil, &out)
}

// Workflows lists the workflows the daemon knows, newest first: those in
// state if it is not empty, at most limit (0: the daemon's default).
func (c *Client) Workflows(ctx context.Context, state string, limit int) (*apiv1.WorkflowList, error) {
	q := url.Values{}
	if state != "" {
		q.Set("state", state)
	}
	if limit > 0 {
		q.Set("limit", strconv.Itoa(limit))
	}
	p := "/v1/workflows"
	if len(q) > 0 {
		p += "?" + q.Encode()
	}
	var out apiv1.WorkflowList
	return &out, c.do(ctx, http.MethodGet, p, nil, &out)
}
