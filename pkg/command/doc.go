// Package command runs command skills: programs the node's operator
// declares in the node's config (never a peer), one Spec each. A task's
// input is the program's stdin and its stdout is the output.
//
// Each task runs the program through a small re-exec shim: the daemon
// starts its own binary with the hidden argument ShimArg, hands it the
// task's spec on fd 3, and the shim confines itself (resource limits,
// Landlock filesystem and network rules, a Landlock signal scope, no new
// privileges) and then executes the program, so the confinement applies
// to the program and everything it forks. The shim is the program's
// process-group leader; on the task's deadline or cancel the whole group
// gets SIGTERM and, after a short grace, SIGKILL, and whatever is left of
// the group is killed when the program exits.
//
// This is not a container: the program runs as the daemon's user, sees
// the same network unless Spec.DenyNetwork, and every path of the
// filesystem unless Spec.FS lists the ones it may use. See Spec for each
// rule and what it does not cover.
//
// Linux only: on other systems New returns ErrUnsupported.
package command
