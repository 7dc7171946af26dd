package skill

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"testing"
	"testing/synctest"
	"time"

	"github.com/cortexgrid/cortexd/pkg/reputation"
)

func builtin(tb testing.TB, opts BuiltinOptions, id reputation.SkillID) Skill {
	tb.Helper()
	for _, s := range Builtins(opts) {
		if s.Descriptor().ID == id {
			return s
		}
	}
	tb.Fatalf("no built-in %q", id)
	return nil
}

func TestBuiltinsListTheDocumentedSkills(t *testing.T) {
	tests := []struct {
		name string
		opts BuiltinOptions
		want []reputation.SkillID
	}{
		{"without debug sleep there are three skills", BuiltinOptions{}, []reputation.SkillID{"echo", "image.resize", "hash.sha256"}},
		{"debug sleep adds debug.sleep", BuiltinOptions{DebugSleep: true}, []reputation.SkillID{"echo", "image.resize", "hash.sha256", "debug.sleep"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newTestRegistry(t, Builtins(tt.opts)...)
			if len(r.List()) != len(tt.want) {
				t.Fatalf("List = %v, want %v", r.List(), tt.want)
			}
			for _, id := range tt.want {
				s, err := r.Lookup(id, "1.0.0")
				if err != nil {
					t.Fatalf("Lookup(%s, 1.0.0): %v", id, err)
				}
				if s.Descriptor().Description == "" {
					t.Errorf("%s has no description", id)
				}
			}
		})
	}
}

func TestEchoReturnsTheInputUnchanged(t *testing.T) {
	s := builtin(t, BuiltinOptions{}, "echo")
	for _, in := range []SkillInput{mustJSON(t, `{"a":[1,2]}`), RawInput([]byte{0, 1, 2, 0xff}), RawInput(nil)} {
		out, err := s.Execute(t.Context(), in)
		if err != nil || !bytes.Equal(out, in.Data) {
			t.Errorf("echo(%q) = %q, %v", in.Data, out, err)
		}
	}
	in := RawInput([]byte("x"))
	if n := testing.AllocsPerRun(100, func() { _, _ = s.Execute(context.Background(), in) }); n != 0 {
		t.Errorf("echo allocates %.0f times per run, want 0", n)
	}
}

func TestHashSHA256OfKnownStrings(t *testing.T) {
	s := builtin(t, BuiltinOptions{}, "hash.sha256")
	tests := []struct {
		name string
		in   SkillInput
		want string
	}{
		{"the empty string", mustJSON(t, `{"data":""}`), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"},
		{"hello as base64 JSON", mustJSON(t, `{"data":"aGVsbG8="}`), "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824"},
		{"abc as base64 JSON", mustJSON(t, `{"data":"YWJj"}`), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
		{"abc as raw bytes", RawInput([]byte("abc")), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := s.Execute(t.Context(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			if want := `{"sha256":"` + tt.want + `"}`; string(out) != want {
				t.Fatalf("output %s, want %s", out, want)
			}
		})
	}
}

func TestHashSHA256RejectsBadInput(t *testing.T) {
	s := builtin(t, BuiltinOptions{}, "hash.sha256")
	for name, in := range map[string]string{
		"bad base64 is invalid input":      `{"data":"not base64!"}`,
		"URL-safe base64 is invalid input": `{"data":"-_8="}`,
		"a missing data field is invalid":  `{}`,
		"a number is invalid":              `{"data":5}`,
		"malformed JSON is invalid":        `{"data":`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := s.Execute(t.Context(), mustJSON(t, in)); !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("Execute(%s) = %v, want ErrInvalidInput", in, err)
			}
		})
	}
}

