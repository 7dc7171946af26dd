package grid

import (
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/libp2p/go-libp2p/core/peer"

	"github.com/cortexgrid/cortexd/pkg/wire"
	"github.com/cortexgrid/cortexd/pkg/wire/cortexv1"
)

// progressRecorder is a requester's TaskHandler that keeps the progress
// reports it is given.
type progressRecorder struct {
	*orchHandler
	mu      sync.Mutex
	reports []recordedProgress
}

type recordedProgress struct {
	id       TaskID
	attempt  int
	fraction float64
	msg      string
}

func (r *progressRecorder) TaskProgress(id TaskID, attempt int, fraction float64, msg string) {
	r.mu.Lock()
	r.reports = append(r.reports, recordedProgress{id, attempt, fraction, msg})
	r.mu.Unlock()
}

func (r *progressRecorder) got() []recordedProgress {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]recordedProgress(nil), r.reports...)
}

var _ ProgressSink = (*progressRecorder)(nil)

// readUntilResult reads the frames a raw requester gets for one task,
// up to and including its result, and then checks that nothing more comes
// for a while.
func readUntilResult(t *testing.T, r *wire.Reader) []*cortexv1.Envelope {
	t.Helper()
	var got []*cortexv1.Envelope
	for {
		env := &cortexv1.Envelope{}
		if err := r.ReadMsg(env); err != nil {
			t.Fatalf("reading frames after %d: %v", len(got), err)
		}
		if env.GetHeartbeat() != nil {
			continue
		}
		got = append(got, env)
		if env.GetResult() != nil {
			return got
		}
	}
}

// TestProgressIsCoalescedAndOrderedBetweenAckAndResult has a skill report
// progress 2000 times in 600 ms: the requester sees the ack first, at
// most one report per 100 ms (plus the first), rising, then the result,
// and the last value reported before a pause reaches it (the trailing
// send).
func TestProgressIsCoalescedAndOrderedBetweenAckAndResult(t *testing.T) {
	p := newOrchPair(t, WithAckDelay(0))
	const run = 600 * time.Millisecond
	p.handler.set(func(_ peer.ID, task *RemoteTask, reply func(*RemoteResult)) error {
		go func() {
			start := time.Now()
			for i := 0; time.Since(start) < run; i++ {
				task.ReportProgress(float64(i)/4000, "working")
				time.Sleep(300 * time.Microsecond)
			}
			task.ReportProgress(0.9, "almost")
			time.Sleep(3 * ProgressInterval) // the trailing send of 0.9
			reply(&RemoteResult{ID: task.ID, Success: true, Output: task.Input})
			task.ReportProgress(1, "after the result: never sent")
		}()
		return nil
	})
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	s := rawTaskStream(t, rogue, p.serverH.ID())
	task := p.task("x")
	start := time.Now()
	if _, err := s.Write(envelopeFrame(t, taskEnv(task))); err != nil {
		t.Fatal(err)
	}
	r := wire.NewReader(s, 0)
	frames := readUntilResult(t, r)
	elapsed := time.Since(start)
	if frames[0].GetAck() == nil || !frames[0].GetAck().GetAccepted() {
		t.Fatalf("first frame %v, want the accepting ack", frames[0])
	}
	reports := frames[1 : len(frames)-1]
	if max := int(elapsed/ProgressInterval) + 2; len(reports) > max || len(reports) < 3 {
		t.Fatalf("%d progress reports in %s, want 3 to %d (at most one per %s)", len(reports), elapsed, max, ProgressInterval)
	}
	last := -1.0
	for i, env := range reports {
		pr := env.GetProgress()
		if pr == nil {
			t.Fatalf("frame %d between ack and result is %v, want a progress report", i+1, env)
		}
		if TaskID(pr.GetTaskId()) != task.ID || pr.GetAttempt() != 1 || pr.GetFraction() < last {
			t.Fatalf("report %d = %v, want task %s attempt 1, not below %v", i, pr, task.ID.Short(), last)
		}
		last = pr.GetFraction()
	}
	if last != 0.9 || reports[len(reports)-1].GetProgress().GetMessage() != "almost" {
		t.Fatalf("last report %v, want the trailing send of 0.9 \"almost\"", reports[len(reports)-1])
	}
	// Nothing follows the result.
	_ = s.SetReadDeadline(time.Now().Add(3 * ProgressInterval))
	var env cortexv1.Envelope
	if err := r.ReadMsg(&env); err == nil && env.GetHeartbeat() == nil {
		t.Fatalf("a frame after the result: %v", &env)
	}
}

