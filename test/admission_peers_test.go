package test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// TestAdmissionPeersShowsAStrangerOnThePublicNetwork runs two daemons on
// their default (public network) admission config: the first lists the
// second, which it has no evidence about, as a stranger with the stranger
// limits, in `cortexd peers` and its --json form.
func TestAdmissionPeersShowsAStrangerOnThePublicNetwork(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs cortexd processes")
	}
	bin := cortexdBinary(t)
	r1, r2 := initDaemonRepo(t, bin, "echo"), initDaemonRepo(t, bin, "echo")
	for _, r := range []string{r1, r2} {
		if err := os.WriteFile(filepath.Join(r, "config.yaml"), []byte(publicDaemonConfig("echo")), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	startDaemon(t, bin, r1)
	c1 := repoClient(t, r1)
	startDaemon(t, bin, r2, "--bootstrap", daemonLoopbackAddr(t, c1))
	id2, err := repoClient(t, r2).ID(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var entry apiv1.Peer
	pollUntil(t, 30*time.Second, "node 1 to list node 2, verified as speaking the task protocol", func() error {
		code, stdout, stderr := runCLI(t, bin, "--repo", r1, "peers", "--json")
		if code != 0 {
			return fmt.Errorf("exit %d: %s", code, stderr)
		}
		var peers []apiv1.Peer
		if err := json.Unmarshal([]byte(stdout), &peers); err != nil {
			return err
		}
		for _, p := range peers {
			if p.ID == id2.ID && p.Verified {
				entry = p
				return nil
			}
		}
		return fmt.Errorf("not listed yet: %s", stdout)
	})
	want := apiv1.PeerLimits{RatePerSec: 5, Burst: 10, MaxTasks: 2, MaxBytes: 4 << 20}
	if entry.Admission == nil || entry.Admission.Class != apiv1.ClassStranger || entry.Admission.Limits != want {
		t.Fatalf("node 2's admission on node 1 = %+v, want a stranger with %+v", entry.Admission, want)
	}
	code, stdout, stderr := runCLI(t, bin, "--repo", r1, "peers")
	if code != 0 {
		t.Fatalf("cortexd peers: exit %d: %s", code, stderr)
	}
	for _, w := range []string{"PROVIDER", "CLASS", "HERE", "OURS", "stranger", "/2 tasks", "/4MiB"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("cortexd peers does not show %q:\n%s", w, stdout)
		}
	}
}
