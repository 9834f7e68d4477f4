// Package nscheck guards the e2e network rule: traffic-generating test tools
// run only inside network namespaces the testbed created, never in the host's
// own network namespace.
//
// The host namespace is identified by /proc/1/ns/net when it is readable
// (inside some containers PID 1 belongs to a supervisor whose namespace links
// cannot be read), and by the inode the testbed exports in HostEnv to the
// processes it starts. In addition a tool must positively be in a named
// namespace (a /run/netns entry, as `ip netns add` creates): anything else is
// refused, so an unreadable /proc/1 never makes the check pass by accident.
package nscheck

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
)

// HostEnv is the environment variable through which the testbed passes the
// inode of its own (host) network namespace to the tools it starts.
const HostEnv = "VIPD_E2E_HOST_NETNS"

// NetnsDir is where `ip netns add` bind-mounts named namespaces.
const NetnsDir = "/run/netns"

// ErrHostNetns is returned by RefuseHost when the caller runs in the host's
// network namespace.
var ErrHostNetns = errors.New("refusing to run in the host network namespace: " +
	"this tool generates traffic and must run inside a testbed namespace " +
	"(e.g. `ip netns exec <ns> ...`)")

// Inode returns the inode number of a namespace file such as
// /proc/self/ns/net or /run/netns/NAME.
func Inode(path string) (uint64, error) {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0, fmt.Errorf("stat %s: %w", path, err)
	}
	return st.Ino, nil
}

// Self is the inode of the calling thread's network namespace.
func Self() (uint64, error) { return Inode("/proc/thread-self/ns/net") }

// HostInodes returns the inodes known to be the host's network namespace:
// PID 1's (if readable) and the one exported in HostEnv (if set).
func HostInodes() []uint64 {
	var out []uint64
	if ino, err := Inode("/proc/1/ns/net"); err == nil {
		out = append(out, ino)
	}
	if v := os.Getenv(HostEnv); v != "" {
		if ino, err := strconv.ParseUint(v, 10, 64); err == nil {
			out = append(out, ino)
		}
	}
	return out
}

// NamedNetns returns the name of the /run/netns entry whose namespace is ino,
// or "" if there is none.
func NamedNetns(ino uint64) string {
	ents, _ := os.ReadDir(NetnsDir)
	for _, e := range ents {
		if got, err := Inode(filepath.Join(NetnsDir, e.Name())); err == nil && got == ino {
			return e.Name()
		}
	}
	return ""
}

// RefuseHost returns an error unless the calling thread is in a named network
// namespace that is not the host's. It fails closed.
func RefuseHost() error {
	self, err := Self()
	if err != nil {
		return fmt.Errorf("cannot verify network namespace: %w", err)
	}
	for _, h := range HostInodes() {
		if self == h {
			return ErrHostNetns
		}
	}
	if NamedNetns(self) == "" {
		return fmt.Errorf("%w (net:[%d] is not a named namespace under %s)", ErrHostNetns, self, NetnsDir)
	}
	return nil
}

// MustNotBeHost exits the process with a clear message when RefuseHost fails.
func MustNotBeHost(tool string) {
	if err := RefuseHost(); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", tool, err)
		os.Exit(2)
	}
}
