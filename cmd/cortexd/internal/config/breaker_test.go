package config

import (
	"strings"
	"testing"
	"time"
)

func TestConfigBreakerSection(t *testing.T) {
	for _, tc := range []struct {
		name     string
		failures int
		openFor  time.Duration
		want     string // "" if valid
	}{
		{"the defaults are valid", 5, 10 * time.Second, ""},
		{"0 failures turns the breakers off, whatever open_for says", 0, 0, ""},
		{"negative failures name their key", -1, time.Second, "breaker.failures"},
		{"an open period of 0 with breakers on names its key", 3, 0, "breaker.open_for"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := Default()
			c.Breaker = Breaker{Failures: tc.failures, OpenFor: tc.openFor}
			err := c.Validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("Validate = %v; want nil", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("Validate = %v; want an error naming %s", err, tc.want)
			}
		})
	}
}
