package grid

import (
	"bytes"
	"context"
	"encoding/base64"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/pnet"
)

func swarmKeyT(tb testing.TB) pnet.PSK {
	tb.Helper()
	psk, err := GenerateSwarmKey()
	if err != nil {
		tb.Fatal(err)
	}
	return psk
}

// assertNoConnection checks that from's dial to to fails and that neither
// side is left connected. With different keys the handshake cannot even
// start, so the dial itself fails.
func assertNoConnection(t *testing.T, from, to *Node, what string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := from.Host().Connect(ctx, nodeAddrInfo(to)); err == nil {
		t.Fatalf("%s: the dial succeeded", what)
	}
	if hostConnected(from.Host(), to.ID()) || hostConnected(to.Host(), from.ID()) {
		t.Fatalf("%s: a connection exists", what)
	}
}

func TestPrivateNetworkNodesWithTheSameKeyConnect(t *testing.T) {
	psk := swarmKeyT(t)
	a := startNodeT(t, WithPrivateNetworkKey(psk))
	b := startNodeT(t, WithPrivateNetworkKey(psk), WithBootstrapPeers(nodeAddrInfo(a)))
	b.SetCapabilities([]SkillCapability{{"echo", "1"}})
	pollUntil(t, 10*time.Second, "a sees b's skill over the private network", func() bool {
		return hostConnected(a.Host(), b.ID()) && offers(a, "echo", b.ID())
	})
}

func TestPrivateNetworkKeepsOutNodesWithAnotherKeyOrNone(t *testing.T) {
	member := startNodeT(t, WithPrivateNetworkKey(swarmKeyT(t)))
	stranger := startNodeT(t, WithPrivateNetworkKey(swarmKeyT(t)))
	public := startNodeT(t)
	assertNoConnection(t, stranger, member, "a node with another key dials in")
	assertNoConnection(t, member, stranger, "the member dials a node with another key")
	assertNoConnection(t, public, member, "a node without a key dials in")
	assertNoConnection(t, member, public, "the member dials a node without a key")
}

func TestPrivateNetworkDropsQUICListenAddresses(t *testing.T) {
	n := startNodeT(t, WithPrivateNetworkKey(swarmKeyT(t)),
		WithListenAddrs("/ip4/127.0.0.1/tcp/0", "/ip4/127.0.0.1/udp/0/quic-v1"))
	addrs := n.Host().Addrs()
	if len(addrs) == 0 {
		t.Fatal("no listen address left")
	}
	for _, a := range addrs {
		if isQUICAddr(a) {
			t.Fatalf("a private node listens on QUIC: %v", addrs)
		}
	}
}

func TestSwarmKeyLoaderReadsTheIPFSFormat(t *testing.T) {
	psk := swarmKeyT(t)
	hexKey := strings.TrimSpace(string(FormatSwarmKey(psk)[len(swarmKeyHeader)+len(swarmKeyBase16)+2:]))
	cases := []struct {
		name string
		file string
	}{
		{"a file FormatSwarmKey wrote is read back", string(FormatSwarmKey(psk))},
		{"Windows line ends are accepted", "/key/swarm/psk/1.0.0/\r\n/base16/\r\n" + hexKey + "\r\n"},
		{"upper-case hex without a final newline is accepted", "/key/swarm/psk/1.0.0/\n/base16/\n" + strings.ToUpper(hexKey)},
		{"base64 is accepted", "/key/swarm/psk/1.0.0/\n/base64/\n" + base64.StdEncoding.EncodeToString(psk) + "\n"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := LoadSwarmKey(writeFileT(t, c.file))
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, psk) {
				t.Fatalf("key %x, want %x", got, psk)
			}
			theirs, err := pnet.DecodeV1PSK(strings.NewReader(c.file))
			if err != nil || !bytes.Equal(theirs, psk) {
				t.Fatalf("libp2p's decoder disagrees: %x, %v", theirs, err)
			}
		})
	}
}

func TestSwarmKeyLoaderRejectsMalformedFiles(t *testing.T) {
	hexKey := strings.Repeat("0123456789abcdef", 4)
	head := swarmKeyHeader + "\n" + swarmKeyBase16 + "\n"
	cases := []struct {
		name string
		file string
		says string // part of the message that tells the user what is wrong
	}{
		{"an empty file", "", "empty"},
		{"a file without the swarm key header", "/key/swarm/psk/2.0.0/\n/base16/\n" + hexKey, "first line"},
		{"a bare hex key", hexKey + "\n", "first line"},
		{"an unknown encoding", swarmKeyHeader + "\n/base58/\n" + hexKey, "second line"},
		{"the binary encoding", swarmKeyHeader + "\n/bin/\n" + strings.Repeat("k", 32), "not supported"},
		{"a missing key", head, "0 hex digits"},
		{"a short key", head + hexKey[:62] + "\n", "62 hex digits"},
		{"a long key", head + hexKey + "00\n", "66 hex digits"},
		{"a key that is not hex", head + "zz" + hexKey[2:] + "\n", "not hexadecimal"},
		{"a key split over two lines", head + hexKey[:32] + "\n" + hexKey[32:] + "\n", "one line"},
		{"text after the key", head + hexKey + "\nextra\n", "one line"},
		{"an all-zero placeholder key", head + strings.Repeat("0", 64) + "\n", "all zeros"},
		{"base64 of the wrong length", swarmKeyHeader + "\n" + swarmKeyBase64 + "\nAAAA\n", "base64 characters"},
		{"a file too large to be a key", head + strings.Repeat("a", 2000), "larger than"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := writeFileT(t, c.file)
			_, err := LoadSwarmKey(path)
			if !errors.Is(err, ErrBadSwarmKey) {
				t.Fatalf("LoadSwarmKey: %v, want ErrBadSwarmKey", err)
			}
			if msg := err.Error(); !strings.Contains(msg, c.says) || !strings.Contains(msg, path) {
				t.Fatalf("message %q does not name the file and say %q", msg, c.says)
			}
		})
	}
	t.Run("a missing file", func(t *testing.T) {
		if _, err := LoadSwarmKey(filepath.Join(t.TempDir(), "swarm.key")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("LoadSwarmKey: %v, want fs.ErrNotExist", err)
		}
	})
}

func writeFileT(tb testing.TB, content string) string {
	tb.Helper()
	path := filepath.Join(tb.TempDir(), "swarm.key")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		tb.Fatal(err)
	}
	return path
}
