package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/cmd/cortexd/internal/config"
	"github.com/cortexgrid/cortexd/pkg/grid"
)

// swarmKeyFileName is the file `cortexd init --swarm-key` writes the
// private network key to, in the repo dir.
const swarmKeyFileName = "swarm.key"

// accessOptions returns the node options for network.allow_peers,
// network.deny_peers and network.swarm_key_file. A swarm key file that is
// missing or malformed is an error naming the key and the path.
func (d *daemon) accessOptions() ([]grid.NodeOption, error) {
	n := d.cfg.Network
	allow, err := config.ParsePeerIDs("network.allow_peers", n.AllowPeers)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	deny, err := config.ParsePeerIDs("network.deny_peers", n.DenyPeers)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	self, err := peer.IDFromPrivateKey(d.key)
	if err != nil {
		return nil, fmt.Errorf("derive peer ID: %w", err)
	}
	for i, p := range deny {
		if p == self {
			return nil, fmt.Errorf("%w: network.deny_peers[%d]: %s is this node's own peer ID: remove it", config.ErrInvalid, i, p)
		}
	}
	opts := []grid.NodeOption{grid.WithAllowPeers(allow...), grid.WithDenyPeers(deny...)}
	if n.SwarmKeyFile == "" {
		return opts, nil
	}
	path := repoFile(d.dir, n.SwarmKeyFile)
	psk, err := grid.LoadSwarmKey(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, fmt.Errorf("%w: network.swarm_key_file: %s does not exist: copy the private network's swarm.key there (DIR/swarm.key of the node made with `cortexd init --swarm-key`), or empty network.swarm_key_file to join the public network",
			config.ErrInvalid, path)
	case errors.Is(err, grid.ErrBadSwarmKey):
		return nil, fmt.Errorf("%w: network.swarm_key_file: %w", config.ErrInvalid, err)
	case err != nil:
		return nil, fmt.Errorf("network.swarm_key_file: %s: %w", path, err)
	}
	if st, err := os.Stat(path); err == nil && st.Mode().Perm()&0o077 != 0 {
		d.log.Warn("the swarm key file is readable by other users, and anyone holding the key can join the network: chmod 600 it",
			"file", path, "mode", fmt.Sprintf("%04o", st.Mode().Perm()))
	}
	d.private = true
	return append(opts, grid.WithPrivateNetworkKey(psk)), nil
}

// swarmKeyForInit returns the swarm.key file init writes, generated or read
// from o.swarmKeyFrom (and checked), and cfg with network.swarm_key_file
// pointing at it.
func swarmKeyForInit(cfg []byte, o initOptions) (file, newCfg []byte, err error) {
	if o.swarmKey && o.swarmKeyFrom != "" {
		return nil, nil, usageErrorf("--swarm-key generates a new key and --swarm-key-from copies one: pass only one")
	}
	const unset = "\n  swarm_key_file: \"\"\n"
	if !bytes.Contains(cfg, []byte(unset)) {
		return nil, nil, errors.New("init: the config has no empty network.swarm_key_file to set")
	}
	newCfg = bytes.Replace(cfg, []byte(unset), []byte("\n  swarm_key_file: "+swarmKeyFileName+"\n"), 1)
	if o.swarmKeyFrom != "" {
		psk, err := grid.LoadSwarmKey(o.swarmKeyFrom)
		if err != nil {
			return nil, nil, usageErrorf("--swarm-key-from: %v", err)
		}
		return grid.FormatSwarmKey(psk), newCfg, nil
	}
	psk, err := grid.GenerateSwarmKey()
	if err != nil {
		return nil, nil, err
	}
	return grid.FormatSwarmKey(psk), newCfg, nil
}
