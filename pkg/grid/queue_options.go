package grid

import (
	"errors"
	"fmt"
	"math/bits"
	"time"
)

// Defaults of a TaskQueue.
const (
	queueDefaultMaxPerLevel   = 1000
	queueDefaultTimeout       = 300 * time.Second
	queueDefaultAgingStep     = 10 * time.Second
	queueDefaultSweepInterval = 250 * time.Millisecond
	queueDefaultAdaptiveK     = 64
	// queueMaxAdaptiveK bounds k, far above any sensible backlog threshold.
	queueMaxAdaptiveK = 1 << 20
)

// QueueOption configures a TaskQueue in NewTaskQueue.
type QueueOption func(*queueConfig)

type queueConfig struct {
	limits         [NumLevels]int
	defaultTimeout time.Duration
	agingStep      time.Duration
	adaptiveK      int           // 0: fixed aging
	adaptiveMin    time.Duration // the adaptive step's floor; 0: agingStep/100
	agingFloor     int64         // no effective step is shorter; see setAgingFloor
	stepK          uint64        // agingStep*adaptiveK in ns; see setAgingFloor
	onExpire       func(t *QueuedTask, wasInFlight bool)
	sweepInterval  time.Duration
	errs           []error // problems found while applying options
}

func defaultQueueConfig() queueConfig {
	c := queueConfig{
		defaultTimeout: queueDefaultTimeout,
		agingStep:      queueDefaultAgingStep,
		adaptiveK:      queueDefaultAdaptiveK,
		sweepInterval:  queueDefaultSweepInterval,
	}
	for i := range c.limits {
		c.limits[i] = queueDefaultMaxPerLevel
	}
	return c
}

// WithMaxPerLevel sets the maximum number of ready tasks of every level.
// The default is 1000; n must be positive.
func WithMaxPerLevel(n int) QueueOption {
	return func(c *queueConfig) {
		for i := range c.limits {
			c.limits[i] = n
		}
	}
}

// WithLevelLimit sets the maximum number of waiting tasks of level l alone.
// Options apply in order, so it may follow WithMaxPerLevel.
func WithLevelLimit(l Level, n int) QueueOption {
	return func(c *queueConfig) {
		if int(l) >= NumLevels {
			c.errs = append(c.errs, fmt.Errorf("level limit for %s: no such level, want low, normal, high or critical", l))
			return
		}
		c.limits[l] = n
	}
}

// WithDefaultTimeout sets the timeout of tasks enqueued with a zero
// Deadline: Deadline = CreatedAt + d. The default is 300 s.
func WithDefaultTimeout(d time.Duration) QueueOption {
	return func(c *queueConfig) { c.defaultTimeout = d }
}

// WithAgingStep sets how long a ready task waits per level its effective
// level rises. The default is 10 s; 0 disables aging (strict priority).
func WithAgingStep(d time.Duration) QueueOption {
	return func(c *queueConfig) { c.agingStep = d }
}

// WithAdaptiveAging makes aging adapt to the backlog. It is the default,
// with k = 64 and minStep = 0; k = 0 turns it off (fixed aging, as
// described at TaskQueue).
//
// The rule. A ready task of level L below Critical, which has waited age
// and has B tasks ready in the levels above it, has the effective level
//
//	L + floor(age / s),  s = step                       if B <= k,
//	                     s = max(minStep, step * k / B)  if B > k,
//
// where step is the aging step (WithAgingStep) and minStep 0 means a
// hundredth of it (100 ms by default). Dequeue takes the head with the
// highest effective level, a tie going to the higher original level.
// Critical tasks are still served first. Unlike fixed aging, the effective
// level of High, Normal and Low tasks is not capped at Critical: capped, the
// head of a High backlog that has itself waited a step ties with every aged
// Low task, and wins.
//
// What it gives. With at most k tasks ahead of it a task ages exactly as
// with fixed aging: no faster than one level per step, so order stays
// strict while no task has waited a whole step. Under a backlog deeper than
// k the step shrinks in proportion to it, never below minStep. Under a
// saturating stream of work g levels above, served at rate r with a backlog
// of B, a waiting task gets out after about k/r + (g+1)*step*k/B while the
// floor does not bind (B <= step*k/minStep: 6400 tasks by default), which
// stays bounded however deep the backlog: about 3 s for a Low task behind
// 1000 High tasks served at 50 per second, by default. With fixed aging it
// waits until that backlog's heads are younger than one step, in practice
// until the stream stops, or until its own deadline.
//
// k must be at least 0 and at most 2^20, and step*k at most 2^64 ns;
// minStep, if set, positive and at most the aging step.
func WithAdaptiveAging(k int, minStep time.Duration) QueueOption {
	return func(c *queueConfig) { c.adaptiveK, c.adaptiveMin = k, minStep }
}

