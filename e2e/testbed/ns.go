package testbed

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"syscall"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/vipd/vipd/e2e/nscheck"
)

// NamePrefix starts every namespace the testbed creates: vt<owner pid>-<seq><host>.
const NamePrefix = "vt"

var nsNameRE = regexp.MustCompile(`^` + NamePrefix + `(\d+)-`)

// hostIno is the network namespace of this process at start-up, before any
// thread switched namespaces: the "host" namespace of the network rule.
var hostIno = func() uint64 {
	ino, err := nscheck.Inode("/proc/self/ns/net")
	if err != nil {
		return 0
	}
	return ino
}()

// Netns is a named network namespace created by the testbed.
type Netns struct {
	Name   string
	Handle netns.NsHandle
	Ino    uint64
	NL     *netlink.Handle // netlink handle bound to the namespace
}

func createNetns(name string) (*Netns, error) {
	if hostIno == 0 {
		return nil, errors.New("cannot read /proc/self/ns/net")
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	n := &Netns{Name: name, Handle: netns.None()}
	var err error
	if n.Handle, err = netns.GetFromPath(filepath.Join(nscheck.NetnsDir, name)); err != nil {
		n.delete()
		return nil, fmt.Errorf("open netns %s: %w", name, err)
	}
	if n.Ino, err = nscheck.Inode(filepath.Join(nscheck.NetnsDir, name)); err != nil {
		n.delete()
		return nil, err
	}
	for _, h := range append(nscheck.HostInodes(), hostIno) {
		if n.Ino == h {
			n.delete()
			return nil, fmt.Errorf("netns %s is the host namespace (net:[%d]); refusing", name, n.Ino)
		}
	}
	if n.NL, err = netlink.NewHandleAt(n.Handle); err != nil {
		n.delete()
		return nil, fmt.Errorf("netlink handle in %s: %w", name, err)
	}
	lo, err := n.NL.LinkByName("lo")
	if err == nil {
		err = n.NL.LinkSetUp(lo)
	}
	if err != nil {
		n.delete()
		return nil, fmt.Errorf("%s: lo up: %w", name, err)
	}
	return n, nil
}

func (n *Netns) delete() error {
	if n.NL != nil {
		n.NL.Close()
		n.NL = nil
	}
	if n.Handle.IsOpen() {
		n.Handle.Close()
	}
	return deleteNetnsByName(n.Name)
}

// deleteNetnsByName SIGKILLs every process left in the namespace (by PID, as
// listed by `ip netns pids`) and deletes it.
func deleteNetnsByName(name string) error {
	if out, err := exec.Command("ip", "netns", "pids", name).Output(); err == nil {
		for _, f := range strings.Fields(string(out)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 1 && pid != os.Getpid() {
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	if out, err := exec.Command("ip", "netns", "del", name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Sweep removes namespaces (and temp dirs) with the testbed prefix whose
// owning process is dead: leftovers of a crashed or interrupted run. It
// returns the names it removed.
func Sweep() ([]string, error) {
	var removed []string
	var errs []error
	ents, _ := os.ReadDir(nscheck.NetnsDir)
	for _, e := range ents {
		if !ownerDead(e.Name()) {
			continue
		}
		if err := deleteNetnsByName(e.Name()); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, e.Name())
	}
	tmps, _ := filepath.Glob(filepath.Join(os.TempDir(), NamePrefix+"*-*"))
	for _, d := range tmps {
		if ownerDead(filepath.Base(d)) {
			os.RemoveAll(d)
			removed = append(removed, d)
		}
	}
	return removed, errors.Join(errs...)
}

func ownerDead(name string) bool {
	m := nsNameRE.FindStringSubmatch(name)
	if m == nil {
		return false
	}
	pid, err := strconv.Atoi(m[1])
	if err != nil || pid <= 1 {
		return false
	}
	if pid == os.Getpid() {
		return false
	}
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

// Do runs fn on an OS thread switched into the namespace. The thread is
// verified to be in the namespace before fn runs; if switching back fails,
// the thread is discarded (the goroutine exits while locked).
func (n *Netns) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		if err := netns.Set(n.Handle); err != nil {
			errc <- fmt.Errorf("setns %s: %w", n.Name, err) // thread stays locked: discarded
			return
		}
		if self, err := nscheck.Self(); err != nil || self != n.Ino {
			errc <- fmt.Errorf("thread not in netns %s after setns (%d != %d, %v)", n.Name, self, n.Ino, err)
			return
		}
		ferr := fn()
		if err := netns.Set(orig); err != nil {
			errc <- fmt.Errorf("restore netns: %w", err)
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// DialContext dials addr (an IP literal and port) from inside the namespace.
// The socket's namespace is verified with SIOCGSKNS before it connects, so no
// packet can leave from the host namespace.
func (n *Netns) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return nil, fmt.Errorf("netns dial: %q is not an IP literal", host)
	}
	var c net.Conn
	err = n.Do(func() error {
		d := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
			var cerr error
			if err := rc.Control(func(fd uintptr) { cerr = n.checkSocket(int(fd)) }); err != nil {
				return err
			}
			return cerr
		}}
		var err error
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// checkSocket verifies that the socket fd lives in this namespace.
func (n *Netns) checkSocket(fd int) error {
	nsfd, err := unix.IoctlRetInt(fd, unix.SIOCGSKNS)
	if err != nil {
		return fmt.Errorf("SIOCGSKNS: %w", err)
	}
	defer unix.Close(nsfd)
	var st unix.Stat_t
	if err := unix.Fstat(nsfd, &st); err != nil {
		return err
	}
	if st.Ino != n.Ino || st.Ino == hostIno {
		return fmt.Errorf("socket in net:[%d], want %s net:[%d]; refusing to send", st.Ino, n.Name, n.Ino)
	}
	return nil
}

// lockFile serialises testbeds across processes (go test runs packages in
// parallel; two testbeds on 2 cores would distort each other's timings).
func acquireLock() (*os.File, error) {
	dir := "/run/lock"
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		dir = os.TempDir()
	}
	f, err := os.OpenFile(filepath.Join(dir, "vipd-e2e-testbed.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}
