package grid

import (
	"bytes"
	"errors"
	"testing"

	"github.com/libp2p/go-libp2p/core/pnet"
)

// FuzzParseSwarmKey feeds arbitrary bytes, as a swarm.key file, to the
// parser LoadSwarmKey uses. It must never panic; every error wraps
// ErrBadSwarmKey; and every key it accepts is 32 bytes, not all zeros,
// what libp2p's own decoder reads from the same file, and survives
// FormatSwarmKey unchanged.
func FuzzParseSwarmKey(f *testing.F) {
	f.Add(FormatSwarmKey(bytes.Repeat([]byte{0xa5}, swarmKeySize)))
	f.Add([]byte(swarmKeyHeader + "\n" + swarmKeyBase64 + "\n" + "paWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpaU=\n"))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		psk, err := parseSwarmKey(data)
		if err != nil {
			if !errors.Is(err, ErrBadSwarmKey) || psk != nil {
				t.Fatalf("parseSwarmKey: %x, %v; want nil and an ErrBadSwarmKey", psk, err)
			}
			return
		}
		if len(psk) != swarmKeySize || bytes.Count(psk, []byte{0}) == swarmKeySize {
			t.Fatalf("accepted key %x", psk)
		}
		theirs, err := pnet.DecodeV1PSK(bytes.NewReader(data))
		if err != nil || !bytes.Equal(theirs, psk) {
			t.Fatalf("accepted %q as %x, libp2p reads %x, %v", data, psk, theirs, err)
		}
		again, err := parseSwarmKey(FormatSwarmKey(psk))
		if err != nil || !bytes.Equal(again, psk) {
			t.Fatalf("FormatSwarmKey(%x) reads back as %x, %v", psk, again, err)
		}
	})
}
