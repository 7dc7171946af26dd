package skill

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/cortexgrid/cortexd/pkg/grid"
)

// RetryPolicy says how the failed attempts of one task are retried. Its
// zero value keeps the task's MaxRetries and the coordinator's backoff
// (WithRetryBackoff), and retries every failure another attempt may fix.
type RetryPolicy struct {
	// MaxAttempts bounds the attempts, the first one included. 0: the
	// task's MaxRetries + 1.
	MaxAttempts int
	// BaseBackoff is the wait before the first retry, doubling per retry
	// up to MaxBackoff, each wait drawn from ±50% around it. 0: the
	// coordinator's.
	BaseBackoff time.Duration
	// MaxBackoff caps the wait. 0: the coordinator's (but not below
	// BaseBackoff).
	MaxBackoff time.Duration
	// RetryOn lists the error codes of failed attempts that are retried:
	// grid.CodeExecutionFailed (the skill failed), grid.CodeInternal (the
	// peer or the link failed), grid.CodeTimeout (an attempt that timed out
	// on the peer before the task's deadline), grid.CodeCanceled (the peer
	// stopped it) and grid.CodeUnknownSkill (the node no longer has the
	// skill). Empty: all of them. A failure with another code ends the task
	// at once with ErrDelegationFailed. Whatever RetryOn says, a node that
	// rejects an attempt (queue full, rate limited, ...) is left for
	// another at once, and refused input and the task's deadline are never
	// retried.
	RetryOn []grid.ErrorCode
}

// WithRetry sets the task's retry policy.
func (t *SkillTask) WithRetry(p RetryPolicy) *SkillTask { t.Retry = p; return t }

// maxAttempts is how many attempts t may have in all.
func (t *SkillTask) maxAttempts() int {
	if t.Retry.MaxAttempts > 0 {
		return t.Retry.MaxAttempts
	}
	return t.MaxRetries + 1
}

// retries reports whether a failed attempt with code may be retried.
func (p *RetryPolicy) retries(code grid.ErrorCode) bool {
	return len(p.RetryOn) == 0 || slices.Contains(p.RetryOn, code)
}

// backoff returns the policy's base and maximum backoff, with base and max
// (the coordinator's) for the fields that are zero.
func (p *RetryPolicy) backoff(base, most time.Duration) (time.Duration, time.Duration) {
	if p.BaseBackoff > 0 {
		base = p.BaseBackoff
	}
	if p.MaxBackoff > 0 {
		most = p.MaxBackoff
	}
	return base, max(base, most)
}

func (p *RetryPolicy) validate() error {
	var errs []error
	if p.MaxAttempts < 0 {
		errs = append(errs, fmt.Errorf("retry policy: max attempts is %d; it must be 0 (the default) or more", p.MaxAttempts))
	}
	if p.BaseBackoff < 0 || p.MaxBackoff < 0 {
		errs = append(errs, fmt.Errorf("retry policy: backoff base %v, max %v: neither may be negative", p.BaseBackoff, p.MaxBackoff))
	}
	if p.MaxBackoff > 0 && p.MaxBackoff < p.BaseBackoff {
		errs = append(errs, fmt.Errorf("retry policy: max backoff %v is below base backoff %v", p.MaxBackoff, p.BaseBackoff))
	}
	for _, c := range p.RetryOn {
		if c == grid.CodeNone || c == grid.CodeInvalidInput || c > grid.CodeInternal {
			errs = append(errs, fmt.Errorf("retry policy: code %d cannot be retried: want execution failed (%d), timeout (%d), canceled (%d), unknown skill (%d) or internal (%d)",
				c, grid.CodeExecutionFailed, grid.CodeTimeout, grid.CodeCanceled, grid.CodeUnknownSkill, grid.CodeInternal))
		}
	}
	return errors.Join(errs...)
}
