// Package modules moves wasm skill modules between nodes over the libp2p
// protocol /cortex/module/1.0.0 (proto/cortex/v1/module.proto and
// docs/protocol.md are its specification).
//
//   - Server answers fetches for the modules this node runs (Source says
//     which), with a rate limit per peer and a bound on transfers at once.
//   - Fetch gets one module from one peer: every size is capped before
//     anything is allocated, every read has a time limit, and the sha256
//     is checked before the bytes go anywhere.
//   - Cache keeps fetched modules on disk, apart from the operator's
//     wasm.Store, within a byte budget, least recently used out first.
//   - Fetcher is the executor's side (skill.ModuleFetcher): it decides
//     whose modules this node fetches (Options.Mode), shares one fetch
//     among concurrent tasks for the same hash, verifies, compiles and
//     registers the skill.
package modules
