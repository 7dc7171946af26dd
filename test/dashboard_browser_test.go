package test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/cortexgrid/cortexd/pkg/api"
	"github.com/cortexgrid/cortexd/pkg/api/apitest"
	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// chromiumPath returns the Chromium to drive: $CHROMIUM, or chromium (or
// chromium-browser) on PATH. It skips the test, saying how to get one,
// where there is none.
func chromiumPath(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	t.Skip("Chromium is not installed: the dashboard's browser test needs it (Debian: apt-get install -y chromium; or set CHROMIUM to its path)")
	return ""
}

// devnetProc is `cortexd devnet` running as a child process.
type devnetProc struct {
	dir string
	out *logBuffer
}

// startDevnet runs a devnet of n nodes with its repos in a temp dir and
// waits until it says it is up.
func startDevnet(t *testing.T, bin string, n int) *devnetProc {
	t.Helper()
	d := &devnetProc{dir: filepath.Join(t.TempDir(), "devnet"), out: &logBuffer{}}
	cmd := exec.Command(bin, "devnet", "--nodes", fmt.Sprint(n), "--dir", d.dir)
	cmd.Stdout, cmd.Stderr = d.out, d.out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
		if t.Failed() {
			t.Logf("devnet output (pubsub lines left out):\n%s", lastLines(withoutPubsub(d.out.String()), 40))
		}
	})
	pollUntil(t, 45*time.Second, "the devnet to come up", func() error {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("devnet exited: %v", err)
		default:
		}
		if !strings.Contains(d.out.String(), "Ctrl-C stops them") {
			return fmt.Errorf("not up yet")
		}
		return nil
	})
	return d
}

// apiURL returns node i's (1-based) API URL, from its repo's api file.
func (d *devnetProc) apiURL(t *testing.T, i int) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(d.dir, fmt.Sprintf("node%d", i), "api"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func getJSON(t *testing.T, url string, out any) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
}

