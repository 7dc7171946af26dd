package grid

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"

	"github.com/libp2p/go-libp2p/core/crypto"
)

// ErrInsecureIdentityFile is returned by LoadOrCreateIdentity when the key
// file may be read or written by users other than its owner.
var ErrInsecureIdentityFile = errors.New("identity key file is accessible to other users")

// GenerateIdentity returns a new random Ed25519 key.
func GenerateIdentity() (crypto.PrivKey, error) {
	k, _, err := crypto.GenerateEd25519Key(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate Ed25519 identity: %w", err)
	}
	return k, nil
}

// MarshalIdentity encodes k in libp2p's protobuf key format.
func MarshalIdentity(k crypto.PrivKey) ([]byte, error) {
	b, err := crypto.MarshalPrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode identity key: %w", err)
	}
	return b, nil
}

// UnmarshalIdentity decodes a key that MarshalIdentity encoded.
func UnmarshalIdentity(b []byte) (crypto.PrivKey, error) {
	k, err := crypto.UnmarshalPrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("decode identity key: %w", err)
	}
	return k, nil
}

// LoadOrCreateIdentity reads the key at path, or, if there is no file
// there, generates an Ed25519 key and writes it with mode 0600 (creating
// the directory with 0700). created reports which happened. On Unix a key
// file that group or others may access is refused with
// ErrInsecureIdentityFile: chmod 600 it. Two processes racing to create
// the file end up with the same key.
func LoadOrCreateIdentity(path string) (k crypto.PrivKey, created bool, err error) {
	k, err = loadIdentity(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, false, err
	}
	if k, err = GenerateIdentity(); err != nil {
		return nil, false, err
	}
	b, err := MarshalIdentity(k)
	if err != nil {
		return nil, false, err
	}
	switch err := writeIdentityFile(path, b); {
	case errors.Is(err, fs.ErrExist): // another process won the race
		k, err = loadIdentity(path)
		return k, false, err
	case err != nil:
		return nil, false, fmt.Errorf("write identity key %s: %w", path, err)
	}
	return k, true, nil
}

func loadIdentity(path string) (crypto.PrivKey, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("read identity key: %w", err)
	}
	if runtime.GOOS != "windows" && st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("identity key %s has mode %04o: %w; run chmod 600 %s", path, st.Mode().Perm(), ErrInsecureIdentityFile, path)
	}
	const maxKeyFile = 64 << 10
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("read identity key %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("identity key %s is larger than 64 KiB: not a key file", path)
	}
	k, err := UnmarshalIdentity(b)
	if err != nil {
		return nil, fmt.Errorf("identity key %s: %w", path, err)
	}
	return k, nil
}

// writeIdentityFile writes b to path with mode 0600 and fails with fs.ErrExist
// if path exists. The file appears complete or not at all: it is written
// under a temporary name and hard-linked into place.
func writeIdentityFile(path string, b []byte) (err error) {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(dir, ".identity-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Link(tmp.Name(), path)
}
