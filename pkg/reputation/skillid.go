package reputation

import (
	"errors"
	"fmt"
)

// SkillID names a skill, such as "hash.sha256". IDs are lowercase dotted
// names; Validate states the exact rule. This is the one place the rule
// lives: the registry, the wire codec, capability gossip, the API and the
// config all call Validate.
type SkillID string

// String returns the ID.
func (s SkillID) String() string { return string(s) }

// MaxSkillIDLen is the longest skill ID, in bytes.
const MaxSkillIDLen = 128

// ErrInvalidSkillID is wrapped by every error Validate returns.
var ErrInvalidSkillID = errors.New("invalid skill ID")

const idRule = `skill IDs are lowercase dotted names such as "hash.sha256": ` +
	`each dot-separated part starts with a-z and continues with a-z, 0-9, '_' or '-'`

// Validate reports whether s is a valid skill ID: a lowercase dotted name
// matching ^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)*$, at most MaxSkillIDLen
// bytes. The error wraps ErrInvalidSkillID and says what is wrong.
func (s SkillID) Validate() error {
	if s == "" {
		return fmt.Errorf("skill ID is empty (%s): %w", idRule, ErrInvalidSkillID)
	}
	if len(s) > MaxSkillIDLen {
		return fmt.Errorf("skill ID is %d bytes, more than %d: %w", len(s), MaxSkillIDLen, ErrInvalidSkillID)
	}
	partStart := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z'
		if !partStart {
			ok = ok || c >= '0' && c <= '9' || c == '_' || c == '-'
		}
		if c == '.' && !partStart && i != len(s)-1 {
			partStart = true
			continue
		}
		if !ok {
			return fmt.Errorf("skill ID %q: byte %d (%q) is not allowed there (%s): %w", string(s), i, c, idRule, ErrInvalidSkillID)
		}
		partStart = false
	}
	return nil
}
