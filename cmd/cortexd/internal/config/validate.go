package config

import (
	"fmt"
	"math"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wasm"
	"github.com/libp2p/go-libp2p/core/peer"
	"github.com/multiformats/go-multiaddr"
)

// Validate checks every value and returns a Problems error naming each bad
// key, or nil.
func (c *Config) Validate() error {
	var p problems
	c.validateNetwork(&p)
	c.validateQueue(&p)
	c.validateTrust(&p)
	c.validateAdmission(&p)
	c.validateMisc(&p)
	c.validateWasm(&p)
	if len(p) == 0 {
		return nil
	}
	return Problems(p)
}

type problems []string

// add records a problem with key; if an environment variable set the
// key, the problem says so, as decode errors do.
func (p *problems) add(key, format string, args ...any) {
	msg := key + ": " + fmt.Sprintf(format, args...)
	base, _, _ := strings.Cut(key, "[") // network.deny_peers[1]
	if _, ok := os.LookupEnv(EnvVar(base)); ok {
		msg += " (set by $" + EnvVar(base) + ")"
	}
	*p = append(*p, msg)
}

func (p *problems) positive(key string, n int) {
	if n <= 0 {
		p.add(key, "must be at least 1, got %d", n)
	}
}

func (p *problems) nonNegative(key string, n int) {
	if n < 0 {
		p.add(key, "must not be negative, got %d", n)
	}
}

func (p *problems) duration(key string, d time.Duration) {
	if d <= 0 {
		p.add(key, "must be a positive duration such as 30s or 5m, got %s", d)
	}
}

func (p *problems) unit(key string, f float64) {
	if math.IsNaN(f) || f < 0 || f > 1 {
		p.add(key, "must be between 0 and 1, got %v", f)
	}
}

func (p *problems) oneOf(key, v string, allowed ...string) {
	for _, a := range allowed {
		if v == a {
			return
		}
	}
	p.add(key, "must be one of %s, got %q", strings.Join(allowed, ", "), v)
}

func (c *Config) validateNetwork(p *problems) {
	if c.Identity.KeyFile == "" {
		p.add("identity.key_file", "must not be empty")
	}
	if len(c.Network.ListenAddrs) == 0 {
		p.add("network.listen_addrs", "must list at least one multiaddr, such as /ip4/0.0.0.0/tcp/4001")
	}
	for i, a := range c.Network.ListenAddrs {
		if _, err := multiaddr.NewMultiaddr(a); err != nil {
			p.add(fmt.Sprintf("network.listen_addrs[%d]", i), "%q is not a multiaddr: %v", a, err)
		}
	}
	for i, a := range c.Network.BootstrapPeers {
		if _, err := ParsePeerAddr(a); err != nil {
			p.add(fmt.Sprintf("network.bootstrap_peers[%d]", i), "%v", err)
		}
	}
	c.validateAccess(p)
	c.validateNAT(p)
	cm := c.Network.ConnManager
	p.nonNegative("network.conn_manager.low", cm.Low)
	p.positive("network.conn_manager.high", cm.High)
	if cm.High > 0 && cm.Low > cm.High {
		p.add("network.conn_manager.low", "must not exceed network.conn_manager.high (%d), got %d", cm.High, cm.Low)
	}
	if cm.Grace < 0 {
		p.add("network.conn_manager.grace", "must not be negative, got %s", cm.Grace)
	}
	p.nonNegative("network.resources.max_memory_mb", c.Network.Resources.MaxMemoryMB)
	p.nonNegative("network.resources.max_fds", c.Network.Resources.MaxFDs)
	p.nonNegative("network.resources.max_conns", c.Network.Resources.MaxConns)
	p.nonNegative("network.resources.max_streams", c.Network.Resources.MaxStreams)
	if mc := c.Network.Resources.MaxConns; mc > 0 && mc < cm.High {
		p.add("network.resources.max_conns", "must be at least network.conn_manager.high (%d), got %d", cm.High, mc)
	}
	if n := c.Network.MaxMessageSize; n < 64<<10 || n > 1<<30 {
		p.add("network.max_message_size", "must be between 65536 (64 KiB) and 1073741824 (1 GiB), got %d", n)
	}

	if !strings.HasPrefix(c.DHT.Prefix, "/") || strings.ContainsAny(c.DHT.Prefix, " \t\n") {
		p.add("dht.prefix", "must be a protocol path such as /cortex, got %q", c.DHT.Prefix)
	}
	p.oneOf("dht.mode", c.DHT.Mode, "server", "client", "auto")
	if c.DHT.Rendezvous == "" {
		p.add("dht.rendezvous", "must not be empty")
	}
	p.duration("pubsub.announce_interval", c.PubSub.AnnounceInterval)
	p.duration("pubsub.capability_ttl", c.PubSub.CapabilityTTL)
	if c.PubSub.CapabilityTTL > 0 && c.PubSub.CapabilityTTL < c.PubSub.AnnounceInterval {
		p.add("pubsub.capability_ttl", "must be at least pubsub.announce_interval (%s), got %s, or every entry expires before it is renewed",
			c.PubSub.AnnounceInterval, c.PubSub.CapabilityTTL)
	}
}

