package skill

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// builtinVersion is the version of every built-in skill.
const builtinVersion = "1.0.0"

// DefaultMaxImagePixels is the default BuiltinOptions.MaxImagePixels: 40
// megapixels (160 MB as decoded RGBA).
const DefaultMaxImagePixels = 40_000_000

// BuiltinOptions configures Builtins.
type BuiltinOptions struct {
	// DebugSleep adds the debug.sleep skill.
	DebugSleep bool
	// MaxImagePixels bounds the pixels (width x height) of an image that
	// image.resize reads or writes. Zero or less means DefaultMaxImagePixels.
	MaxImagePixels int
}

// Builtins returns the built-in skills: echo, hash.sha256, image.resize and,
// if opts.DebugSleep, debug.sleep. Register each on a Registry. Every one is
// version 1.0.0. JSON inputs are checked against the skill's input schema
// (see its Descriptor) before it runs; a failure is ErrInvalidInput (code
// CodeInvalidInput on the wire).
//
//	| skill        | input                                                  | output                                          |
//	|--------------|--------------------------------------------------------|-------------------------------------------------|
//	| echo         | any bytes, JSON or raw; no schema                      | the input bytes unchanged                       |
//	| hash.sha256  | JSON {"data": "<base64, standard alphabet>"},          | {"sha256":"<64 lowercase hex digits>"}          |
//	|              | or raw bytes (hashed as they are)                      |                                                 |
//	| image.resize | JSON {"image": "<base64 PNG or JPEG>",                 | {"image":"<base64>","format":F,                 |
//	|              | "width": 0-10000, "height": 0-10000,                   | "width":W,"height":H}; F is "png" or "jpeg"     |
//	|              | "format": "png" or "jpeg" (optional, default: as in),  |                                                 |
//	|              | "quality": 1-100 (optional, jpeg output only)}         |                                                 |
//	| debug.sleep  | JSON {"ms": 0-600000}                                  | {"slept_ms":N}                                  |
//
// Details:
//   - echo returns the very input slice (no copy: the output aliases the
//     input). It is the benchmarked skill and allocates nothing.
//   - hash.sha256 schema: an object with the single required string
//     property "data" (contentEncoding base64, an annotation: the skill
//     decodes it and reports bad base64 as invalid input); no other
//     properties. Example: {"data":"aGVsbG8="} (the bytes "hello") gives
//     {"sha256":"2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"}.
//   - image.resize: width and height are both required; one of them may be
//     0 to keep the aspect ratio (rounded, at least 1 pixel), not both. The
//     image is checked with image.DecodeConfig before it is decoded: one
//     whose width x height exceeds BuiltinOptions.MaxImagePixels is refused
//     without decoding, as is an output (or the scaler's intermediate
//     width-out x height-in buffer) above that size. "quality" with a PNG
//     output is an error. Bad base64, a format other than PNG or JPEG, or an
//     undecodable image are invalid input. The output is re-encoded; PNG
//     keeps alpha, JPEG does not. Scaling uses draw.CatmullRom (see
//     resizeKernel); it is not interruptible once started, so ctx is
//     checked between the decode, scale and encode steps. It reports
//     progress (see ReportProgress) at each: 0.1 decoding, 0.4 scaling,
//     0.8 encoding.
//   - debug.sleep exists only with BuiltinOptions.DebugSleep (for tests and
//     demos). It sleeps ms milliseconds or until ctx is done, in which case
//     it fails with ctx's error (the executor reports a timeout or a
//     cancellation). A sleep over 100 ms reports progress every 100 ms:
//     the fraction slept and "slept N of M ms".
//
// Every built-in is an OutputChecker, so that a peer's wrong output is
// recorded as a wrong result: echo and hash.sha256 check exactly (the
// output equals the input; the hash is recomputed), debug.sleep checks
// that the output is the one its input gives, and image.resize checks the
// shape (a PNG or JPEG of the format asked for, whose header gives the
// width and height asked for, as the output says), not the pixels.
func Builtins(opts BuiltinOptions) []Skill {
	maxPix := opts.MaxImagePixels
	if maxPix <= 0 {
		maxPix = DefaultMaxImagePixels
	}
	skills := []Skill{echoSkill{}, hashSkill{}, &resizeSkill{maxPixels: maxPix}}
	if opts.DebugSleep {
		skills = append(skills, sleepSkill{})
	}
	return skills
}

// echoSkill returns its input.
type echoSkill struct{}

func (echoSkill) Descriptor() Descriptor {
	return Descriptor{ID: "echo", Version: builtinVersion, Description: "Returns its input unchanged.", Deterministic: true}
}

func (echoSkill) Execute(_ context.Context, in SkillInput) ([]byte, error) { return in.Data, nil }

func (echoSkill) contextFree() {}

// CheckOutput accepts only the input itself.
func (echoSkill) CheckOutput(in SkillInput, out []byte) error {
	if !bytes.Equal(out, in.Data) {
		return fmt.Errorf("echo returned %d bytes that differ from its input of %d bytes", len(out), len(in.Data))
	}
	return nil
}

