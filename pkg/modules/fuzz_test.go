package modules

import (
	"bytes"
	"errors"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/cortexgrid/cortexd/pkg/wasm"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

const fuzzMaxModule = 4096

// responseSeeds are valid and tricky response bodies; the files in
// testdata/fuzz/FuzzDecodeResponse hold more.
func responseSeeds() [][]byte {
	ok := AppendResponse(nil, &Response{Status: StatusOK, Manifest: []byte(`{"name":"a"}`), Module: []byte("\x00asm\x01\x00\x00\x00")})
	return [][]byte{
		ok,
		AppendResponse(nil, &Response{Status: StatusNotFound, Message: "module abc is not served here"}),
		AppendResponse(nil, &Response{Status: StatusRateLimited, RetryAfterMs: 1 << 30}),
		AppendResponse(nil, &Response{Status: StatusOK}), // ok without data
		AppendResponse(nil, &Response{Status: 99, Message: "h\xc3\xa9"}),
		append(append([]byte{}, ok...), 0xf8, 0x01, 0x01), // an unknown field
		{0x12, 0x01, 0xff},       // a message that is not UTF-8
		{0x22, 0x80, 0x80, 0x04}, // a module declaring 64 KiB, truncated
		{0x00},
		nil,
	}
}

// FuzzDecodeResponse holds the response decoder to the generated code:
// what it accepts, proto.Unmarshal accepts and reads the same way; it
// never returns a manifest or module over its caps, an OK response
// without both, or a message over 256 bytes; and what it accepts encodes
// back to a body it decodes the same.
func FuzzDecodeResponse(f *testing.F) {
	for _, b := range responseSeeds() {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResponse(b, fuzzMaxModule)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var m cortexv1.ModuleResponse
		if err := proto.Unmarshal(b, &m); err != nil {
			t.Fatalf("DecodeResponse accepted %x, proto.Unmarshal refuses it: %v", b, err)
		}
		if int32(r.Status) != int32(m.Status) || !bytes.Equal(r.Manifest, m.Manifest) || !bytes.Equal(r.Module, m.Module) ||
			!stringsPrefix(m.Message, r.Message) || r.RetryAfterMs > maxRetryAfterMs || (m.RetryAfterMs <= maxRetryAfterMs && r.RetryAfterMs != m.RetryAfterMs) {
			t.Fatalf("body %x: DecodeResponse says %+v, proto.Unmarshal says %v", b, r, &m)
		}
		if len(r.Manifest) > wasm.MaxManifestBytes || len(r.Module) > fuzzMaxModule || len(r.Message) > maxStatusMessage {
			t.Fatalf("body %x: a field over its cap was accepted", b)
		}
		if r.Status == StatusOK && (len(r.Manifest) == 0 || len(r.Module) == 0) {
			t.Fatalf("body %x: an OK response without its data was accepted", b)
		}
		back, err := DecodeResponse(AppendResponse(nil, r), fuzzMaxModule)
		if err != nil || back.Status != r.Status || back.Message != r.Message || !bytes.Equal(back.Module, r.Module) ||
			!bytes.Equal(back.Manifest, r.Manifest) || back.RetryAfterMs != r.RetryAfterMs {
			t.Fatalf("body %x: re-encoded it decodes to %+v, %v; want %+v", b, back, err, r)
		}
	})
}

func stringsPrefix(s, prefix string) bool { return len(s) >= len(prefix) && s[:len(prefix)] == prefix }

// FuzzDecodeRequest: the request decoder accepts exactly the bodies with
// a 32-byte hash that proto.Unmarshal reads the same.
func FuzzDecodeRequest(f *testing.F) {
	var id wasm.ModuleID
	id[0] = 7
	f.Add(AppendRequest(nil, id))
	f.Add([]byte{0x0a, 0x01, 0x01})
	f.Add(append(AppendRequest(nil, id), 0x10, 0x01))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		got, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		var m cortexv1.ModuleRequest
		if err := proto.Unmarshal(b, &m); err != nil || !bytes.Equal(m.ModuleSha256, got[:]) {
			t.Fatalf("body %x: DecodeRequest says %x, proto.Unmarshal says %x, %v", b, got, m.ModuleSha256, err)
		}
	})
}

func TestResponseSeedsAgreeWithTheGeneratedCode(t *testing.T) {
	for _, b := range responseSeeds() {
		r, err := DecodeResponse(b, fuzzMaxModule)
		if err != nil {
			continue
		}
		want, err := proto.Marshal(&cortexv1.ModuleResponse{Status: cortexv1.ModuleStatus(r.Status), Message: r.Message,
			Manifest: r.Manifest, Module: r.Module, RetryAfterMs: r.RetryAfterMs})
		if err != nil {
			t.Fatal(err)
		}
		if got := AppendResponse(nil, r); !bytes.Equal(got, want) {
			t.Fatalf("AppendResponse %x, proto.Marshal %x", got, want)
		}
	}
}
