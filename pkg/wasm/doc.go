// Package wasm runs user-defined skills as sandboxed WebAssembly modules
// with wazero, in pure Go (the daemon still builds with CGO_ENABLED=0).
//
// # ABI
//
// A module is a WASI preview1 command (wasi_snapshot_preview1, exporting
// _start and memory). The task's input is its stdin; what it writes to
// stdout is the output; exit code 0 (or returning from _start) is success.
// A non-zero exit or a trap is a *RunError (execution_failed on the grid)
// with the end of stderr. A stderr line "cortex:progress F message" (F in
// [0, 1]) is a progress report (skill.ReportProgress), not stderr; see
// internal/progressline. The module gets no filesystem (no preopened
// directories), no network (no sockets), an empty environment and argv of
// just the skill name, unless the manifest names args and env. Any
// language that targets wasip1 works: GOOS=wasip1 GOARCH=wasm go build,
// TinyGo, Rust's wasm32-wasip1, Zig, C with wasi-sdk.
//
// # Pieces
//
//   - Manifest: name (a reputation.SkillID), version, module sha256,
//     optional input JSON Schema, Limits, deterministic. DecodeManifest
//     reads one strictly; Validate reports every bad field at once.
//   - Engine: compiles modules (once; on disk with a cache directory, so a
//     restart does not recompile) and clamps every manifest limit to the
//     node's Options.
//   - Program: one compiled module under its limits; Run instantiates it
//     afresh per task, so no state leaks from one task to the next.
//   - Store: content-addressed module files and manifests on disk;
//     Serve hands pkg/modules what it may send to peers.
//   - Skill: a Program as a skill.Skill for the registry and executor;
//     a skill.ModuleSkill, so a task's module hash is checked against it.
//   - Install and Load: the daemon's two entry points.
//
// # Limits
//
// Memory is wazero's WithMemoryLimitPages, a runtime-wide setting, so the
// Engine keeps one runtime per distinct limit (limits are whole MiB, so
// there are a few hundred at most); they share one compilation cache, so
// a module is compiled once whatever its limit. Stdin is refused
// over the input limit before the module starts. Stdout is collected up
// to the output limit: the first write past it is refused without being
// copied and stops the module, so a module writing 1 GiB costs no more
// than the limit. Time: the earlier of the task's deadline and the
// manifest's timeout stops the module, see below. Deterministic modules
// get wazero's fake clocks (wall time from 2022-01-01T00:00:00Z, 1 ms per reading), sleeps that
// return at once and a fixed-seed random source, so the same input gives
// the same output anywhere; others get the real clocks, crypto/rand and
// sleeps that end when the task does.
//
// # Deadlines: WithCloseOnContextDone is always on
//
// Compiled wasm runs on the calling goroutine and cannot be preempted: a
// module that loops without calling the host would hold its executor
// worker forever, and a peer could send one on purpose. wazero's
// WithCloseOnContextDone(true) inserts a check at each loop back-edge
// that lets a done context (or Engine.Close) stop it. In wazero v1.12 the
// check exits to Go every time (wazero issue 2466), and it costs
// (BenchmarkCloseOnContextDone, this 2-core machine, same run):
//
//	hand-written tight counting loop   1.96 ns -> 25.4 ns per iteration (13x)
//	Go-built module, 100k sha256s      160 ms  -> 1008 ms               (6.3x)
//
// The per-task floor is unchanged (it is instantiation, not looping), but
// CPU-heavy modules run several times slower. We keep it on anyway: a
// bounded task time is what lets a node run code from peers at all, and
// there is no other way to stop compiled wasm. Pending wazero changes
// (PRs 2524, 2533) test the flag inline and bring the cost near 1x; take
// them when a release has them. A further limit of v1.12: code that
// recurses deeply without loops is only checked at loop back-edges.
//
// # Costs
//
// Measured on this 2-core machine under a load average of 6-7 (other
// builds running), so the ranges are wide; ratios in one run hold.
// BenchmarkPerTask, same run: a Go function 26-43 ns; the built-in echo
// through the executor ~95 ns; the hand-written echo module 40-100 us per
// task directly, 70-100 us through the executor, 10k-24k tasks/s. Its
// floor is allocating and zeroing one 64 KiB wasm page (and the GC work
// that causes), then wazero's instantiation; a ChaCha8 random source
// (instead of wazero's, whose seeding cost ~10 us) keeps it there. A
// Go-built module costs 2.5-5 ms and 7 MiB per task: wazero applies its
// thousands of data segments and Go's runtime starts afresh in every
// instance. A reactor (BenchmarkReactor: the same work as an export of a
// Go module built with -buildmode=c-shared, called in an instance kept
// alive) costs ~4 us, about 1/1000 of that; but its heap and globals
// carry over from task to task, so one requester's input could reach
// another's output and a deterministic module would no longer be: Run
// keeps a fresh instance per task. BenchmarkCompile: the 2.3 MB Go-built module compiles in
// ~0.9 s cold; a new Engine on a warm cache directory (a restarted node)
// loads it in ~35 ms, 4% of cold.
package wasm
