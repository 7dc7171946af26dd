package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/cortexgrid/cortexd/pkg/client"
)

// duplicateKeys returns the keys that appear more than once in one JSON
// log line, at any depth.
func duplicateKeys(line []byte) ([]string, error) {
	dec := json.NewDecoder(bytes.NewReader(line))
	var dups []string
	var walk func() error
	walk = func() error {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		switch tok {
		case json.Delim('{'):
			seen := map[string]bool{}
			for dec.More() {
				k, err := dec.Token()
				if err != nil {
					return err
				}
				key := k.(string)
				if seen[key] {
					dups = append(dups, key)
				}
				seen[key] = true
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token() // }
			return err
		case json.Delim('['):
			for dec.More() {
				if err := walk(); err != nil {
					return err
				}
			}
			_, err = dec.Token() // ]
			return err
		}
		return nil
	}
	if err := walk(); err != nil && !errors.Is(err, io.EOF) {
		return nil, err
	}
	return dups, nil
}

func TestDaemonLogLinesHaveNoDuplicateKeys(t *testing.T) {
	if dups, _ := duplicateKeys([]byte(`{"a":1,"b":{"c":1,"c":2},"a":3}`)); fmt.Sprint(dups) != "[c a]" {
		t.Fatalf("duplicateKeys found %v in a line with c and a twice", dups)
	}
	repo := initTestRepo(t, testNodeConfig("echo", ""))
	ctx, cancel := context.WithCancel(context.Background())
	var out, errb syncWriter
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"--repo", repo, "daemon", "--log-level", "debug", "--log-format", "json"}, &out, &errb)
	}()
	waitFor(t, "the daemon to start", func() bool { _, err := client.FromRepo(repo, ""); return err == nil })
	// A task makes the coordinator, the executor and the queue log.
	if code, _, stderr := cli(t, "--repo", repo, "task", "submit", "echo", "--input", `{"x":1}`, "--wait"); code != 0 {
		t.Fatalf("submit: exit %d: %s", code, stderr)
	}
	cancel()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("daemon did not stop within 30s")
	}
	lines := strings.Split(strings.TrimSpace(errb.String()), "\n")
	if len(lines) < 3 {
		t.Fatalf("the daemon logged %d lines at debug level:\n%s", len(lines), errb.String())
	}
	for _, line := range lines {
		dups, err := duplicateKeys([]byte(line))
		if err != nil {
			t.Errorf("log line is not JSON (%v): %s", err, line)
			continue
		}
		if len(dups) > 0 {
			t.Errorf("log line has %v more than once: %s", dups, line)
		}
	}
}
