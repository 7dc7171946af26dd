// Package config is the schema of cortexd's config.yaml and its loading:
// the file, then CORTEXD_* environment variables, then command-line flags.
// Library packages take options; only the daemon reads this schema.
package config

import (
	"time"

	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// Config is the whole configuration of one cortexd node. Keys are the
// mapstructure tags joined with dots, e.g. "queue.max_per_level"; the
// environment variable of a key is CORTEXD_ followed by the key in upper
// case with dots replaced by underscores (CORTEXD_QUEUE_MAX_PER_LEVEL).
type Config struct {
	Identity  Identity  `mapstructure:"identity"`
	Network   Network   `mapstructure:"network"`
	NAT       NAT       `mapstructure:"nat"`
	DHT       DHT       `mapstructure:"dht"`
	PubSub    PubSub    `mapstructure:"pubsub"`
	MDNS      MDNS      `mapstructure:"mdns"`
	Queue     Queue     `mapstructure:"queue"`
	Tasks     Tasks     `mapstructure:"tasks"`
	Breaker   Breaker   `mapstructure:"breaker"`
	Cache     Cache     `mapstructure:"cache"`
	Workflow  Workflow  `mapstructure:"workflow"`
	Routing   Routing   `mapstructure:"routing"`
	Trust     Trust     `mapstructure:"trust"`
	Admission Admission `mapstructure:"admission"`
	Skills    Skills    `mapstructure:"skills"`
	Wasm      Wasm      `mapstructure:"wasm"`
	API       API       `mapstructure:"api"`
	Metrics   Metrics   `mapstructure:"metrics"`
	Log       Log       `mapstructure:"log"`
	Shutdown  Shutdown  `mapstructure:"shutdown"`
}

// Identity says where the node's private key is.
type Identity struct {
	// KeyFile is the Ed25519 private key, relative to the repo dir unless
	// absolute. It must have mode 0600.
	KeyFile string `mapstructure:"key_file"`
}

// Network configures the libp2p host.
type Network struct {
	ListenAddrs    []string `mapstructure:"listen_addrs"`
	BootstrapPeers []string `mapstructure:"bootstrap_peers"` // multiaddrs ending in /p2p/<peer ID>
	// AllowPeers, if not empty, are the only peers this node connects to,
	// either way (peer IDs); DenyPeers are peers it never connects to. A
	// peer may be on one of them only.
	AllowPeers []string `mapstructure:"allow_peers"`
	DenyPeers  []string `mapstructure:"deny_peers"`
	// SwarmKeyFile, if not empty, makes the node part of a private network:
	// only nodes holding the same pre-shared key (in the IPFS swarm.key
	// format) can connect to it. Relative to the repo dir unless absolute.
	SwarmKeyFile   string      `mapstructure:"swarm_key_file"`
	ConnManager    ConnManager `mapstructure:"conn_manager"`
	Resources      Resources   `mapstructure:"resources"`
	MaxMessageSize int         `mapstructure:"max_message_size"` // bytes of one task protocol frame
}

// NAT configures NAT traversal: AutoNAT, the circuit relay v2 service,
// auto-relay, DCUtR hole punching and port mapping.
type NAT struct {
	// RelayService: auto (relay for others while AutoNAT finds this node
	// public), on (always) or off.
	RelayService string `mapstructure:"relay_service"`
	// AutoRelay reserves a slot on a relay while the node is not publicly
	// reachable, and advertises its /p2p-circuit address.
	AutoRelay bool `mapstructure:"auto_relay"`
	// StaticRelays are the relays auto-relay tries (multiaddrs ending in
	// /p2p/<peer ID>); empty: the bootstrap peers.
	StaticRelays []string `mapstructure:"static_relays"`
	HolePunching bool     `mapstructure:"hole_punching"`
	PortMapping  bool     `mapstructure:"port_mapping"` // UPnP / NAT-PMP on the local router
	// Reachability: auto (AutoNAT decides), public or private.
	Reachability string `mapstructure:"reachability"`
	// Limits of the relay service while it runs: slots held at once,
	// relayed connections per peer, and how long and how many bytes (each
	// way) one relayed connection may carry before the relay resets it.
	RelayMaxReservations int           `mapstructure:"relay_max_reservations"`
	RelayMaxCircuits     int           `mapstructure:"relay_max_circuits"`
	RelayLimitDuration   time.Duration `mapstructure:"relay_limit_duration"`
	RelayLimitData       wasm.Size     `mapstructure:"relay_limit_data"`
}

// ConnManager holds the connection manager's watermarks.
type ConnManager struct {
	Low   int           `mapstructure:"low"`
	High  int           `mapstructure:"high"`
	Grace time.Duration `mapstructure:"grace"`
}

// Resources bounds what the libp2p resource manager lets the host use.
// Zero means libp2p's defaults, scaled to the machine.
type Resources struct {
	MaxMemoryMB int `mapstructure:"max_memory_mb"`
	MaxFDs      int `mapstructure:"max_fds"`
	MaxConns    int `mapstructure:"max_conns"`
	MaxStreams  int `mapstructure:"max_streams"`
}

// DHT configures the private Kademlia DHT.
type DHT struct {
	Prefix     string `mapstructure:"prefix"`
	Mode       string `mapstructure:"mode"` // server, client or auto
	Rendezvous string `mapstructure:"rendezvous"`
}

// PubSub configures capability gossip.
type PubSub struct {
	// Enabled turns capability gossip on; off, providers are found in
	// the DHT only.
	Enabled          bool          `mapstructure:"enabled"`
	AnnounceInterval time.Duration `mapstructure:"announce_interval"`
	CapabilityTTL    time.Duration `mapstructure:"capability_ttl"`
}

// MDNS configures LAN discovery.
type MDNS struct {
	Enabled bool `mapstructure:"enabled"`
}

// Queue configures the local priority queue and the executor.
type Queue struct {
	MaxPerLevel    int           `mapstructure:"max_per_level"`
	LevelLimits    LevelLimits   `mapstructure:"level_limits"`
	DefaultTimeout time.Duration `mapstructure:"default_timeout"`
	Workers        int           `mapstructure:"workers"` // 0: four per CPU
	MaxRetries     int           `mapstructure:"max_retries"`
	BackoffBase    time.Duration `mapstructure:"backoff_base"`
	BackoffMax     time.Duration `mapstructure:"backoff_max"`
	AgingStep      time.Duration `mapstructure:"aging_step"`
	// AdaptiveAgingK: behind more than this many ready tasks of higher
	// levels, the aging step shrinks to aging_step*k/backlog; 0: fixed aging.
	AdaptiveAgingK int `mapstructure:"adaptive_aging_k"`
	// AdaptiveAgingMinStep is the least the step shrinks to; 0: aging_step/100.
	AdaptiveAgingMinStep time.Duration `mapstructure:"adaptive_aging_min_step"`
	SweepInterval        time.Duration `mapstructure:"sweep_interval"`
}

// LevelLimits overrides MaxPerLevel for single levels; 0 keeps MaxPerLevel.
type LevelLimits struct {
	Critical int `mapstructure:"critical"`
	High     int `mapstructure:"high"`
	Normal   int `mapstructure:"normal"`
	Low      int `mapstructure:"low"`
}

// Tasks configures the delegation coordinator and the task protocol.
type Tasks struct {
	ResultRetention   time.Duration `mapstructure:"result_retention"`
	MaxTasks          int           `mapstructure:"max_tasks"` // tracked tasks, finished or not
	AckTimeout        time.Duration `mapstructure:"ack_timeout"`
	HeartbeatInterval time.Duration `mapstructure:"heartbeat_interval"` // executor -> requester, per stream
	LeaseMisses       int           `mapstructure:"lease_misses"`       // missed heartbeats before a task moves on
}

// Breaker configures the per-peer circuit breaker (skill.WithCircuitBreaker).
type Breaker struct {
	// Failures is how many consecutive failed or timed-out attempts on a
	// peer open its breaker; 0 turns the breakers off.
	Failures int `mapstructure:"failures"`
	// OpenFor is how long an open breaker keeps its peer out before one
	// probe attempt may go to it.
	OpenFor time.Duration `mapstructure:"open_for"`
}

// Cache configures the result cache of deterministic skills
// (skill.ResultCache).
type Cache struct {
	Enabled  bool          `mapstructure:"enabled"`
	MaxBytes wasm.Size     `mapstructure:"max_bytes"` // outputs held, least recently used out first
	TTL      time.Duration `mapstructure:"ttl"`       // how long a result is served
}

// Workflow configures the workflow engine (pkg/workflow).
type Workflow struct {
	// MaxWorkflows caps the workflows running at once; a submission past
	// it is refused (429 too_many_workflows).
	MaxWorkflows int `mapstructure:"max_workflows"`
}

// Routing configures how the router scores candidates.
type Routing struct {
	Weights Weights `mapstructure:"weights"`
}

// Weights are the router's score weights (skill.Weights). See pkg/skill's
// Router for the formula.
type Weights struct {
	Trust   float64 `mapstructure:"trust"`
	Skill   float64 `mapstructure:"skill"`
	Success float64 `mapstructure:"success"`
	Latency float64 `mapstructure:"latency"`
	Load    float64 `mapstructure:"load"`
}

// Trust configures the reputation graph and admission.
type Trust struct {
	PreTrusted      []string `mapstructure:"pre_trusted"` // peer IDs
	Neutral         float64  `mapstructure:"neutral"`
	AcceptThreshold float64  `mapstructure:"accept_threshold"`
	MinTrustDefault float64  `mapstructure:"min_trust_default"`
	// RecomputeInterval is how often global (EigenTrust) trust is
	// recomputed; DecayHalfLife how fast evidence fades toward neutral.
	RecomputeInterval time.Duration `mapstructure:"recompute_interval"`
	DecayHalfLife     time.Duration `mapstructure:"decay_half_life"`
	// OpinionInterval is how often this node shares its local trust
	// vector on the gossip (docs/protocol.md, trust opinions).
	OpinionInterval time.Duration `mapstructure:"opinion_interval"`
	// SpotCheckRate is the fraction of peers' successes for deterministic
	// skills that run again to compare outputs; SpotCheckSkills names
	// skills this node lacks that the operator knows are deterministic.
	SpotCheckRate   float64  `mapstructure:"spot_check_rate"`
	SpotCheckSkills []string `mapstructure:"spot_check_skills"`
}

// Admission modes.
const (
	// AdmissionAuto holds strangers to the stranger limits on the public
	// network and treats every member of a private network
	// (network.swarm_key_file) as known.
	AdmissionAuto = "auto"
	// AdmissionStrict holds strangers to the stranger limits on a private
	// network too.
	AdmissionStrict = "strict"
	// AdmissionOpen gives every admitted peer the known limits: no stranger
	// class. Not for the public network.
	AdmissionOpen = "open"
)

// Admission configures how much the peers that send this node tasks may
// use (skill.AdmissionPolicy). A peer below trust.accept_threshold is
// refused; a peer in trust.pre_trusted or network.allow_peers is trusted
// and gets the known limits; a peer whose trust has reached known_trust is
// known; every other peer is a stranger.
type Admission struct {
	Mode       string     `mapstructure:"mode"` // auto, strict or open
	KnownTrust float64    `mapstructure:"known_trust"`
	Stranger   PeerLimits `mapstructure:"stranger"`
	Known      PeerLimits `mapstructure:"known"`
	// NodeMaxBytes bounds the input and output bytes of every peer's tasks
	// in flight here together.
	NodeMaxBytes int64 `mapstructure:"node_max_bytes"`
}

// PeerLimits is what one peer of a class may hold here (grid.PeerLimits).
type PeerLimits struct {
	Rate     float64 `mapstructure:"rate"` // task requests per second; 0: unlimited
	Burst    int     `mapstructure:"burst"`
	MaxTasks int     `mapstructure:"max_tasks"` // tasks in flight here at once
	MaxBytes int64   `mapstructure:"max_bytes"` // input plus output bytes in flight here
}

// Skills says which built-in skills this node offers, and the command
// skills it runs.
type Skills struct {
	Enabled []string `mapstructure:"enabled"`
	// Commands are programs this node offers as skills (see CommandSkill).
	// Only this file declares them, never a peer.
	Commands []CommandSkill `mapstructure:"commands"`
	// CommandShim is the binary that starts command skills' programs
	// (cortexd-shim, which starts in about 1 ms). Empty: the daemon's own
	// binary, whose start costs about 10 ms a task.
	CommandShim string `mapstructure:"command_shim"`
	// FetchModules says whose wasm modules this node fetches to run a wasm
	// skill it lacks: off, trusted (requesters whose trust is at least
	// FetchMinTrust) or any.
	FetchModules  string  `mapstructure:"fetch_modules"`
	FetchMinTrust float64 `mapstructure:"fetch_min_trust"`
	// ModuleCache is the byte budget of fetched modules on disk
	// (DIR/wasm/fetched), least recently used out first.
	ModuleCache string `mapstructure:"module_cache"`
}

// Wasm caps and defaults what wasm skills may use (wasm.Options). Sizes
// are bytes or a number with a unit ("64MiB"); a manifest asking for more
// than a max gets the max, one leaving a limit out gets the default.
type Wasm struct {
	MaxModule wasm.Size   `mapstructure:"max_module"` // largest module accepted (skill add, POST /v1/skills)
	Max       WasmMax     `mapstructure:"max"`
	Default   WasmDefault `mapstructure:"default"`
}

// WasmMax caps every wasm skill's limits.
type WasmMax struct {
	Memory  wasm.Size     `mapstructure:"memory"`
	Timeout time.Duration `mapstructure:"timeout"`
	Input   wasm.Size     `mapstructure:"input"`
	Output  wasm.Size     `mapstructure:"output"`
}

// WasmDefault is what a wasm skill that leaves a limit out gets; its input
// limit is then max.input.
type WasmDefault struct {
	Memory  wasm.Size     `mapstructure:"memory"`
	Timeout time.Duration `mapstructure:"timeout"`
	Output  wasm.Size     `mapstructure:"output"`
}

// API configures the local HTTP API.
type API struct {
	Listen       string `mapstructure:"listen"`
	TokenFile    string `mapstructure:"token_file"`
	MaxBodyBytes int64  `mapstructure:"max_body_bytes"`
}

// Metrics configures the Prometheus endpoint.
type Metrics struct {
	Enabled bool `mapstructure:"enabled"`
}

// Log configures logging.
type Log struct {
	Level  string `mapstructure:"level"`  // debug, info, warn, error
	Format string `mapstructure:"format"` // text or json
}

// Shutdown configures draining on SIGINT/SIGTERM.
type Shutdown struct {
	Grace time.Duration `mapstructure:"grace"`
}

// Default returns the configuration used for every key that the file, the
// environment and the flags leave unset.
func Default() Config {
	return Config{
		Identity: Identity{KeyFile: "identity.key"},
		Network: Network{
			ListenAddrs:    []string{"/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"},
			BootstrapPeers: []string{},
			AllowPeers:     []string{},
			DenyPeers:      []string{},
			ConnManager:    ConnManager{Low: 100, High: 400, Grace: time.Minute},
			MaxMessageSize: 16 << 20,
		},
		NAT: NAT{RelayService: "auto", AutoRelay: true, StaticRelays: []string{}, HolePunching: true,
			PortMapping: false, Reachability: "auto",
			RelayMaxReservations: 128, RelayMaxCircuits: 16, RelayLimitDuration: 2 * time.Minute, RelayLimitData: 128 * wasm.KiB},
		DHT:    DHT{Prefix: "/cortex", Mode: "server", Rendezvous: "cortex/v1"},
		PubSub: PubSub{Enabled: true, AnnounceInterval: 30 * time.Second, CapabilityTTL: 90 * time.Second},
		Queue: Queue{
			MaxPerLevel:    1000,
			DefaultTimeout: 300 * time.Second,
			MaxRetries:     3,
			BackoffBase:    100 * time.Millisecond,
			BackoffMax:     10 * time.Second,
			AgingStep:      10 * time.Second,
			AdaptiveAgingK: 64,
			SweepInterval:  time.Second,
		},
		Tasks: Tasks{ResultRetention: 10 * time.Minute, MaxTasks: 100_000, AckTimeout: 10 * time.Second,
			HeartbeatInterval: 5 * time.Second, LeaseMisses: 3},
		Breaker:  Breaker{Failures: 5, OpenFor: 10 * time.Second},
		Cache:    Cache{Enabled: true, MaxBytes: 64 * wasm.MiB, TTL: time.Hour},
		Workflow: Workflow{MaxWorkflows: 100},
		Routing:  Routing{Weights: Weights{Trust: 0.35, Skill: 0.15, Success: 0.2, Latency: 0.1, Load: 0.2}},
		Trust: Trust{PreTrusted: []string{}, Neutral: 0.5, AcceptThreshold: 0.1, MinTrustDefault: 0.3,
			RecomputeInterval: 2 * time.Second, DecayHalfLife: time.Hour,
			OpinionInterval: 30 * time.Second, SpotCheckRate: 0.02, SpotCheckSkills: []string{}},
		Admission: Admission{
			Mode: AdmissionAuto, KnownTrust: 0.6,
			Stranger:     PeerLimits{Rate: 5, Burst: 10, MaxTasks: 2, MaxBytes: 4 << 20},
			Known:        PeerLimits{Rate: 20000, Burst: 5000, MaxTasks: 4096, MaxBytes: 256 << 20},
			NodeMaxBytes: 512 << 20,
		},
		Skills: Skills{Enabled: []string{"echo", "hash.sha256", "image.resize"}, Commands: []CommandSkill{},
			FetchModules: "off", FetchMinTrust: 0.6, ModuleCache: "512MiB"},
		Wasm: Wasm{
			MaxModule: wasm.DefaultMaxModule,
			Max: WasmMax{Memory: wasm.DefaultMaxMemory, Timeout: time.Duration(wasm.DefaultMaxTimeout),
				Input: wasm.DefaultMaxInput, Output: wasm.DefaultMaxOutput},
			Default: WasmDefault{Memory: wasm.DefaultMemory, Timeout: time.Duration(wasm.DefaultTimeout), Output: wasm.DefaultOutput},
		},
		API:     API{Listen: "127.0.0.1:5080", TokenFile: "api-token", MaxBodyBytes: 22 << 20},
		Metrics: Metrics{Enabled: true},
		Log:     Log{Level: "info", Format: "text"},
		Shutdown: Shutdown{
			Grace: 30 * time.Second,
		},
	}
}
