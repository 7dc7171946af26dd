package wasm

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"
)

// Size is a number of bytes. In JSON it is a number of bytes or a string
// with a unit: "64MiB", "512KiB", "1GiB" (powers of 1024), "10MB" (powers
// of 1000), "100B" or "100". Zero means "not set" in a manifest.
type Size int64

// Byte sizes.
const (
	KiB Size = 1 << 10
	MiB Size = 1 << 20
	GiB Size = 1 << 30
)

var sizeUnits = []struct {
	suffix string
	mult   Size
}{
	// Longest suffixes first, so that "MiB" is not read as "B".
	{"KiB", KiB}, {"MiB", MiB}, {"GiB", GiB},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000},
	{"B", 1},
}

const sizeRule = `sizes are a number of bytes or a number with a unit: B, KiB, MiB, GiB (1024) or KB, MB, GB (1000), e.g. "64MiB"`

// ParseSize parses "64MiB", "512KiB", "10MB", "100B" or "100". Spaces
// between the number and the unit are allowed; the unit is case sensitive
// (as "Mb" and "MB" differ). Fractions ("1.5GiB") are allowed and rounded
// down to a whole byte. The result is never negative.
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	num, mult := t, Size(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	if num == "" {
		return 0, fmt.Errorf("size %q has no number (%s)", s, sizeRule)
	}
	if n, err := strconv.ParseInt(num, 10, 64); err == nil {
		if n < 0 {
			return 0, fmt.Errorf("size %q is negative", s)
		}
		if n > math.MaxInt64/int64(mult) {
			return 0, fmt.Errorf("size %q is too large", s)
		}
		return Size(n) * mult, nil
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, fmt.Errorf("size %q is not a size (%s)", s, sizeRule)
	}
	if f < 0 {
		return 0, fmt.Errorf("size %q is negative", s)
	}
	v := f * float64(mult)
	if v >= math.MaxInt64 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return Size(v), nil
}

// String renders the size with the largest binary unit that divides it
// exactly: "64MiB", "1536KiB", "100B".
func (s Size) String() string {
	for _, u := range []struct {
		suffix string
		mult   Size
	}{{"GiB", GiB}, {"MiB", MiB}, {"KiB", KiB}} {
		if s != 0 && s%u.mult == 0 {
			return strconv.FormatInt(int64(s/u.mult), 10) + u.suffix
		}
	}
	return strconv.FormatInt(int64(s), 10) + "B"
}

// MarshalJSON writes the size as a string with a unit, e.g. "64MiB".
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// UnmarshalJSON reads a number of bytes or a string that ParseSize accepts.
func (s *Size) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if len(b) > 0 && b[0] == '"' {
		var str string
		if err := json.Unmarshal(b, &str); err != nil {
			return err
		}
		v, err := ParseSize(str)
		if err != nil {
			return err
		}
		*s = v
		return nil
	}
	var n json.Number
	if err := json.Unmarshal(b, &n); err != nil {
		return fmt.Errorf("size %s is neither a number nor a string (%s)", b, sizeRule)
	}
	v, err := ParseSize(n.String())
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// Duration is a time.Duration that reads and writes JSON as a Go duration
// string: "30s", "1m30s", "250ms". Zero means "not set" in a manifest.
type Duration time.Duration

// String returns the duration as time.Duration formats it.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalJSON writes the duration as a string, e.g. "30s".
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }

// UnmarshalJSON reads a duration string that time.ParseDuration accepts.
// A bare number is refused: its unit would be a guess.
func (d *Duration) UnmarshalJSON(b []byte) error {
	var str string
	if err := json.Unmarshal(b, &str); err != nil {
		return fmt.Errorf("duration %s is not a string; write it with a unit, such as \"30s\" or \"250ms\"", bytes.TrimSpace(b))
	}
	v, err := time.ParseDuration(strings.TrimSpace(str))
	if err != nil {
		return fmt.Errorf("duration %q is not a duration; write it with a unit, such as \"30s\" or \"250ms\"", str)
	}
	if v < 0 {
		return fmt.Errorf("duration %q is negative", str)
	}
	*d = Duration(v)
	return nil
}
