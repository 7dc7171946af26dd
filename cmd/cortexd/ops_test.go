package main

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

func TestCLIUsageErrorsNameWhatIsMissingAndPointToTheSubcommand(t *testing.T) {
	repo := initTestRepo(t, "")
	cases := []struct {
		name  string
		args  []string
		lines []string // stderr's lines, in order
	}{
		{"submit without a skill names SKILL", []string{"task", "submit"}, []string{
			"cortexd: task submit: missing SKILL, the skill to run ('cortexd skills' lists them)",
			"Usage: cortexd task submit SKILL [flags]",
			"Run 'cortexd task submit --help' for usage."}},
		{"wait without an ID names ID", []string{"task", "wait"}, []string{
			"cortexd: task wait: missing ID,", "Usage: cortexd task wait ID [flags]", "Run 'cortexd task wait --help' for usage."}},
		{"deny without a peer names PEER", []string{"peers", "deny"}, []string{
			"cortexd: peers deny: missing PEER,", "Usage: cortexd peers deny PEER", "Run 'cortexd peers deny --help' for usage."}},
		{"too many arguments are counted", []string{"task", "cancel", "a", "b"}, []string{
			`cortexd: task cancel takes one argument, ID, but was given 2 arguments ("a" "b")`, "Usage: cortexd task cancel ID", "Run 'cortexd task cancel --help'"}},
		{"trust takes at most one peer", []string{"trust", "a", "b"}, []string{"cortexd: trust takes at most one argument, PEER", "Usage: cortexd trust [PEER]", "Run 'cortexd trust --help'"}},
		{"an unknown flag points to the subcommand's help", []string{"task", "list", "--bogus"}, []string{
			"cortexd: unknown flag: --bogus", "Run 'cortexd task list --help' for usage."}},
		{"an unknown subcommand is named", []string{"task", "frob"}, []string{
			`cortexd: task has no subcommand "frob"`, "Usage: cortexd task [command]", "Run 'cortexd task --help' for usage."}},
		{"a number out of range prints in plain digits", []string{"task", "submit", "echo", "--min-trust", "1e8"}, []string{
			"cortexd: --min-trust must be between 0 and 1, not 100000000", "Run 'cortexd task submit --help' for usage."}},
		{"a bad flag value points to the subcommand's help", []string{"task", "submit", "echo", "--priority", "300"}, []string{
			`cortexd: --priority "300": want 0-255 or a level name (critical, high, normal, low)`, "Run 'cortexd task submit --help' for usage."}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, append([]string{"--repo", repo}, tc.args...)...)
			if code != exitUsage {
				t.Errorf("exit %d, want %d", code, exitUsage)
			}
			got := strings.Split(strings.TrimSpace(stderr), "\n")
			if len(got) != len(tc.lines) {
				t.Fatalf("stderr has %d lines, want %d:\n%s", len(got), len(tc.lines), stderr)
			}
			for i, want := range tc.lines {
				if !strings.HasPrefix(got[i], want) {
					t.Errorf("stderr line %d is %q, want it to start %q", i+1, got[i], want)
				}
			}
		})
	}
}

func TestCLIRepoThatIsNotThereNeedsInit(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope")
	plain := t.TempDir()
	for _, tc := range []struct{ name, dir, msg string }{
		{"a repo dir that does not exist", missing, "repo " + missing + " does not exist: create it with `cortexd --repo " + missing + " init`"},
		{"a dir that was never initialized", plain, plain + " is not a cortexd repo (it has no config.yaml): create one with `cortexd --repo " + plain + " init`"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, "--repo", tc.dir, "peers")
			if code != exitUnreachable || !strings.Contains(stderr, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want exit 3 saying %q", code, stderr, tc.msg)
			}
			if strings.Contains(stderr, "cortexd daemon") {
				t.Errorf("stderr %q says to start a daemon on a repo that is not there", stderr)
			}
		})
	}
}

func TestCLITokenPrintsTheRepoToken(t *testing.T) {
	repo := initTestRepo(t, "")
	code, stdout, stderr := cli(t, "--repo", repo, "token")
	want := strings.TrimSpace(string(mustRead(t, filepath.Join(repo, "api-token"))))
	if code != 0 || strings.TrimSpace(stdout) != want || len(want) != 64 {
		t.Fatalf("token: exit %d, stdout %q, stderr %q; want the 64 hex digits of api-token", code, stdout, stderr)
	}
	if err := os.Remove(filepath.Join(repo, "api-token")); err != nil {
		t.Fatal(err)
	}
	code, _, stderr = cli(t, "--repo", repo, "token")
	if code != exitFailed || !strings.Contains(stderr, "no API token at "+filepath.Join(repo, "api-token")+" (api.token_file)") {
		t.Fatalf("token without a token file: exit %d, stderr %q", code, stderr)
	}
	missing := filepath.Join(t.TempDir(), "nope")
	if code, _, stderr := cli(t, "--repo", missing, "token"); code != exitFailed || !strings.Contains(stderr, "init") {
		t.Fatalf("token on a missing repo: exit %d, stderr %q; want exit 1 pointing to init", code, stderr)
	}
}

