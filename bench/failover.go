package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/vipd/vipd/e2e/testbed"
)

// impl is one column: the daemon that keeps the VIP.
type impl struct {
	key, title string
	start      func(n *testbed.Node) error
	proc       func(n *testbed.Node) *testbed.Proc
	stop       func(n *testbed.Node) error
	sigterm    func(n *testbed.Node) error
	// restart restarts the daemon on n the way its docs say to keep the
	// VIP (vipd: systemctl reload, a re-execution in place; keepalived
	// has none: systemctl restart, a stop and a start).
	restart func(n *testbed.Node) error
	tree    bool // footprint over the process tree (keepalived's children)
	settle  time.Duration
	// rows limits the column to these scenarios (nil: all).
	rows map[string]bool
}

// haproxyRows are the rows about HAProxy itself.
var haproxyRows = map[string]bool{"haproxy": true, "haproxy-kill": true, "haproxy-reload": true, "haproxy-newpid": true}

var impls = map[string]impl{
	"keepalived": {
		key: "keepalived", title: "keepalived (seed config)",
		start:   func(n *testbed.Node) error { return n.StartKeepalived(testbed.KeepalivedSeed) },
		proc:    (*testbed.Node).Keepalived,
		stop:    (*testbed.Node).StopKeepalived,
		sigterm: func(n *testbed.Node) error { return n.SignalKeepalived(syscall.SIGTERM) },
		restart: stopStart((*testbed.Node).StopKeepalived, func(n *testbed.Node) error { return n.StartKeepalived(testbed.KeepalivedSeed) }),
		tree:    true, settle: 2 * time.Second,
	},
	"keepalived-tuned": {
		key: "keepalived-tuned", title: "keepalived tuned (VRRPv3, advert 0.1 s)",
		start:   func(n *testbed.Node) error { return n.StartKeepalived(testbed.KeepalivedTuned) },
		proc:    (*testbed.Node).Keepalived,
		stop:    (*testbed.Node).StopKeepalived,
		sigterm: func(n *testbed.Node) error { return n.SignalKeepalived(syscall.SIGTERM) },
		restart: stopStart((*testbed.Node).StopKeepalived, func(n *testbed.Node) error { return n.StartKeepalived(testbed.KeepalivedTuned) }),
		tree:    true, settle: 2 * time.Second,
	},
	"keepalived-track": {
		key: "keepalived-track", title: "keepalived tuned with vrrp_track_process",
		start:   func(n *testbed.Node) error { return n.StartKeepalived(testbed.KeepalivedTrackProcess) },
		proc:    (*testbed.Node).Keepalived,
		stop:    (*testbed.Node).StopKeepalived,
		sigterm: func(n *testbed.Node) error { return n.SignalKeepalived(syscall.SIGTERM) },
		restart: stopStart((*testbed.Node).StopKeepalived, func(n *testbed.Node) error { return n.StartKeepalived(testbed.KeepalivedTrackProcess) }),
		tree:    true, settle: 2 * time.Second, rows: haproxyRows,
	},
	// The seed's keepalived.conf through `vipd import-keepalived`: its
	// `killall -0 haproxy` becomes a process check by name (interval 2s),
	// now event-driven.
	"vipd-seed": {
		key: "vipd-seed", title: "vipd (seed config imported: process check by name)",
		start:   func(n *testbed.Node) error { return n.StartVipdWithConfig(seedConfig(n)) },
		proc:    (*testbed.Node).Vipd,
		stop:    (*testbed.Node).StopVipd,
		sigterm: func(n *testbed.Node) error { return n.SignalVipd(syscall.SIGTERM) },
		restart: reexecVipd,
		settle:  time.Second, rows: haproxyRows,
	},
	"vipd": {
		key: "vipd", title: "vipd (shipped example config)",
		start:   func(n *testbed.Node) error { return n.StartVipdWithConfig(vipdConfig(n)) },
		proc:    (*testbed.Node).Vipd,
		stop:    (*testbed.Node).StopVipd,
		sigterm: func(n *testbed.Node) error { return n.SignalVipd(syscall.SIGTERM) },
		restart: reexecVipd,
		settle:  time.Second,
	},
}

