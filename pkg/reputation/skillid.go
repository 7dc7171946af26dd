package reputation

// SkillID names a skill, such as "hash.sha256". IDs are lowercase dotted
// names; see skill.ValidateSkillID for the exact rule.
type SkillID string

// String returns the ID.
func (s SkillID) String() string { return string(s) }
