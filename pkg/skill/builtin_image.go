package skill

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"strings"

	"golang.org/x/image/draw"
)

// maxResizeSide is the largest width or height image.resize produces.
const maxResizeSide = 10000

// resizeKernel is the interpolator image.resize scales with. CatmullRom,
// not ApproxBiLinear: ApproxBiLinear samples the 2x2 nearest source pixels
// whatever the scale, so shrinking by more than 2x (thumbnails, the common
// use) skips pixels and aliases (moire, jagged edges). CatmullRom widens
// its kernel with the scale factor, so every source pixel contributes, and
// it stays sharp when enlarging. It costs several times more CPU and a
// float64x4 intermediate buffer of width-out x height-in pixels; both are
// bounded by MaxImagePixels.
var resizeKernel = draw.CatmullRom

// errImageTooLarge is wrapped (with ErrInvalidInput) when an image, found
// by image.DecodeConfig before decoding, or the requested output is larger
// than the pixel limit.
var errImageTooLarge = errors.New("image too large")

const resizeSchema = `{
  "type": "object",
  "properties": {
    "image":   {"type": "string", "contentEncoding": "base64", "minLength": 1},
    "width":   {"type": "integer", "minimum": 0, "maximum": 10000},
    "height":  {"type": "integer", "minimum": 0, "maximum": 10000},
    "format":  {"enum": ["png", "jpeg"]},
    "quality": {"type": "integer", "minimum": 1, "maximum": 100}
  },
  "required": ["image", "width", "height"],
  "additionalProperties": false
}`

// resizeSkill is image.resize.
type resizeSkill struct {
	maxPixels int
}

func (s *resizeSkill) Descriptor() Descriptor {
	return Descriptor{
		ID: "image.resize", Version: builtinVersion,
		Description:   "Resizes a base64 PNG or JPEG to width x height (0 on one side keeps the aspect ratio).",
		InputSchema:   json.RawMessage(resizeSchema),
		Deterministic: true,
	}
}

type resizeRequest struct {
	Image   *string `json:"image"`
	Width   int     `json:"width"`
	Height  int     `json:"height"`
	Format  string  `json:"format"`
	Quality *int    `json:"quality"`
}

type resizeResponse struct {
	Image  []byte `json:"image"` // encoding/json writes standard base64
	Format string `json:"format"`
	Width  int    `json:"width"`
	Height int    `json:"height"`
}

func invalidResize(format string, args ...any) error {
	return fmt.Errorf("%w for image.resize: %s", ErrInvalidInput, fmt.Sprintf(format, args...))
}

func (s *resizeSkill) Execute(ctx context.Context, in SkillInput) ([]byte, error) {
	var req resizeRequest
	if err := json.Unmarshal(in.Data, &req); err != nil {
		return nil, invalidResize("input is not the documented JSON object: %v", err)
	}
	if err := req.check(); err != nil {
		return nil, err
	}
	raw, err := base64.StdEncoding.DecodeString(*req.Image)
	if err != nil {
		return nil, invalidResize("/image is not standard base64: %v", err)
	}
	cfg, inFormat, err := image.DecodeConfig(bytes.NewReader(raw))
	if err != nil {
		return nil, invalidResize("/image is not a PNG or JPEG image: %v", err)
	}
	if inFormat != "png" && inFormat != "jpeg" {
		return nil, invalidResize("/image is %s; only png and jpeg are supported", inFormat)
	}
	if err := s.checkPixels("the input image", cfg.Width, cfg.Height); err != nil {
		return nil, err
	}
	dw, dh, err := targetSize(cfg.Width, cfg.Height, req.Width, req.Height)
	if err != nil {
		return nil, err
	}
	if err := s.checkPixels("the output image", dw, dh); err != nil {
		return nil, err
	}
	if err := s.checkPixels("the scaler's buffer (output width x input height)", dw, cfg.Height); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ReportProgress(ctx, 0.1, "decoding")
	src, _, err := image.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, invalidResize("/image cannot be decoded: %v", err)
	}
	raw = nil
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	ReportProgress(ctx, 0.4, "scaling")
	dst := image.NewRGBA(image.Rect(0, 0, dw, dh))
	resizeKernel.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	src = nil
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	outFormat := req.Format
	if outFormat == "" {
		outFormat = inFormat
	}
	ReportProgress(ctx, 0.8, "encoding")
	img, err := encodeImage(dst, outFormat, req.Quality)
	if err != nil {
		return nil, fmt.Errorf("encode resized image as %s: %w", outFormat, err)
	}
	out, err := json.Marshal(resizeResponse{Image: img, Format: outFormat, Width: dw, Height: dh})
	if err != nil {
		return nil, fmt.Errorf("encode image.resize output: %w", err)
	}
	return out, nil
}