// stopStart is a restart as `systemctl restart` does it: stop, then start.
func stopStart(stop, start func(n *testbed.Node) error) func(n *testbed.Node) error {
	return func(n *testbed.Node) error {
		if err := stop(n); err != nil {
			return err
		}
		return start(n)
	}
}

// reexecVipd restarts vipd as `systemctl reload vipd` does: SIGUSR2, a
// re-execution in place. It returns once the next image logged that it
// renewed the adopted lease (or after 10 s), reading only what the log
// gained since the signal.
func reexecVipd(n *testbed.Node) error {
	f, err := os.Open(n.VipdLogPath())
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(0, io.SeekEnd); err != nil {
		return err
	}
	if err := n.SignalVipd(syscall.SIGUSR2); err != nil {
		return err
	}
	var gained []byte
	buf := make([]byte, 64<<10)
	for end := time.Now().Add(10 * time.Second); time.Now().Before(end); time.Sleep(20 * time.Millisecond) {
		for {
			k, _ := f.Read(buf)
			if k == 0 {
				break
			}
			gained = append(gained, buf[:k]...)
		}
		if bytes.Contains(gained, []byte("lease adopted from the previous vipd image")) {
			return nil
		}
	}
	return fmt.Errorf("vipd on %s: no re-execution within 10 s", n.Name)
}

// scenario is one row.
type scenario struct {
	key, title string
	only       string // run only for this impl key ("" = all)
	// fault starts the event on the holder (web-node-1) and returns how to
	// undo it.
	fault func(b *bed) (restore func() error, err error)
	// cut: the fault lasts b.cut, measured outage ends at the restore.
	cut bool
	// hold: nothing should move. The fault lasts hold (b.cut if zero),
	// and the measured window runs from the event until steady again
	// after the restore (so a VIP lost when the fault ends counts).
	hold    bool
	holdFor time.Duration
	// atReturn: the event is in place when fault returns (a rule
	// installed through `ip netns exec nft`, whose start-up would
	// otherwise count), so the clock starts then.
	atReturn bool
}

type bed struct {
	tb     *testbed.Testbed
	im     impl
	n1, n2 *testbed.Node
	cut    time.Duration
	logf   func(string, ...any)
}