var (
	_ OutputChecker = echoSkill{}
	_ OutputChecker = hashSkill{}
	_ OutputChecker = sleepSkill{}
	_ OutputChecker = (*resizeSkill)(nil)
)

// hashSkill computes SHA-256.
type hashSkill struct{}

const hashSchema = `{
  "type": "object",
  "properties": {"data": {"type": "string", "contentEncoding": "base64"}},
  "required": ["data"],
  "additionalProperties": false
}`

func (hashSkill) Descriptor() Descriptor {
	return Descriptor{
		ID: "hash.sha256", Version: builtinVersion,
		Description:   `SHA-256 of {"data":"<base64>"} or of raw input bytes, as {"sha256":"<hex>"}.`,
		InputSchema:   json.RawMessage(hashSchema),
		Deterministic: true,
	}
}

func (hashSkill) Execute(_ context.Context, in SkillInput) ([]byte, error) {
	data := in.Data
	if in.Kind != grid.InputRaw {
		var req struct {
			Data *string `json:"data"`
		}
		if err := json.Unmarshal(in.Data, &req); err != nil {
			return nil, fmt.Errorf("%w for hash.sha256: %v", ErrInvalidInput, err)
		}
		if req.Data == nil {
			return nil, fmt.Errorf("%w for hash.sha256: missing \"data\"", ErrInvalidInput)
		}
		b, err := base64.StdEncoding.DecodeString(*req.Data)
		if err != nil {
			return nil, fmt.Errorf("%w for hash.sha256: /data is not standard base64: %v", ErrInvalidInput, err)
		}
		data = b
	}
	sum := sha256.Sum256(data)
	const pre, post = `{"sha256":"`, `"}`
	out := make([]byte, 0, len(pre)+hex.EncodedLen(len(sum))+len(post))
	out = append(out, pre...)
	out = hex.AppendEncode(out, sum[:])
	return append(out, post...), nil
}

// CheckOutput recomputes the hash: SHA-256 is quick next to the transfer
// of its input.
func (h hashSkill) CheckOutput(in SkillInput, out []byte) error {
	want, err := h.Execute(context.Background(), in)
	if err != nil {
		return fmt.Errorf("hash.sha256 succeeded on an input it refuses here: %w", err)
	}
	if !bytes.Equal(out, want) {
		return fmt.Errorf("hash.sha256 returned %.80q, not %s", out, want)
	}
	return nil
}

// hashSkill does not block; hashing even large inputs is quick next to
// moving them over the network.
func (hashSkill) contextFree() {}

// sleepSkill sleeps, for tests and demos.
type sleepSkill struct{}

const sleepSchema = `{
  "type": "object",
  "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": 600000}},
  "required": ["ms"],
  "additionalProperties": false
}`

func (sleepSkill) Descriptor() Descriptor {
	return Descriptor{
		ID: "debug.sleep", Version: builtinVersion,
		Description: `Sleeps {"ms":N} milliseconds (0-600000); for tests and demos.`,
		InputSchema: json.RawMessage(sleepSchema),
	}
}

// sleepProgressEvery is how often debug.sleep reports progress.
const sleepProgressEvery = 100 * time.Millisecond

func (sleepSkill) Execute(ctx context.Context, in SkillInput) ([]byte, error) {
	var req struct {
		MS *int64 `json:"ms"`
	}
	if err := json.Unmarshal(in.Data, &req); err != nil {
		return nil, fmt.Errorf("%w for debug.sleep: %v", ErrInvalidInput, err)
	}
	if req.MS == nil || *req.MS < 0 || *req.MS > 600000 {
		return nil, fmt.Errorf("%w for debug.sleep: \"ms\" must be an integer from 0 to 600000", ErrInvalidInput)
	}
	total := time.Duration(*req.MS) * time.Millisecond
	t := time.NewTimer(total)
	defer t.Stop()
	var tick <-chan time.Time
	if total > sleepProgressEvery {
		tk := time.NewTicker(sleepProgressEvery)
		defer tk.Stop()
		tick = tk.C
	}
	start := time.Now()
	for {
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("sleep %d ms: %w", *req.MS, ctx.Err())
		case <-tick:
			if slept := time.Since(start); slept < total { // at the end, the result says it
				ReportProgress(ctx, float64(slept)/float64(total), fmt.Sprintf("slept %d of %d ms", slept.Milliseconds(), *req.MS))
			}
			continue
		case <-t.C:
		}
		return fmt.Appendf(nil, `{"slept_ms":%d}`, *req.MS), nil
	}
}

// CheckOutput accepts only the output the input gives.
func (sleepSkill) CheckOutput(in SkillInput, out []byte) error {
	var req struct {
		MS *int64 `json:"ms"`
	}
	if err := json.Unmarshal(in.Data, &req); err != nil || req.MS == nil {
		return fmt.Errorf("debug.sleep succeeded on an input it refuses here")
	}
	if want := fmt.Appendf(nil, `{"slept_ms":%d}`, *req.MS); !bytes.Equal(out, want) {
		return fmt.Errorf("debug.sleep returned %.80q, not %s", out, want)
	}
	return nil
}
