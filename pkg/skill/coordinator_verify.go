package skill

import (
	"fmt"

	"github.com/cortexgrid/cortexd/pkg/grid"
	"github.com/cortexgrid/cortexd/pkg/reputation"
	"github.com/cortexgrid/cortexd/pkg/wire"
)

// OutputChecker is implemented by a Skill that can tell a wrong output
// from a right one. The coordinator checks, with the skill as this node's
// Registry holds it, every successful output that a peer returns for that
// skill: an output that CheckOutput refuses fails the attempt, which is
// retried elsewhere, and counts against the peer as a wrong result,
// which weighs four times a failure in its trust. CheckOutput must be safe
// for concurrent use and quick: it runs on the goroutine that delivers
// results. It is not called for outputs of this node.
type OutputChecker interface {
	CheckOutput(in SkillInput, out []byte) error
}

// checkOutput turns o, the success of a remote attempt of r, into a wrong
// result if its output breaks a limit or fails the skill's output checks
// (see OutputChecker).
func (c *DelegationCoordinator) checkOutput(r *record, o outcome) outcome {
	if o.kind != kindSuccess {
		return o
	}
	var err error
	if n := len(o.res.Output); n > wire.MaxTaskOutput {
		err = fmt.Errorf("output of %d bytes is over the limit of %d bytes (wire.MaxTaskOutput)", n, wire.MaxTaskOutput)
	} else if e := c.reg.find(r.task.Skill, r.task.Version); e != nil {
		if oc, ok := e.skill.(OutputChecker); ok {
			err = oc.CheckOutput(r.task.Input, o.res.Output)
		}
	}
	if err == nil {
		return o
	}
	return outcome{
		kind: kindRetry, peer: o.peer, code: grid.CodeInternal, elapsed: o.elapsed,
		trust: reputation.OutcomeWrongResult,
		err:   fmt.Errorf("peer %s: %w: output fails the checks of skill %q: %w", o.peer, grid.ErrInvalidResult, r.task.Skill, err),
	}
}
