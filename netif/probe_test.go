package netif

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/packet"
)

// fakeProbeConn is a ProbeConn: written frames are recorded (and passed to
// respond, whose frames become readable), reads honour the read deadline
// in real time.
type fakeProbeConn struct {
	mu       sync.Mutex
	written  [][]byte
	deadline time.Time
	kick     chan struct{} // closed and replaced by SetReadDeadline
	in       chan []byte
	respond  func(frame []byte) [][]byte
	writeErr error
	closed   bool
}

func newFakeProbeConn(respond func([]byte) [][]byte) *fakeProbeConn {
	return &fakeProbeConn{kick: make(chan struct{}), in: make(chan []byte, 64), respond: respond}
}

func (c *fakeProbeConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	c.mu.Lock()
	if c.writeErr != nil {
		c.mu.Unlock()
		return 0, c.writeErr
	}
	if pa, ok := addr.(*packet.Addr); !ok || !bytes.Equal(pa.HardwareAddr, broadcastMAC()) {
		c.mu.Unlock()
		return 0, errors.New("fakeProbeConn: probe not sent to broadcast")
	}
	c.written = append(c.written, bytes.Clone(b))
	respond := c.respond
	c.mu.Unlock()
	if respond != nil {
		for _, f := range respond(b) {
			c.in <- f
		}
	}
	return len(b), nil
}

func (c *fakeProbeConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		d, kick := c.deadline, c.kick
		c.mu.Unlock()
		wait := time.Until(d)
		if !d.IsZero() && wait <= 0 {
			return 0, nil, os.ErrDeadlineExceeded
		}
		var timeout <-chan time.Time
		if !d.IsZero() {
			timeout = time.After(wait)
		}
		select {
		case f := <-c.in:
			return copy(b, f), &packet.Addr{HardwareAddr: net.HardwareAddr(f[6:12])}, nil
		case <-timeout:
		case <-kick:
		}
	}
}

func (c *fakeProbeConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.deadline = t
	close(c.kick)
	c.kick = make(chan struct{})
	return nil
}

func (c *fakeProbeConn) Close() error { c.mu.Lock(); c.closed = true; c.mu.Unlock(); return nil }

func (c *fakeProbeConn) frames() [][]byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([][]byte(nil), c.written...)
}

var (
	otherMAC = net.HardwareAddr{0x02, 0x00, 0xc0, 0xa8, 0x14, 0x63}
	ownMAC2  = net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x99} // another of our interfaces
	vipA     = netip.MustParseAddr("192.168.20.15")
	vipB     = netip.MustParseAddr("192.168.20.16")
)

func arpFrame(t testing.TB, op arp.Operation, src net.HardwareAddr, sip netip.Addr, tha net.HardwareAddr, tip netip.Addr) []byte {
	t.Helper()
	b, err := garpFrame(op, src, sip, tha)
	if err != nil {
		t.Fatal(err)
	}
	// garpFrame sets target IP = sender IP; patch the target IP.
	t4 := tip.As4()
	copy(b[38:42], t4[:])
	return b
}

func TestProbeFrameGolden(t *testing.T) {
	got, err := probeFrame(testIfi().HardwareAddr, vipA)
	if err != nil {
		t.Fatal(err)
	}
	want := unhex(t, `
		ffffffffffff 0242ac110002 0806
		0001 0800 06 04 0001
		0242ac110002 00000000
		000000000000 c0a8140f
		000000000000000000000000000000000000`)
	if !bytes.Equal(got, want) {
		t.Fatalf("probe frame\n got %x\nwant %x", got, want)
	}
	f, err := ParseARPFrame(got)
	if err != nil || f.Gratuitous() || !f.SenderIP.IsUnspecified() || f.TargetIP != vipA {
		t.Fatalf("parsed %+v, %v", f, err)
	}
}

func TestProbeNoConflict(t *testing.T) {
	// Our own probes come back (a packet socket sees outgoing frames),
	// and our kernel answers from another of our interfaces: neither is a
	// conflict. A client asking for the VIP is not one either.
	client := netip.MustParseAddr("192.168.20.100")
	conn := newFakeProbeConn(func(f []byte) [][]byte {
		return [][]byte{
			bytes.Clone(f),
			arpFrame(t, arp.OperationReply, ownMAC2, vipA, testIfi().HardwareAddr, netip.IPv4Unspecified()),
			arpFrame(t, arp.OperationRequest, otherMAC, client, zeroMAC(), vipA),
		}
	})
	p := NewProber(testIfi(), conn, []net.HardwareAddr{ownMAC2}, nil)
	start := time.Now()
	cs, err := p.Probe(context.Background(), []netip.Addr{vipA, vipB}, 60*time.Millisecond)
	took := time.Since(start)
	if err != nil || len(cs) != 0 {
		t.Fatalf("Probe = %v, %v; want no conflicts", cs, err)
	}
	if took < 60*time.Millisecond || took > 500*time.Millisecond {
		t.Errorf("Probe took %v, want the whole 60ms wait", took)
	}
	// probeRounds probes per address, each a well-formed probe.
	fs := conn.frames()
	if len(fs) != probeRounds*2 {
		t.Fatalf("sent %d frames, want %d", len(fs), probeRounds*2)
	}
	for i, b := range fs {
		want, _ := probeFrame(testIfi().HardwareAddr, []netip.Addr{vipA, vipB}[i%2])
		if !bytes.Equal(b, want) {
			t.Errorf("frame %d: %x, want %x", i, b, want)
		}
	}
	if err := p.Close(); err != nil || !conn.closed {
		t.Errorf("Close = %v, closed %v", err, conn.closed)
	}
}

