package modules

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/libp2p/go-libp2p/core/host"
	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/wasm"
	"github.com/cortexgrid/cortexd/pkg/wire"
)

// Fetch errors: callers branch on these with errors.Is. A response with a
// status other than OK is a *StatusError, which wraps ErrNotFound,
// ErrRefused or nothing.
var (
	// ErrNotFound: the peer does not serve the module.
	ErrNotFound = errors.New("module not found on peer")
	// ErrRefused: the peer is rate limiting or busy; see RetryAfter.
	ErrRefused = errors.New("module fetch refused for now")
)

// StatusError is a response that did not carry the module.
type StatusError struct {
	Peer       peer.ID
	Status     Status
	Message    string
	RetryAfter time.Duration
}

func (e *StatusError) Error() string {
	msg := fmt.Sprintf("peer %s answered %s", e.Peer.ShortString(), e.Status)
	if e.Message != "" {
		msg += ": " + e.Message
	}
	return msg
}

// Unwrap maps the status to ErrNotFound or ErrRefused.
func (e *StatusError) Unwrap() error {
	switch e.Status {
	case StatusNotFound:
		return ErrNotFound
	case StatusRateLimited, StatusBusy:
		return ErrRefused
	}
	return nil
}

// Fetch limits.
const (
	// DefaultFirstByteTimeout bounds the wait for the response to start.
	DefaultFirstByteTimeout = 10 * time.Second
	// DefaultFrameTimeout bounds the response, once started, to arrive
	// whole (a 16 MiB module over a slow link needs it).
	DefaultFrameTimeout = 30 * time.Second
)

// FetchOptions limits one fetch; zero fields take the defaults.
type FetchOptions struct {
	MaxModule        int // bytes; default wasm's default module cap
	FirstByteTimeout time.Duration
	FrameTimeout     time.Duration
}

func (o FetchOptions) withDefaults() FetchOptions {
	if o.MaxModule <= 0 {
		o.MaxModule = int(wasm.DefaultMaxModule)
	}
	if o.FirstByteTimeout <= 0 {
		o.FirstByteTimeout = DefaultFirstByteTimeout
	}
	if o.FrameTimeout <= 0 {
		o.FrameTimeout = DefaultFrameTimeout
	}
	return o
}

// Fetch gets module id and its manifest from p. It refuses a response
// over the caps before allocating for it, and returns the module only if
// its sha256 is id and the manifest is valid and names id; a mismatch
// wraps wasm.ErrHashMismatch, a bad manifest wasm.ErrInvalidManifest. The
// module is the caller's. Canceling ctx resets the stream; the transfer
// as a whole takes at most the first-byte and frame timeouts together.
func Fetch(ctx context.Context, h host.Host, p peer.ID, id wasm.ModuleID, opts FetchOptions) (wasm.Manifest, []byte, error) {
	o := opts.withDefaults()
	m, mod, err := fetch(ctx, h, p, id, o)
	if err != nil {
		return wasm.Manifest{}, nil, fmt.Errorf("fetch module %s from %s: %w", id.Short(), p.ShortString(), err)
	}
	return m, mod, nil
}

func fetch(ctx context.Context, h host.Host, p peer.ID, id wasm.ModuleID, o FetchOptions) (wasm.Manifest, []byte, error) {
	// The whole transfer is bounded too: a peer that neither reads the
	// request nor answers must not hold the caller.
	ctx, cancel := context.WithTimeout(ctx, o.FirstByteTimeout+o.FrameTimeout)
	defer cancel()
	st, err := h.NewStream(ctx, p, ProtocolModule)
	if err != nil {
		return wasm.Manifest{}, nil, err
	}
	stop := context.AfterFunc(ctx, func() { _ = st.Reset() })
	defer stop()
	ok := false
	defer func() {
		if !ok {
			_ = st.Reset()
		}
	}()
	req := AppendRequest(nil, id)
	_ = st.SetWriteDeadline(time.Now().Add(o.FirstByteTimeout))
	if _, err := st.Write(append(appendLen(nil, len(req)), req...)); err != nil {
		return wasm.Manifest{}, nil, fmt.Errorf("send request: %w", err)
	}
	if err := st.CloseWrite(); err != nil {
		return wasm.Manifest{}, nil, fmt.Errorf("send request: %w", err)
	}
	_ = st.SetReadDeadline(time.Now().Add(o.FirstByteTimeout))
	r := wire.NewReader(st, maxResponseOverhead+wasm.MaxManifestBytes+o.MaxModule)
	r.SetFrameTimeout(st, o.FrameTimeout)
	body, err := r.ReadFrame()
	if err != nil {
		if ctx.Err() != nil {
			return wasm.Manifest{}, nil, ctx.Err()
		}
		return wasm.Manifest{}, nil, fmt.Errorf("read response: %w", err)
	}
	res, err := DecodeResponse(body, o.MaxModule)
	if err != nil {
		return wasm.Manifest{}, nil, err
	}
	ok = true
	_ = st.Close()
	if res.Status != StatusOK {
		return wasm.Manifest{}, nil, &StatusError{Peer: p, Status: res.Status, Message: res.Message,
			RetryAfter: time.Duration(res.RetryAfterMs) * time.Millisecond}
	}
	return verify(id, res.Manifest, res.Module)
}

// verify checks a fetched module and manifest against id.
func verify(id wasm.ModuleID, manifest, module []byte) (wasm.Manifest, []byte, error) {
	if got := wasm.ModuleIDOf(module); got != id {
		return wasm.Manifest{}, nil, fmt.Errorf("the module sent has sha256 %s, not the %s asked for: %w", got, id, wasm.ErrHashMismatch)
	}
	m, err := wasm.DecodeManifest(bytes.NewReader(manifest))
	if err != nil {
		return wasm.Manifest{}, nil, err
	}
	if m.Module != id {
		return wasm.Manifest{}, nil, fmt.Errorf("the manifest sent names module %s, not %s: %w", m.Module, id, wasm.ErrHashMismatch)
	}
	return m, module, nil
}

func appendLen(dst []byte, n int) []byte { return binary.AppendUvarint(dst, uint64(n)) }