var scenarios = []scenario{
	{key: "haproxy", title: "HAProxy stopped on the holder (SIGTERM to the master)",
		fault: func(b *bed) (func() error, error) {
			return b.n1.StartHAProxy, b.n1.StopHAProxy()
		}},
	{key: "haproxy-kill", title: "HAProxy killed on the holder (SIGKILL to the master)",
		fault: func(b *bed) (func() error, error) {
			return b.n1.StartHAProxy, b.n1.KillHAProxy()
		}},
	// HAProxy alive and serving, its health URL refusing (nft reset on
	// the monitor port): only the http check can see it.
	{key: "haproxy-health", title: "HAProxy's health URL failing on the holder (HAProxy alive; vipd's http check)", only: "vipd", atReturn: true,
		fault: func(b *bed) (func() error, error) {
			script := "add table inet vipdhealth\n" +
				"add chain inet vipdhealth out { type filter hook output priority 0; }\n" +
				"add rule inet vipdhealth out tcp dport 8404 reject with tcp reset\n"
			cmd := b.n1.NS.Command(context.Background(), "nft", "-f", "-")
			cmd.Stdin = strings.NewReader(script)
			if out, err := cmd.CombinedOutput(); err != nil {
				return nil, fmt.Errorf("nft: %v: %s", err, out)
			}
			return func() error {
				_, err := b.n1.NS.Run(context.Background(), "nft", "delete table inet vipdhealth")
				return err
			}, nil
		}},
	// Reloads: nothing should move.
	{key: "haproxy-reload", title: "HAProxy reloaded on the holder (master-worker, as systemctl reload)", hold: true, holdFor: time.Second,
		fault: func(b *bed) (func() error, error) {
			return func() error { return nil }, b.n1.ReloadHAProxy()
		}},
	{key: "haproxy-newpid", title: "HAProxy replaced on the holder (new PID written to the pidfile, old one finishing)", hold: true, holdFor: time.Second,
		fault: func(b *bed) (func() error, error) {
			return func() error { return nil }, b.n1.RestartHAProxyNewPID()
		}},
	{key: "stop", title: "holder daemon stopped gracefully (SIGTERM)",
		fault: func(b *bed) (func() error, error) {
			p := b.im.proc(b.n1)
			return func() error {
				if err := p.Wait(15 * time.Second); err != nil {
					return err
				}
				return b.im.start(b.n1)
			}, b.im.sigterm(b.n1)
		}},
	// Restarts of the daemon on a healthy holder, as operators (and
	// package upgrades) do: nothing should move.
	{key: "restart", title: "daemon restarted on the holder, the documented way (vipd: systemctl reload, re-execution in place; keepalived: systemctl restart)",
		hold: true, holdFor: 2 * time.Second,
		fault: func(b *bed) (func() error, error) {
			return func() error { return nil }, b.im.restart(b.n1)
		}},
	{key: "restart-bare", title: "vipd: systemctl restart (a stop and a start)", only: "vipd", hold: true, holdFor: 2 * time.Second,
		fault: func(b *bed) (func() error, error) {
			return func() error { return nil }, stopStart((*testbed.Node).StopVipd, b.im.start)(b.n1)
		}},
	{key: "lan-carrier", title: "holder drops off the LAN, carrier kept (bridge port detached)", cut: true,
		fault: func(b *bed) (func() error, error) {
			return func() error { return b.tb.Isolate(&b.n1.Host, false) }, b.tb.Isolate(&b.n1.Host, true)
		}},
	{key: "lan-linkdown", title: "holder drops off the LAN, link down (bridge port down)", cut: true,
		fault: func(b *bed) (func() error, error) {
			return func() error { return b.tb.SetLinkUp(&b.n1.Host, true) }, b.tb.SetLinkUp(&b.n1.Host, false)
		}},
	{key: "partition", title: "partition (keepalived: VRRP blocked between the nodes; vipd: holder cut from etcd and from its peer)", cut: true,
		fault: func(b *bed) (func() error, error) {
			if !strings.HasPrefix(b.im.key, "keepalived") {
				f := testbed.Filter{Hosts: etcdIPs(b.tb), PeerChannel: []netip.Addr{b.n2.IP}}
				return b.n1.Unblock, b.n1.Apply(f)
			}
			nodes := []*testbed.Node{b.n1, b.n2}
			restore := func() error {
				var errs []error
				for _, n := range nodes {
					if _, err := n.NS.Run(context.Background(), "nft", "delete table inet vipdbench"); err != nil {
						errs = append(errs, err)
					}
				}
				return errors.Join(errs...)
			}
			for _, n := range nodes {
				script := "add table inet vipdbench\n" +
					"add chain inet vipdbench in { type filter hook input priority 0; }\n" +
					"add chain inet vipdbench out { type filter hook output priority 0; }\n" +
					"add rule inet vipdbench in ip protocol vrrp drop\n"
				cmd := n.NS.Command(context.Background(), "nft", "-f", "-")
				cmd.Stdin = strings.NewReader(script)
				if out, err := cmd.CombinedOutput(); err != nil {
					restore()
					return nil, fmt.Errorf("nft in %s: %v: %s", n.Name, err, out)
				}
			}
			return restore, nil
		}},
	// Rows where nothing should move. keepalived has no store: the same
	// fault is applied and measured all the same.
	{key: "etcd-frozen", title: "etcd unavailable 8 s (all members SIGSTOPped)", hold: true, holdFor: 8 * time.Second,
		fault: func(b *bed) (func() error, error) {
			return b.tb.ThawEtcd, b.tb.FreezeEtcd()
		}},
	{key: "etcd-cut", title: "holder cut from etcd (nft to the etcd members; its peer reachable)", hold: true,
		fault: func(b *bed) (func() error, error) {
			return b.n1.Unblock, b.n1.Block(etcdIPs(b.tb)...)
		}},
	// The operator's usual form, without --to: the best other candidate
	// takes over (at rank 0, as with --to).
	{key: "handover", title: "planned handover (vipctl handover, no --to)", only: "vipd",
		fault: func(b *bed) (func() error, error) {
			return func() error { return b.vipctlHandover(testbed.Node1, "1s") }, b.vipctlHandover("", "20s")
		}},
}

