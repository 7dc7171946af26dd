package client_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// TestClientSubmitRetryPolicy sends a retry policy through the client: a
// good one is accepted and the task runs, a bad one is a 400 that names
// the field.
func TestClientSubmitRetryPolicy(t *testing.T) {
	repo, _ := startAPI(t)
	c, err := client.FromRepo(repo, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	task, err := c.Submit(ctx, apiv1.SubmitRequest{Skill: "echo", Input: []byte(`"hi"`), Retry: &apiv1.RetryPolicy{
		MaxAttempts: 2, BaseBackoff: apiv1.Duration(10 * time.Millisecond), MaxBackoff: apiv1.Duration(time.Second),
		RetryOn: []string{apiv1.CodeExecution, apiv1.CodeTimeout}}})
	if err != nil {
		t.Fatal(err)
	}
	if done, err := c.Wait(ctx, task.ID); err != nil || done.State != apiv1.StateSucceeded || done.Attempts != 1 {
		t.Fatalf("task with a retry policy ended %+v, %v", done, err)
	}
	_, err = c.Submit(ctx, apiv1.SubmitRequest{Skill: "echo", Retry: &apiv1.RetryPolicy{RetryOn: []string{"sometimes"}}})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !client.IsCode(err, apiv1.CodeInvalidRequest) ||
		!strings.Contains(err.Error(), "retry.retry_on") {
		t.Errorf("bad retry_on: %v; want a 400 invalid_request naming retry.retry_on", err)
	}
}
