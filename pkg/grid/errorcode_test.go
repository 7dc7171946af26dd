package grid

import "testing"

func TestErrorCodeNamesRoundTrip(t *testing.T) {
	for c := CodeExecutionFailed; c <= CodeInternal; c++ {
		got, ok := ParseErrorCode(c.String())
		if !ok || got != c {
			t.Errorf("ParseErrorCode(%q) = %v, %v; want %v, true", c.String(), got, ok, c)
		}
	}
	for _, name := range []string{"none", "", "Timeout", "code(9)"} {
		if _, ok := ParseErrorCode(name); ok {
			t.Errorf("ParseErrorCode(%q) accepted a name that is not a code", name)
		}
	}
}