// WithExpiryHandler sets fn, called once for every task removed for its
// deadline, with wasInFlight telling whether it had been dequeued. fn runs
// without the queue lock held, in the sweeper's goroutine or in that of the
// Dequeue that met the expired task; it may call the queue.
func WithExpiryHandler(fn func(t *QueuedTask, wasInFlight bool)) QueueOption {
	return func(c *queueConfig) { c.onExpire = fn }
}

// WithSweepInterval sets how often the sweeper started by Start looks for
// tasks past their deadline. The default is 250 ms.
func WithSweepInterval(d time.Duration) QueueOption {
	return func(c *queueConfig) { c.sweepInterval = d }
}

// validate joins every problem of c into one error.
func (c *queueConfig) validate() error {
	errs := c.errs
	for l, n := range c.limits {
		if n <= 0 {
			errs = append(errs, fmt.Errorf("limit of the %s level is %d: want at least 1", Level(l), n))
		}
	}
	if c.defaultTimeout <= 0 {
		errs = append(errs, fmt.Errorf("default timeout is %v: want a positive duration", c.defaultTimeout))
	}
	if c.agingStep < 0 {
		errs = append(errs, fmt.Errorf("aging step is %v: want 0 (off) or a positive duration", c.agingStep))
	}
	switch k, minStep := c.adaptiveK, c.adaptiveMin; {
	case k < 0 || k > queueMaxAdaptiveK:
		errs = append(errs, fmt.Errorf("adaptive aging k is %d: want 0 (off) to %d", k, queueMaxAdaptiveK))
	case k > 0 && minStep < 0:
		errs = append(errs, fmt.Errorf("adaptive aging min step is %v: want 0 (a hundredth of the aging step) or a positive duration", minStep))
	case k > 0 && minStep > c.agingStep && c.agingStep > 0:
		errs = append(errs, fmt.Errorf("adaptive aging min step is %v: want at most the aging step, %v", minStep, c.agingStep))
	case k > 0 && c.agingStep > 0:
		if hi, _ := bits.Mul64(uint64(c.agingStep), uint64(k)); hi > 0 {
			errs = append(errs, fmt.Errorf("aging step %v times adaptive aging k %d is beyond 2^64 ns: want a shorter step or a smaller k", c.agingStep, k))
		}
	}
	if c.sweepInterval <= 0 {
		errs = append(errs, fmt.Errorf("sweep interval is %v: want a positive duration", c.sweepInterval))
	}
	return errors.Join(errs...)
}

// setAgingFloor sets c.agingFloor, the shortest effective aging step, and
// c.stepK for a valid c.
func (c *queueConfig) setAgingFloor() {
	c.agingFloor = int64(c.agingStep)
	c.stepK = uint64(c.agingStep) * uint64(c.adaptiveK)
	if c.adaptiveK > 0 {
		c.agingFloor = int64(c.adaptiveMin)
		if c.agingFloor == 0 {
			c.agingFloor = max(1, int64(c.agingStep)/100)
		}
	}
}