// recordingAPI is an API that records the submissions it gets and answers
// each with a queued task.
type recordingAPI struct {
	mu   sync.Mutex
	reqs []recorded
}

type recorded struct {
	contentType string
	query       string
	body        []byte
}

func (r *recordingAPI) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	r.reqs = append(r.reqs, recorded{req.Header.Get("Content-Type"), req.URL.RawQuery, b})
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	_ = json.NewEncoder(w).Encode(apiv1.Task{ID: strings.Repeat("ab", 32), Skill: "hash.sha256", State: apiv1.StateQueued})
}

func (r *recordingAPI) requests() []recorded {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recorded(nil), r.reqs...)
}

func TestCLISendsRawFilesAsTheBodyAndRefusesOversizeOnesBeforeSending(t *testing.T) {
	rec := &recordingAPI{}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	repo := initTestRepo(t, "api:\n  max_body_bytes: 65536\n")
	dir := t.TempDir()
	file := func(name string, size int64) string {
		p := filepath.Join(dir, name)
		f, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := f.Truncate(size); err != nil { // sparse: no disk used
			t.Fatal(err)
		}
		f.Close()
		return p
	}

	raw := filepath.Join(dir, "photo.bin")
	if err := os.WriteFile(raw, []byte{0xff, 0xd8, 0x00, 'h', 'i'}, 0o600); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := cli(t, "--repo", repo, "--api", srv.URL, "task", "submit", "hash.sha256", "--input", "@"+raw, "--priority", "high", "--timeout", "20s")
	reqs := rec.requests()
	if code != 0 || len(reqs) != 1 {
		t.Fatalf("submit @file: exit %d, %d requests, stdout %q, stderr %q", code, len(reqs), stdout, stderr)
	}
	if r := reqs[0]; r.contentType != "application/octet-stream" || string(r.body) != "\xff\xd8\x00hi" ||
		r.query != "priority=160&skill=hash.sha256&timeout=20s" {
		t.Fatalf("the raw file was sent as %q, query %q, body %q; want the bytes as an octet-stream body, the fields in the query", r.contentType, r.query, r.body)
	}

	for _, tc := range []struct {
		name string
		path string
		msg  string
	}{
		{"a file over the task input limit", file("huge.bin", apiv1.MaxInputBytes+1), "is 16MiB (16773121 bytes), more than a task input may be: 16773120 bytes"},
		{"a file over the daemon's api.max_body_bytes", file("big.bin", 70000), "more than the daemon's api.max_body_bytes of 65536 bytes (in " + filepath.Join(repo, config.FileName) + ")"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, stderr := cli(t, "--repo", repo, "--api", srv.URL, "task", "submit", "echo", "--input", "@"+tc.path)
			if code != exitUsage || !strings.Contains(stderr, tc.msg) {
				t.Fatalf("exit %d, stderr %q; want exit 2 saying %q", code, stderr, tc.msg)
			}
			if n := len(rec.requests()); n != 1 {
				t.Fatalf("%d requests reached the API; the oversize input must be refused before sending", n-1)
			}
		})
	}
}

