package config

import (
	"fmt"
	"math"
)

// movedKeys are keys of earlier versions that now live elsewhere: a
// config, environment variable or flag that sets one is refused with the
// new key's name, rather than silently ignored.
var movedKeys = map[string]string{
	"tasks.peer_rate_limit":        "admission.known.rate",
	"tasks.peer_burst":             "admission.known.burst",
	"tasks.max_in_flight_per_peer": "admission.known.max_tasks",
}

// movedProblem is the problem of a moved key that is set.
func movedProblem(key, by string) string {
	return fmt.Sprintf("%s (set by %s): moved to %s, whose limits are for known peers; strangers get admission.stranger (see configs/cortexd.yaml): rename it",
		key, by, movedKeys[key])
}

// validateAdmission checks the admission section against itself and the
// trust section.
func (c *Config) validateAdmission(p *problems) {
	a := c.Admission
	p.oneOf("admission.mode", a.Mode, AdmissionAuto, AdmissionStrict, AdmissionOpen)
	p.unit("admission.known_trust", a.KnownTrust)
	if a.KnownTrust <= c.Trust.Neutral {
		p.add("admission.known_trust", "must be above trust.neutral (%v), or a peer never seen before would count as known, got %v", c.Trust.Neutral, a.KnownTrust)
	}
	if a.KnownTrust < c.Trust.AcceptThreshold {
		p.add("admission.known_trust", "must not be below trust.accept_threshold (%v), got %v", c.Trust.AcceptThreshold, a.KnownTrust)
	}
	p.peerLimits("admission.stranger", a.Stranger)
	p.peerLimits("admission.known", a.Known)
	s, k := a.Stranger, a.Known
	over := func(field string, sv, kv float64) {
		if sv > kv {
			p.add("admission.stranger."+field, "must not exceed admission.known.%s (%v), got %v: a stranger would get more than a known peer", field, kv, sv)
		}
	}
	unlimited := func(r float64) float64 {
		if r == 0 {
			return math.Inf(1)
		}
		return r
	}
	over("rate", unlimited(s.Rate), unlimited(k.Rate))
	over("burst", float64(s.Burst), float64(k.Burst))
	over("max_tasks", float64(s.MaxTasks), float64(k.MaxTasks))
	over("max_bytes", float64(s.MaxBytes), float64(k.MaxBytes))
	if a.NodeMaxBytes < k.MaxBytes {
		p.add("admission.node_max_bytes", "must be at least admission.known.max_bytes (%d), got %d", k.MaxBytes, a.NodeMaxBytes)
	}
}

// peerLimits checks one class's limits under key.
func (p *problems) peerLimits(key string, l PeerLimits) {
	if l.Rate < 0 || math.IsNaN(l.Rate) || math.IsInf(l.Rate, 0) {
		p.add(key+".rate", "must be a number of tasks per second not below 0 (0 is unlimited), got %v", l.Rate)
	}
	if l.Rate > 0 {
		p.positive(key+".burst", l.Burst)
	} else {
		p.nonNegative(key+".burst", l.Burst)
	}
	p.positive(key+".max_tasks", l.MaxTasks)
	if l.MaxBytes < 1 {
		p.add(key+".max_bytes", "must be at least 1 byte, got %d", l.MaxBytes)
	}
}