// TestDashboardInChromium drives the dashboard of a devnet node in
// headless Chromium: the overview shows the node and its peers; a task
// submitted through the skills form reaches succeeded on its page without
// a reload, its attempt shows where it ran and the router's candidates; a
// running debug.sleep is canceled from its page; a workflow's page reaches
// succeeded without a reload, its steps' rows filled in; and the
// workflow and task lists, peers and skills pages list what the API has. A screenshot of each page is
// saved in the test's artifact directory (go test -artifacts keeps it; the
// log names it).
func TestDashboardInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("builds cortexd, runs a devnet and Chromium")
	}
	chrome := chromiumPath(t)
	bin := cortexdBinary(t)
	net := startDevnet(t, bin, 3)
	base := net.apiURL(t, 1)
	for i := 1; i <= 3; i++ { // make run's printout names each node's dashboard
		if u := net.apiURL(t, i) + "/ui/"; !strings.Contains(net.out.String(), u) {
			t.Errorf("devnet does not print node %d's dashboard, %s:\n%s", i, u, net.out.String())
		}
	}
	var self apiv1.Identity
	getJSON(t, base+"/v1/id", &self)
	// Node 1 offers echo, node 2 hash.sha256, node 3 debug.sleep: wait
	// until node 1 sees both peers' skills, so the form can use them.
	pollUntil(t, 30*time.Second, "node 1 to see debug.sleep and hash.sha256 on its peers", func() error {
		var sks []apiv1.Skill
		getJSON(t, base+"/v1/skills", &sks)
		seen := map[string]bool{}
		for _, s := range sks {
			seen[s.ID] = len(s.Providers) > 0
		}
		if !seen["debug.sleep"] || !seen["hash.sha256"] {
			return fmt.Errorf("skills %v", seen)
		}
		return nil
	})

	shots := t.ArtifactDir()
	t.Logf("screenshots go to %s", shots)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chrome),
			chromedp.NoSandbox, // CI runs as root, where Chromium's sandbox will not start
			chromedp.DisableGPU,
			chromedp.WindowSize(1280, 900),
		)...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil { // starts the browser, outside the test's timeout
		t.Fatalf("start Chromium %s: %v", chrome, err)
	}
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	t.Cleanup(cancel)

	fail := func(what string, err error) {
		t.Helper()
		loc, _ := chromedp.Run(bctx, chromedp.Location())
		t.Fatalf("%s: %v (the browser is at %s)", what, err, loc)
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			fail(what, err)
		}
	}
	text := func(sel string) string {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			fail("read "+sel, err)
		}
		return v
	}
	eval := func(expr string) int {
		t.Helper()
		v, err := chromedp.Run(ctx, chromedp.Evaluate[int](expr))
		if err != nil {
			fail("evaluate "+expr, err)
		}
		return v
	}
	poll := func(expr string, timeout time.Duration) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(timeout))(ctx, tg)
			return err
		})
	}
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg) // quality 100: PNG
			if err != nil {
				return fmt.Errorf("screenshot %s: %w", name, err)
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644)
		})
	}
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }

	// Overview: this node's ID and both peers connected, then a live refresh.
	do("load the overview",
		chromedp.Navigate(base+"/ui/"),
		chromedp.WaitVisible(css(`#node-id`)),
		poll(`(document.getElementById('peers-connected') || {}).textContent === '2'`, 20*time.Second),
		poll(`document.body.dataset.refreshed !== undefined`, 10*time.Second),
		shot("overview"),
	)
	if got := text(`#node-id`); got != self.ID {
		t.Errorf("the overview shows node %q, want node 1, %s", got, self.ID)
	}

	// Submit a debug.sleep of 1.5 s through the form: its page loads while
	// it runs on node 3 and must turn succeeded through the event stream.
	do("submit a task through the form",
		chromedp.Navigate(base+"/ui/skills"),
		chromedp.WaitVisible(css(`#submit-form`)),
		chromedp.SetValue(css(`#submit-skill`), "debug.sleep"),
		chromedp.SetValue(css(`#submit-input`), `{"ms": 1500}`),
		shot("skills"),
		chromedp.Click(css(`#submit-button`)),
		chromedp.WaitVisible(css(`#task-state`)),
	)
	if eval(`window.__notReloaded = 1`) != 1 {
		t.Fatal("could not mark the task page")
	}
	st, err := chromedp.Run(ctx, chromedp.AttributeValue(css(`#task-state`), "data-state"))
	if err != nil {
		fail("read the task's state", err)
	}
	if apiv1.Terminal(st.Value) {
		t.Fatalf("the task page loaded with the task %s already: a 1.5 s sleep should still run", st.Value)
	}
	do("wait for the task to succeed on its page",
		chromedp.WaitVisible(css(`#task-state[data-state="succeeded"]`)),
		chromedp.WaitVisible(css(`table.candidates tr.chosen`)),
		shot("task-succeeded"),
	)
	if eval(`window.__notReloaded || 0`) != 1 {
		t.Error("the task page was reloaded to show the task's end; it should update in place")
	}
	if out := text(`#task-output`); !strings.Contains(out, `"slept_ms": 1500`) {
		t.Errorf("the task page shows output %q, want debug.sleep's {\"slept_ms\": 1500}", out)
	}
	where := strings.TrimPrefix(text(`.attempt-box h3 code`), "…")
	node3 := nodeOf(t, net.apiURL(t, 3))
	if where == "" || !strings.HasSuffix(node3, where) {
		t.Errorf("the attempt ran on %q, want node 3 (%s), the only one with debug.sleep", where, node3)
	}
	// The ranking is the coordinator's: the chosen row is the node the
	// attempt went to, with its score and the score's five parts.
	chosen, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('table.candidates tr.chosen code').title`))
	if err != nil {
		fail("read the chosen candidate", err)
	}
	if chosen != node3 {
		t.Errorf("the chosen candidate is %q, want node 3 (%s), where the attempt ran", chosen, node3)
	}
	if n := eval(`document.querySelectorAll('table.candidates tr.chosen td').length`); n != 10 {
		t.Errorf("the chosen candidate's row has %d cells, want 10: mark, node, score, 5 parts, connected, version", n)
	}

	// Cancel a long debug.sleep from its page.
	do("cancel a running debug.sleep",
		chromedp.Navigate(base+"/ui/skills"),
		chromedp.WaitVisible(css(`#submit-form`)),
		chromedp.SetValue(css(`#submit-skill`), "debug.sleep"),
		chromedp.SetValue(css(`#submit-input`), `{"ms": 60000}`),
		chromedp.Click(css(`#submit-button`)),
		chromedp.WaitVisible(css(`#cancel`)),
		chromedp.Click(css(`#cancel`)),
		chromedp.WaitVisible(css(`#task-state[data-state="canceled"]`)),
		shot("task-canceled"),
	)

	// A workflow submitted through the API: its page loads while its first
	// step sleeps on node 3 and must turn succeeded through the events,
	// each step's row with its state, node and task link.
	resp, err := http.Post(base+"/v1/workflows", "application/json", strings.NewReader(`{"name":"nap-then-echo","steps":[
		{"name":"nap","skill":"debug.sleep","input":{"ms":1500}},
		{"name":"echo","skill":"echo","depends_on":["nap"]}]}`))
	if err != nil {
		t.Fatal(err)
	}
	var wf apiv1.Workflow
	err = json.NewDecoder(resp.Body).Decode(&wf)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("submit a workflow: %d %v", resp.StatusCode, err)
	}
	do("load the workflow's page", chromedp.Navigate(base+"/ui/workflows/"+wf.ID), chromedp.WaitVisible(css(`#workflow-state`)))
	if eval(`window.__notReloaded = 1`) != 1 {
		t.Fatal("could not mark the workflow page")
	}
	st, err = chromedp.Run(ctx, chromedp.AttributeValue(css(`#workflow-state`), "data-state"))
	if err != nil {
		fail("read the workflow's state", err)
	}
	if st.Value != apiv1.WorkflowRunning {
		t.Fatalf("the workflow page loaded with the workflow %s already: a 1.5 s sleep should still run", st.Value)
	}
	do("wait for the workflow to succeed on its page",
		chromedp.WaitVisible(css(`#workflow-state[data-state="succeeded"]`)),
		shot("workflow-succeeded"),
	)
	if eval(`window.__notReloaded || 0`) != 1 {
		t.Error("the workflow page was reloaded to show the workflow's end; it should update in place")
	}
	if n := eval(`document.querySelectorAll('#workflow-steps tbody tr .state[data-state="succeeded"]').length`); n != 2 {
		t.Errorf("the workflow page shows %d steps succeeded, want 2", n)
	}
	for i, s := range wf.Steps {
		href, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`document.querySelectorAll('#workflow-steps tbody tr')[%d].querySelector('a').getAttribute('href')`, i)))
		if err != nil || href != "/ui/tasks/"+s.TaskID {
			t.Errorf("step %s links %q (%v), want its task /ui/tasks/%s", s.Name, href, err, s.TaskID)
		}
	}
	if where := strings.TrimPrefix(text(`#workflow-steps tr[data-step="nap"] td:nth-child(4) code`), "…"); where == "" || !strings.HasSuffix(node3, where) {
		t.Errorf("step nap ran on %q, want node 3 (%s)", where, node3)
	}
	if deps := text(`#workflow-steps tr[data-step="echo"] td:nth-child(6)`); deps != "nap" {
		t.Errorf("step echo depends on %q, want nap", deps)
	}
	do("list the workflows", chromedp.Navigate(base+"/ui/workflows"), chromedp.WaitVisible(css(`#workflow-list .state.succeeded`)), shot("workflows"))

	// The list, peers and skills pages.
	do("list the tasks", chromedp.Navigate(base+"/ui/tasks"), chromedp.WaitVisible(css(`#task-list`)), shot("tasks"))
	if n := eval(`document.querySelectorAll('#task-list tbody tr').length`); n < 4 {
		t.Errorf("the task list shows %d tasks, want the 4 submitted (2 of them the workflow's)", n)
	}
	do("filter the canceled tasks", chromedp.Navigate(base+"/ui/tasks?state=canceled"), chromedp.WaitVisible(css(`#task-list .state.canceled`)))
	if n := eval(`document.querySelectorAll('#task-list tbody tr').length`); n != 1 {
		t.Errorf("the task list filtered by state canceled shows %d tasks, want 1", n)
	}
	do("list the peers", chromedp.Navigate(base+"/ui/peers"), chromedp.WaitVisible(css(`#peer-list`)), shot("peers"))
	if n := eval(`document.querySelectorAll('#peer-list tbody tr').length`); n != 2 {
		t.Errorf("the peers page shows %d peers, want 2", n)
	}
	for _, name := range []string{"overview", "skills", "task-succeeded", "task-canceled", "workflow-succeeded", "workflows", "tasks", "peers"} {
		if b, err := os.ReadFile(filepath.Join(shots, name+".png")); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("screenshot %s: not a PNG (%v)", name, err)
		}
	}
}

