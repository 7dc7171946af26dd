package config

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"

	"github.com/cortexgrid/cortexd/pkg/wasm"
)

func writeConfig(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), FileName)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigTemplateLoadsToTheDefaults(t *testing.T) {
	c, err := Load(writeConfig(t, string(Template)), nil)
	if err != nil {
		t.Fatalf("Load(template): %v", err)
	}
	if want := Default(); !reflect.DeepEqual(*c, want) {
		t.Fatalf("template differs from Default():\n got %+v\nwant %+v", *c, want)
	}
}

func TestConfigTemplateNamesEveryKey(t *testing.T) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(bytes.NewReader(Template)); err != nil {
		t.Fatal(err)
	}
	got := v.AllKeys()
	for _, k := range Keys() {
		if !slices.Contains(got, k) {
			t.Errorf("cortexd.yaml does not document key %s", k)
		}
	}
}

func TestConfigShippedCopyMatchesTemplate(t *testing.T) {
	shipped, err := os.ReadFile(filepath.Join("..", "..", "..", "..", "configs", "cortexd.yaml"))
	if err != nil {
		t.Fatalf("read configs/cortexd.yaml: %v", err)
	}
	if !bytes.Equal(shipped, Template) {
		t.Fatal("configs/cortexd.yaml differs from cmd/cortexd/internal/config/cortexd.yaml; copy the latter over the former")
	}
}

