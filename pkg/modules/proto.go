package modules

import (
	"errors"
	"fmt"
	"unicode/utf8"

	"github.com/libp2p/go-libp2p/core/protocol"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/cortexgrid/cortexd/pkg/wasm"
)

// ProtocolModule is the libp2p protocol of module transfers.
const ProtocolModule protocol.ID = "/cortex/module/1.0.0"

// Wire limits. A response frame is at most maxResponseOverhead +
// wasm.MaxManifestBytes + the fetcher's module cap.
const (
	maxRequestFrame     = 64
	maxResponseOverhead = 1 << 10
	maxStatusMessage    = 256
	maxRetryAfterMs     = 60_000
)

// Status is cortex.v1.ModuleStatus.
type Status int32

// Statuses; the values are the wire enum's.
const (
	StatusUnspecified Status = iota
	StatusOK
	StatusNotFound
	StatusRateLimited
	StatusBusy
	StatusMalformed
)

var statusNames = [...]string{"unspecified failure", "ok", "not found", "rate limited", "busy", "malformed request"}

func (s Status) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", int32(s))
}

// ErrMalformed is wrapped by the errors of DecodeRequest and
// DecodeResponse.
var ErrMalformed = errors.New("malformed module message")

// Field numbers of proto/cortex/v1/module.proto.
const (
	fReqModule = 1

	fResStatus     = 1
	fResMessage    = 2
	fResManifest   = 3
	fResModule     = 4
	fResRetryAfter = 5
)

// Response is a decoded cortex.v1.ModuleResponse. Manifest and Module
// alias the decoded frame.
type Response struct {
	Status       Status
	Message      string
	Manifest     []byte
	Module       []byte
	RetryAfterMs uint32
}

// AppendRequest appends a ModuleRequest for id.
func AppendRequest(dst []byte, id wasm.ModuleID) []byte {
	dst = protowire.AppendTag(dst, fReqModule, protowire.BytesType)
	return protowire.AppendBytes(dst, id[:])
}

// DecodeRequest decodes a ModuleRequest body. Unknown fields are skipped;
// a hash that is not 32 bytes is malformed.
func DecodeRequest(b []byte) (wasm.ModuleID, error) {
	var id wasm.ModuleID
	var hash []byte
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, _ uint64) error {
		if num == fReqModule && typ == protowire.BytesType {
			hash = v
		}
		return nil
	})
	if err != nil {
		return id, err
	}
	if len(hash) != len(id) {
		return id, fmt.Errorf("%w: module sha256 of %d bytes, want 32", ErrMalformed, len(hash))
	}
	copy(id[:], hash)
	return id, nil
}

// AppendResponse appends r as a ModuleResponse body, fields in number
// order and zero values left out, as proto.Marshal writes them.
func AppendResponse(dst []byte, r *Response) []byte {
	if r.Status != 0 {
		dst = protowire.AppendTag(dst, fResStatus, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(int64(r.Status)))
	}
	for _, f := range [...]struct {
		num protowire.Number
		v   []byte
	}{{fResMessage, []byte(r.Message)}, {fResManifest, r.Manifest}, {fResModule, r.Module}} {
		if len(f.v) > 0 {
			dst = protowire.AppendTag(dst, f.num, protowire.BytesType)
			dst = protowire.AppendBytes(dst, f.v)
		}
	}
	if r.RetryAfterMs != 0 {
		dst = protowire.AppendTag(dst, fResRetryAfter, protowire.VarintType)
		dst = protowire.AppendVarint(dst, uint64(r.RetryAfterMs))
	}
	return dst
}

// DecodeResponse decodes a ModuleResponse body, skipping unknown fields.
// It refuses a manifest over wasm.MaxManifestBytes and a module over
// maxModule, and an OK response without both; the message is made valid
// UTF-8 and cut to 256 bytes, the retry hint to one minute.
func DecodeResponse(b []byte, maxModule int) (*Response, error) {
	r := &Response{}
	err := eachField(b, func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error {
		switch {
		case num == fResStatus && typ == protowire.VarintType:
			r.Status = Status(int32(x))
		case num == fResMessage && typ == protowire.BytesType:
			if !utf8.Valid(v) {
				return fmt.Errorf("%w: message is not UTF-8", ErrMalformed)
			}
			r.Message = string(v[:min(len(v), maxStatusMessage)])
		case num == fResManifest && typ == protowire.BytesType:
			r.Manifest = v
		case num == fResModule && typ == protowire.BytesType:
			r.Module = v
		case num == fResRetryAfter && typ == protowire.VarintType:
			r.RetryAfterMs = min(uint32(x), maxRetryAfterMs) // a uint32 field keeps the low 32 bits, as protobuf does
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.Message = truncateUTF8(r.Message)
	switch {
	case len(r.Manifest) > wasm.MaxManifestBytes:
		return nil, fmt.Errorf("%w: manifest of %d bytes, the limit is %d", ErrMalformed, len(r.Manifest), wasm.MaxManifestBytes)
	case len(r.Module) > maxModule:
		return nil, fmt.Errorf("%w: module of %d bytes, the limit is %d", ErrMalformed, len(r.Module), maxModule)
	case r.Status == StatusOK && (len(r.Manifest) == 0 || len(r.Module) == 0):
		return nil, fmt.Errorf("%w: an ok response without its manifest or module", ErrMalformed)
	}
	return r, nil
}

// eachField calls fn for each field of a message body: v for bytes
// fields, x for varints; other wire types are skipped.
func eachField(b []byte, fn func(num protowire.Number, typ protowire.Type, v []byte, x uint64) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return fmt.Errorf("%w: tag: %w", ErrMalformed, protowire.ParseError(n))
		}
		if num > protowire.MaxValidNumber {
			return fmt.Errorf("%w: field number %d", ErrMalformed, num)
		}
		b = b[n:]
		var v []byte
		var x uint64
		switch typ {
		case protowire.BytesType:
			v, n = protowire.ConsumeBytes(b)
		case protowire.VarintType:
			x, n = protowire.ConsumeVarint(b)
		default:
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return fmt.Errorf("%w: field %d: %w", ErrMalformed, num, protowire.ParseError(n))
		}
		b = b[n:]
		if typ == protowire.BytesType || typ == protowire.VarintType {
			if err := fn(num, typ, v, x); err != nil {
				return err
			}
		}
	}
	return nil
}

// truncateUTF8 cuts s to a rune boundary within maxStatusMessage bytes.
func truncateUTF8(s string) string {
	for len(s) > 0 && !utf8.ValidString(s) {
		s = s[:len(s)-1]
	}
	return s
}