func TestProgressBeforeTheAckWaitsForIt(t *testing.T) {
	p := newOrchPair(t, WithAckDelay(50*time.Millisecond))
	p.handler.set(func(_ peer.ID, task *RemoteTask, reply func(*RemoteResult)) error {
		task.ReportProgress(0.25, "early") // HandleTask has not returned: no ack yet
		time.AfterFunc(300*time.Millisecond, func() { reply(&RemoteResult{ID: task.ID, Success: true}) })
		return nil
	})
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	s := rawTaskStream(t, rogue, p.serverH.ID())
	if _, err := s.Write(envelopeFrame(t, taskEnv(p.task("x")))); err != nil {
		t.Fatal(err)
	}
	frames := readUntilResult(t, wire.NewReader(s, 0))
	if len(frames) != 3 || frames[0].GetAck() == nil || frames[1].GetProgress().GetFraction() != 0.25 {
		t.Fatalf("frames %v, want ack, the report of 0.25, result", frames)
	}
}

func TestReportProgressClampsAndCuts(t *testing.T) {
	p := newOrchPair(t, WithAckDelay(0))
	long := strings.Repeat("é", 150) // 300 bytes
	p.handler.set(func(_ peer.ID, task *RemoteTask, reply func(*RemoteResult)) error {
		go func() {
			time.Sleep(20 * time.Millisecond)
			task.ReportProgress(math.NaN(), "dropped")
			task.ReportProgress(7, long)
			time.Sleep(3 * ProgressInterval)
			reply(&RemoteResult{ID: task.ID, Success: true})
		}()
		return nil
	})
	rogue := newOrchHost(t)
	connectOrchHosts(t, rogue, p.serverH)
	s := rawTaskStream(t, rogue, p.serverH.ID())
	if _, err := s.Write(envelopeFrame(t, taskEnv(p.task("x")))); err != nil {
		t.Fatal(err)
	}
	frames := readUntilResult(t, wire.NewReader(s, 0))
	if len(frames) != 3 {
		t.Fatalf("frames %v, want ack, one report, result", frames)
	}
	pr := frames[1].GetProgress()
	if pr.GetFraction() != 1 || len(pr.GetMessage()) != 200 || pr.GetMessage() != strings.Repeat("é", 100) {
		t.Fatalf("report %v (%d bytes), want fraction 1 and the message cut to 200 bytes", pr, len(pr.GetMessage()))
	}
}

func progressEnv(id []byte, attempt uint32, fraction float64, msg string) *cortexv1.Envelope {
	return &cortexv1.Envelope{Body: &cortexv1.Envelope_Progress{Progress: &cortexv1.TaskProgress{
		TaskId: id, Attempt: attempt, Fraction: fraction, Message: msg,
	}}}
}

