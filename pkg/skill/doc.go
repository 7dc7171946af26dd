// Package skill is the skill layer of cortexd: task types, the registry of
// local skills and the built-ins, the executor, the router and the
// DelegationCoordinator that runs each task locally or on a peer.
//
// It drives the grid layer (queue, metrics, orchestrator) and uses the
// reputation package for trust.
package skill