func (c *Config) validateQueue(p *problems) {
	q := c.Queue
	p.positive("queue.max_per_level", q.MaxPerLevel)
	p.nonNegative("queue.level_limits.critical", q.LevelLimits.Critical)
	p.nonNegative("queue.level_limits.high", q.LevelLimits.High)
	p.nonNegative("queue.level_limits.normal", q.LevelLimits.Normal)
	p.nonNegative("queue.level_limits.low", q.LevelLimits.Low)
	p.duration("queue.default_timeout", q.DefaultTimeout)
	if q.DefaultTimeout > MaxTaskTimeout {
		p.add("queue.default_timeout", "must be at most %s (the task protocol refuses deadlines further ahead), got %s", MaxTaskTimeout, q.DefaultTimeout)
	}
	p.nonNegative("queue.workers", q.Workers)
	p.nonNegative("queue.max_retries", q.MaxRetries)
	p.duration("queue.backoff_base", q.BackoffBase)
	p.duration("queue.backoff_max", q.BackoffMax)
	if q.BackoffBase > 0 && q.BackoffMax > 0 && q.BackoffMax < q.BackoffBase {
		p.add("queue.backoff_max", "must be at least queue.backoff_base (%s), got %s", q.BackoffBase, q.BackoffMax)
	}
	if q.AgingStep < 0 {
		p.add("queue.aging_step", "must not be negative (0 turns aging off), got %s", q.AgingStep)
	}
	if q.AdaptiveAgingK < 0 || q.AdaptiveAgingK > 1<<20 {
		p.add("queue.adaptive_aging_k", "must be 0 (fixed aging) to 1048576, got %d", q.AdaptiveAgingK)
	}
	if q.AdaptiveAgingMinStep < 0 {
		p.add("queue.adaptive_aging_min_step", "must not be negative (0 means queue.aging_step/100), got %s", q.AdaptiveAgingMinStep)
	}
	if q.AdaptiveAgingK > 0 && q.AgingStep > 0 && q.AdaptiveAgingMinStep > q.AgingStep {
		p.add("queue.adaptive_aging_min_step", "must be at most queue.aging_step (%s), got %s", q.AgingStep, q.AdaptiveAgingMinStep)
	}
	p.duration("queue.sweep_interval", q.SweepInterval)

	p.duration("tasks.result_retention", c.Tasks.ResultRetention)
	p.positive("tasks.max_tasks", c.Tasks.MaxTasks)
	p.duration("tasks.ack_timeout", c.Tasks.AckTimeout)
	if d := c.Tasks.HeartbeatInterval; d < 10*time.Millisecond || d > time.Minute {
		p.add("tasks.heartbeat_interval", "must be between 10ms and 1m, got %s", d)
	}
	if n := c.Tasks.LeaseMisses; n < 1 || n > 100 {
		p.add("tasks.lease_misses", "must be between 1 and 100, got %d", n)
	}

	p.nonNegative("breaker.failures", c.Breaker.Failures)
	if c.Breaker.Failures > 0 {
		p.duration("breaker.open_for", c.Breaker.OpenFor)
	}

	if c.Cache.Enabled {
		if n := c.Cache.MaxBytes; n < wasm.KiB || n > 64*wasm.GiB {
			p.add("cache.max_bytes", "must be between 1KiB and 64GiB, got %d bytes", int64(n))
		}
		p.duration("cache.ttl", c.Cache.TTL)
	}

	if n := c.Workflow.MaxWorkflows; n < 1 || n > 100_000 {
		p.add("workflow.max_workflows", "must be between 1 and 100000, got %d", n)
	}

	w := c.Routing.Weights
	sum := 0.0
	for _, kv := range []struct {
		k string
		v float64
	}{{"trust", w.Trust}, {"skill", w.Skill}, {"success", w.Success}, {"latency", w.Latency}, {"load", w.Load}} {
		if kv.v < 0 || math.IsNaN(kv.v) || math.IsInf(kv.v, 0) {
			p.add("routing.weights."+kv.k, "must be a finite number not below 0, got %v", kv.v)
			continue
		}
		sum += kv.v
	}
	if sum == 0 {
		p.add("routing.weights", "at least one weight must be above 0")
	}
}

