// Command spinupper is a wasm guest for tests: it spends a fixed amount
// of CPU (a chain of sha256s over its input), then writes its stdin
// upper-cased. Its output depends on its input only: it is deterministic,
// and slow enough that identical tasks sent at once overlap.
package main

import (
	"bytes"
	"crypto/sha256"
	"io"
	"os"
)

func main() {
	in, err := io.ReadAll(os.Stdin)
	if err != nil {
		os.Exit(1)
	}
	sum := sha256.Sum256(in)
	for range 150_000 {
		sum = sha256.Sum256(sum[:])
	}
	if sum[0] == 0 && sum[1] == 0 && sum[2] == 0 && sum[3] == 0 {
		os.Stderr.WriteString("improbable\n") // keeps the loop from being optimized out
	}
	os.Stdout.Write(bytes.ToUpper(in))
}
