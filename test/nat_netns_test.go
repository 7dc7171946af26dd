package test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
)

// The netns test's "internet": a bridge in its own namespace, on an
// address range that is neither private nor reserved (AutoNAT and the
// relay only use public addresses). Nothing leaves the namespaces.
const (
	inetBoot   = "11.0.0.10" // the bootstrap node, on the bridge itself
	inetPrefix = "/24"
)

// netnsLab is a set of network namespaces the test made, removed at
// cleanup.
type netnsLab struct {
	t      testing.TB
	prefix string
}

// newNetnsLab checks that namespaces and iptables can be used here, and
// skips the test with the reason if not.
func newNetnsLab(t *testing.T) *netnsLab {
	t.Helper()
	if testing.Short() {
		t.Skip("builds cortexd and runs it in network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("network namespaces need root: run as root (CI does) to test NAT traversal")
	}
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is not installed (apt-get install -y iproute2 iptables): %v", tool, err)
		}
	}
	lab := &netnsLab{t: t, prefix: fmt.Sprintf("cxnat%d", os.Getpid()%100000)}
	probe := lab.name("probe")
	if out, err := exec.Command("ip", "netns", "add", probe).CombinedOutput(); err != nil {
		t.Skipf("cannot make a network namespace here (%v: %s): NAT traversal is not tested", err, strings.TrimSpace(string(out)))
	}
	_ = exec.Command("ip", "netns", "del", probe).Run()
	return lab
}

func (l *netnsLab) name(role string) string { return l.prefix + "-" + role }

// ns makes namespace role with loopback up, deleted at cleanup (after
// the processes started in it later, which cleanups run first).
func (l *netnsLab) ns(role string) string {
	l.t.Helper()
	n := l.name(role)
	l.run("ip", "netns", "add", n)
	l.t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", n).Run() })
	l.run("ip", "-n", n, "link", "set", "lo", "up")
	return n
}

func (l *netnsLab) run(args ...string) {
	l.t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		l.t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// natted makes a router namespace with its WAN side on the bridge at
// wanIP and MASQUERADE towards it, and a host namespace behind it at
// 10.<i>.0.2; it returns the host's namespace.
func (l *netnsLab) natted(inet string, i int, wanIP string) string {
	l.t.Helper()
	r, h := l.ns(fmt.Sprintf("r%d", i)), l.ns(fmt.Sprintf("n%d", i))
	port := fmt.Sprintf("p%d", i)
	l.run("ip", "link", "add", "wan", "netns", r, "type", "veth", "peer", "name", port, "netns", inet)
	l.run("ip", "-n", inet, "link", "set", port, "master", "br0", "up")
	l.run("ip", "-n", r, "addr", "add", wanIP+inetPrefix, "dev", "wan")
	l.run("ip", "-n", r, "link", "set", "wan", "up")
	l.run("ip", "link", "add", "lan", "netns", r, "type", "veth", "peer", "name", "eth0", "netns", h)
	l.run("ip", "-n", r, "addr", "add", fmt.Sprintf("10.%d.0.1/24", i), "dev", "lan")
	l.run("ip", "-n", r, "link", "set", "lan", "up")
	l.run("ip", "-n", h, "addr", "add", fmt.Sprintf("10.%d.0.2/24", i), "dev", "eth0")
	l.run("ip", "-n", h, "link", "set", "eth0", "up")
	l.run("ip", "-n", h, "route", "add", "default", "via", fmt.Sprintf("10.%d.0.1", i))
	l.run("ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	l.run("ip", "netns", "exec", r, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE")
	return h
}

// nsDaemonConfig is a node's config in the lab: TCP and QUIC on 4001,
// fast announcements, admission open (every node is the tester's).
func nsDaemonConfig(listenIP, skills, extra string) string {
	return `network:
  listen_addrs: [/ip4/` + listenIP + `/tcp/4001, /ip4/` + listenIP + `/udp/4001/quic-v1]
mdns:
  enabled: false
pubsub:
  announce_interval: 1s
  capability_ttl: 5s
skills:
  enabled: [` + skills + `]
api:
  listen: 127.0.0.1:0
admission:
  mode: open
log:
  level: debug
shutdown:
  grace: 5s
` + extra
}

// startNSDaemon runs `cortexd daemon` in namespace ns and waits for its
// api file.
func startNSDaemon(t *testing.T, bin, ns, config string) *daemonProc {
	t.Helper()
	repo := filepath.Join(t.TempDir(), "repo")
	if out, err := exec.Command(bin, "--repo", repo, "init").CombinedOutput(); err != nil {
		t.Fatalf("cortexd init: %v\n%s", err, out)
	}
	if err := os.WriteFile(filepath.Join(repo, "config.yaml"), []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{repo: repo, stderr: &logBuffer{}, done: make(chan error, 1)}
	p.cmd = exec.Command("ip", "netns", "exec", ns, bin, "--repo", repo, "daemon")
	p.cmd.Stdout, p.cmd.Stderr = p.stderr, p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start daemon in %s: %v", ns, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if p.cmd.ProcessState == nil {
			_ = p.cmd.Process.Kill()
			<-p.done
		}
		if t.Failed() {
			t.Logf("daemon in %s, log (pubsub lines left out):\n%s", ns, lastLines(withoutPubsub(p.stderr.String()), 60))
		}
	})
	p.awaitAPIFile(t, "the daemon in "+ns+" to write its api file")
	return p
}

// nsJSON runs a client command in ns with --json and decodes its output.
func nsJSON(t *testing.T, bin, ns, repo string, out any, args ...string) error {
	t.Helper()
	code, stdout, stderr := runCLI(t, "ip", append([]string{"netns", "exec", ns, bin, "--repo", repo, "--json"}, args...)...)
	if code != 0 {
		return fmt.Errorf("cortexd %s: exit %d: %s", strings.Join(args, " "), code, strings.TrimSpace(stderr))
	}
	return json.Unmarshal([]byte(stdout), out)
}

