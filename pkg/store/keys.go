package store

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/libp2p/go-libp2p/core/peer"
)

const (
	idLen   = len(grid.TaskID{})
	timeLen = 8
	// maxPeerLen bounds a peer ID in a remote key (its length is one byte).
	maxPeerLen = 255
)

// timeBits maps t to a uint64 whose big-endian bytes sort as the times do
// (the sign bit of the Unix nanoseconds flipped); the zero time sorts
// first.
func timeBits(t time.Time) uint64 {
	if t.IsZero() {
		return 0
	}
	return uint64(t.UnixNano()) ^ (1 << 63)
}

// createdKey is created + ^id: walked backwards, newest first and, among
// equal times, by ID ascending (the order of skill's List).
func createdKey(buf *[timeLen + idLen]byte, created time.Time, id grid.TaskID) []byte {
	binary.BigEndian.PutUint64(buf[:timeLen], timeBits(created))
	for i, b := range id {
		buf[timeLen+i] = ^b
	}
	return buf[:]
}

// timeKey is t + key, for the prune-order buckets.
func timeKey(dst []byte, t time.Time, key []byte) []byte {
	dst = binary.BigEndian.AppendUint64(dst[:0], timeBits(t))
	return append(dst, key...)
}

// remoteKey is len(from) + from + id: a peer's records are one key prefix.
func remoteKey(dst []byte, from peer.ID, id grid.TaskID) []byte {
	dst = append(dst[:0], byte(len(from)))
	dst = append(dst, from...)
	return append(dst, id[:]...)
}

func peerPrefix(from peer.ID) []byte {
	return append([]byte{byte(len(from))}, from...)
}

// splitRemoteKey returns the peer and ID of a remote key.
func splitRemoteKey(k []byte) (peer.ID, grid.TaskID, error) {
	var id grid.TaskID
	if len(k) < 1 || len(k) != 1+int(k[0])+idLen {
		return "", id, fmt.Errorf("remote key of %d bytes: %w: %w", len(k), ErrCorrupt, errDecode)
	}
	n := int(k[0])
	copy(id[:], k[1+n:])
	return peer.ID(k[1 : 1+n]), id, nil
}

func checkPeer(what string, p peer.ID) error {
	if p == "" || len(p) > maxPeerLen {
		return fmt.Errorf("%s peer ID is %d bytes; want 1 to %d: %w", what, len(p), maxPeerLen, ErrInvalid)
	}
	return nil
}
