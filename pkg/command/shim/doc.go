// Package shim is the re-exec shim of command skills (see pkg/command):
// started with Arg, it reads a Spec on fd 3, confines itself (Landlock,
// no_new_privs, rlimits) and executes the program, so the confinement
// applies to the program and all it forks.
//
// It is a leaf package (no cortexd imports) so that a small binary of its
// own can serve as the shim: a process of the daemon's binary spends most
// of its start in the package initializers of everything the daemon links
// (about 10 ms here), one of this package alone about 1 ms.
package shim

// Arg is the hidden first argument that makes a binary run Main.
const Arg = "__exec-shim"
