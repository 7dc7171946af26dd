package main

import (
	"context"
	"fmt"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/cortexgrid/cortexd/pkg/api/apiv1"
	"github.com/cortexgrid/cortexd/pkg/client"
)

func (a *app) idCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "id",
		Short: "Print the running node's peer ID and addresses",
		Args:  noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				id, err := c.ID(ctx)
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(id)
				}
				fmt.Fprintln(a.stdout, id.ID)
				for _, ad := range id.Addrs {
					fmt.Fprintln(a.stdout, "  "+ad)
				}
				if id.NAT != nil {
					fmt.Fprintln(a.stdout, natLine(id.NAT))
					fmt.Fprintln(a.stdout, connLine(id.NAT))
				}
				return nil
			})
		}),
	}
}

// natLine says whether the node is reachable, and through which relays.
func natLine(n *apiv1.NAT) string {
	var b strings.Builder
	switch n.Reachability {
	case "public":
		b.WriteString("reachable: yes (public)")
	case "private":
		b.WriteString("reachable: no (behind NAT)")
	default:
		b.WriteString("reachable: unknown (AutoNAT has not decided yet)")
	}
	if len(n.Relays) > 0 {
		b.WriteString("; through relay " + strings.Join(n.Relays, ", "))
	} else if n.Reachability == "private" {
		b.WriteString("; no relay reservation yet")
	}
	if n.RelayService {
		b.WriteString("; relaying for others")
	}
	return b.String()
}

// connLine says how many connected peers are reached directly and which
// only through a relay.
func connLine(n *apiv1.NAT) string {
	s := fmt.Sprintf("peers: %d connected directly", n.DirectPeers)
	if len(n.RelayedPeers) == 0 {
		return s + ", none only through a relay"
	}
	return s + fmt.Sprintf(", %d only through a relay (%s)", len(n.RelayedPeers), strings.Join(n.RelayedPeers, ", "))
}

func (a *app) peersCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "peers",
		Short: "List the peers the node knows: addresses, trust, admission, skills and load; deny or allow one",
		Long: `peers lists the peers the running node knows, with their addresses, trust,
skills and load, and whether they may connect (ACCESS: allowed, denied, or
not_allowed when the node has an allow list without them). Denied peers are
listed even if the node has never seen them. VERIFIED says identify showed
the peer speaks the task protocol: only then is it a provider of the skills
it announces.

CLASS is how much the peer may use here (admission in the config): trusted
(listed in trust.pre_trusted or network.allow_peers), known (it has earned
trust), stranger (not yet: the small admission.stranger limits) or refused
(trust below trust.accept_threshold). HERE is what it holds on this node now
against its limits: tasks, then input plus output bytes.

LOAD is what the peer last announced of how busy it is, and AGE how long ago
that announcement came (pubsub.announce_interval apart): it may be seconds
stale. The next columns are what this node sees itself, now: OURS is how many
of its tasks are in flight to the peer, LATENCY the recent time from sending
one of them to its result (a moving average), OK/FAILED how many completed and
how many failed or timed out there.

'cortexd peers deny PEER' cuts a peer off at once; 'cortexd peers allow PEER'
lets it back.`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				peers, err := c.Peers(ctx)
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(peers)
				}
				rows := make([][]string, 0, len(peers))
				for _, p := range peers {
					addr := "-"
					if len(p.Addrs) > 0 {
						addr = p.Addrs[0]
						if len(p.Addrs) > 1 {
							addr += fmt.Sprintf(" (+%d)", len(p.Addrs)-1)
						}
					}
					rows = append(rows, []string{p.ID, yesNo(p.Connected), providerCell(p), orDash(p.Access), fmt.Sprintf("%.2f", p.Trust),
						admissionClass(p.Admission), admissionUsage(p.Admission), joinOr(p.Skills, "-"),
						formatLoad(p.Load), announcedAgo(p), optInt(p.Outstanding), seenLatency(p.Seen), seenOutcomes(p.Seen), addr})
				}
				return a.table([]string{"PEER", "CONNECTED", "PROVIDER", "ACCESS", "TRUST", "CLASS", "HERE", "SKILLS",
					"LOAD", "AGE", "OURS", "LATENCY", "OK/FAILED", "ADDRESS"}, rows)
			})
		}),
	}
	cmd.AddCommand(a.peersDenyCommand(), a.peersAllowCommand())
	return cmd
}

