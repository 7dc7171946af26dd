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
	defer func() { _ = exec.Command("ip", "netns", "del", probe).Run() }()
	for _, rule := range [][]string{
		{"-t", "nat", "-A", "POSTROUTING", "-j", "MASQUERADE", "--random-fully"},
		{"-A", "INPUT", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP"},
	} {
		args := append([]string{"netns", "exec", probe, "iptables"}, rule...)
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Skipf("the kernel or iptables here cannot make the lab's NAT (iptables %s: %v: %s): NAT traversal is not tested",
				strings.Join(rule, " "), err, strings.TrimSpace(string(out)))
		}
	}
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

// natKind is how a lab router translates: the mapping its MASQUERADE
// rule makes.
type natKind int

const (
	// endpointIndependent keeps the host's source port on the WAN side
	// (MASQUERADE without --random: Linux keeps the port unless it is
	// taken), so every peer sees the same public address and port: what
	// hole punching needs.
	endpointIndependent natKind = iota
	// symmetric picks a fresh random port for every destination
	// (--random-fully): the address the bootstrap node observes is of no
	// use to another peer, so hole punching cannot work.
	symmetric
)

// natted makes a router namespace with its WAN side on the bridge at
// wanIP and MASQUERADE of kind towards it, and a host namespace behind
// it at 10.<i>.0.2; it returns the host's namespace.
//
// The router drops packets from the WAN that belong to no connection, as
// a home router's firewall does. Without that rule a Linux router answers
// the first hole-punch packet, which arrives before its own host's
// packet has opened the mapping: a TCP SYN with a RST (the dial fails
// with "connection refused" within a millisecond) and a UDP packet by
// keeping a conntrack entry for it, which takes the mapping's port so
// that the host's own packets leave from another one. Either way DCUtR
// fails every time and the connection stays relayed.
func (l *netnsLab) natted(inet string, i int, wanIP string, kind natKind) string {
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
	masq := []string{"ip", "netns", "exec", r, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan", "-j", "MASQUERADE"}
	if kind == symmetric {
		masq = append(masq, "--random-fully")
	}
	l.run(masq...)
	l.run("ip", "netns", "exec", r, "iptables", "-A", "INPUT", "-i", "wan", "-m", "conntrack", "--ctstate", "NEW,INVALID", "-j", "DROP")
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
		// CORTEXD_NAT_LOGS=dir keeps each daemon's whole log there, as
		// <namespace>.log (with GOLOG_LOG_LEVEL=p2p-holepunch=debug, every
		// hole-punch attempt).
		if d := os.Getenv("CORTEXD_NAT_LOGS"); d != "" {
			_ = os.WriteFile(filepath.Join(d, ns+".log"), []byte(p.stderr.String()), 0o644)
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

// TestNATHolePunchGoesDirectThroughEndpointIndependentNATs: two nodes,
// each behind its own port-keeping NAT, reach each other through the
// bootstrap node's relay, and DCUtR turns the relayed connection into a
// direct one.
func TestNATHolePunchGoesDirectThroughEndpointIndependentNATs(t *testing.T) {
	lab := newNATLab(t, endpointIndependent, false)
	lab.taskThroughNAT(t)
	relayed := lab.relayedAfter(t, 20*time.Second)
	if relayed {
		t.Fatalf("the connection between the NATed nodes stayed relayed for 20s after the task: DCUtR did not punch through two endpoint-independent NATs (rerun with CORTEXD_NAT_LOGS=/tmp/natlogs GOLOG_LOG_LEVEL=p2p-holepunch=debug: the daemons' logs there show each attempt)")
	}
	if nat := lab.natOfA(t); slices.Contains(nat.RelayedPeers, lab.idB) || nat.DirectPeers < 2 {
		t.Errorf("cortexd id in %s: nat %+v; want node B and the bootstrap node among the direct peers", lab.nsA, nat)
	}
	t.Logf("NAT traversal: the task went through; the connection between the NATed nodes went DIRECT after hole punching (DCUtR) over %s", lab.directTransport(t))
}

// TestNATHolePunchGoesDirectOverTCP: the same over TCP alone (the
// bootstrap node listed by its TCP address only, so the nodes observe no
// UDP address), as on a private network, which is TCP only: DCUtR's TCP
// simultaneous open gets through.
func TestNATHolePunchGoesDirectOverTCP(t *testing.T) {
	lab := newNATLab(t, endpointIndependent, true)
	lab.taskThroughNAT(t)
	if lab.relayedAfter(t, 20*time.Second) {
		t.Fatalf("the connection between the NATed nodes stayed relayed for 20s after the task: TCP hole punching failed (rerun with CORTEXD_NAT_LOGS=/tmp/natlogs GOLOG_LOG_LEVEL=p2p-holepunch=debug)")
	}
	if !hasTCPTo(lab.nsA, lab.wanB) {
		t.Fatalf("node A has a direct connection to node B but no TCP connection to %s", lab.wanB)
	}
	t.Logf("NAT traversal: the connection between the NATed nodes went DIRECT over TCP after hole punching")
}

// TestNATSymmetricNATsStayRelayed: behind NATs that pick a new port per
// destination, hole punching cannot work; the task still goes through
// the bootstrap node's relay and comes back, and the connection is
// reported relayed.
func TestNATSymmetricNATsStayRelayed(t *testing.T) {
	lab := newNATLab(t, symmetric, false)
	lab.taskThroughNAT(t)
	if !lab.relayedAfter(t, 15*time.Second) {
		t.Fatalf("the connection between nodes behind symmetric NATs went direct: the lab's NAT is not symmetric, or a node is reachable without a relay")
	}
	if nat := lab.natOfA(t); !slices.Contains(nat.RelayedPeers, lab.idB) {
		t.Errorf("cortexd id in %s: nat %+v; want node B among the peers reached only through a relay", lab.nsA, nat)
	}
	t.Logf("NAT traversal: the task went through the relay; the connection between the NATed nodes stayed RELAYED, as it must behind symmetric NATs")
}

// natLab is the lab of the NAT tests: an "internet" bridge with a public
// bootstrap node (relay service on) and two nodes, a and b, each behind
// its own NAT of one kind.
type natLab struct {
	bin        string
	nsA, nsB   string
	a, b       *daemonProc
	bootID     string
	idA, idB   string
	wanA, wanB string
}

// newNATLab builds the lab and waits until each NATed node has found by
// AutoNAT that it is not reachable and taken a reservation on the
// bootstrap node. With tcpOnly the NATed nodes know the bootstrap node by
// its TCP address alone.
func newNATLab(t *testing.T, kind natKind, tcpOnly bool) *natLab {
	t.Helper()
	nl := newNetnsLab(t)
	l := &natLab{bin: cortexdBinary(t), wanA: "11.0.0.1", wanB: "11.0.0.2"}
	inet := nl.ns("inet")
	nl.run("ip", "-n", inet, "link", "add", "br0", "type", "bridge")
	nl.run("ip", "-n", inet, "addr", "add", inetBoot+inetPrefix, "dev", "br0")
	nl.run("ip", "-n", inet, "link", "set", "br0", "up")
	l.nsA = nl.natted(inet, 1, l.wanA, kind)
	l.nsB = nl.natted(inet, 2, l.wanB, kind)

	boot := startNSDaemon(t, l.bin, inet, nsDaemonConfig(inetBoot, "", "nat:\n  relay_service: on\n"))
	var bootID apiv1.Identity
	if err := nsJSON(t, l.bin, inet, boot.repo, &bootID, "id"); err != nil {
		t.Fatal(err)
	}
	l.bootID = bootID.ID
	// Both of the bootstrap node's addresses, as a deployment lists them:
	// a node observes its public address only on the transports it is
	// connected over, and DCUtR punches only those.
	boots := "/ip4/" + inetBoot + "/udp/4001/quic-v1/p2p/" + l.bootID + ", /ip4/" + inetBoot + "/tcp/4001/p2p/" + l.bootID
	if tcpOnly {
		boots = "/ip4/" + inetBoot + "/tcp/4001/p2p/" + l.bootID
	}
	cfg := func(skills string) string {
		c := nsDaemonConfig("0.0.0.0", skills, "")
		return strings.Replace(c, "network:\n", "network:\n  bootstrap_peers: ["+boots+"]\n", 1)
	}
	l.a = startNSDaemon(t, l.bin, l.nsA, cfg("echo"))
	l.b = startNSDaemon(t, l.bin, l.nsB, cfg("hash.sha256"))

	for _, n := range []struct {
		ns   string
		proc *daemonProc
		id   *string
	}{{l.nsA, l.a, &l.idA}, {l.nsB, l.b, &l.idB}} {
		var id apiv1.Identity
		pollUntil(t, 45*time.Second, "AutoNAT in "+n.ns+" to find it private and auto-relay to reserve on the bootstrap node", func() error {
			if err := nsJSON(t, l.bin, n.ns, n.proc.repo, &id, "id"); err != nil {
				return err
			}
			if id.NAT == nil || id.NAT.Reachability != "private" || !slices.Contains(id.NAT.Relays, l.bootID) {
				return fmt.Errorf("nat %+v", id.NAT)
			}
			return nil
		})
		*n.id = id.ID
		t.Logf("%s: %s, relay addresses %v", n.ns, id.NAT.Reachability, id.NAT.RelayAddrs)
	}
	code, stdout, _ := runCLI(t, "ip", "netns", "exec", l.nsA, l.bin, "--repo", l.a.repo, "id")
	if code != 0 || !strings.Contains(stdout, "reachable: no (behind NAT); through relay "+l.bootID) {
		t.Errorf("cortexd id in %s: exit %d, output %q; want it to say it is behind NAT and name the relay", l.nsA, code, stdout)
	}
	return l
}

// taskThroughNAT submits, on node a, a task for the skill only b has,
// and checks that b ran it and the result came back.
func (l *natLab) taskThroughNAT(t *testing.T) {
	t.Helper()
	var task apiv1.Task
	pollUntil(t, 40*time.Second, "a task from the node behind NAT 1 to run on the node behind NAT 2", func() error {
		if err := nsJSON(t, l.bin, l.nsA, l.a.repo, &task, "task", "submit", "hash.sha256",
			"--input", `{"data":"aGVsbG8="}`, "--timeout", "15s", "--wait"); err != nil {
			return err
		}
		if task.State != apiv1.StateSucceeded || task.Result == nil || task.Result.ExecutedBy != l.idB {
			return fmt.Errorf("task %+v", task)
		}
		return nil
	})
	var out struct{ SHA256 string }
	if err := json.Unmarshal(task.Result.Output, &out); err != nil || out.SHA256 != helloSHA256 {
		t.Fatalf("output %s (err %v), want sha256 %s", task.Result.Output, err, helloSHA256)
	}
}

// relayedAfter polls node a's peer entry for b for up to d: it returns
// false as soon as a direct connection to b exists, true if every
// connection to b went through the relay all along.
func (l *natLab) relayedAfter(t *testing.T, d time.Duration) bool {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		var peers []apiv1.Peer
		if err := nsJSON(t, l.bin, l.nsA, l.a.repo, &peers, "peers"); err != nil {
			t.Fatal(err)
		}
		i := slices.IndexFunc(peers, func(p apiv1.Peer) bool { return p.ID == l.idB })
		if i < 0 || !peers[i].Connected {
			t.Fatalf("node A lists node B as not connected after the task: %+v", peers)
		}
		if !peers[i].Relayed {
			return false
		}
		if time.Now().After(deadline) {
			return true
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// natOfA is the nat section of node a's `cortexd id`.
func (l *natLab) natOfA(t *testing.T) apiv1.NAT {
	t.Helper()
	var id apiv1.Identity
	if err := nsJSON(t, l.bin, l.nsA, l.a.repo, &id, "id"); err != nil {
		t.Fatal(err)
	}
	if id.NAT == nil {
		t.Fatalf("cortexd id in %s has no nat section", l.nsA)
	}
	return *id.NAT
}

// directTransport names the transport of a's direct connection to b.
func (l *natLab) directTransport(t *testing.T) string {
	t.Helper()
	if hasTCPTo(l.nsA, l.wanB) {
		return "TCP"
	}
	return "QUIC (no TCP connection to " + l.wanB + ")"
}

// hasTCPTo reports whether ns has an established TCP connection to ip
// (QUIC's UDP socket does not show as one).
func hasTCPTo(ns, ip string) bool {
	out, err := exec.Command("ip", "netns", "exec", ns, "ss", "-Htn", "state", "established", "dst", ip).Output()
	return err == nil && strings.TrimSpace(string(out)) != ""
}