func (c *Config) validateTrust(p *problems) {
	t := c.Trust
	for i, s := range t.PreTrusted {
		if _, err := peer.Decode(s); err != nil {
			p.add(fmt.Sprintf("trust.pre_trusted[%d]", i), "%q is not a peer ID: %v", s, err)
		}
	}
	p.unit("trust.neutral", t.Neutral)
	p.unit("trust.accept_threshold", t.AcceptThreshold)
	p.unit("trust.min_trust_default", t.MinTrustDefault)
	p.duration("trust.recompute_interval", t.RecomputeInterval)
	p.duration("trust.decay_half_life", t.DecayHalfLife)
	switch {
	case t.OpinionInterval < time.Second:
		p.add("trust.opinion_interval", "must be at least 1s (default 30s), got %v: every node relays every other's opinions", t.OpinionInterval)
	case t.OpinionInterval > 30*time.Minute:
		p.add("trust.opinion_interval", "must be at most 30m (default 30s), got %v: receivers take opinions an hour old for replays", t.OpinionInterval)
	}
	p.unit("trust.spot_check_rate", t.SpotCheckRate)
	for i, s := range t.SpotCheckSkills {
		if err := reputation.SkillID(s).Validate(); err != nil {
			p.add(fmt.Sprintf("trust.spot_check_skills[%d]", i), "%v", err)
		}
	}
}

func (c *Config) validateMisc(p *problems) {
	seen := map[string]bool{}
	for i, s := range c.Skills.Enabled {
		key := fmt.Sprintf("skills.enabled[%d]", i)
		switch {
		case reputation.SkillID(s).Validate() != nil:
			p.add(key, "%v", reputation.SkillID(s).Validate())
		case seen[s]:
			p.add(key, "%q is listed twice", s)
		}
		seen[s] = true
	}
	c.validateCommands(p)
	p.oneOf("skills.fetch_modules", c.Skills.FetchModules, "off", "trusted", "any")
	p.unit("skills.fetch_min_trust", c.Skills.FetchMinTrust)
	if n, err := wasm.ParseSize(c.Skills.ModuleCache); err != nil {
		p.add("skills.module_cache", "%v", err)
	} else if n < wasm.MiB {
		p.add("skills.module_cache", "must be at least 1MiB, got %s", c.Skills.ModuleCache)
	}
	if _, err := ParseListen(c.API.Listen); err != nil {
		p.add("api.listen", "%v", err)
	}
	if c.API.TokenFile == "" {
		p.add("api.token_file", "must not be empty")
	}
	if c.API.MaxBodyBytes < 1024 {
		p.add("api.max_body_bytes", "must be at least 1024, got %d", c.API.MaxBodyBytes)
	}
	p.oneOf("log.level", strings.ToLower(c.Log.Level), "debug", "info", "warn", "error")
	p.oneOf("log.format", strings.ToLower(c.Log.Format), "text", "json")
	p.duration("shutdown.grace", c.Shutdown.Grace)
}

// ParsePeerAddr parses a bootstrap peer: a multiaddr that ends in
// /p2p/<peer ID>.
func ParsePeerAddr(s string) (*peer.AddrInfo, error) {
	ma, err := multiaddr.NewMultiaddr(s)
	if err != nil {
		return nil, fmt.Errorf("%q is not a multiaddr: %w", s, err)
	}
	ai, err := peer.AddrInfoFromP2pAddr(ma)
	if err != nil {
		return nil, fmt.Errorf("%q must end in /p2p/<peer ID>, as `cortexd id` prints it: %w", s, err)
	}
	return ai, nil
}

