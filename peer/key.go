package peer

import (
	"bytes"
	"fmt"
	"io"
	"os"
)

const (
	// MinKeyLen is the shortest key LoadKey, Serve and Call accept.
	MinKeyLen = 32
	// maxKeyFile bounds how much of a key file LoadKey reads.
	maxKeyFile = 4 << 10
)

// LoadKey reads the cluster's shared key from path: the file's bytes with
// trailing whitespace trimmed (so a base64 line is used as it stands, not
// decoded). It refuses a key shorter than MinKeyLen bytes and a file that
// its group or others may access (mode & 0o077 != 0). Operators make one
// with
//
//	head -c 32 /dev/urandom | base64 > /etc/vipd/peer.key; chmod 600 /etc/vipd/peer.key
//
// and copy the same file to every node.
func LoadKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("peer: key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("peer: key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("peer: key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("peer: key file %s: mode %#o gives group or others access, want 0600 (chmod 600 %s)", path, perm, path)
	}
	raw, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("peer: key file %s: %w", path, err)
	}
	if len(raw) > maxKeyFile {
		return nil, fmt.Errorf("peer: key file %s: longer than %d bytes", path, maxKeyFile)
	}
	key := bytes.TrimRight(raw, " \t\r\n\v\f")
	if err := checkKey(key); err != nil {
		return nil, fmt.Errorf("peer: key file %s: %d bytes, need at least %d", path, len(key), MinKeyLen)
	}
	return key, nil
}

func checkKey(key []byte) error {
	if len(key) < MinKeyLen {
		return fmt.Errorf("peer: key is %d bytes, need at least %d", len(key), MinKeyLen)
	}
	return nil
}