// TestNATTwoNodesBehindTheirOwnNATReachEachOtherThroughARelay builds, in
// network namespaces, an "internet" bridge with a public bootstrap node
// (relay service on) and two nodes each behind its own MASQUERADE NAT. Each
// NATed node must find out by AutoNAT that it is not reachable and take a
// reservation on the bootstrap node; a task from one, for a skill only
// the other has, must reach it and its result come back. Whether the
// connection went direct after hole punching is reported, not required:
// that needs the NATs' mappings to be endpoint-independent.
func TestNATTwoNodesBehindTheirOwnNATReachEachOtherThroughARelay(t *testing.T) {
	lab := newNetnsLab(t)
	bin := cortexdBinary(t)
	inet := lab.ns("inet")
	lab.run("ip", "-n", inet, "link", "add", "br0", "type", "bridge")
	lab.run("ip", "-n", inet, "addr", "add", inetBoot+inetPrefix, "dev", "br0")
	lab.run("ip", "-n", inet, "link", "set", "br0", "up")
	nsA := lab.natted(inet, 1, "11.0.0.1")
	nsB := lab.natted(inet, 2, "11.0.0.2")

	boot := startNSDaemon(t, bin, inet, nsDaemonConfig(inetBoot, "", "nat:\n  relay_service: on\n"))
	var bootID apiv1.Identity
	if err := nsJSON(t, bin, inet, boot.repo, &bootID, "id"); err != nil {
		t.Fatal(err)
	}
	bootAddr := "/ip4/" + inetBoot + "/tcp/4001/p2p/" + bootID.ID
	natted := "network:\n  bootstrap_peers: [" + bootAddr + "]\n"
	cfg := func(skills string) string {
		c := nsDaemonConfig("0.0.0.0", skills, "")
		return strings.Replace(c, "network:\n", natted, 1)
	}
	a := startNSDaemon(t, bin, nsA, cfg("echo"))
	b := startNSDaemon(t, bin, nsB, cfg("hash.sha256"))

	ids := map[string]string{}
	for _, n := range []struct {
		ns   string
		proc *daemonProc
	}{{nsA, a}, {nsB, b}} {
		var id apiv1.Identity
		pollUntil(t, 45*time.Second, "AutoNAT in "+n.ns+" to find it private and auto-relay to reserve on the bootstrap node", func() error {
			if err := nsJSON(t, bin, n.ns, n.proc.repo, &id, "id"); err != nil {
				return err
			}
			if id.NAT == nil || id.NAT.Reachability != "private" || !slices.Contains(id.NAT.Relays, bootID.ID) {
				return fmt.Errorf("nat %+v", id.NAT)
			}
			return nil
		})
		ids[n.ns] = id.ID
		t.Logf("%s: %s, relay addresses %v", n.ns, id.NAT.Reachability, id.NAT.RelayAddrs)
	}
	code, stdout, _ := runCLI(t, "ip", "netns", "exec", nsA, bin, "--repo", a.repo, "id")
	if code != 0 || !strings.Contains(stdout, "reachable: no (behind NAT); through relay "+bootID.ID) {
		t.Errorf("cortexd id in %s: exit %d, output %q; want it to say it is behind NAT and name the relay", nsA, code, stdout)
	}

	var task apiv1.Task
	pollUntil(t, 40*time.Second, "a task from the node behind NAT 1 to run on the node behind NAT 2", func() error {
		if err := nsJSON(t, bin, nsA, a.repo, &task, "task", "submit", "hash.sha256",
			"--input", `{"data":"aGVsbG8="}`, "--timeout", "15s", "--wait"); err != nil {
			return err
		}
		if task.State != apiv1.StateSucceeded || task.Result == nil || task.Result.ExecutedBy != ids[nsB] {
			return fmt.Errorf("task %+v", task)
		}
		return nil
	})
	var out struct{ SHA256 string }
	if err := json.Unmarshal(task.Result.Output, &out); err != nil || out.SHA256 != helloSHA256 {
		t.Fatalf("output %s (err %v), want sha256 %s", task.Result.Output, err, helloSHA256)
	}

	// Direct or relayed: node A's peer entry for B says whether every
	// connection goes through the relay; hole punching (DCUtR, started by
	// B on the relayed connection A opened) gets a few seconds.
	relayed := true
	deadline := time.Now().Add(10 * time.Second)
	for relayed && time.Now().Before(deadline) {
		var peers []apiv1.Peer
		if err := nsJSON(t, bin, nsA, a.repo, &peers, "peers"); err != nil {
			t.Fatal(err)
		}
		for _, p := range peers {
			if p.ID == ids[nsB] {
				if !p.Connected {
					t.Fatalf("node A lists node B as not connected after the task: %+v", p)
				}
				relayed = p.Relayed
			}
		}
		if relayed {
			time.Sleep(500 * time.Millisecond)
		}
	}
	if relayed {
		t.Logf("NAT traversal: the task went through; the connection between the NATed nodes stayed RELAYED through the bootstrap node (hole punching did not succeed)")
	} else {
		t.Logf("NAT traversal: the task went through; the connection between the NATed nodes went DIRECT after hole punching (DCUtR); direct TCP seen: %v",
			hasTCPTo(nsA, "11.0.0.2"))
	}
}

// hasTCPTo reports whether ns has an established TCP connection to ip
// (QUIC's UDP socket does not show as one).
func hasTCPTo(ns, ip string) bool {
	out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-Htn", "state", "established", "dst", ip).Output()
	return err == nil && strings.TrimSpace(string(out)) != ""
}
