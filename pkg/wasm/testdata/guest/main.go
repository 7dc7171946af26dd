// Command guest is the Go-built wasm module of pkg/wasm's tests: a WASI
// command whose behaviour is picked by its first argument.
package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"time"
)

// runs counts the runs this instance has seen: always 1 when each task
// gets a fresh instance.
var runs int

func main() {
	runs++
	mode := "upper"
	if len(os.Args) > 1 {
		mode = os.Args[1]
	}
	switch mode {
	case "upper": // stdin, upper-cased, to stdout
		b, _ := io.ReadAll(os.Stdin)
		os.Stdout.Write(bytes.ToUpper(b))
	case "loop": // spin forever without calling the host
		n := 0
		for {
			n++
		}
	case "alloc": // grow memory until the runtime gives up
		var keep [][]byte
		for {
			b := make([]byte, 8<<20)
			for i := range b {
				b[i] = 1
			}
			keep = append(keep, b)
		}
	case "flood": // 1 GiB to stdout in 1 MiB writes, ignoring errors
		b := bytes.Repeat([]byte("x"), 1<<20)
		for range 1024 {
			os.Stdout.Write(b)
		}
	case "exit": // a message on stderr, exit code 3
		fmt.Fprintln(os.Stderr, "boom: bad input")
		os.Exit(3)
	case "panic":
		panic("kaboom")
	case "stderr": // 10 KiB to stderr, then "END", exit 1
		w := bufio.NewWriter(os.Stderr)
		for range 10 << 10 {
			w.WriteByte('.')
		}
		w.WriteString("END\n")
		w.Flush()
		os.Exit(1)
	case "clock": // what the module sees of time and randomness
		fmt.Printf("%d %d", time.Now().UnixNano(), rand.Uint64())
	case "env":
		fmt.Printf("args=%q env=%q", os.Args, os.Environ())
	case "fs": // try to read the host's files
		_, err1 := os.ReadFile("/etc/hostname")
		_, err2 := os.ReadDir("/")
		_, err3 := os.ReadDir(".")
		fmt.Printf("%v|%v|%v", err1 != nil, err2 != nil, err3 != nil)
	case "sleep": // a long sleep in the host
		time.Sleep(time.Hour)
	case "runs":
		fmt.Print(runs)
	case "busy": // CPU work without host calls: a chain of 100k sha256s
		sum := sha256.Sum256(nil)
		for range 100_000 {
			sum = sha256.Sum256(sum[:])
		}
		fmt.Printf("%x", sum[:4])
	default:
		fmt.Fprintf(os.Stderr, "unknown mode %q (modes: %s)\n", mode, strings.Join([]string{"upper", "loop", "alloc", "flood", "exit", "panic", "stderr", "clock", "env", "fs", "sleep", "busy", "runs"}, ", "))
		os.Exit(2)
	}
}