// CheckOutput checks the output's shape, not its pixels: a JSON object
// whose image is a PNG or JPEG of the format asked for (else the input's)
// and whose header gives the size asked for (one side from the input's
// aspect ratio if 0), as its width, height and format say. It reads only
// the images' headers.
func (s *resizeSkill) CheckOutput(in SkillInput, out []byte) error {
	var req resizeRequest
	if err := json.Unmarshal(in.Data, &req); err != nil || req.check() != nil {
		return errors.New("image.resize succeeded on an input it refuses here")
	}
	src, inFormat, err := image.DecodeConfig(base64.NewDecoder(base64.StdEncoding, strings.NewReader(*req.Image)))
	if err != nil || src.Width <= 0 || src.Height <= 0 {
		return errors.New("image.resize succeeded on an input image it cannot read here")
	}
	w, h, err := targetSize(src.Width, src.Height, req.Width, req.Height)
	if err != nil {
		return fmt.Errorf("image.resize succeeded on an input it refuses here: %w", err)
	}
	format := req.Format
	if format == "" {
		format = inFormat
	}
	var resp resizeResponse
	if err := json.Unmarshal(out, &resp); err != nil {
		return fmt.Errorf("image.resize output is not the documented JSON object: %w", err)
	}
	got, gotFormat, err := image.DecodeConfig(bytes.NewReader(resp.Image))
	switch {
	case err != nil:
		return fmt.Errorf("image.resize output image cannot be read: %w", err)
	case gotFormat != format || resp.Format != format:
		return fmt.Errorf("image.resize output is %s (says %q), not the %s asked for", gotFormat, resp.Format, format)
	case got.Width != w || got.Height != h || resp.Width != w || resp.Height != h:
		return fmt.Errorf("image.resize output is %dx%d (says %dx%d), not the %dx%d asked for", got.Width, got.Height, resp.Width, resp.Height, w, h)
	}
	return nil
}

// check repeats the schema's checks, so that Execute is safe when called
// without the registry, and adds the ones the schema does not express.
func (r *resizeRequest) check() error {
	switch {
	case r.Image == nil || *r.Image == "":
		return invalidResize(`"image" (base64 PNG or JPEG) is required`)
	case r.Width < 0 || r.Width > maxResizeSide || r.Height < 0 || r.Height > maxResizeSide:
		return invalidResize("width %d and height %d must be from 0 to %d", r.Width, r.Height, maxResizeSide)
	case r.Width == 0 && r.Height == 0:
		return invalidResize("width and height are both 0; give at least one (0 on one side keeps the aspect ratio)")
	case r.Format != "" && r.Format != "png" && r.Format != "jpeg":
		return invalidResize(`format %q is not "png" or "jpeg"`, r.Format)
	case r.Quality != nil && (*r.Quality < 1 || *r.Quality > 100):
		return invalidResize("quality %d is not from 1 to 100", *r.Quality)
	case r.Quality != nil && r.Format == "png":
		return invalidResize(`quality applies only to "jpeg" output; drop it or set format "jpeg"`)
	}
	return nil
}

func (s *resizeSkill) checkPixels(what string, w, h int) error {
	if w <= 0 || h <= 0 {
		return invalidResize("%s is %dx%d pixels", what, w, h)
	}
	if n := int64(w) * int64(h); n > int64(s.maxPixels) {
		return fmt.Errorf("%w for image.resize: %s is %dx%d = %d pixels, more than the limit of %d: %w",
			ErrInvalidInput, what, w, h, n, s.maxPixels, errImageTooLarge)
	}
	return nil
}

// targetSize fills a 0 width or height from the source aspect ratio,
// rounding to the nearest pixel and at least 1.
func targetSize(sw, sh, w, h int) (int, int, error) {
	switch {
	case w == 0:
		w = int(max(1, (int64(sw)*int64(h)*2+int64(sh))/(2*int64(sh))))
	case h == 0:
		h = int(max(1, (int64(sh)*int64(w)*2+int64(sw))/(2*int64(sw))))
	}
	if w > maxResizeSide || h > maxResizeSide {
		return 0, 0, invalidResize("keeping the aspect ratio of %dx%d gives %dx%d, more than %d on a side", sw, sh, w, h, maxResizeSide)
	}
	return w, h, nil
}

func encodeImage(img image.Image, format string, quality *int) ([]byte, error) {
	var buf bytes.Buffer
	if format == "png" {
		if err := png.Encode(&buf, img); err != nil {
			return nil, err
		}
		return buf.Bytes(), nil
	}
	q := jpeg.DefaultQuality
	if quality != nil {
		q = *quality
	}
	if err := jpeg.Encode(&buf, img, &jpeg.Options{Quality: q}); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