// etcdIPs are the etcd members' addresses.
func etcdIPs(tb *testbed.Testbed) []netip.Addr {
	var ips []netip.Addr
	for _, m := range tb.Etcd {
		ips = append(ips, m.IP)
	}
	return ips
}

// vipctlHandover hands VI_1 over, to to if given.
func (b *bed) vipctlHandover(to, hold string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	argv := []string{b.tb.Opts.BinDir + "/vipctl", "handover", "VI_1", "--hold", hold, "--endpoints", strings.Join(b.tb.Endpoints(), ","), "--timeout", "10s"}
	if to != "" {
		argv = append(argv, "--to", to)
	}
	_, err := b.tb.Client.NS.Run(ctx, argv...)
	return err
}

// steady brings the testbed to: HAProxy and the daemon running on both
// nodes, web-node-1 the only holder, the client answered by web-node-1.
func (b *bed) steady() error {
	if !b.tb.Probing() {
		if err := b.tb.StartProbe(); err != nil {
			return err
		}
	}
	for _, n := range []*testbed.Node{b.n1, b.n2} {
		if !n.HAProxy().Running() {
			if err := n.StartHAProxy(); err != nil {
				return err
			}
		}
		if !b.im.proc(n).Running() {
			if err := b.im.start(n); err != nil {
				return err
			}
		}
	}
	if err := b.tb.WaitHolder(testbed.Node1, 40*time.Second); err != nil {
		return err
	}
	// A client whose ARP entry still names the other node may need a
	// while (keepalived does not always re-announce after a split brain).
	if _, err := b.tb.WaitAnswer(testbed.Node1, time.Now(), 45*time.Second); err != nil {
		return err
	}
	time.Sleep(b.im.settle)
	if hs := b.tb.Holders(); !slices.Equal(hs, []string{testbed.Node1}) {
		return fmt.Errorf("holders %v after settling, want [web-node-1]", hs)
	}
	return nil
}

// sample is one measured run.
type sample struct {
	Outage   time.Duration // longest client outage
	OutOver  bool          // the outage ended within the window
	Failover time.Duration // fault → VIP added on web-node-2 (-1 if never)
	Dual     time.Duration // time with two holders, fault → steady again
	DualBack time.Duration // of which after the restore (both reachable again)
	PostOut  time.Duration // longest client outage from the restore until steady again
	Changes  int           // VIP add/remove events from the event until steady again
	// Broken is how many of the long-lived client connections through the
	// VIP were reset or hung, from the event until steady again.
	Broken int
	Err    error
}

