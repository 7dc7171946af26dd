// Package client is a typed Go client for cortexd's HTTP API (version 1).
// The cortexd CLI uses it for every command that talks to a running
// daemon. It imports only the API's JSON types (pkg/api/apiv1).
//
// FromRepo finds a local daemon the way the CLI does: the URL in DIR/api
// (written by `cortexd daemon`) and the bearer token in DIR/api-token.
// Errors that mean no daemon answered wrap ErrUnreachable; error answers
// are *Error values carrying the API's error code.
package client