func TestProbeConflicts(t *testing.T) {
	cases := []struct {
		name    string
		answer  func(probe []byte) []byte
		probing bool
		op      arp.Operation
	}{
		{"reply to the probe", func(probe []byte) []byte {
			// What Linux sends: a reply to the prober's MAC, target IP 0.
			return arpFrame(t, arp.OperationReply, otherMAC, vipA, net.HardwareAddr(probe[22:28]), netip.IPv4Unspecified())
		}, false, arp.OperationReply},
		{"gratuitous ARP", func([]byte) []byte {
			return arpFrame(t, arp.OperationRequest, otherMAC, vipA, zeroMAC(), vipA)
		}, false, arp.OperationRequest},
		{"another host probing", func([]byte) []byte {
			return arpFrame(t, arp.OperationRequest, otherMAC, netip.IPv4Unspecified(), zeroMAC(), vipA)
		}, true, arp.OperationRequest},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var once sync.Once
			conn := newFakeProbeConn(func(f []byte) [][]byte {
				pf, _ := ParseARPFrame(f)
				var out [][]byte
				if pf.TargetIP == vipA {
					once.Do(func() { out = append(out, tc.answer(f)) })
				}
				return out
			})
			p := NewProber(testIfi(), conn, nil, nil)
			start := time.Now()
			cs, err := p.Probe(context.Background(), []netip.Addr{vipA}, 2*time.Second)
			if err != nil || len(cs) != 1 {
				t.Fatalf("Probe = %v, %v; want one conflict", cs, err)
			}
			c := cs[0]
			if c.IP != vipA || c.MAC.String() != otherMAC.String() || c.Probing != tc.probing || c.Op != tc.op {
				t.Errorf("conflict %+v", c)
			}
			if !strings.Contains(c.String(), otherMAC.String()) || !strings.Contains(c.String(), "192.168.20.15") {
				t.Errorf("String() = %q", c.String())
			}
			// Every probed address has a conflict: no need to wait on.
			if took := time.Since(start); took > time.Second {
				t.Errorf("Probe took %v after the only address conflicted, want an early return", took)
			}
		})
	}

	// Two addresses, one conflict: the wait runs out and only vipB is
	// reported, once, though the other host answers every probe.
	conn := newFakeProbeConn(func(f []byte) [][]byte {
		if pf, _ := ParseARPFrame(f); pf.TargetIP == vipB {
			return [][]byte{arpFrame(t, arp.OperationReply, otherMAC, vipB, testIfi().HardwareAddr, netip.IPv4Unspecified())}
		}
		return nil
	})
	cs, err := NewProber(testIfi(), conn, nil, nil).Probe(context.Background(), []netip.Addr{vipA, vipB}, 40*time.Millisecond)
	if err != nil || len(cs) != 1 || cs[0].IP != vipB {
		t.Fatalf("Probe = %v, %v; want one conflict for %v", cs, err, vipB)
	}
}

func TestProbeCancelAndErrors(t *testing.T) {
	conn := newFakeProbeConn(nil)
	p := NewProber(testIfi(), conn, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(20*time.Millisecond, cancel)
	start := time.Now()
	cs, err := p.Probe(ctx, []netip.Addr{vipA}, 5*time.Second)
	if err != nil || len(cs) != 0 {
		t.Fatalf("cancelled Probe = %v, %v", cs, err)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Errorf("cancelled Probe returned after %v", took)
	}

	for _, ip := range []string{"2001:db8::1", "0.0.0.0", "224.0.0.1"} {
		if _, err := p.Probe(context.Background(), []netip.Addr{netip.MustParseAddr(ip)}, 10*time.Millisecond); err == nil || !strings.Contains(err.Error(), "ens160") {
			t.Errorf("Probe(%s) = %v, want an error naming the interface", ip, err)
		}
	}
	if cs, err := p.Probe(context.Background(), nil, time.Hour); cs != nil || err != nil {
		t.Errorf("Probe(no addresses) = %v, %v", cs, err)
	}

	boom := errors.New("boom")
	conn2 := newFakeProbeConn(nil)
	conn2.writeErr = boom
	if _, err := NewProber(testIfi(), conn2, nil, nil).Probe(context.Background(), []netip.Addr{vipA}, time.Second); !errors.Is(err, boom) || !strings.HasPrefix(err.Error(), "netif: ") {
		t.Errorf("Probe with a failing socket = %v, want netif: ... boom", err)
	}
}

// FuzzProbeClassify: classify never panics, never reports a frame from one
// of our MACs, and reports only probed addresses, agreeing with
// ParseARPFrame.
func FuzzProbeClassify(f *testing.F) {
	pf, _ := probeFrame(otherMAC, vipA)
	f.Add(pf)
	g, _ := garpFrame(arp.OperationReply, otherMAC, vipA, otherMAC)
	f.Add(g)
	own, _ := garpFrame(arp.OperationReply, testIfi().HardwareAddr, vipA, otherMAC)
	f.Add(own)
	f.Add([]byte{})
	p := NewProber(testIfi(), newFakeProbeConn(nil), []net.HardwareAddr{ownMAC2}, nil)
	want := map[netip.Addr]bool{vipA: true}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, ok := p.classify(b, want)
		if !ok {
			return
		}
		fr, err := ParseARPFrame(b)
		if err != nil {
			t.Fatalf("conflict from a frame ParseARPFrame rejects: %v", err)
		}
		if p.own[fr.SenderMAC.String()] || p.own[fr.Src.String()] {
			t.Fatalf("conflict from our own MAC: %+v", fr)
		}
		if c.IP != vipA || c.MAC.String() != fr.SenderMAC.String() {
			t.Fatalf("conflict %+v from frame %+v", c, fr)
		}
		if c.Probing != (fr.SenderIP != vipA) {
			t.Fatalf("Probing %v for sender IP %v", c.Probing, fr.SenderIP)
		}
	})
}