func (a *app) metricsCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "metrics",
		Short: "Show task counts, latencies and queue depth",
		Args:  noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				m, err := c.Metrics(ctx)
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(m)
				}
				return a.printMetrics(m)
			})
		}),
	}
}

func (a *app) printMetrics(m *apiv1.Metrics) error {
	t := m.Tasks
	fmt.Fprintf(a.stdout, "tasks: %d submitted, %d completed, %d failed, %d timed out (success %.1f%%); %d unanswered, %d refused, %d retried\n",
		t.Submitted, t.Completed, t.Failed, t.TimedOut, t.SuccessRate*100, t.Unavailable, t.Rejected, t.Retried)
	fmt.Fprintf(a.stdout, "execution: min %s, avg %s, p50 %s, p95 %s, p99 %s, max %s\n",
		ms(t.MinMS), ms(t.AvgMS), ms(t.P50MS), ms(t.P95MS), ms(t.P99MS), ms(t.MaxMS))
	q := m.Queue
	fmt.Fprintf(a.stdout, "queue: critical %d, high %d, normal %d, low %d, in flight %d (rejected %d)\n",
		q.Depth["critical"], q.Depth["high"], q.Depth["normal"], q.Depth["low"], q.InFlight, q.Rejected)
	fmt.Fprintf(a.stdout, "peers: %d\n", m.Peers)
	if len(m.PerNode) == 0 {
		return nil
	}
	fmt.Fprintln(a.stdout)
	nodes := make([]string, 0, len(m.PerNode))
	for n := range m.PerNode {
		nodes = append(nodes, n)
	}
	sort.Strings(nodes)
	rows := make([][]string, 0, len(nodes))
	for _, n := range nodes {
		nm := m.PerNode[n]
		rows = append(rows, []string{n, strconv.FormatUint(nm.Submitted, 10), strconv.FormatUint(nm.Completed, 10),
			strconv.FormatUint(nm.Failed+nm.TimedOut, 10), strconv.FormatUint(nm.Unavailable, 10), strconv.FormatUint(nm.Rejected, 10),
			fmt.Sprintf("%.1f%%", nm.SuccessRate*100), ms(nm.AvgMS), ms(nm.P99MS)})
	}
	return a.table([]string{"NODE", "SUBMITTED", "COMPLETED", "FAILED", "UNANSWERED", "REFUSED", "SUCCESS", "AVG", "P99"}, rows)
}

func (a *app) trustCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "trust [PEER]",
		Short: "Show the trust this node has in its peers, or in one peer: local evidence, others' opinions, global value",
		Long: `trust lists the peers this node holds trust evidence about. With PEER it
shows what goes into that peer's trust:

  local evidence   the outcomes of tasks this node gave it (lifetime counts),
                   and the decayed satisfaction and unsatisfaction they leave
                   (a wrong result, found by an output check or a spot check,
                   weighs 4)
  opinions         what other peers shared about it on the trust gossip: the
                   share of their local trust it gets, and how much each
                   opinion weighs here (the sharer's global trust, and how
                   fresh the opinion is)
  global           its share of the EigenTrust vector computed from both
  trust            the score in [0, 1] routing and admission use`,
		Args: maxArgs(argPeer),
		RunE: a.runE(func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				var entries []apiv1.TrustEntry
				if len(args) == 1 {
					e, err := c.TrustOf(ctx, args[0])
					if err != nil {
						return err
					}
					if a.asJSON {
						return a.printJSON(e)
					}
					return a.printTrustOf(e)
				}
				entries, err := c.Trust(ctx)
				if err != nil {
					return err
				}
				if a.asJSON {
					return a.printJSON(entries)
				}
				rows := make([][]string, 0, len(entries))
				for _, e := range entries {
					rows = append(rows, []string{e.Peer, fmt.Sprintf("%.3f", e.Trust), fmt.Sprintf("%.3f", e.Global),
						yesNo(e.PreTrusted), fmt.Sprintf("%d/%d/%d", e.Successes, e.Failures+e.WrongResults, e.Timeouts),
						formatRatings(e.Ratings)})
				}
				return a.table([]string{"PEER", "TRUST", "GLOBAL", "PRE-TRUSTED", "OK/FAILED/TIMED OUT", "RATINGS"}, rows)
			})
		}),
	}
}

