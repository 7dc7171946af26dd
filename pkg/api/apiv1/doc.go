// Package apiv1 holds the JSON types of cortexd's HTTP API, version 1: what
// the server (pkg/api) sends and the client (pkg/client) reads. It imports
// nothing from the engine, so a client needs only this package.
package apiv1
