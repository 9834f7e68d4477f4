package netif

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mdlayher/arp"
	"github.com/mdlayher/ndp"
	"github.com/mdlayher/packet"
	"github.com/vipd/vipd/internal/clock"
)

type sentFrame struct {
	b   []byte
	dst net.HardwareAddr
}

// fakeWriter records frames instead of sending them.
type fakeWriter struct {
	mu     sync.Mutex
	frames []sentFrame
	err    error // returned by every WriteTo when set
	closed bool
}

func (f *fakeWriter) WriteTo(b []byte, addr net.Addr) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	pa, ok := addr.(*packet.Addr)
	if !ok {
		return 0, errors.New("fakeWriter: addr is not *packet.Addr")
	}
	f.frames = append(f.frames, sentFrame{b: bytes.Clone(b), dst: bytes.Clone(pa.HardwareAddr)})
	return len(b), nil
}

func (f *fakeWriter) Close() error { f.closed = true; return nil }

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	s = strings.Join(strings.Fields(s), "")
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

func testIfi() *net.Interface {
	return &net.Interface{Index: 7, Name: "ens160", HardwareAddr: net.HardwareAddr{0x02, 0x42, 0xac, 0x11, 0x00, 0x02}}
}

func TestAnnounceIPv4GoldenFrames(t *testing.T) {
	w := &fakeWriter{}
	a := NewAnnouncer(testIfi(), w, nil)
	if err := a.Announce(netip.MustParseAddr("192.168.20.15"), nil); err != nil {
		t.Fatal(err)
	}
	// 192.168.20.15 = c0 a8 14 0f
	want := []struct {
		name  string
		frame string
	}{
		{"request", `
			ffffffffffff 0242ac110002 0806   eth dst=broadcast src=if MAC type=ARP
			0001 0800 06 04 0001             htype=Ethernet ptype=IPv4 hlen=6 plen=4 op=request
			0242ac110002 c0a8140f            sender MAC, sender IP = VIP
			000000000000 c0a8140f            target MAC = zero, target IP = VIP
			000000000000000000000000000000000000 padding to the 60-byte Ethernet minimum`},
		{"reply", `
			ffffffffffff 0242ac110002 0806
			0001 0800 06 04 0002             op=reply
			0242ac110002 c0a8140f
			0242ac110002 c0a8140f            target MAC = if MAC (arping -A form)
			000000000000000000000000000000000000 padding`},
	}
	if len(w.frames) != len(want) {
		t.Fatalf("sent %d frames, want %d", len(w.frames), len(want))
	}
	for i, tc := range want {
		t.Run(tc.name, func(t *testing.T) {
			var fields []string
			for _, line := range strings.Split(tc.frame, "\n") {
				// keep only the hex groups before the comment
				for _, f := range strings.Fields(line) {
					if _, err := hex.DecodeString(f); err != nil {
						break
					}
					fields = append(fields, f)
				}
			}
			wantB := unhex(t, strings.Join(fields, ""))
			if len(wantB) != 60 {
				t.Fatalf("golden frame is %d bytes, want 60", len(wantB))
			}
			got := w.frames[i]
			if !bytes.Equal(got.b, wantB) {
				t.Errorf("frame\n got %x\nwant %x", got.b, wantB)
			}
			if !bytes.Equal(got.dst, broadcastMAC()) {
				t.Errorf("socket destination %v, want broadcast", got.dst)
			}
			f, err := ParseARPFrame(got.b)
			if err != nil {
				t.Fatal(err)
			}
			if !f.Gratuitous() {
				t.Errorf("frame %+v is not gratuitous", f)
			}
		})
	}
}

func TestAnnounceIPv6GoldenFrame(t *testing.T) {
	w := &fakeWriter{}
	a := NewAnnouncer(testIfi(), w, nil)
	vip := netip.MustParseAddr("2001:db8::15")
	if err := a.Announce(vip, nil); err != nil {
		t.Fatal(err)
	}
	if len(w.frames) != 1 {
		t.Fatalf("sent %d frames, want 1", len(w.frames))
	}
	got := w.frames[0].b
	want := unhex(t, `
		333300000001 0242ac110002 86dd
		60000000 0020 3a ff
		20010db8000000000000000000000015
		ff020000000000000000000000000001
		8800 0000 20000000
		20010db8000000000000000000000015
		0201 0242ac110002`)
	if len(got) != len(want) {
		t.Fatalf("frame is %d bytes, want %d: %x", len(got), len(want), got)
	}
	// Everything but the ICMPv6 checksum (frame bytes 56-57) is fixed.
	gotNoSum := bytes.Clone(got)
	gotNoSum[56], gotNoSum[57] = 0, 0
	if !bytes.Equal(gotNoSum, want) {
		t.Errorf("frame (checksum zeroed)\n got %x\nwant %x", gotNoSum, want)
	}
	// The checksum must verify: the one's-complement sum over the pseudo
	// header and the message, checksum included, is 0xffff.
	if s := icmp6Sum(got[22:38], got[38:54], got[54:]); s != 0xffff {
		t.Errorf("ICMPv6 checksum does not verify: sum %#04x", s)
	}
	m, err := ndp.ParseMessage(got[54:])
	if err != nil {
		t.Fatal(err)
	}
	na, ok := m.(*ndp.NeighborAdvertisement)
	if !ok || !na.Override || na.Solicited || na.Router || na.TargetAddress != vip {
		t.Errorf("parsed %#v", m)
	}
	if !bytes.Equal(w.frames[0].dst, allNodesMAC()) {
		t.Errorf("socket destination %v, want %v", w.frames[0].dst, allNodesMAC())
	}
}

