package main

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/libp2p/go-libp2p/core/crypto"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/client"
	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/store"
)

// lockFileName is the file a running daemon holds an exclusive lock on.
const lockFileName = "repo.lock"

// errRepoExists is returned by initRepo for an initialized repo without
// force.
var errRepoExists = errors.New("repo already initialized")

// errNoRepo is returned when a command needs an initialized repo.
var errNoRepo = errors.New("repo not initialized")

// repoFile resolves a path from the config: relative paths are inside dir.
func repoFile(dir, p string) string {
	if filepath.IsAbs(p) {
		return p
	}
	return filepath.Join(dir, p)
}

// initialized reports whether dir holds a config file.
func initialized(dir string) bool {
	_, err := os.Stat(filepath.Join(dir, config.FileName))
	return err == nil
}

// initOptions configure initRepo.
type initOptions struct {
	force bool
	// seed, if not empty, derives the identity from a string instead of
	// randomness. For demos and tests only: anyone who knows the seed
	// has the node's private key.
	seed string
	// config is written as config.yaml; nil writes config.Template.
	config []byte
	// swarmKey generates a private network key into DIR/swarm.key and
	// points network.swarm_key_file at it; swarmKeyFrom does the same with
	// a copy of an existing key file.
	swarmKey     bool
	swarmKeyFrom string
	// out, if not nil, is told what force moved aside.
	out io.Writer
}

// initRepo creates a repo in dir: config.yaml, an Ed25519 identity (mode
// 0600) and an API token (mode 0600). It refuses an initialized repo unless
// o.force, and a repo that a running daemon holds in any case.
func initRepo(dir string, o initOptions) (peer.ID, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("create repo dir: %w", err)
	}
	keyPath := filepath.Join(dir, config.Default().Identity.KeyFile)
	tokenPath := filepath.Join(dir, config.Default().API.TokenFile)
	cfgPath := filepath.Join(dir, config.FileName)
	cfg := o.config
	if cfg == nil {
		cfg = config.Template
	}
	replace := []string{cfgPath, keyPath, tokenPath}
	var swarmKey []byte // the swarm.key file to write
	if o.swarmKey || o.swarmKeyFrom != "" {
		var err error
		if swarmKey, cfg, err = swarmKeyForInit(cfg, o); err != nil {
			return "", err
		}
		replace = append(replace, filepath.Join(dir, swarmKeyFileName))
	}
	existing := presentFiles(replace...)
	if len(existing) > 0 {
		if !o.force {
			return "", fmt.Errorf("%s already holds %s: %w; pass --force to replace them (the node gets a new identity)",
				dir, strings.Join(existing, ", "), errRepoExists)
		}
		unlock, err := lockRepo(dir)
		if err != nil {
			return "", err
		}
		defer unlock()
		for _, p := range replace {
			if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return "", fmt.Errorf("replace %s: %w", p, err)
			}
		}
		if err := moveStateAside(dir, o.out); err != nil {
			return "", err
		}
	}
	id, err := writeIdentity(keyPath, o.seed)
	if err != nil {
		return "", err
	}
	tok := make([]byte, 32)
	if _, err := rand.Read(tok); err != nil {
		return "", fmt.Errorf("generate API token: %w", err)
	}
	if err := writeFileExcl(tokenPath, []byte(hex.EncodeToString(tok)+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("write API token: %w", err)
	}
	if swarmKey != nil {
		if err := writeFileExcl(filepath.Join(dir, swarmKeyFileName), swarmKey, 0o600); err != nil {
			return "", fmt.Errorf("write swarm key: %w", err)
		}
	}
	if err := writeFileExcl(cfgPath, cfg, 0o600); err != nil {
		return "", fmt.Errorf("write config: %w", err)
	}
	return id, nil
}

// moveStateAside renames the old identity's state (its tasks, trust and
// metrics, DIR/state.db) to DIR/state.db.bak-<UTC time>, so that a new
// identity does not resume them, and tells out.
func moveStateAside(dir string, out io.Writer) error {
	old := filepath.Join(dir, store.FileName)
	if _, err := os.Lstat(old); errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	bak := old + ".bak-" + time.Now().UTC().Format("20060102T150405.000000000Z")
	if err := os.Rename(old, bak); err != nil {
		return fmt.Errorf("move the old identity's state aside: %w", err)
	}
	if out != nil {
		fmt.Fprintf(out, "moved the old identity's state (tasks, trust, metrics) to %s\n", bak)
	}
	return nil
}

func presentFiles(paths ...string) []string {
	var out []string
	for _, p := range paths {
		if _, err := os.Lstat(p); err == nil {
			out = append(out, filepath.Base(p))
		}
	}
	return out
}

// writeIdentity creates the key file: a random key, or one derived from
// seed.
func writeIdentity(path, seed string) (peer.ID, error) {
	var k crypto.PrivKey
	if seed == "" {
		var created bool
		var err error
		if k, created, err = grid.LoadOrCreateIdentity(path); err != nil {
			return "", fmt.Errorf("create identity: %w", err)
		}
		if !created {
			return "", fmt.Errorf("create identity: %s appeared while initializing: %w", path, errRepoExists)
		}
	} else {
		var err error
		if k, err = seededIdentity(seed); err != nil {
			return "", err
		}
		b, err := grid.MarshalIdentity(k)
		if err != nil {
			return "", err
		}
		if err := writeFileExcl(path, b, 0o600); err != nil {
			return "", fmt.Errorf("write identity key: %w", err)
		}
	}
	id, err := peer.IDFromPrivateKey(k)
	if err != nil {
		return "", fmt.Errorf("derive peer ID: %w", err)
	}
	return id, nil
}

// seededIdentity derives an Ed25519 key from SHA-256(seed). Demo use only.
func seededIdentity(seed string) (crypto.PrivKey, error) {
	s := sha256.Sum256([]byte("cortexd identity seed\x00" + seed))
	k, err := crypto.UnmarshalEd25519PrivateKey(ed25519.NewKeyFromSeed(s[:]))
	if err != nil {
		return nil, fmt.Errorf("derive identity from seed: %w", err)
	}
	return k, nil
}

// writeFileExcl writes a new file with mode perm; it fails if path exists.
func writeFileExcl(path string, b []byte, perm os.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// apiURL turns the address the API listens on into a URL a client on this
// machine can use: an unspecified host (0.0.0.0, or [::], which Go's
// listeners make dual-stack) becomes 127.0.0.1.
func apiURL(addr net.Addr) string {
	ap, err := netip.ParseAddrPort(addr.String())
	if err != nil {
		return "http://" + addr.String()
	}
	a := ap.Addr()
	if a.IsUnspecified() {
		a = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}
	return "http://" + netip.AddrPortFrom(a.Unmap(), ap.Port()).String()
}

// writeAPIFile records the API's URL in DIR/api, atomically.
func writeAPIFile(dir, url string) error {
	tmp := filepath.Join(dir, "."+client.APIFile+".tmp")
	if err := os.WriteFile(tmp, []byte(url+"\n"), 0o644); err != nil {
		return fmt.Errorf("write API file: %w", err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, client.APIFile)); err != nil {
		return fmt.Errorf("write API file: %w", err)
	}
	return nil
}

// removeAPIFile removes DIR/api if it still holds url.
func removeAPIFile(dir, url string) error {
	p := filepath.Join(dir, client.APIFile)
	b, err := os.ReadFile(p)
	if err != nil || strings.TrimSpace(string(b)) != url {
		return nil
	}
	if err := os.Remove(p); err != nil {
		return fmt.Errorf("remove API file: %w", err)
	}
	return nil
}
