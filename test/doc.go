// Package test holds cortexd's end-to-end tests and benchmarks. They run
// real libp2p hosts on loopback, in process (grid_test.go, built by the
// harness in harness_test.go) or as cortexd processes built from the tree
// (daemon_test.go), and measure the task path against raw libp2p baselines
// in the same run (bench_test.go, remote_bench_test.go):
//
//	go test -race -count=1 ./test/
//	go test -run XXX -bench . -benchtime 2s ./test/
//
// The package has no API of its own.
package test