func icmp6Sum(src, dst, msg []byte) uint16 {
	var sum uint32
	add := func(b []byte) {
		for i := 0; i+1 < len(b); i += 2 {
			sum += uint32(b[i])<<8 | uint32(b[i+1])
		}
		if len(b)%2 == 1 {
			sum += uint32(b[len(b)-1]) << 8
		}
	}
	add(src)
	add(dst)
	add([]byte{0, 0, byte(len(msg) >> 8), byte(len(msg)), 0, 0, 0, 58})
	add(msg)
	for sum > 0xffff {
		sum = sum>>16 + sum&0xffff
	}
	return uint16(sum)
}

func TestAnnounceRejects(t *testing.T) {
	for _, s := range []string{"fe80::1", "ff02::1", "::", ""} {
		w := &fakeWriter{}
		a := NewAnnouncer(testIfi(), w, nil)
		var ip netip.Addr
		if s != "" {
			ip = netip.MustParseAddr(s)
		}
		err := a.Announce(ip, nil)
		if err == nil || !strings.Contains(err.Error(), "ens160") {
			t.Errorf("Announce(%v) = %v, want an error naming the interface", ip, err)
		}
		if len(w.frames) != 0 {
			t.Errorf("Announce(%v) sent %d frames", ip, len(w.frames))
		}
	}
	// No MAC (e.g. a tun device).
	a := NewAnnouncer(&net.Interface{Name: "tun0"}, &fakeWriter{}, nil)
	if err := a.Announce(netip.MustParseAddr("10.0.0.1"), nil); !errors.Is(err, errNoHardwareAddr) {
		t.Errorf("Announce on tun0 = %v, want errNoHardwareAddr", err)
	}
}

func TestAnnounceWriteErrorNamesInterfaceAndTriesBoth(t *testing.T) {
	boom := errors.New("boom")
	w := &fakeWriter{err: boom}
	a := NewAnnouncer(testIfi(), w, nil)
	err := a.Announce(netip.MustParseAddr("192.168.20.15"), nil)
	if !errors.Is(err, boom) || !strings.Contains(err.Error(), "ens160") || !strings.Contains(err.Error(), "192.168.20.15") {
		t.Fatalf("err = %v", err)
	}
	if err := a.Close(); err != nil || !w.closed {
		t.Fatalf("Close = %v, closed = %v", err, w.closed)
	}
}

func TestEtherMuxRoutesByEtherType(t *testing.T) {
	a4, a6 := &fakeWriter{}, &fakeWriter{}
	m := &etherMux{arp: a4, ipv6: a6}
	ann := NewAnnouncer(testIfi(), m, nil)
	if err := ann.Announce(netip.MustParseAddr("10.1.2.3"), nil); err != nil {
		t.Fatal(err)
	}
	if err := ann.Announce(netip.MustParseAddr("2001:db8::1"), nil); err != nil {
		t.Fatal(err)
	}
	if len(a4.frames) != 2 || len(a6.frames) != 1 {
		t.Fatalf("arp socket got %d frames, ipv6 socket %d; want 2 and 1", len(a4.frames), len(a6.frames))
	}
	if _, err := m.WriteTo(make([]byte, 14), &packet.Addr{HardwareAddr: zeroMAC()}); err == nil {
		t.Error("EtherType 0 accepted")
	}
	if _, err := m.WriteTo(make([]byte, 3), &packet.Addr{HardwareAddr: zeroMAC()}); err == nil {
		t.Error("3-byte frame accepted")
	}
}

