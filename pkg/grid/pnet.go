package grid

import (
	"bytes"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/libp2p/go-libp2p/core/pnet"
	"github.com/multiformats/go-multiaddr"
)

// ErrBadSwarmKey is wrapped by the errors for a swarm key file that is not
// in the IPFS swarm.key format.
var ErrBadSwarmKey = errors.New("malformed swarm key")

const (
	swarmKeyHeader = "/key/swarm/psk/1.0.0/"
	swarmKeyBase16 = "/base16/"
	swarmKeyBase64 = "/base64/"
	swarmKeySize   = 32
	maxSwarmKey    = 1 << 10 // a valid file is under 100 bytes
)

// WithPrivateNetworkKey makes the node part of a private network: every
// connection is encrypted with psk before the handshake, so only nodes
// holding the same 32-byte key can connect to it or be dialed by it. Load
// the key with LoadSwarmKey; nil (the default) means no private network.
//
// libp2p does not support a pre-shared key over QUIC, so a node with a key
// uses TCP only: QUIC listen addresses (such as the default
// /udp/4001/quic-v1) are dropped with a warning at Start, and the
// configuration is refused if no other listen address is left, or if a
// bootstrap peer has only QUIC addresses.
func WithPrivateNetworkKey(psk pnet.PSK) NodeOption {
	return func(c *nodeConfig) { c.psk = psk }
}

// LoadSwarmKey reads a pre-shared key for WithPrivateNetworkKey from a
// file in the IPFS swarm.key format, as ipfs-swarm-key-gen writes it:
//
//	/key/swarm/psk/1.0.0/
//	/base16/
//	<64 hex digits>
//
// /base64/ with 44 base64 characters is also accepted. Errors for a file
// that is not in this format wrap ErrBadSwarmKey and say what is wrong.
// The key is a secret: anyone holding it can join, so keep the file
// readable by its owner only.
func LoadSwarmKey(path string) (pnet.PSK, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read swarm key: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxSwarmKey+1))
	if err != nil {
		return nil, fmt.Errorf("read swarm key %s: %w", path, err)
	}
	psk, err := parseSwarmKey(b)
	if err != nil {
		return nil, fmt.Errorf("swarm key %s: %w", path, err)
	}
	return psk, nil
}

// GenerateSwarmKey returns a new random 32-byte pre-shared key.
func GenerateSwarmKey() (pnet.PSK, error) {
	psk := make(pnet.PSK, swarmKeySize)
	if _, err := rand.Read(psk); err != nil {
		return nil, fmt.Errorf("generate swarm key: %w", err)
	}
	return psk, nil
}

// FormatSwarmKey encodes psk in the swarm.key format LoadSwarmKey reads,
// base16, ending in a newline.
func FormatSwarmKey(psk pnet.PSK) []byte {
	b := make([]byte, 0, len(swarmKeyHeader)+len(swarmKeyBase16)+2*len(psk)+3)
	b = append(b, swarmKeyHeader+"\n"+swarmKeyBase16+"\n"...)
	b = hex.AppendEncode(b, psk)
	return append(b, '\n')
}