// ParseListen parses an API listen address, host:port, where the host is an
// IP address or "localhost" and the port may be 0.
func ParseListen(s string) (netip.AddrPort, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q is not host:port, such as 127.0.0.1:5080: %w", s, err)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q has no valid port (0-65535)", s)
	}
	if host == "localhost" {
		host = "127.0.0.1"
	}
	if host == "" {
		host = "0.0.0.0"
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("%q: host must be an IP address or localhost", s)
	}
	return netip.AddrPortFrom(a, uint16(n)), nil
}

// validateWasm checks the wasm section against the bounds wasm.Options
// takes: memory from one wasm page (64KiB) to 4GiB, timeouts from 1ms,
// sizes of at least 1 byte, each default within its max.
func (c *Config) validateWasm(p *problems) {
	w := c.Wasm
	if w.MaxModule < wasm.KiB || w.MaxModule > wasm.GiB {
		p.add("wasm.max_module", "must be between 1KiB and 1GiB (a module is read into memory whole), got %s", w.MaxModule)
	}
	memory := func(key string, v, max wasm.Size, maxKey string) {
		switch {
		case v < 64*wasm.KiB || v > 4*wasm.GiB:
			p.add(key, "must be between 64KiB (one wasm page) and 4GiB (all a 32-bit module can address), got %s", v)
		case maxKey != "" && v > max:
			p.add(key, "must not exceed %s (%s), got %s", maxKey, max, v)
		}
	}
	memory("wasm.max.memory", w.Max.Memory, 0, "")
	memory("wasm.default.memory", w.Default.Memory, w.Max.Memory, "wasm.max.memory")
	timeout := func(key string, v, max time.Duration, maxKey string) {
		switch {
		case v < time.Millisecond:
			p.add(key, "must be at least 1ms, got %s", v)
		case maxKey != "" && v > max:
			p.add(key, "must not exceed %s (%s), got %s", maxKey, max, v)
		}
	}
	timeout("wasm.max.timeout", w.Max.Timeout, 0, "")
	timeout("wasm.default.timeout", w.Default.Timeout, w.Max.Timeout, "wasm.max.timeout")
	size := func(key string, v, max wasm.Size, maxKey string) {
		switch {
		case v < 1:
			p.add(key, "must be at least 1 byte, got %d", v)
		case maxKey != "" && v > max:
			p.add(key, "must not exceed %s (%s), got %s", maxKey, max, v)
		}
	}
	size("wasm.max.input", w.Max.Input, 0, "")
	size("wasm.max.output", w.Max.Output, 0, "")
	size("wasm.default.output", w.Default.Output, w.Max.Output, "wasm.max.output")
}

// WasmOptions maps the wasm section onto the engine's options.
func (w Wasm) WasmOptions() wasm.Options {
	return wasm.Options{
		MaxModule: w.MaxModule,
		Max: wasm.Limits{Memory: w.Max.Memory, Timeout: wasm.Duration(w.Max.Timeout),
			Input: w.Max.Input, Output: w.Max.Output},
		Default: wasm.Limits{Memory: w.Default.Memory, Timeout: wasm.Duration(w.Default.Timeout),
			Input: w.Max.Input, Output: w.Default.Output},
	}
}

func (c *Config) validateNAT(p *problems) {
	n := c.NAT
	p.oneOf("nat.relay_service", n.RelayService, "auto", "on", "off")
	p.oneOf("nat.reachability", n.Reachability, "auto", "public", "private")
	for i, a := range n.StaticRelays {
		if _, err := ParsePeerAddr(a); err != nil {
			p.add(fmt.Sprintf("nat.static_relays[%d]", i), "%v", err)
		}
	}
	p.positive("nat.relay_max_reservations", n.RelayMaxReservations)
	p.positive("nat.relay_max_circuits", n.RelayMaxCircuits)
	if n.RelayLimitDuration < time.Second {
		p.add("nat.relay_limit_duration", "must be at least 1s, such as 2m, got %s", n.RelayLimitDuration)
	}
	if n.RelayLimitData < 16*wasm.KiB {
		p.add("nat.relay_limit_data", "must be at least 16KiB (identify and hole punching run over a relayed connection first), such as 128KiB, got %s", n.RelayLimitData)
	}
	if n.AutoRelay && n.Reachability == "private" && len(n.StaticRelays) == 0 && len(c.Network.BootstrapPeers) == 0 {
		p.add("nat.auto_relay", "needs a relay on a private node: list nat.static_relays or network.bootstrap_peers, or set nat.auto_relay: false")
	}
}