func TestDebugSleepSleepsAndHonoursTheContext(t *testing.T) {
	s := builtin(t, BuiltinOptions{DebugSleep: true}, "debug.sleep")
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		out, err := s.Execute(t.Context(), mustJSON(t, `{"ms":1500}`))
		if err != nil || string(out) != `{"slept_ms":1500}` {
			t.Fatalf("Execute = %s, %v", out, err)
		}
		if d := time.Since(start); d != 1500*time.Millisecond {
			t.Fatalf("slept %v, want 1.5s", d)
		}

		ctx, cancel := context.WithTimeout(t.Context(), 100*time.Millisecond)
		defer cancel()
		start = time.Now()
		_, err = s.Execute(ctx, mustJSON(t, `{"ms":600000}`))
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Execute past the deadline = %v, want DeadlineExceeded", err)
		}
		if d := time.Since(start); d != 100*time.Millisecond {
			t.Fatalf("returned after %v, want 100ms", d)
		}
	})
	for _, in := range []string{`{"ms":-1}`, `{"ms":600001}`, `{}`, `{"ms":"5"}`} {
		if _, err := s.Execute(t.Context(), mustJSON(t, in)); !errors.Is(err, ErrInvalidInput) {
			t.Errorf("Execute(%s) = %v, want ErrInvalidInput", in, err)
		}
	}
}

// testImage returns a w x h image with a colour gradient.
func testImage(w, h int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, color.RGBA{uint8(x * 255 / w), uint8(y * 255 / h), 128, 255})
		}
	}
	return img
}

func encodePNG(tb testing.TB, img image.Image) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(tb testing.TB, img image.Image) []byte {
	tb.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

// pngHeaderOnly returns a PNG signature and IHDR chunk claiming w x h
// pixels, with no image data: DecodeConfig reads it, Decode fails.
func pngHeaderOnly(w, h uint32) []byte {
	b := []byte("\x89PNG\r\n\x1a\n")
	ihdr := binary.BigEndian.AppendUint32(nil, 13)
	ihdr = append(ihdr, "IHDR"...)
	ihdr = binary.BigEndian.AppendUint32(ihdr, w)
	ihdr = binary.BigEndian.AppendUint32(ihdr, h)
	ihdr = append(ihdr, 8, 6, 0, 0, 0) // 8-bit RGBA
	ihdr = binary.BigEndian.AppendUint32(ihdr, crc32.ChecksumIEEE(ihdr[4:]))
	return append(b, ihdr...)
}

func resizeInput(tb testing.TB, img []byte, extra string) SkillInput {
	tb.Helper()
	return mustJSON(tb, fmt.Sprintf(`{"image":%q%s}`, base64.StdEncoding.EncodeToString(img), extra))
}

func TestResizeProducesTheRequestedSizeAndFormat(t *testing.T) {
	s := builtin(t, BuiltinOptions{}, "image.resize")
	pngIn, jpegIn := encodePNG(t, testImage(200, 100)), encodeJPEG(t, testImage(200, 100))
	tests := []struct {
		name       string
		in         SkillInput
		wantFormat string
		wantW      int
		wantH      int
	}{
		{"a PNG shrinks to the exact size as PNG", resizeInput(t, pngIn, `,"width":50,"height":30`), "png", 50, 30},
		{"a PNG grows to the exact size", resizeInput(t, pngIn, `,"width":300,"height":300`), "png", 300, 300},
		{"a zero height keeps the aspect ratio", resizeInput(t, pngIn, `,"width":41,"height":0`), "png", 41, 21},
		{"a JPEG stays JPEG with a zero width", resizeInput(t, jpegIn, `,"width":0,"height":50`), "jpeg", 100, 50},
		{"a PNG converts to JPEG with a quality", resizeInput(t, pngIn, `,"width":20,"height":10,"format":"jpeg","quality":90`), "jpeg", 20, 10},
		{"a JPEG converts to PNG", resizeInput(t, jpegIn, `,"width":20,"height":10,"format":"png"`), "png", 20, 10},
		{"a tiny aspect ratio rounds up to one pixel", resizeInput(t, pngIn, `,"width":1,"height":0`), "png", 1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := s.Execute(t.Context(), tt.in)
			if err != nil {
				t.Fatal(err)
			}
			var res struct {
				Image  []byte `json:"image"`
				Format string `json:"format"`
				Width  int    `json:"width"`
				Height int    `json:"height"`
			}
			if err := json.Unmarshal(out, &res); err != nil {
				t.Fatalf("output %.80s is not the documented JSON: %v", out, err)
			}
			if res.Format != tt.wantFormat || res.Width != tt.wantW || res.Height != tt.wantH {
				t.Fatalf("output says %s %dx%d, want %s %dx%d", res.Format, res.Width, res.Height, tt.wantFormat, tt.wantW, tt.wantH)
			}
			cfg, format, err := image.DecodeConfig(bytes.NewReader(res.Image))
			if err != nil {
				t.Fatalf("output image does not decode: %v", err)
			}
			if format != tt.wantFormat || cfg.Width != tt.wantW || cfg.Height != tt.wantH {
				t.Fatalf("output image is %s %dx%d, want %s %dx%d", format, cfg.Width, cfg.Height, tt.wantFormat, tt.wantW, tt.wantH)
			}
		})
	}
}

