package grid

import (
	"errors"
	"fmt"
	"time"
)

// Defaults of a TaskQueue.
const (
	queueDefaultMaxPerLevel   = 1000
	queueDefaultTimeout       = 300 * time.Second
	queueDefaultAgingStep     = 10 * time.Second
	queueDefaultSweepInterval = 250 * time.Millisecond
)

// QueueOption configures a TaskQueue in NewTaskQueue.
type QueueOption func(*queueConfig)

type queueConfig struct {
	limits         [NumLevels]int
	defaultTimeout time.Duration
	agingStep      time.Duration
	onExpire       func(t *QueuedTask, wasInFlight bool)
	sweepInterval  time.Duration
	errs           []error // problems found while applying options
}

func defaultQueueConfig() queueConfig {
	c := queueConfig{
		defaultTimeout: queueDefaultTimeout,
		agingStep:      queueDefaultAgingStep,
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
	if c.sweepInterval <= 0 {
		errs = append(errs, fmt.Errorf("sweep interval is %v: want a positive duration", c.sweepInterval))
	}
	return errors.Join(errs...)
}
