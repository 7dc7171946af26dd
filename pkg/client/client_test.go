package client_test

import (
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

// startAPI serves a real engine's API on loopback with a token, writes the
// repo files a daemon writes, and returns the repo dir.
func startAPI(t testing.TB) (repo string, e *apitest.Engine) {
	t.Helper()
	e = apitest.NewEngine(t)
	srv, err := api.New(e.Deps(), api.WithToken("tok"))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(l) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	repo = t.TempDir()
	if err := os.WriteFile(filepath.Join(repo, client.APIFile), []byte("http://"+l.Addr().String()+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(repo, client.DefaultTokenFile), []byte("tok\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return repo, e
}

func TestClientFromRepoWithoutDaemonIsUnreachable(t *testing.T) {
	_, err := client.FromRepo(t.TempDir(), "")
	if !errors.Is(err, client.ErrUnreachable) || !strings.Contains(err.Error(), "cortexd daemon") {
		t.Fatalf("FromRepo on a repo with no api file: %v; want ErrUnreachable with advice", err)
	}
	if strings.Contains(err.Error(), client.ErrUnreachable.Error()) {
		t.Errorf("the message repeats the sentinel: %v", err)
	}
}

func TestClientRefusedConnectionIsUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c, err := client.New("http://" + addr)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ID(context.Background()); !errors.Is(err, client.ErrUnreachable) {
		t.Fatalf("ID against a closed port: %v; want ErrUnreachable", err)
	} else if strings.Contains(err.Error(), client.ErrUnreachable.Error()) {
		t.Errorf("the message repeats the sentinel: %v", err)
	}
}

func TestClientRejectsBadURLs(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:5080", "ftp://x", "http://"} {
		if _, err := client.New(u); err == nil {
			t.Errorf("New(%q) succeeded", u)
		}
	}
}

func TestClientAgainstTheAPI(t *testing.T) {
	repo, e := startAPI(t)
	c, err := client.FromRepo(repo, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	id, err := c.ID(ctx)
	if err != nil || id.ID != e.Node.ID().String() {
		t.Fatalf("ID: %+v, %v", id, err)
	}
	if err := c.Health(ctx); err != nil {
		t.Errorf("Health: %v", err)
	}
	if err := c.Ready(ctx); err != nil {
		t.Errorf("Ready: %v", err)
	}
	skills, err := c.Skills(ctx)
	if err != nil || len(skills) != 4 {
		t.Errorf("Skills: %d, %v", len(skills), err)
	}

	p := apiv1.Priority(200)
	task, err := c.Submit(ctx, apiv1.SubmitRequest{Skill: "hash.sha256", Input: []byte(`{"data":"aGVsbG8="}`), Priority: &p})
	if err != nil {
		t.Fatal(err)
	}
	done, err := c.Wait(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	if done.State != apiv1.StateSucceeded || !strings.Contains(string(done.Result.OutputBytes()), "2cf24dba") || done.Level != "critical" {
		t.Fatalf("task ended %+v", done)
	}
	got, err := c.Task(ctx, task.ID)
	if err != nil || got.State != apiv1.StateSucceeded {
		t.Errorf("Task: %+v, %v", got, err)
	}
	list, err := c.Tasks(ctx, client.ListOptions{State: apiv1.StateSucceeded})
	if err != nil || len(list.Tasks) != 1 || list.Tasks[0].ID != task.ID {
		t.Errorf("Tasks: %+v, %v", list, err)
	}

	_, err = c.Submit(ctx, apiv1.SubmitRequest{Skill: "hash.sha256", Input: []byte(`{"data":1}`)})
	var apiErr *client.Error
	if !errors.As(err, &apiErr) || apiErr.Status != http.StatusBadRequest || !client.IsCode(err, apiv1.CodeInvalidInput) {
		t.Errorf("bad input: %v; want a 400 *client.Error with code invalid_input", err)
	}
	if _, err := c.Task(ctx, strings.Repeat("0", 64)); !client.IsCode(err, apiv1.CodeNotFound) {
		t.Errorf("unknown task: %v; want not_found", err)
	}

	for _, call := range []func() error{
		func() error { _, err := c.Peers(ctx); return err },
		func() error { _, err := c.Metrics(ctx); return err },
		func() error { _, err := c.Trust(ctx); return err },
		func() error { _, err := c.TrustOf(ctx, id.ID); return err },
	} {
		if err := call(); err != nil {
			t.Error(err)
		}
	}
}

func TestClientEventsFollowATask(t *testing.T) {
	repo, _ := startAPI(t)
	c, err := client.FromRepo(repo, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	task, err := c.Submit(ctx, apiv1.SubmitRequest{Skill: "debug.sleep", Input: []byte(`{"ms":100}`)})
	if err != nil {
		t.Fatal(err)
	}
	s, err := c.Events(ctx, task.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for {
		ev, err := s.Next()
		if err != nil {
			t.Fatalf("stream ended before the task finished: %v", err)
		}
		if ev.Task == nil || ev.Task.ID != task.ID {
			t.Fatalf("event %+v is not about the task", ev)
		}
		if apiv1.Terminal(ev.Task.State) {
			if ev.Task.State != apiv1.StateSucceeded {
				t.Fatalf("task ended %s", ev.Task.State)
			}
			return
		}
	}
}

func TestClientWaitHonoursContext(t *testing.T) {
	repo, _ := startAPI(t)
	c, err := client.FromRepo(repo, "")
	if err != nil {
		t.Fatal(err)
	}
	task, err := c.Submit(context.Background(), apiv1.SubmitRequest{Skill: "debug.sleep", Input: []byte(`{"ms":60000}`)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = c.Wait(ctx, task.ID)
	if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 5*time.Second {
		t.Fatalf("Wait with a 200ms context: %v after %s; want DeadlineExceeded promptly", err, time.Since(start))
	}
}

func TestClientWrongTokenIsRefused(t *testing.T) {
	repo, _ := startAPI(t)
	base, _ := os.ReadFile(filepath.Join(repo, client.APIFile))
	c, err := client.New(strings.TrimSpace(string(base)), client.WithToken("wrong"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.ID(context.Background()); !client.IsCode(err, apiv1.CodeUnauthorized) {
		t.Fatalf("ID with a wrong token: %v; want unauthorized", err)
	}
}