func TestResizeKeepsASolidColour(t *testing.T) {
	src := image.NewRGBA(image.Rect(0, 0, 64, 48))
	red := color.RGBA{200, 10, 20, 255}
	for i := 0; i < len(src.Pix); i += 4 {
		copy(src.Pix[i:], []byte{red.R, red.G, red.B, red.A})
	}
	out, err := builtin(t, BuiltinOptions{}, "image.resize").Execute(t.Context(), resizeInput(t, encodePNG(t, src), `,"width":16,"height":12`))
	if err != nil {
		t.Fatal(err)
	}
	var res struct {
		Image []byte `json:"image"`
	}
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(res.Image))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []image.Point{{0, 0}, {8, 6}, {15, 11}} {
		if got := color.RGBAModel.Convert(img.At(p.X, p.Y)); got != red {
			t.Errorf("pixel %v = %v, want %v", p, got, red)
		}
	}
}

func TestResizeRejectsBadInput(t *testing.T) {
	s := builtin(t, BuiltinOptions{}, "image.resize")
	pngIn := encodePNG(t, testImage(20, 10))
	var gifBuf bytes.Buffer
	if err := gif.Encode(&gifBuf, testImage(20, 10), nil); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		in   SkillInput
	}{
		{"bad base64 is invalid", mustJSON(t, `{"image":"%%%","width":5,"height":5}`)},
		{"bytes that are no image are invalid", resizeInput(t, []byte("hello, not an image"), `,"width":5,"height":5`)},
		{"a truncated PNG is invalid", resizeInput(t, pngIn[:len(pngIn)/2], `,"width":5,"height":5`)},
		{"a GIF is invalid", resizeInput(t, gifBuf.Bytes(), `,"width":5,"height":5`)},
		{"a zero width and height are invalid", resizeInput(t, pngIn, `,"width":0,"height":0`)},
		{"a width over 10000 is invalid", resizeInput(t, pngIn, `,"width":10001,"height":5`)},
		{"a negative height is invalid", resizeInput(t, pngIn, `,"width":5,"height":-1`)},
		{"an unknown format is invalid", resizeInput(t, pngIn, `,"width":5,"height":5,"format":"gif"`)},
		{"a quality of 0 is invalid", resizeInput(t, pngIn, `,"width":5,"height":5,"format":"jpeg","quality":0`)},
		{"a quality with PNG output is invalid", resizeInput(t, pngIn, `,"width":5,"height":5,"format":"png","quality":50`)},
		{"a missing image is invalid", mustJSON(t, `{"width":5,"height":5}`)},
		{"an aspect ratio past 10000 pixels is invalid", resizeInput(t, pngIn, `,"width":0,"height":9000`)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := s.Execute(t.Context(), tt.in); !errors.Is(err, ErrInvalidInput) {
				t.Fatalf("Execute = %v, want ErrInvalidInput", err)
			}
		})
	}
}