func nodeOf(t *testing.T, url string) string {
	t.Helper()
	var id apiv1.Identity
	getJSON(t, url+"/v1/id", &id)
	return id.ID
}

// TestDashboardLogoutInChromium drives the login and the logout of an API
// beyond loopback (with a token) in headless Chromium: a page sends the
// browser to the login page, the token opens the dashboard, whose pages
// then offer to log out, and after the logout the dashboard asks for the
// token again: the session is over on the server, not only in the browser.
func TestDashboardLogoutInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("runs Chromium")
	}
	chrome := chromiumPath(t)
	const tok = "browser-test-token"
	e := apitest.NewEngine(t)
	srv, err := api.New(e.Deps(), api.WithToken(tok))
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + l.Addr().String()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(beyondLoopback{l}) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		<-done
	})

	shots := t.ArtifactDir()
	t.Logf("screenshots go to %s", shots)
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		append(chromedp.DefaultExecAllocatorOptions[:],
			chromedp.ExecPath(chrome), chromedp.NoSandbox, chromedp.DisableGPU, chromedp.WindowSize(1280, 900))...)
	t.Cleanup(cancelAlloc)
	bctx, cancelBrowser := chromedp.NewContext(alloc, chromedp.WithErrorf(t.Logf))
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(bctx); err != nil {
		t.Fatalf("start Chromium %s: %v", chrome, err)
	}
	ctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	t.Cleanup(cancel)
	css := func(sel string) chromedp.CSS { return chromedp.CSS(sel) }
	shot := func(name string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			buf, err := chromedp.FullScreenshot(100)(ctx, tg)
			if err != nil {
				return fmt.Errorf("screenshot %s: %w", name, err)
			}
			return os.WriteFile(filepath.Join(shots, name+".png"), buf, 0o644)
		})
	}
	do := func(what string, steps ...chromedp.Action[chromedp.Void]) {
		t.Helper()
		if err := chromedp.Do(ctx, steps...); err != nil {
			loc, _ := chromedp.Run(bctx, chromedp.Location())
			t.Fatalf("%s: %v (the browser is at %s)", what, err, loc)
		}
	}

	do("log in",
		chromedp.Navigate(base+"/ui/tasks"),
		chromedp.WaitVisible(css(`#login-form`)),
		chromedp.SetValue(css(`#login-token`), tok),
		chromedp.Click(css(`#login-form button[type=submit]`)),
		chromedp.WaitVisible(css(`#logout`)),
		shot("logged-in"),
	)
	if loc, _ := chromedp.Run(ctx, chromedp.Location()); loc != base+"/ui/tasks" {
		t.Errorf("after the login the browser is at %s, want back at %s/ui/tasks", loc, base)
	}
	do("log out",
		chromedp.Click(css(`#logout`)),
		chromedp.WaitVisible(css(`#login-form`)),
		shot("logged-out"),
		chromedp.Navigate(base+"/ui/peers"),
		chromedp.WaitVisible(css(`#login-form`)),
	)
	for _, name := range []string{"logged-in", "logged-out"} {
		if b, err := os.ReadFile(filepath.Join(shots, name+".png")); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
			t.Errorf("screenshot %s: not a PNG (%v)", name, err)
		}
	}
}

// beyondLoopback is a loopback listener that the API takes for one on
// every interface, so that it asks for the token.
type beyondLoopback struct{ net.Listener }

func (b beyondLoopback) Addr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4zero, Port: b.Listener.Addr().(*net.TCPAddr).Port}
}
