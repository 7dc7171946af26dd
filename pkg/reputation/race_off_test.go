//go:build !race

package reputation

// simSeeds is how many seeds TestSimulationTrustCutsWrongResults averages.
const simSeeds = 3
