//go:build unix

package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

// lockRepo takes an exclusive lock on DIR/repo.lock, so that one daemon
// at a time runs on a repo. The lock goes away with the process.
func lockRepo(dir string) (unlock func(), err error) {
	p := filepath.Join(dir, lockFileName)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock repo: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, fmt.Errorf("repo %s is in use by a running cortexd daemon (it holds %s): stop it first, or use another --repo", dir, lockFileName)
		}
		return nil, fmt.Errorf("lock repo: %w", err)
	}
	return func() {
		_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}
