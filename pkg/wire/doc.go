// Package wire is the task protocol's framing: the protocol ID, the frame
// size cap, and a Reader and Writer for varint-delimited protobuf frames on
// a libp2p stream. Every frame is a uvarint body length followed by one
// cortex.v1.Envelope (generated in package cortexv1); a Reader checks the
// length against its cap before it allocates anything for the body.
//
// ReadMsg and WriteMsg use the generated code. The task stream's hot path
// uses ReadFrame and WriteFrame, which move whole frames without touching
// their contents, and the hand codec of codec.go (Envelope,
// DecodeEnvelope, Append*Frame), which allocates nothing and is held to
// the generated code by FuzzEnvelopeCodec. Converting messages to and from
// grid types is the grid package's business: wire imports nothing from the
// rest of cortexd.
package wire
