//go:build race

package reputation

// simSeeds is how many seeds TestSimulationTrustCutsWrongResults averages:
// one under the race detector, which makes the simulation ten times slower.
const simSeeds = 1