// printTrustOf prints one peer's trust: local evidence, others' opinions
// and the global value.
func (a *app) printTrustOf(e *apiv1.TrustEntry) error {
	last := "never"
	if !e.LastOutcome.IsZero() {
		last = e.LastOutcome.Format(time.RFC3339)
	}
	fmt.Fprintf(a.stdout, "peer         %s\n", e.Peer)
	fmt.Fprintf(a.stdout, "trust        %.3f (routing and admission)\n", e.Trust)
	fmt.Fprintf(a.stdout, "global       %.4f (share of the EigenTrust vector)\n", e.Global)
	fmt.Fprintf(a.stdout, "pre-trusted  %s\n", yesNo(e.PreTrusted))
	fmt.Fprintf(a.stdout, "\nlocal evidence\n")
	fmt.Fprintf(a.stdout, "  outcomes        %d ok, %d failed, %d timed out, %d wrong results (last %s)\n",
		e.Successes, e.Failures, e.Timeouts, e.WrongResults, last)
	fmt.Fprintf(a.stdout, "  decayed weight  %.2f satisfactory, %.2f unsatisfactory\n", e.Satisfaction, e.Unsatisfaction)
	fmt.Fprintf(a.stdout, "  skill ratings   %s\n", formatRatings(e.Ratings))
	fmt.Fprintf(a.stdout, "\nopinions of other peers\n")
	if len(e.Opinions) == 0 {
		fmt.Fprintln(a.stdout, "  none: no peer has shared trust in it")
		return nil
	}
	rows := make([][]string, 0, len(e.Opinions))
	for _, o := range e.Opinions {
		rows = append(rows, []string{"  " + o.From, fmt.Sprintf("%.3f", o.Share), fmt.Sprintf("%.4f", o.FromGlobal),
			fmt.Sprintf("%.2f", o.Freshness), o.Received.Format(time.RFC3339)})
	}
	return a.table([]string{"  FROM", "SHARE", "FROM-GLOBAL", "FRESHNESS", "RECEIVED"}, rows)
}

func (a *app) versionCommand() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the version of this cortexd binary",
		Args:  noArgs,
		RunE: a.runE(func(*cobra.Command, []string) error {
			if a.asJSON {
				return a.printJSON(map[string]string{"version": version, "go": runtime.Version(), "os": runtime.GOOS, "arch": runtime.GOARCH})
			}
			fmt.Fprintf(a.stdout, "cortexd %s (%s, %s/%s)\n", version, runtime.Version(), runtime.GOOS, runtime.GOARCH)
			return nil
		}),
	}
}