func TestParseARPFrame(t *testing.T) {
	good := unhex(t, "ffffffffffff 0242ac110002 0806 0001 0800 06 04 0002 0242ac110002 c0a8140f 0a0b0c0d0e0f 0a000001")
	f, err := ParseARPFrame(append(bytes.Clone(good), make([]byte, 18)...)) // padded to 60
	if err != nil {
		t.Fatal(err)
	}
	want := ARPFrame{
		Dst: broadcastMAC(), Src: net.HardwareAddr{2, 0x42, 0xac, 0x11, 0, 2},
		Op:        arp.OperationReply,
		SenderMAC: net.HardwareAddr{2, 0x42, 0xac, 0x11, 0, 2}, SenderIP: netip.MustParseAddr("192.168.20.15"),
		TargetMAC: net.HardwareAddr{10, 11, 12, 13, 14, 15}, TargetIP: netip.MustParseAddr("10.0.0.1"),
	}
	if f.Dst.String() != want.Dst.String() || f.Src.String() != want.Src.String() || f.Op != want.Op ||
		f.SenderMAC.String() != want.SenderMAC.String() || f.SenderIP != want.SenderIP ||
		f.TargetMAC.String() != want.TargetMAC.String() || f.TargetIP != want.TargetIP {
		t.Errorf("got %+v\nwant %+v", f, want)
	}
	if f.Gratuitous() {
		t.Error("sender IP != target IP reported gratuitous")
	}
	bad := map[string]func([]byte){
		"short":     nil,
		"ethertype": func(b []byte) { b[13] = 0x00 },
		"htype":     func(b []byte) { b[15] = 6 },
		"ptype":     func(b []byte) { b[16] = 0x86 },
		"hlen":      func(b []byte) { b[18] = 8 },
		"plen":      func(b []byte) { b[19] = 16 },
	}
	for name, mut := range bad {
		b := bytes.Clone(good)
		if mut == nil {
			b = b[:41]
		} else {
			mut(b)
		}
		if _, err := ParseARPFrame(b); !errors.Is(err, errNotARP) {
			t.Errorf("%s: err = %v, want errNotARP", name, err)
		}
	}
}

