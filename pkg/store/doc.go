// Package store is cortexd's persistent state (issue 5): the tasks
// submitted to this node and where each stands, the tasks this node runs
// for peers and their results until delivered, the trust snapshot and the
// metrics. It is one bbolt file, DIR/state.db, in the daemon's repo
// directory, opened by one process at a time (a second one fails with an
// *InUseError naming the holder's pid, read from DIR/state.pid).
//
// # Layering
//
// store imports grid (TaskID, InputKind, ErrorCode) and reputation
// (Snapshot), never skill: the skill layer imports store, so the layers
// read cmd/cortexd -> api -> skill -> store -> grid -> wire. The record
// types (TaskRecord, Transition, RemoteRecord, Result) are the store's own;
// State has the values and names of skill.TaskState, so converting is
// State(ts) one way and skill.TaskState(s) the other. The coordinator
// declares, where it uses them, the few methods it needs (say Accept and
// UpdateAsync) as an interface that *Store satisfies, so that its tests
// can run without a file.
//
// # Durability and group commit
//
// Every write goes through one writer goroutine. It takes everything
// queued while its previous commit ran (up to 1024 writes), applies it in
// one transaction and commits it with one sync to disk, then answers each
// write. A synchronous write (Accept, Update, AcceptRemote, ...) returns
// only after its commit; an Async one calls done after it. Writes apply in
// the order they were queued. A lone caller pays one commit and nothing
// more; concurrent callers share commits.
//
// Under load the writer also lingers before a commit, until the batch
// holds as many writes as the previous one or for at most min(1 ms, the
// previous commit's duration): without that, 64 closed-loop submitters
// settle into two groups that alternate, each sync carrying half of them.
// It lingers only when the previous commit carried more than one write and
// ended less than its own duration ago, so a lone or occasional caller
// never waits. WithBatch(maxSize, maxDelay) sets the two bounds.
//
// bbolt's DB.Batch, which PERFORMANCE.md points at, groups writers too,
// but each batch starts with a timer (MaxBatchDelay) that every caller
// waits out, alone or not, on top of the commit; a delay shorter than a
// commit lets triggered batches queue behind the write lock under
// sustained load; and it gives no order between writes, which the task
// state changes need. BenchmarkAccept64 and BenchmarkAccept1 compare the
// variants in one run; figures from `go test -run '^$' -bench .
// -benchtime 2s` on the 2-core build machine while other builds ran (load
// 9, a commit then takes about 2 ms; the ratios, not the absolute figures,
// are what carries over):
//
//	64 submitters                      tasks/s  fsyncs/task
//	store (defaults: linger <= 1 ms)    19,472  0.0159
//	store, linger <= 200 us             14,880  0.0159
//	store, no linger                     8,762  0.0311
//	bbolt DB.Batch, 1 ms / 64           14,299  0.0159
//	bbolt DB.Batch, defaults 10 ms       3,307  0.0156
//	one db.Update per task                 835  1
//	no store (map under a mutex)     1,142,901  0
//
//	1 submitter (latency)              per task
//	store (defaults)                   3.2 ms
//	one db.Update per task             2.2 ms
//	bbolt DB.Batch, 1 ms / 64          4.0 ms
//	bbolt DB.Batch, defaults 10 ms    18.5 ms
//
// In a quieter run (load 4, a commit about 0.4 ms) a lone caller was
// answered in 0.37-0.39 ms by the store, 0.36-0.66 ms by one db.Update,
// 1.5-2.5 ms by DB.Batch at 1 ms and 11-12 ms by DB.Batch's defaults. In
// three interleaved rounds of the 64-submitter case the store's defaults
// beat DB.Batch at 1 ms each time (15-27k against 9-14k tasks/s). Each
// commit is two fdatasyncs in bbolt (data pages, then the meta page).
//
// # Guarantees
//
//   - Accept returns after the task is on disk; the API answers after it.
//     Its ctx is looked at only before the write is queued, so that an
//     error never hides a task that will run anyway.
//   - A terminal state must be on disk before its result is reported:
//     before Wait returns it and before the terminal Event is published.
//     The coordinator gets this without blocking a worker by calling
//     UpdateAsync in finishLocked and closing the record's done channel
//     (and publishing the event) in the callback. Status and List read the
//     coordinator's memory, so they may show a terminal state up to one
//     commit (about 0.3-3 ms) before it is durable; after a crash in that
//     window the task is run again, which the executing side's idempotency
//     makes harmless for remote attempts.
//   - Other state changes (attempt N queued, delegated to peer X, retrying)
//     may be written behind with UpdateAsync(tr, nil): losing the last of
//     them in a crash only means that Recover resumes the task from an
//     earlier step. Out-of-order changes are ignored (Update).
//
// # Integration plan
//
// Daemon (cmd/cortexd, step "open store"): store.Open(repoDir,
// store.WithRetention(cfg.ResultRetention), store.WithLogger(...)), then
// Start(ctx); Close last, after the coordinator, so that its final writes
// are committed. At startup: LoadTrust and reputation.Graph.Restore
// (log and go on if the snapshot is refused); LoadMetrics into a
// grid.MetricsSnapshot (restoring it into a MetricsTracker needs a method
// grid does not have yet). Every minute and at shutdown: SaveTrust(
// graph.Snapshot()) and SaveMetrics(tracker.Snapshot()).
//
// Coordinator (pkg/skill), given the store as an optional dependency:
//
//  1. SubmitTask: after checkTask and before the first attempt starts,
//     Accept(ctx, record) with StateQueued; if submitTo then fails, Update
//     (synchronously) to StateFailed, so that Recover does not run a task
//     whose submission returned an error.
//  2. beginLocked, retry: UpdateAsync(Transition{State: queued or
//     delegated or retrying, Attempt: n, Peer: p}, nil), under the shard
//     lock so that the queue order is the order of the changes.
//  3. finishLocked: UpdateAsync(terminal transition with the Result,
//     done) where done closes r.done and publishes the terminal event.
//  4. Start: Recover() before accepting tasks. For each record: past its
//     deadline, finish it StateTimedOut; queued, retrying or running
//     locally, start attempt Attempt+1 (Tried seeds the peers to avoid);
//     delegated to peer P, send the same task ID to P again first: the
//     executor answers from what it knows (below), and an unreachable P
//     turns into an ordinary retry.
//  5. HandleTask (executing side): Remote(from, id) first; a terminal
//     record is answered at once with its Result (then
//     MarkDeliveredAsync), except a canceled one, which ForgetRemote drops
//     so that the task runs again; a live one takes the running task's
//     reply as today. Otherwise admit and AcceptRemoteAsync(record, nil).
//     On the result: FinishRemoteAsync(from, id, result, delivered, nil).
//     A task stopped because the requester's connection was lost
//     (grid.TaskAbandoner) is not finished but forgotten
//     (ForgetRemoteAsync): a canceled record would otherwise answer the
//     requester's next request for it.
//  6. Start (executing side): RecoverRemote(), and FinishRemote each with
//     a CodeInternal "executor restarted" failure, not delivered: the
//     requester gets it when it asks again and retries elsewhere.
//  7. When a peer connects: PendingDeliveries(peer), resend, then
//     MarkDelivered. Knowing whether a reply reached the requester needs
//     grid.TaskHandler's reply to return an error, and pushing a result
//     unasked needs a wire message; until then results are delivered when
//     the requester repeats the request (step 4).
//
// Records older than the retention (finished tasks; peers' tasks finished,
// delivered or not; peers' tasks that never finished, past their
// deadline) are removed by the pruner that Start runs, at most 2048 per
// transaction.
package store