// parseSwarmKey decodes a swarm.key file. It is stricter than libp2p's
// pnet.DecodeV1PSK: what it accepts, that accepts too, with the same key.
func parseSwarmKey(b []byte) (pnet.PSK, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrBadSwarmKey, fmt.Sprintf(format, args...))
	}
	switch {
	case len(b) == 0:
		return nil, bad("the file is empty; generate a key with ipfs-swarm-key-gen")
	case len(b) > maxSwarmKey:
		return nil, bad("the file is larger than %d bytes: not a swarm key", maxSwarmKey)
	}
	header, rest := cutLine(b)
	if header != swarmKeyHeader {
		return nil, bad("first line is %.40q, want %q", header, swarmKeyHeader)
	}
	enc, rest := cutLine(rest)
	body := bytes.TrimRight(rest, " \t\r\n")
	if i := bytes.IndexAny(body, " \t\r\n"); i >= 0 {
		return nil, bad("the key must be one line with nothing after it; found more at byte %d of the key", i)
	}
	var psk []byte
	switch enc {
	case swarmKeyBase16:
		if len(body) != 2*swarmKeySize {
			return nil, bad("the key is %d hex digits, want %d", len(body), 2*swarmKeySize)
		}
		psk = make([]byte, swarmKeySize)
		if _, err := hex.Decode(psk, body); err != nil {
			return nil, bad("the key is not hexadecimal: %v", err)
		}
	case swarmKeyBase64:
		if want := base64.StdEncoding.EncodedLen(swarmKeySize); len(body) != want {
			return nil, bad("the key is %d base64 characters, want %d", len(body), want)
		}
		psk = make([]byte, swarmKeySize+2) // room for the decoder's last group
		n, err := base64.StdEncoding.Strict().Decode(psk, body)
		if err != nil || n != swarmKeySize {
			return nil, bad("the key is not standard base64 of %d bytes", swarmKeySize)
		}
		psk = psk[:swarmKeySize]
	case "/bin/":
		return nil, bad("the binary encoding /bin/ is not supported: re-encode the key as %q (ipfs-swarm-key-gen's format)", swarmKeyBase16)
	default:
		return nil, bad("second line is %.40q, want the encoding %q (or %q)", enc, swarmKeyBase16, swarmKeyBase64)
	}
	if bytes.Count(psk, []byte{0}) == len(psk) {
		return nil, bad("the key is all zeros, a placeholder: generate a random one")
	}
	return pnet.PSK(psk), nil
}

// cutLine returns the first line of b without its "\n" or "\r\n", and what
// follows it.
func cutLine(b []byte) (line string, rest []byte) {
	l, rest, _ := bytes.Cut(b, []byte{'\n'})
	return string(bytes.TrimSuffix(l, []byte{'\r'})), rest
}

// isQUICAddr reports whether a is a QUIC (or WebTransport, over QUIC)
// address, which a private network cannot use.
func isQUICAddr(a multiaddr.Multiaddr) bool {
	for _, p := range a.Protocols() {
		switch p.Code {
		case multiaddr.P_QUIC, multiaddr.P_QUIC_V1, multiaddr.P_WEBTRANSPORT:
			return true
		}
	}
	return false
}

// splitListenAddrs returns the listen addresses the node uses and those it
// drops because a private network cannot use them. Addresses that are not
// multiaddrs are kept: validate reports them.
func (c *nodeConfig) splitListenAddrs() (use, dropped []string) {
	if len(c.psk) == 0 {
		return c.listenAddrs, nil
	}
	for _, s := range c.listenAddrs {
		if a, err := multiaddr.NewMultiaddr(s); err == nil && isQUICAddr(a) {
			dropped = append(dropped, s)
		} else {
			use = append(use, s)
		}
	}
	return use, dropped
}

// validatePrivateNetwork reports with bad every problem with the private
// network key and what it implies for addresses.
func (c *nodeConfig) validatePrivateNetwork(bad func(string, ...any)) {
	if c.psk == nil {
		return
	}
	if len(c.psk) != swarmKeySize {
		bad("private network key is %d bytes, want %d: load it with LoadSwarmKey", len(c.psk), swarmKeySize)
		return
	}
	if use, dropped := c.splitListenAddrs(); len(use) == 0 && len(dropped) > 0 {
		bad("with a private network key only TCP can be used (libp2p does not support a pre-shared key over QUIC), and every listen address is QUIC: add a /tcp address")
	}
	for _, p := range c.bootstrap {
		if len(p.Addrs) > 0 && !hasNonQUICAddr(p.Addrs) {
			bad("bootstrap peer %s has only QUIC addresses, which a private network cannot use: give its /tcp address", p.ID)
		}
	}
}

func hasNonQUICAddr(addrs []multiaddr.Multiaddr) bool {
	for _, a := range addrs {
		if !isQUICAddr(a) {
			return true
		}
	}
	return false
}