// FuzzParseARPFrame checks that ParseARPFrame never panics, agrees with
// mdlayher/arp's decoder on every frame it accepts, and that re-encoding an
// accepted frame with the Announcer's builder gives back its first 42 bytes.
func FuzzParseARPFrame(f *testing.F) {
	ann := NewAnnouncer(testIfi(), &fakeWriter{}, nil)
	fr, err := ann.frames(netip.MustParseAddr("192.168.20.15"))
	if err != nil {
		f.Fatal(err)
	}
	for _, b := range fr {
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add(make([]byte, 60))
	f.Fuzz(func(t *testing.T, b []byte) {
		in := bytes.Clone(b)
		p, err := ParseARPFrame(b)
		if !bytes.Equal(in, b) {
			t.Fatal("ParseARPFrame modified its input")
		}
		if err != nil {
			return
		}
		var ref arp.Packet
		if err := ref.UnmarshalBinary(b[14:]); err != nil {
			t.Fatalf("accepted a frame arp.Packet rejects: %v", err)
		}
		if ref.Operation != p.Op || ref.SenderIP != p.SenderIP || ref.TargetIP != p.TargetIP ||
			!bytes.Equal(ref.SenderHardwareAddr, p.SenderMAC) || !bytes.Equal(ref.TargetHardwareAddr, p.TargetMAC) {
			t.Fatalf("disagrees with arp.Packet: %+v vs %+v", p, ref)
		}
		// Rebuild: same Ethernet header and ARP body.
		pk := &arp.Packet{HardwareType: 1, ProtocolType: 0x0800, HardwareAddrLength: 6, IPLength: 4,
			Operation: p.Op, SenderHardwareAddr: p.SenderMAC, SenderIP: p.SenderIP,
			TargetHardwareAddr: p.TargetMAC, TargetIP: p.TargetIP}
		body, _ := pk.MarshalBinary()
		re := append(append(append(append([]byte{}, p.Dst...), p.Src...), 0x08, 0x06), body...)
		if !bytes.Equal(re, b[:arpFrameLen]) {
			t.Fatalf("round trip\n got %x\nwant %x", re, b[:arpFrameLen])
		}
		// Parsed slices must not alias the input.
		if len(b) > 0 {
			b[0] ^= 0xff
			if p.Dst[0] == b[0] {
				t.Fatal("Dst aliases the input")
			}
		}
	})
}

func TestBurstSchedule(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clk := clock.NewFake(start)
	var mu sync.Mutex
	var at []time.Duration
	send := func() error {
		mu.Lock()
		defer mu.Unlock()
		at = append(at, clk.Now().Sub(start))
		return nil
	}
	sends := func() []time.Duration {
		mu.Lock()
		defer mu.Unlock()
		return append([]time.Duration(nil), at...)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := Burst(context.Background(), clk, 5, time.Second, send)
		done <- result{n, err}
	}()
	for i := 1; i < 5; i++ {
		if !clk.WaitForTimers(1, 5*time.Second) {
			t.Fatalf("round %d: Burst not waiting on a timer", i)
		}
		if got := len(sends()); got != i {
			t.Fatalf("before advancing to round %d: %d sends, want %d", i+1, got, i)
		}
		// Just short of the interval: nothing more.
		clk.Advance(time.Second - time.Millisecond)
		if got := len(sends()); got != i {
			t.Fatalf("%d sends after %v, want %d", got, time.Second-time.Millisecond, i)
		}
		clk.Advance(time.Millisecond)
		// Wait for the send the timer releases.
		deadline := time.Now().Add(5 * time.Second)
		for len(sends()) < i+1 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	r := <-done
	if r.n != 5 || r.err != nil {
		t.Fatalf("Burst = %d, %v; want 5, nil", r.n, r.err)
	}
	want := []time.Duration{0, time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second}
	got := sends()
	if len(got) != len(want) {
		t.Fatalf("sent at %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("sent at %v, want %v", got, want)
		}
	}
	if clk.Timers() != 0 {
		t.Errorf("%d timers left armed", clk.Timers())
	}
}

func TestBurstCancelStops(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	ctx, cancel := context.WithCancel(context.Background())
	var mu sync.Mutex
	n := 0
	done := make(chan [2]any, 1)
	go func() {
		k, err := Burst(ctx, clk, 10, time.Second, func() error { mu.Lock(); n++; mu.Unlock(); return nil })
		done <- [2]any{k, err}
	}()
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("Burst not waiting")
	}
	clk.Advance(time.Second)
	if !clk.WaitForTimers(1, 5*time.Second) {
		t.Fatal("Burst not waiting after round 2")
	}
	cancel()
	var r [2]any
	select {
	case r = <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Burst did not return after cancel")
	}
	clk.Advance(time.Minute)
	mu.Lock()
	defer mu.Unlock()
	if r[0] != 2 || r[1] != nil || n != 2 {
		t.Fatalf("Burst = %v, %v after %d sends; want 2, nil, 2", r[0], r[1], n)
	}
	if clk.Timers() != 0 {
		t.Errorf("%d timers left armed", clk.Timers())
	}

	// Already cancelled: nothing at all.
	calls := 0
	k, err := Burst(ctx, clk, 3, time.Second, func() error { calls++; return nil })
	if k != 0 || err != nil || calls != 0 {
		t.Fatalf("cancelled Burst = %d, %v with %d calls; want 0, nil, 0", k, err, calls)
	}
}

func TestBurstErrorsKeepGoing(t *testing.T) {
	clk := clock.NewFake(time.Unix(0, 0))
	e1, e2 := errors.New("first"), errors.New("second")
	errs := []error{e1, nil, e2, nil}
	i := 0
	done := make(chan struct{})
	var k int
	var err error
	go func() {
		defer close(done)
		k, err = Burst(context.Background(), clk, 4, 100*time.Millisecond, func() error { e := errs[i]; i++; return e })
	}()
	for range 3 {
		if !clk.WaitForTimers(1, 5*time.Second) {
			t.Fatal("Burst not waiting")
		}
		clk.Advance(100 * time.Millisecond)
	}
	<-done
	if k != 2 || !errors.Is(err, e1) || i != 4 {
		t.Fatalf("Burst = %d, %v after %d calls; want 2, first, 4", k, err, i)
	}
	if k, err := Burst(context.Background(), clk, 0, time.Second, func() error { t.Fatal("called"); return nil }); k != 0 || err != nil {
		t.Fatalf("count 0: %d, %v", k, err)
	}
}

// The gate is checked immediately before every frame: a gate that closes
// between the ARP request and the reply of one round stops the reply, and
// a closed gate sends nothing.
func TestAnnounceChecksGateBeforeEveryFrame(t *testing.T) {
	w := &fakeWriter{}
	a := NewAnnouncer(testIfi(), w, nil)
	checks := 0
	openOnce := func() bool { checks++; return checks == 1 }
	err := a.Announce(netip.MustParseAddr("192.168.20.15"), openOnce)
	if !errors.Is(err, ErrGateClosed) {
		t.Fatalf("err = %v, want ErrGateClosed", err)
	}
	if len(w.frames) != 1 || checks != 2 {
		t.Fatalf("sent %d frames after %d gate checks; want the request only, 2 checks", len(w.frames), checks)
	}
	w.frames = nil
	if err := a.Announce(netip.MustParseAddr("2001:db8::15"), func() bool { return false }); !errors.Is(err, ErrGateClosed) || len(w.frames) != 0 {
		t.Fatalf("closed gate: err %v, %d frames; want ErrGateClosed and none", err, len(w.frames))
	}
}
