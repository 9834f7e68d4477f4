package netif

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

func TestParseScope(t *testing.T) {
	for s, want := range map[string]Scope{"": ScopeGlobal, "global": ScopeGlobal, "link": ScopeLink, "host": ScopeHost} {
		got, err := ParseScope(s)
		if err != nil || got != want {
			t.Errorf("ParseScope(%q) = %v, %v; want %v", s, got, err, want)
		}
		if s != "" && got.String() != s {
			t.Errorf("%v.String() = %q, want %q", got, got.String(), s)
		}
	}
	// The constants are the kernel's.
	if ScopeLink != unix.RT_SCOPE_LINK || ScopeHost != unix.RT_SCOPE_HOST || ScopeGlobal != unix.RT_SCOPE_UNIVERSE {
		t.Error("scope constants differ from RT_SCOPE_*")
	}
	for _, s := range []string{"site", "Global", "nowhere"} {
		if _, err := ParseScope(s); err == nil || !strings.Contains(err.Error(), s) {
			t.Errorf("ParseScope(%q) = %v, want an error naming it", s, err)
		}
	}
}

func TestAddrOptionsCheck(t *testing.T) {
	v4 := netip.MustParsePrefix("192.168.20.15/24")
	v6 := netip.MustParsePrefix("fd00:20::15/64")
	ok := []AddrOptions{{}, {Label: "eth0:vip"}, {Label: "eth0:1", Scope: ScopeLink}, {Scope: ScopeHost}, {Label: "eth0:0123456789"}}
	for _, o := range ok {
		if err := o.check("eth0", v4); err != nil {
			t.Errorf("%+v on eth0 %v: %v", o, v4, err)
		}
	}
	bad := map[string]AddrOptions{
		"other interface": {Label: "eth1:vip"},
		"no colon":        {Label: "eth0vip"},
		"bare name":       {Label: "eth0"},
		"empty suffix":    {Label: "eth0:"},
		"16 bytes":        {Label: "eth0:0123456789a"},
		"space":           {Label: "eth0:a b"},
		"scope 200":       {Scope: 200},
	}
	for name, o := range bad {
		if err := o.check("eth0", v4); err == nil || !strings.HasPrefix(err.Error(), "netif: ") {
			t.Errorf("%s: %+v accepted (err %v)", name, o, err)
		}
	}
	if err := (AddrOptions{}).check("eth0", v6); err != nil {
		t.Errorf("zero options on IPv6: %v", err)
	}
	for _, o := range []AddrOptions{{Label: "eth0:vip"}, {Scope: ScopeLink}} {
		if err := o.check("eth0", v6); err == nil || !strings.Contains(err.Error(), "IPv4") {
			t.Errorf("%+v on %v = %v, want an IPv4-only error", o, v6, err)
		}
	}
}

// TestReplaceWithLabelAndScope: the kernel records the label and scope;
// a refresh keeps them and the lifetime refresh still works; Remove needs
// no label; bad options touch nothing.
func TestReplaceWithLabelAndScope(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	n, h := nsHandle(t)
	vip := netip.MustParsePrefix("10.99.7.15/24")
	o := AddrOptions{Label: "va:vip", Scope: ScopeLink}

	for _, bad := range []AddrOptions{{Label: "vb:vip"}, {Label: "va:0123456789abc"}} {
		if _, err := h.ReplaceWith("va", vip, 5*time.Second, bad); err == nil {
			t.Fatalf("ReplaceWith(%+v) accepted", bad)
		}
	}
	if _, err := h.ReplaceWith("va", netip.MustParsePrefix("2001:db8:7::15/64"), 5*time.Second, o); err == nil {
		t.Fatal("label on IPv6 accepted")
	}
	if ps, _ := h.Addrs("va"); len(ps) > 0 {
		for _, p := range ps {
			if !p.Addr().IsLinkLocalUnicast() {
				t.Fatalf("refused ReplaceWith left %v", p)
			}
		}
	}

	added, err := h.ReplaceWith("va", vip, 5*time.Second, o)
	if err != nil || !added {
		t.Fatalf("ReplaceWith = %v, %v; want added", added, err)
	}
	check := func(when string, maxLft int) {
		t.Helper()
		ka := kernelAddr(t, n, "va", vip)
		if ka == nil {
			t.Fatalf("%s: %v missing", when, vip)
		}
		if ka.Label != "va:vip" || ka.Scope != int(netlink.SCOPE_LINK) {
			t.Errorf("%s: label %q scope %d, want va:vip and %d (link)", when, ka.Label, ka.Scope, netlink.SCOPE_LINK)
		}
		if ka.ValidLft < 1 || ka.ValidLft > maxLft {
			t.Errorf("%s: valid_lft %d, want ≤ %d", when, ka.ValidLft, maxLft)
		}
	}
	check("after add", 5)
	// `ip -4 addr show label va:vip` finds it, as operators would look.
	out := n.ipOut(t, "-4", "-o", "addr", "show", "dev", "va", "label", "va:vip")
	if !strings.Contains(out, "10.99.7.15/24") || !strings.Contains(out, "scope link") {
		t.Errorf("ip addr show label va:vip:\n%s", out)
	}

	// Refresh, also through the plain Replace (the keeper may be built
	// without options): label and scope stay, the lifetime is reset.
	if added, err := h.Replace("va", vip, 30*time.Second); err != nil || added {
		t.Fatalf("Replace refresh = %v, %v", added, err)
	}
	check("after refresh", 30)
	if ka := kernelAddr(t, n, "va", vip); ka != nil && ka.ValidLft < 20 {
		t.Errorf("refresh did not extend the lifetime: valid_lft %d", ka.ValidLft)
	}

	removed, err := h.Remove("va", vip)
	if err != nil || !removed {
		t.Fatalf("Remove = %v, %v", removed, err)
	}
	// Host scope too.
	if _, err := h.ReplaceWith("va", vip, 5*time.Second, AddrOptions{Scope: ScopeHost}); err != nil {
		t.Fatal(err)
	}
	if ka := kernelAddr(t, n, "va", vip); ka == nil || ka.Scope != int(netlink.SCOPE_HOST) || ka.Label != "va" {
		t.Errorf("host scope: %+v, want scope %d and the default label va", ka, netlink.SCOPE_HOST)
	}
}