func TestConfigDefaultsValidate(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestConfigErrors(t *testing.T) {
	cases := []struct {
		name  string
		file  string
		env   map[string]string
		wants []string // each must appear in the error
	}{
		{
			name:  "an unknown key is named with its section",
			file:  "queue:\n  workrs: 4\n",
			wants: []string{"queue.workrs: unknown key", "did you mean queue.workers?"},
		},
		{
			name:  "an unknown section is named",
			file:  "bogus:\n  x: 1\n",
			wants: []string{"bogus.x: unknown key"},
		},
		{
			name:  "a value of the wrong type names its key",
			file:  "queue:\n  workers: many\n",
			wants: []string{"queue.workers"},
		},
		{
			name:  "a bad duration names its key",
			file:  "queue:\n  default_timeout: soon\n",
			wants: []string{"queue.default_timeout", "want a duration", `"soon"`},
		},
		{
			name: "relay service limits out of range name their keys and the floors",
			file: "nat:\n  relay_max_reservations: 0\n  relay_max_circuits: -1\n  relay_limit_duration: 10ms\n  relay_limit_data: 1KiB\n",
			wants: []string{"nat.relay_max_reservations: must be at least 1, got 0", "nat.relay_max_circuits: must be at least 1, got -1",
				"nat.relay_limit_duration: must be at least 1s", "nat.relay_limit_data: must be at least 16KiB"},
		},
		{
			name:  "a relay data limit that is no size names its key",
			file:  "nat:\n  relay_limit_data: lots\n",
			wants: []string{"nat.relay_limit_data"},
		},
		{
			name:  "workflow.max_workflows out of range names its key",
			file:  "workflow:\n  max_workflows: 0\n",
			wants: []string{"workflow.max_workflows: must be between 1 and 100000, got 0"},
		},
		{
			name:  "an out-of-range value names its key",
			file:  "trust:\n  neutral: 1.5\n",
			wants: []string{"trust.neutral: must be between 0 and 1"},
		},
		{
			name:  "a spot check rate above 1 names its key",
			file:  "trust:\n  spot_check_rate: 2\n",
			wants: []string{"trust.spot_check_rate: must be between 0 and 1"},
		},
		{
			name:  "an opinion interval under a second names its key and the floor",
			file:  "trust:\n  opinion_interval: 10ms\n",
			wants: []string{"trust.opinion_interval: must be at least 1s"},
		},
		{
			name:  "a malformed spot-checked skill names its index",
			file:  "trust:\n  spot_check_skills: [Not.Valid]\n",
			wants: []string{"trust.spot_check_skills[0]"},
		},
		{
			name:  "an unknown enum value names its key and the choices",
			file:  "log:\n  format: xml\n",
			wants: []string{"log.format: must be one of text, json"},
		},
		{
			name:  "a bootstrap peer without a peer ID names its index",
			file:  "network:\n  bootstrap_peers: [/ip4/127.0.0.1/tcp/4001]\n",
			wants: []string{"network.bootstrap_peers[0]", "/p2p/"},
		},
		{
			name:  "every problem is reported at once",
			file:  "queue:\n  max_per_level: 0\n  workers: -1\napi:\n  listen: nowhere\n",
			wants: []string{"queue.max_per_level", "queue.workers", "api.listen"},
		},
		{
			name:  "a bad environment variable names the variable",
			file:  "",
			env:   map[string]string{"CORTEXD_QUEUE_MAX_RETRIES": "lots"},
			wants: []string{"queue.max_retries", "$CORTEXD_QUEUE_MAX_RETRIES"},
		},
		{
			name:  "a size that is not a size names its key",
			file:  "wasm:\n  max:\n    memory: lots\n",
			wants: []string{"wasm.max.memory", "want a size such as 64MiB", `"lots"`},
		},
		{
			name: "wasm limits out of range name their keys",
			file: "wasm:\n  max_module: 100\n  max:\n    memory: 8GiB\n    timeout: 1us\n    output: 0\n" +
				"  default:\n    memory: 1KiB\n",
			wants: []string{"wasm.max_module: must be between 1KiB and 1GiB", "wasm.max.memory: must be between 64KiB",
				"wasm.max.timeout: must be at least 1ms", "wasm.max.output: must be at least 1 byte", "wasm.default.memory: must be between 64KiB"},
		},
		{
			name: "a wasm default over its max names both keys",
			file: "wasm:\n  max:\n    memory: 128MiB\n    timeout: 10s\n    output: 1MiB\n" +
				"  default:\n    memory: 256MiB\n    timeout: 1m\n    output: 2MiB\n",
			wants: []string{"wasm.default.memory: must not exceed wasm.max.memory (128MiB), got 256MiB",
				"wasm.default.timeout: must not exceed wasm.max.timeout (10s), got 1m0s",
				"wasm.default.output: must not exceed wasm.max.output (1MiB), got 2MiB"},
		},
		{
			name:  "a bad wasm size in the environment names the variable",
			env:   map[string]string{"CORTEXD_WASM_MAX_MODULE": "big"},
			wants: []string{"wasm.max_module", "$CORTEXD_WASM_MAX_MODULE"},
		},
		{
			name:  "a deny list entry that is not a peer ID is named with its index",
			file:  "network:\n  deny_peers: [" + peerA + ", not-a-peer]\n",
			wants: []string{"network.deny_peers[1]", `"not-a-peer" is not a peer ID`},
		},
		{
			name:  "an allow list entry that is not a peer ID is named with its index",
			file:  "network:\n  allow_peers: [QmBogus]\n",
			wants: []string{"network.allow_peers[0]", "not a peer ID"},
		},
		{
			name:  "a peer on both lists is named",
			file:  "network:\n  allow_peers: [" + peerB + ", " + peerA + "]\n  deny_peers: [" + peerA + "]\n",
			wants: []string{"network.deny_peers[0]", "network.allow_peers[1]", peerA},
		},
		{
			name:  "a denied bootstrap peer is named",
			file:  "network:\n  bootstrap_peers: [/ip4/127.0.0.1/tcp/4001/p2p/" + peerA + "]\n  deny_peers: [" + peerA + "]\n",
			wants: []string{"network.bootstrap_peers[0]", "network.deny_peers[0]"},
		},
		{
			name:  "an allow list without a bootstrap peer is named",
			file:  "network:\n  bootstrap_peers: [/ip4/127.0.0.1/tcp/4001/p2p/" + peerA + "]\n  allow_peers: [" + peerB + "]\n",
			wants: []string{"network.allow_peers", "bootstrap peer " + peerA},
		},
		{
			name:  "a private network with only QUIC listen addresses is named",
			file:  "network:\n  swarm_key_file: swarm.key\n  listen_addrs: [/ip4/0.0.0.0/udp/4001/quic-v1]\n",
			wants: []string{"network.listen_addrs", "network.swarm_key_file", "/tcp"},
		},
		{
			name:  "a deny list from the environment names the variable's key",
			env:   map[string]string{"CORTEXD_NETWORK_DENY_PEERS": peerA + ",nope"},
			wants: []string{"network.deny_peers[1]", `"nope"`, "(set by $CORTEXD_NETWORK_DENY_PEERS)"},
		},
		{
			name:  "a value out of range from the environment names the variable",
			env:   map[string]string{"CORTEXD_QUEUE_WORKERS": "-1"},
			wants: []string{"queue.workers: must not be negative", "(set by $CORTEXD_QUEUE_WORKERS)"},
		},
		{
			name:  "a default timeout beyond a day is refused",
			file:  "queue:\n  default_timeout: 25h\n",
			wants: []string{"queue.default_timeout: must be at most 24h"},
		},
		{
			name:  "malformed YAML is reported as such",
			file:  "queue: [\n",
			wants: []string{"parse config"},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := Load(writeConfig(t, tc.file), nil)
			if err == nil {
				t.Fatal("Load succeeded, want an error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range tc.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// Peer IDs for the tests.
const (
	peerA = "12D3KooWJpPHJ3gu91QYVxBVfGWa7nGF3Qz3Q6zScHkpfrBCiAai"
	peerB = "12D3KooWKMU7oXdsZLYbPbvzwSKT1rWsB9SSZT9vhubpopCyMzNe"
)

func TestConfigWasmSectionMapsOntoTheEngineOptions(t *testing.T) {
	t.Setenv("CORTEXD_WASM_DEFAULT_MEMORY", "32MiB")
	c, err := Load(writeConfig(t, "wasm:\n  max_module: 1048576\n  max:\n    timeout: 1m\n    input: 1MB\n  default:\n    output: 64KiB\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	got := c.Wasm.WasmOptions()
	want := wasm.Options{
		MaxModule: wasm.MiB,
		Max:       wasm.Limits{Memory: 256 * wasm.MiB, Timeout: wasm.Duration(time.Minute), Input: 1000 * 1000, Output: 16 * wasm.MiB},
		Default:   wasm.Limits{Memory: 32 * wasm.MiB, Timeout: wasm.Duration(30 * time.Second), Input: 1000 * 1000, Output: 64 * wasm.KiB},
	}
	if got != want {
		t.Fatalf("options %+v, want %+v", got, want)
	}
	if _, err := wasm.NewEngine("", got); err != nil {
		t.Fatalf("the engine refuses what the config accepted: %v", err)
	}
}

func TestConfigAccessKeys(t *testing.T) {
	c, err := Load(writeConfig(t, "network:\n  allow_peers: ["+peerA+", "+peerB+"]\n  swarm_key_file: keys/swarm.key\n"+
		"  bootstrap_peers: [/ip4/10.0.0.1/tcp/4001/p2p/"+peerB+"]\n"), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if !slices.Equal(c.Network.AllowPeers, []string{peerA, peerB}) || c.Network.SwarmKeyFile != "keys/swarm.key" || len(c.Network.DenyPeers) != 0 {
		t.Fatalf("network = %+v", c.Network)
	}
	ids, err := ParsePeerIDs("network.allow_peers", c.Network.AllowPeers)
	if err != nil || len(ids) != 2 || ids[0].String() != peerA {
		t.Fatalf("ParsePeerIDs = %v, %v", ids, err)
	}
	if _, err := ParsePeerIDs("network.deny_peers", []string{peerA, "x"}); err == nil || !strings.Contains(err.Error(), "network.deny_peers[1]") {
		t.Fatalf("ParsePeerIDs of a bad entry: %v; want an error naming network.deny_peers[1]", err)
	}
	if d := Default(); d.Network.SwarmKeyFile != "" || len(d.Network.AllowPeers)+len(d.Network.DenyPeers) != 0 {
		t.Errorf("the default network is not public and open: %+v", d.Network)
	}
}

func TestConfigPrecedenceFileThenEnvThenFlags(t *testing.T) {
	path := writeConfig(t, "queue:\n  workers: 2\n  max_retries: 5\napi:\n  listen: 127.0.0.1:6000\n")
	t.Setenv("CORTEXD_QUEUE_WORKERS", "3")
	t.Setenv("CORTEXD_API_LISTEN", "127.0.0.1:7000")
	t.Setenv("CORTEXD_SKILLS_ENABLED", "echo, debug.sleep")
	t.Setenv("CORTEXD_WORKFLOW_MAX_WORKFLOWS", "7")

	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	fs.String("api", "", "")
	fs.String("log-level", "info", "")
	if err := fs.Parse([]string{"--api", "127.0.0.1:8000"}); err != nil {
		t.Fatal(err)
	}
	c, err := Load(path, map[string]*pflag.Flag{"api.listen": fs.Lookup("api"), "log.level": fs.Lookup("log-level")})
	if err != nil {
		t.Fatal(err)
	}
	if c.Queue.MaxRetries != 5 {
		t.Errorf("queue.max_retries = %d, want 5 from the file", c.Queue.MaxRetries)
	}
	if c.Queue.Workers != 3 {
		t.Errorf("queue.workers = %d, want 3 from the environment over the file", c.Queue.Workers)
	}
	if c.API.Listen != "127.0.0.1:8000" {
		t.Errorf("api.listen = %q, want the flag's value over env and file", c.API.Listen)
	}
	if c.Log.Level != "info" {
		t.Errorf("log.level = %q, want the default: an unset flag must not override", c.Log.Level)
	}
	if want := []string{"echo", "debug.sleep"}; !slices.Equal(c.Skills.Enabled, want) {
		t.Errorf("skills.enabled = %q, want %q from a comma-separated variable", c.Skills.Enabled, want)
	}
	if c.Workflow.MaxWorkflows != 7 {
		t.Errorf("workflow.max_workflows = %d, want 7 from the environment", c.Workflow.MaxWorkflows)
	}
	if c.Queue.DefaultTimeout != 300*time.Second {
		t.Errorf("queue.default_timeout = %s, want the default 300s", c.Queue.DefaultTimeout)
	}
}

func TestConfigKeysAndEnvVars(t *testing.T) {
	keys := Keys()
	if !slices.Contains(keys, "queue.level_limits.critical") || !slices.Contains(keys, "api.listen") {
		t.Fatalf("Keys() misses nested keys: %v", keys)
	}
	if got := EnvVar("queue.max_per_level"); got != "CORTEXD_QUEUE_MAX_PER_LEVEL" {
		t.Fatalf("EnvVar = %s", got)
	}
}

func TestConfigParseListen(t *testing.T) {
	for _, s := range []string{"127.0.0.1:0", "localhost:5080", "[::1]:5080", "0.0.0.0:5080"} {
		if _, err := ParseListen(s); err != nil {
			t.Errorf("ParseListen(%q): %v", s, err)
		}
	}
	for _, s := range []string{"5080", "example.com:5080", "127.0.0.1:99999"} {
		if _, err := ParseListen(s); err == nil {
			t.Errorf("ParseListen(%q) succeeded, want an error", s)
		}
	}
}

func TestConfigUnknownEnvIsNoted(t *testing.T) {
	got := UnknownEnv([]string{"CORTEXD_QUEUE_WORKRS=4", "CORTEXD_PATH=/x", "CORTEXD_QUEUE_WORKERS=2", "HOME=/root"})
	if len(got) != 1 || !strings.Contains(got[0], "CORTEXD_QUEUE_WORKRS") || !strings.Contains(got[0], "CORTEXD_QUEUE_WORKERS") {
		t.Fatalf("UnknownEnv = %q; want one note naming CORTEXD_QUEUE_WORKRS and suggesting CORTEXD_QUEUE_WORKERS", got)
	}
}
