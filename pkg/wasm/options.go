package wasm

import (
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Limits bounds one run of a module. In a manifest a zero field means "the
// node's default"; the node's Options clamp every field (see Options).
type Limits struct {
	// Memory is the most linear memory the module may have, rounded down
	// to whole MiB (to whole 64 KiB wasm pages below 1 MiB). JSON: "64MiB".
	Memory Size `json:"memory,omitzero"`
	// Timeout is the longest a run may take; the task's own deadline can
	// stop it sooner. JSON: "30s".
	Timeout Duration `json:"timeout,omitzero"`
	// Input is the most bytes a task may give the module on stdin.
	Input Size `json:"input,omitzero"`
	// Output is the most bytes the module may write to stdout; a module
	// that writes more is stopped with ErrOutputTooLarge.
	Output Size `json:"output,omitzero"`
}

// Node-wide defaults and caps used when Options leaves a field zero.
const (
	DefaultMaxModule       = 32 * MiB
	DefaultMaxMemory       = 256 * MiB
	DefaultMemory          = 64 * MiB
	DefaultMaxTimeout      = Duration(5 * time.Minute)
	DefaultTimeout         = Duration(30 * time.Second)
	DefaultMaxInput        = 16 * MiB
	DefaultMaxOutput       = 16 * MiB
	DefaultOutput          = 1 * MiB
	pageSize          Size = 64 * KiB
	maxPages               = 65536 // wasm32: 4 GiB
	minMemory              = pageSize
	minTimeout             = Duration(time.Millisecond)
)

// Options configures an Engine: the node's caps and defaults. The daemon
// fills them from its config.
type Options struct {
	// MaxModule caps the size of a module's bytes. Default 32MiB.
	MaxModule Size
	// Max caps every limit of every manifest; a manifest asking for more
	// gets Max. Zero fields: 256MiB memory, 5m timeout, 16MiB input,
	// 16MiB output.
	Max Limits
	// Default is what a manifest that leaves a limit zero gets, clamped to
	// Max. Zero fields: 64MiB memory, 30s timeout, input = Max.Input,
	// 1MiB output.
	Default Limits
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// withDefaults fills zero fields and checks the rest.
func (o Options) withDefaults() (Options, error) {
	fill := func(p *Size, v Size) {
		if *p == 0 {
			*p = v
		}
	}
	fill(&o.MaxModule, DefaultMaxModule)
	fill(&o.Max.Memory, DefaultMaxMemory)
	fill(&o.Max.Input, DefaultMaxInput)
	fill(&o.Max.Output, DefaultMaxOutput)
	if o.Max.Timeout == 0 {
		o.Max.Timeout = DefaultMaxTimeout
	}
	fill(&o.Default.Memory, DefaultMemory)
	fill(&o.Default.Input, o.Max.Input)
	fill(&o.Default.Output, DefaultOutput)
	if o.Default.Timeout == 0 {
		o.Default.Timeout = DefaultTimeout
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	var errs []error
	if o.MaxModule < 0 {
		errs = append(errs, fmt.Errorf("max module size is %d; it must be more than 0", o.MaxModule))
	}
	for _, l := range []struct {
		what string
		v    Limits
	}{{"max", o.Max}, {"default", o.Default}} {
		if err := l.v.check(l.what); err != nil {
			errs = append(errs, err)
		}
	}
	return o, errors.Join(errs...)
}

// check reports limits out of range: memory under 64KiB or over 4GiB,
// timeout under 1ms, negative sizes. Zero fields pass.
func (l Limits) check(what string) error {
	var errs []error
	switch {
	case l.Memory < 0, l.Memory > 0 && l.Memory < minMemory:
		errs = append(errs, fmt.Errorf("%s memory %s is under one wasm page (64KiB)", what, l.Memory))
	case l.Memory > maxPages*pageSize:
		errs = append(errs, fmt.Errorf("%s memory %s is over 4GiB, all a 32-bit module can address", what, l.Memory))
	}
	if l.Timeout < 0 || l.Timeout > 0 && l.Timeout < minTimeout {
		errs = append(errs, fmt.Errorf("%s timeout %s is under 1ms", what, l.Timeout))
	}
	if l.Input < 0 {
		errs = append(errs, fmt.Errorf("%s input %d is negative", what, l.Input))
	}
	if l.Output < 0 {
		errs = append(errs, fmt.Errorf("%s output %d is negative", what, l.Output))
	}
	return errors.Join(errs...)
}

// effective returns the limits a run of a module with manifest limits m
// gets: each zero field takes the default, and each field is clamped to
// the cap.
func (o Options) effective(m Limits) Limits {
	pick := func(v, def, max Size) Size {
		if v == 0 {
			v = def
		}
		return min(v, max)
	}
	out := Limits{
		Memory: pick(m.Memory, o.Default.Memory, o.Max.Memory),
		Input:  pick(m.Input, o.Default.Input, o.Max.Input),
		Output: pick(m.Output, o.Default.Output, o.Max.Output),
	}
	out.Timeout = m.Timeout
	if out.Timeout == 0 {
		out.Timeout = o.Default.Timeout
	}
	out.Timeout = min(out.Timeout, o.Max.Timeout)
	// Whole MiB (whole 64 KiB pages below 1 MiB): wazero enforces pages,
	// and the Engine keeps a runtime per distinct limit, so whole MiB
	// bound how many runtimes manifests (some from peers) can make it
	// keep: at most Max.Memory/1MiB + 16.
	if out.Memory >= MiB {
		out.Memory = out.Memory / MiB * MiB
	} else {
		out.Memory = max(out.Memory/pageSize, 1) * pageSize
	}
	return out
}

// pages is the memory limit in wasm pages.
func (l Limits) pages() uint32 { return uint32(l.Memory / pageSize) }
