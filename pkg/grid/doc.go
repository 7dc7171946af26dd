// Package grid is the network-facing layer of cortexd: the priority task
// queue, the metrics tracker, the libp2p node (host, private DHT, capability
// gossip) and the orchestrator that carries tasks between nodes.
//
// grid never imports the skill layer. Tasks that arrive from peers reach it
// through the TaskHandler interface declared here; the skill layer reaches
// remote nodes through the Orchestrator.
package grid