func (b *bed) runOnce(sc scenario) sample {
	s := sample{Failover: -1}
	if err := b.steady(); err != nil {
		s.Err = fmt.Errorf("not steady before the run: %w", err)
		return s
	}
	ka := b.tb.StartKeepAlive(keepAliveConns, 50*time.Millisecond)
	time.Sleep(200 * time.Millisecond) // connections open before the event
	t0 := time.Now()
	restore, err := sc.fault(b)
	if sc.atReturn {
		t0 = time.Now()
	}
	if err != nil {
		ka.Stop()
		s.Err = err
		if restore != nil {
			restore()
		}
		return s
	}
	if sc.hold {
		s = b.holdOnce(sc, t0, restore, s)
		s.Broken = ka.Stop().Broken
		return s
	}
	// Wait for web-node-2 to hold the VIP (alone, unless both may hold).
	_, werr := b.tb.Mon.WaitFor(func(hs []string) bool {
		if sc.cut {
			// keepalived keeps the VIP on a node that cannot tell it is
			// cut off: wait for web-node-2 to add it, whoever else holds.
			return slices.Contains(hs, testbed.Node2)
		}
		return slices.Equal(hs, []string{testbed.Node2})
	}, 30*time.Second)
	if add, ok := b.tb.Mon.EventAfter(testbed.Node2, true, t0); ok {
		s.Failover = add.Time.Sub(t0)
	}
	var tEnd time.Time
	if werr == nil {
		b.tb.WaitAnswer(testbed.Node2, t0, 10*time.Second)
	}
	if sc.cut {
		if d := time.Until(t0.Add(b.cut)); d > 0 {
			time.Sleep(d)
		}
		tEnd = time.Now()
	} else {
		time.Sleep(700 * time.Millisecond)
		tEnd = time.Now()
	}
	out := b.tb.Probes().Window(t0, tEnd).LongestOutage()
	s.Outage, s.OutOver = out.Duration, out.Failed == 0 || !out.End.IsZero()
	tRestore := time.Now()
	if rerr := restore(); rerr != nil {
		s.Err = errors.Join(s.Err, fmt.Errorf("restore: %w", rerr))
	}
	if err := b.steady(); err != nil {
		s.Err = errors.Join(s.Err, fmt.Errorf("not steady after the run: %w", err))
	}
	tSteady := time.Now()
	s.Broken = ka.Stop().Broken
	s.PostOut = b.tb.Probes().Window(tRestore, tSteady).LongestOutage().Duration
	s.Dual = b.tb.Mon.Stats(t0, tSteady).TwoHolders
	s.DualBack = b.tb.Mon.Stats(tRestore, tSteady).TwoHolders
	s.Changes = b.tb.Mon.Stats(t0, tSteady).Changes
	if werr != nil {
		s.Err = errors.Join(s.Err, fmt.Errorf("web-node-2 never took the VIP: %w", werr))
	}
	return s
}

// keepAliveConns is how many long-lived client connections each run keeps
// through the VIP.
const keepAliveConns = 8

// holdAftermath is how long a hold row keeps measuring after the restore
// before waiting for the steady state: a holder that loses the VIP when
// the fault ends (a lease found expired) shows within it.
const holdAftermath = 3 * time.Second

// holdOnce finishes a run of a row where nothing should move: the fault
// lasts its time, is undone, and the window runs until steady again.
func (b *bed) holdOnce(sc scenario, t0 time.Time, restore func() error, s sample) sample {
	d := sc.holdFor
	if d == 0 {
		d = b.cut
	}
	time.Sleep(time.Until(t0.Add(d)))
	tRestore := time.Now()
	if rerr := restore(); rerr != nil {
		s.Err = fmt.Errorf("restore: %w", rerr)
	}
	time.Sleep(holdAftermath)
	if err := b.steady(); err != nil {
		s.Err = errors.Join(s.Err, fmt.Errorf("not steady after the run: %w", err))
	}
	tSteady := time.Now()
	out := b.tb.Probes().Window(t0, tSteady).LongestOutage()
	s.Outage, s.OutOver = out.Duration, out.Failed == 0 || !out.End.IsZero()
	st := b.tb.Mon.Stats(t0, tSteady)
	s.Dual, s.Changes = st.TwoHolders, st.Changes
	s.DualBack = b.tb.Mon.Stats(tRestore, tSteady).TwoHolders
	s.PostOut = b.tb.Probes().Window(tRestore, tSteady).LongestOutage().Duration
	if add, ok := b.tb.Mon.EventAfter(testbed.Node2, true, t0); ok {
		s.Failover = add.Time.Sub(t0)
	}
	return s
}

// cell is the result of N runs of one scenario with one impl.
type cell struct {
	Samples []sample
}

func (c cell) ok() []sample {
	var out []sample
	for _, s := range c.Samples {
		if s.Err == nil {
			out = append(out, s)
		}
	}
	return out
}

func pick(ss []sample, f func(sample) time.Duration) []time.Duration {
	var out []time.Duration
	for _, s := range ss {
		if v := f(s); v >= 0 {
			out = append(out, v)
		}
	}
	slices.Sort(out)
	return out
}

// p50 is the median of sorted d (mean of the middle two for even counts).
func p50(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return -1
	}
	if len(d)%2 == 0 {
		return (d[len(d)/2-1] + d[len(d)/2]) / 2
	}
	return d[len(d)/2]
}

func maxOf(d []time.Duration) time.Duration {
	if len(d) == 0 {
		return -1
	}
	return d[len(d)-1]
}