func (a *app) healthCommand() *cobra.Command {
	var ready bool
	cmd := &cobra.Command{
		Use:   "health",
		Short: "Exit 0 if the running daemon answers /healthz (or /readyz with --ready)",
		Long: `health checks the daemon running on the repo dir (or at --api) and exits 0 if
it is healthy. Container healthchecks use it, since the image has no curl.`,
		Args: noArgs,
		RunE: a.runE(func(cmd *cobra.Command, _ []string) error {
			return a.call(cmd, func(ctx context.Context, c *client.Client) error {
				ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				if ready {
					return c.Ready(ctx)
				}
				return c.Health(ctx)
			})
		}),
	}
	cmd.Flags().BoolVar(&ready, "ready", false, "check /readyz: started and not draining")
	return cmd
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func joinOr(ss []string, empty string) string {
	if len(ss) == 0 {
		return empty
	}
	return strings.Join(ss, ",")
}

// shortPeer abbreviates a peer ID for tables: its last 8 characters.
func shortPeer(id string) string {
	if len(id) <= 12 {
		return id
	}
	return "…" + id[len(id)-8:]
}

func shortPeers(ids []string) string {
	out := make([]string, 0, len(ids))
	for _, id := range ids {
		out = append(out, shortPeer(id))
	}
	return joinOr(out, "-")
}

func formatLoad(l apiv1.Load) string {
	q := 0
	for _, d := range l.Queued {
		q += d
	}
	if l.Capacity == 0 && q == 0 && l.InFlight == 0 {
		return "-"
	}
	return fmt.Sprintf("%d queued, %d/%d busy", q, l.InFlight, l.Capacity)
}

// admissionClass is the CLASS column of `cortexd peers`.
func admissionClass(a *apiv1.PeerAdmission) string {
	if a == nil {
		return "-"
	}
	return orDash(a.Class)
}

// admissionUsage is the HERE column of `cortexd peers`: what the peer
// holds here against its limits, "1/2 tasks, 1.5MiB/4MiB"; "-" for a
// figure the node does not report.
func admissionUsage(a *apiv1.PeerAdmission) string {
	if a == nil {
		return "-"
	}
	tasks, bytes := "-", "-"
	if a.Usage != nil {
		tasks, bytes = strconv.Itoa(a.Usage.Tasks), formatBytes(a.Usage.Bytes)
	}
	if a.Limits.MaxTasks == 0 {
		return "-"
	}
	return fmt.Sprintf("%s/%d tasks, %s/%s", tasks, a.Limits.MaxTasks, bytes, formatBytes(a.Limits.MaxBytes))
}

// formatBytes writes n in B, KiB, MiB or GiB, with one decimal when short.
func formatBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	v, i := float64(n), -1
	for v >= unit && i < 2 {
		v /= unit
		i++
	}
	s := strconv.FormatFloat(v, 'f', 1, 64)
	s = strings.TrimSuffix(s, ".0")
	return s + [...]string{"KiB", "MiB", "GiB"}[i]
}

// announcedAgo is the AGE column of `cortexd peers`: how old the peer's
// last announcement is.
func announcedAgo(p apiv1.Peer) string {
	if p.AnnouncedAgo <= 0 {
		return "-"
	}
	return time.Duration(p.AnnouncedAgo).Round(100*time.Millisecond).String() + " ago"
}

// seenLatency is the LATENCY column of `cortexd peers`.
func seenLatency(s *apiv1.PeerSeen) string {
	if s == nil {
		return "-"
	}
	return ms(s.RecentLatencyMS)
}

// seenOutcomes is the OK/FAILED column of `cortexd peers`.
func seenOutcomes(s *apiv1.PeerSeen) string {
	if s == nil {
		return "-"
	}
	return fmt.Sprintf("%d/%d", s.Completed, s.Failed+s.TimedOut)
}

// optInt writes n, or "-" if it is not reported.
func optInt(n *int) string {
	if n == nil {
		return "-"
	}
	return strconv.Itoa(*n)
}

func formatRatings(r map[string]float64) string {
	if len(r) == 0 {
		return "-"
	}
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, fmt.Sprintf("%s=%+.2f", k, r[k]))
	}
	return strings.Join(parts, ",")
}

// ms formats milliseconds for people.
func ms(v float64) string {
	d := time.Duration(v * float64(time.Millisecond))
	switch {
	case d == 0:
		return "-"
	case d < time.Millisecond:
		return d.Round(time.Microsecond).String()
	case d < time.Second:
		return d.Round(10 * time.Microsecond).String()
	}
	return d.Round(time.Millisecond).String()
}

// providerCell is the PROVIDER column of `cortexd peers`: verified,
// candidate (announced, not yet verified), refused (does not speak the
// task protocol), or "-" for a peer that announces no skill.
func providerCell(p apiv1.Peer) string {
	return orDash(p.Provider)
}