func TestResizeRejectsOversizeImagesBeforeDecoding(t *testing.T) {
	tests := []struct {
		name   string
		maxPix int
		img    []byte
		extra  string
	}{
		// 60000 x 60000 would need 14 GB to decode; the header alone must
		// be enough to refuse it, and the missing pixel data proves Decode
		// never ran (it would fail with a decode error instead).
		{"a huge PNG header is refused by its declared size", 0, pngHeaderOnly(60000, 60000), `,"width":10,"height":10`},
		{"an image just over a small limit is refused", 100*100 - 1, pngHeaderOnly(100, 100), `,"width":10,"height":10`},
		{"an output over the limit is refused", 100 * 100, encodePNG(t, testImage(100, 100)), `,"width":101,"height":100`},
		{"an intermediate buffer over the limit is refused", 100 * 100, encodePNG(t, testImage(10, 1000)), `,"width":20,"height":10`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := builtin(t, BuiltinOptions{MaxImagePixels: tt.maxPix}, "image.resize")
			_, err := s.Execute(t.Context(), resizeInput(t, tt.img, tt.extra))
			if !errors.Is(err, ErrInvalidInput) || !errors.Is(err, errImageTooLarge) {
				t.Fatalf("Execute = %v, want ErrInvalidInput and errImageTooLarge", err)
			}
		})
	}
	s := builtin(t, BuiltinOptions{MaxImagePixels: 100 * 100}, "image.resize")
	if _, err := s.Execute(t.Context(), resizeInput(t, encodePNG(t, testImage(100, 100)), `,"width":50,"height":50`)); err != nil {
		t.Fatalf("an image exactly at the limit: %v", err)
	}
}

func TestResizeStopsWhenTheContextIsDone(t *testing.T) {
	s := builtin(t, BuiltinOptions{}, "image.resize")
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := s.Execute(ctx, resizeInput(t, encodePNG(t, testImage(20, 10)), `,"width":5,"height":5`))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Execute with a done context = %v, want context.Canceled", err)
	}
}

// Each built-in accepts the output it gives itself and refuses a wrong
// one, so that a peer's wrong output is caught.
func TestBuiltinsCheckTheOutputsOfPeers(t *testing.T) {
	run := func(s Skill, in SkillInput) []byte {
		t.Helper()
		out, err := s.Execute(context.Background(), in)
		if err != nil {
			t.Fatalf("%s: %v", s.Descriptor().ID, err)
		}
		return bytes.Clone(out)
	}
	opts := BuiltinOptions{DebugSleep: true}
	echo, hash, sleep, resize := builtin(t, opts, "echo"), builtin(t, opts, "hash.sha256"), builtin(t, opts, "debug.sleep"), builtin(t, opts, "image.resize")
	hashIn := mustJSON(t, `{"data":"aGVsbG8="}`)
	pngIn := encodePNG(t, testImage(200, 100))
	halfPNG := resizeInput(t, pngIn, `,"width":100,"height":0`)
	tests := []struct {
		name  string
		skill Skill
		in    SkillInput
		out   []byte
		ok    bool
	}{
		{"echo accepts its input", echo, RawInput([]byte("hello")), []byte("hello"), true},
		{"echo refuses other bytes", echo, RawInput([]byte("hello")), []byte("hellp"), false},
		{"echo refuses an empty output for an input", echo, RawInput([]byte("hello")), nil, false},
		{"hash.sha256 accepts the hash of its input", hash, hashIn, run(hash, hashIn), true},
		{"hash.sha256 accepts the hash of raw bytes", hash, RawInput([]byte("hi")), run(hash, RawInput([]byte("hi"))), true},
		{"hash.sha256 refuses the hash of other bytes", hash, hashIn, run(hash, RawInput([]byte("hellp"))), false},
		{"hash.sha256 refuses an output that is not its JSON", hash, hashIn, []byte(`{"sha256":"00"}`), false},
		{"debug.sleep accepts its output", sleep, mustJSON(t, `{"ms":5}`), []byte(`{"slept_ms":5}`), true},
		{"debug.sleep refuses another time", sleep, mustJSON(t, `{"ms":5}`), []byte(`{"slept_ms":6}`), false},
		{"image.resize accepts its output", resize, halfPNG, run(resize, halfPNG), true},
		{"image.resize refuses another size", resize, halfPNG, run(resize, resizeInput(t, pngIn, `,"width":99,"height":0`)), false},
		{"image.resize refuses another format", resize, halfPNG, run(resize, resizeInput(t, pngIn, `,"width":100,"height":0,"format":"jpeg"`)), false},
		{"image.resize refuses an output that is not its JSON", resize, halfPNG, []byte("garbage"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			oc, ok := tc.skill.(OutputChecker)
			if !ok {
				t.Fatalf("%s is not an OutputChecker", tc.skill.Descriptor().ID)
			}
			if err := oc.CheckOutput(tc.in, tc.out); (err == nil) != tc.ok {
				t.Fatalf("CheckOutput = %v; want ok %v", err, tc.ok)
			}
		})
	}
}