// TestRequesterChecksProgressReports has a hand-driven executor send good
// and bad reports for one task: the requester's sink gets only the good
// ones within the rate, the bad ones are counted, and the task still
// succeeds.
func TestRequesterChecksProgressReports(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	sent := make(chan struct{})
	serveRawExecutor(t, serverH, func(rp *rawPeer, env *cortexv1.Envelope) {
		req := env.GetRequest()
		if req == nil {
			return
		}
		id, a := req.TaskId, req.Attempt
		other := NewTaskID()
		rp.send(t,
			progressEnv(id, a, 0.01, "before the ack"),
			&cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: id, Accepted: true, Attempt: a}}},
			progressEnv(id, a+1, 0.1, "another attempt"),
			progressEnv(other[:], a, 0.1, "another task"),
			progressEnv(id, a, 1.5, "over 1"),
			progressEnv(id, a, -0.1, "below 0"),
			progressEnv(id, a, math.NaN(), "NaN"),
			progressEnv(id, a, math.Inf(1), "infinite"),
			progressEnv(id, a, 0.2, strings.Repeat("x", MaxProgressMessage+1)),
			progressEnv(id[:5], a, 0.2, "short ID"),
		)
		// A progress frame that does not decode (its message is not
		// UTF-8), for this very task: dropped, the task goes on.
		rp.mu.Lock()
		_ = rp.w.WriteFrame(wire.AppendProgressFrame(nil, &wire.Progress{TaskID: id, Attempt: a, Fraction: 0.2, Message: []byte("\xff")}))
		_ = rp.w.Flush()
		rp.mu.Unlock()
		for i := range 8 { // a burst of 8: 5 pass
			rp.send(t, progressEnv(id, a, 0.3+float64(i)/100, "ok"))
		}
		close(sent)
		time.Sleep(250 * time.Millisecond) // tokens come back
		rp.send(t, progressEnv(id, a, 0.9, strings.Repeat("y", MaxProgressMessage)))
		rp.send(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: id, Success: true, Attempt: a}}})
	})
	rec := &progressRecorder{orchHandler: newOrchHandler()}
	client := startOrchestrator(t, clientH, rec)
	p := &orchPair{clientH: clientH}
	task := p.task("x")
	if _, err := client.Delegate(orchCtx(t), serverH.ID(), task); err != nil {
		t.Fatalf("Delegate: %v; bad progress reports must not fail the task", err)
	}
	<-sent
	got := rec.got()
	if len(got) != 6 {
		t.Fatalf("sink got %d reports %v, want the 5 of the burst and the last", len(got), got)
	}
	for i, r := range got[:5] {
		if r.id != task.ID || r.attempt != 1 || r.fraction != 0.3+float64(i)/100 || r.msg != "ok" {
			t.Fatalf("report %d = %+v", i, r)
		}
	}
	if got[5].fraction != 0.9 || len(got[5].msg) != MaxProgressMessage {
		t.Fatalf("last report %+v, want 0.9 with a message of %d bytes", got[5], MaxProgressMessage)
	}
	st := client.Stats()
	// Malformed: over 1, below 0, NaN, infinite, oversize, short ID, not
	// UTF-8. Dropped: before the ack, another attempt, another task, 3
	// over the rate.
	if st.Malformed < 7 || st.Dropped < 6 {
		t.Fatalf("stats %+v, want at least 7 malformed and 6 dropped", st)
	}
}

// TestProgressRenewsTheLease has a hand-driven executor send no heartbeat,
// only progress reports, for three leases: the task keeps its lease.
func TestProgressRenewsTheLease(t *testing.T) {
	clientH, serverH := newOrchHost(t), newOrchHost(t)
	connectOrchHosts(t, clientH, serverH)
	serveRawExecutor(t, serverH, func(rp *rawPeer, env *cortexv1.Envelope) {
		req := env.GetRequest()
		if req == nil {
			return
		}
		id, a := req.TaskId, req.Attempt
		go func() {
			rp.send(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Ack{Ack: &cortexv1.TaskAck{TaskId: id, Accepted: true, Attempt: a}}})
			lease := testLeaseMisses * testHeartbeat
			for start := time.Now(); time.Since(start) < 3*lease; {
				time.Sleep(testHeartbeat / 2)
				rp.send(t, progressEnv(id, a, 0.5, ""))
			}
			rp.send(t, &cortexv1.Envelope{Body: &cortexv1.Envelope_Result{Result: &cortexv1.TaskResult{TaskId: id, Success: true, Attempt: a}}})
		}()
	})
	rec := &progressRecorder{orchHandler: newOrchHandler()}
	client := startOrchestrator(t, clientH, rec, leaseOpts()...)
	p := &orchPair{clientH: clientH}
	if _, err := client.Delegate(orchCtx(t), serverH.ID(), p.task("x")); err != nil {
		t.Fatalf("Delegate with progress reports but no heartbeats for 3 leases: %v", err)
	}
	if n := len(rec.got()); n == 0 {
		t.Fatal("no progress report reached the sink")
	}
}

func TestProgressBucket(t *testing.T) {
	var b progressIn
	now := time.Unix(1000, 0)
	n := 0
	for range 20 {
		if b.allow(now) {
			n++
		}
	}
	if n != progressBurst {
		t.Fatalf("a burst at one instant let %d through, want %d", n, progressBurst)
	}
	// Over 10 s at 100 reports a second, 10 a second pass (plus the burst).
	n = 0
	for i := range 1000 {
		if b.allow(now.Add(time.Duration(i+1) * 10 * time.Millisecond)) {
			n++
		}
	}
	if n < 99 || n > 101 {
		t.Fatalf("%d of 1000 reports over 10 s passed, want 100 (10/s)", n)
	}
}
