// Package reputation keeps what this node knows about how far it can trust
// its peers: local trust learned from task outcomes, skill ratings per
// (peer, skill), and EigenTrust-style global trust (Kamvar, Schlosser and
// Garcia-Molina, 2003). It is a leaf: it imports nothing from cortexd.
package reputation