// apiForCompletion serves the API of a real engine with a task, a denied
// peer and the built-in skills, with the token of repo, and returns its URL.
func apiForCompletion(t *testing.T, repo string) (url, taskID, peerID string) {
	t.Helper()
	e := apitest.NewEngine(t)
	tok := strings.TrimSpace(string(mustRead(t, filepath.Join(repo, "api-token"))))
	s, err := api.New(e.Deps(), api.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	c, err := client.New(srv.URL, client.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	task, err := c.Submit(ctx, apiv1.SubmitRequest{Skill: "debug.sleep", Input: json.RawMessage(`{"ms":60000}`)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _, _ = c.Cancel(ctx, task.ID) })
	denied := "12D3KooWQYhTNQdmr3ArTeUHRYzFg94BKyTkoWBDWez9kSCVe2Xo"
	if _, err := c.DenyPeer(ctx, denied); err != nil {
		t.Fatal(err)
	}
	return srv.URL, task.ID, denied
}

func TestCLICompletesFromTheDaemonAndFlagValues(t *testing.T) {
	repo := initTestRepo(t, "")
	url, taskID, peerID := apiForCompletion(t, repo)
	cases := []struct {
		name string
		args []string
		want []string // among the completions
		not  []string // not among them
	}{
		{"skills for task submit", []string{"task", "submit", ""}, []string{"echo", "hash.sha256", "debug.sleep"}, nil},
		{"skills by prefix", []string{"task", "submit", "ha"}, []string{"hash.sha256"}, []string{"echo"}},
		{"task IDs for task get", []string{"task", "get", ""}, []string{taskID}, nil},
		{"live task IDs for task cancel", []string{"task", "cancel", taskID[:6]}, []string{taskID}, nil},
		{"peer IDs for peers deny", []string{"peers", "allow", ""}, []string{peerID}, nil},
		{"peer IDs for trust", []string{"trust", "12D3"}, []string{peerID}, nil},
		{"priorities", []string{"task", "submit", "echo", "--priority", ""}, []string{"critical", "high", "normal", "low"}, nil},
		{"error codes, each once", []string{"task", "submit", "echo", "--retry-on", "timeout,"}, []string{"timeout,execution_failed", "timeout,internal"}, []string{"timeout,timeout"}},
		{"task states", []string{"task", "list", "--state", "s"}, []string{"succeeded"}, []string{"failed"}},
		{"built-in skills for the daemon", []string{"daemon", "--skills", "echo,h"}, []string{"echo,hash.sha256"}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := cli(t, append([]string{"--repo", repo, "--api", url, "__complete"}, tc.args...)...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			var got []string
			for _, line := range strings.Split(stdout, "\n") {
				if line != "" && !strings.HasPrefix(line, ":") {
					v, _, _ := strings.Cut(line, "\t")
					got = append(got, v)
				}
			}
			for _, w := range tc.want {
				if !contains(got, w) {
					t.Errorf("completions %q lack %q", got, w)
				}
			}
			for _, n := range tc.not {
				if contains(got, n) {
					t.Errorf("completions %q have %q", got, n)
				}
			}
		})
	}
	// Without a daemon there is nothing to complete, and no error.
	code, stdout, _ := cli(t, "--repo", repo, "__complete", "task", "submit", "")
	if code != 0 || strings.Contains(stdout, "echo") {
		t.Errorf("completion without a daemon: exit %d, %q", code, stdout)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestCLIPeersShowWhatThisNodeSeesBesideWhatThePeerAnnounced(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two daemons")
	}
	first := initTestRepo(t, testNodeConfig("echo", ""))
	c1 := startTestDaemon(t, first)
	id1, err := c1.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	second := initTestRepo(t, testNodeConfig("hash.sha256", "  bootstrap_peers: ["+id1.Addrs[0]+"]\n"))
	c2 := startTestDaemon(t, second)
	id2, err := c2.ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "node 1 to see node 2's skill", func() bool {
		sk, err := c1.Skills(context.Background())
		if err != nil {
			return false
		}
		for _, s := range sk {
			if s.ID == "hash.sha256" && len(s.Providers) > 0 {
				return true
			}
		}
		return false
	})
	if code, _, stderr := cli(t, "--repo", first, "task", "submit", "hash.sha256", "--input", `{"data":"aGVsbG8="}`, "--wait"); code != 0 {
		t.Fatalf("submit: exit %d: %s", code, stderr)
	}
	code, stdout, stderr := cli(t, "--repo", first, "--json", "peers")
	var peers []apiv1.Peer
	if code != 0 || json.Unmarshal([]byte(stdout), &peers) != nil {
		t.Fatalf("peers --json: exit %d, %s %s", code, stdout, stderr)
	}
	var p *apiv1.Peer
	for i := range peers {
		if peers[i].ID == id2.ID {
			p = &peers[i]
		}
	}
	if p == nil {
		t.Fatalf("node 1's peers %s lack node 2", stdout)
	}
	if p.Seen == nil || p.Seen.Completed != 1 || p.Seen.RecentLatencyMS <= 0 || p.Outstanding == nil || *p.Outstanding != 0 ||
		p.AnnouncedAgo <= 0 || time.Duration(p.AnnouncedAgo) > time.Minute {
		t.Fatalf("node 2 in node 1's peers: %+v (seen %+v); want 1 completed, a latency, 0 in flight and the announcement's age", p, p.Seen)
	}
	code, stdout, _ = cli(t, "--repo", first, "peers")
	header, rows, _ := strings.Cut(stdout, "\n")
	for _, col := range []string{"LOAD", "AGE", "OURS", "LATENCY", "OK/FAILED"} {
		if !strings.Contains(header, col) {
			t.Errorf("peers table header %q lacks %s", header, col)
		}
	}
	if code != 0 || !strings.Contains(rows, " ago") || !strings.Contains(rows, "1/0") {
		t.Errorf("peers table: exit %d\n%s\nwant node 2's announcement age and 1/0 outcomes", code, stdout)
	}
}

func TestCLIWrongTokenPointsToCortexdToken(t *testing.T) {
	e := apitest.NewEngine(t)
	s, err := api.New(e.Deps(), api.WithToken("not-the-repo-token"))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	repo := initTestRepo(t, "")
	code, _, stderr := cli(t, "--repo", repo, "--api", srv.URL, "peers")
	if code != exitFailed || !strings.Contains(stderr, "the bearer token is wrong") || !strings.Contains(stderr, "`cortexd token`") {
		t.Fatalf("exit %d, stderr %q; want exit 1 saying the token is wrong and pointing to cortexd token", code, stderr)
	}
}
