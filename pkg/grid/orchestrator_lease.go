package grid

import (
	"fmt"
	"time"

	"github.com/cortexgrid/cortexd/pkg/wire"
)

// leaseChecksPerInterval is how many lease checks a requester's stream
// runs per heartbeat interval: a task is given up between K and K+1/2
// intervals after it was last heard of.
const leaseChecksPerInterval = 2

// leaseCheckPeriod is the time between two lease checks of a stream.
func (o *Orchestrator) leaseCheckPeriod() time.Duration {
	return o.cfg.heartbeat / leaseChecksPerInterval
}

// leaseChecks returns the lease, in lease checks, for a peer that declared
// it sends heartbeats every peerInterval (0: not known yet). The peer is
// held to the longer of its interval and ours, capped.
func (o *Orchestrator) leaseChecks(peerInterval time.Duration) uint32 {
	period := o.leaseCheckPeriod()
	iv := max(o.cfg.heartbeat, min(peerInterval, maxHeartbeatInterval))
	perInterval := (iv + period - 1) / period
	return uint32(o.cfg.leaseMisses) * uint32(perInterval)
}

// onHeartbeat renews the lease of every pending task the peer listed.
// IDs that are not 32 bytes are skipped, and the heartbeat is counted
// malformed.
func (out *outStream) onHeartbeat(e *wire.Heartbeat) {
	var lease uint32
	if e.IntervalMs > 0 {
		lease = out.o.leaseChecks(time.Duration(e.IntervalMs) * time.Millisecond)
	}
	bad := false
	out.mu.Lock()
	now := out.checks
	out.heard = now
	if lease != 0 {
		out.lease = lease
	}
	for _, b := range e.TaskIDs {
		if len(b) != len(TaskID{}) {
			bad = true
			continue
		}
		if c, ok := out.pending[TaskID(b)]; ok {
			c.heard = now
		}
	}
	out.mu.Unlock()
	if bad {
		out.o.stats.malformed.Add(1)
		out.o.log.Debug("peer sent a heartbeat with task IDs that are not 32 bytes; skipping them", "peer", out.peer)
	}
}

// checkLeases advances the stream's lease clock and gives up on the
// pending tasks not heard of for the lease. If the peer sent nothing at
// all meanwhile, it is unreachable: the stream fails, and every task on
// it. Otherwise the peer is alive but has stopped reporting those tasks:
// each fails with ErrLeaseExpired and gets a TaskCancel. It runs on the
// writer's goroutine, which sends the cancels right after.
func (out *outStream) checkLeases() {
	out.mu.Lock()
	if out.dead {
		out.mu.Unlock()
		return
	}
	out.checks++
	now := out.checks
	expired := 0
	for _, c := range out.pending {
		if now-c.heard > out.lease {
			expired++
		}
	}
	if expired == 0 {
		out.mu.Unlock()
		return
	}
	period := out.o.leaseCheckPeriod()
	lease := time.Duration(out.lease) * period
	if silent := now - out.heard; silent > out.lease {
		out.mu.Unlock()
		out.failUnresponsive(time.Duration(silent) * period)
		return
	}
	calls := out.expired[:0]
	for id, c := range out.pending {
		if now-c.heard > out.lease {
			delete(out.pending, id)
			out.unwatchLocked(c)
			calls = append(calls, c)
		}
	}
	out.mu.Unlock()
	for i, c := range calls {
		out.o.log.Debug("task lease expired: peer alive but no longer reports the task", "peer", out.peer, "task", c.id.Short(), "lease", lease)
		f := getFrame()
		*f = appendCancelFrame((*f)[:0], &c.id, c.attempt)
		_, _ = out.fw.enqueue(f) // fails only once the stream is closed
		c.finish(nil, fmt.Errorf("%w: the peer's heartbeats have not listed the task for %s", ErrLeaseExpired, lease))
		calls[i] = nil
	}
	out.expired = calls[:0]
}

// failUnresponsive fails the stream of a peer that sent nothing on it for
// silent while tasks waited: unreachable if the connection is still up,
// dead if it closed.
func (out *outStream) failUnresponsive(silent time.Duration) {
	if out.s.Conn().IsClosed() {
		out.fail(fmt.Errorf("%w: connection closed", ErrPeerGone))
		return
	}
	out.o.log.Debug("peer unresponsive: nothing on its task stream with the connection up; resetting it", "peer", out.peer, "silent", silent)
	out.fail(fmt.Errorf("%w: %w: nothing heard on the task stream for %s with the connection up", ErrPeerGone, ErrLeaseExpired, silent))
}
