package netif

import (
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Scope is an IPv4 address scope (rtnetlink's ifa_scope), as `ip address
// add ... scope` and keepalived's virtual_ipaddress accept.
type Scope uint8

// Address scopes. The zero value is global.
const (
	ScopeGlobal Scope = 0   // RT_SCOPE_UNIVERSE
	ScopeLink   Scope = 253 // RT_SCOPE_LINK: valid on this link only
	ScopeHost   Scope = 254 // RT_SCOPE_HOST: valid inside this host only
)

// String returns the scope's name as `ip` prints it.
func (s Scope) String() string {
	switch s {
	case ScopeGlobal:
		return "global"
	case ScopeLink:
		return "link"
	case ScopeHost:
		return "host"
	}
	return fmt.Sprintf("Scope(%d)", uint8(s))
}

// ParseScope parses "global", "link" or "host"; "" is global.
func ParseScope(s string) (Scope, error) {
	switch s {
	case "", "global":
		return ScopeGlobal, nil
	case "link":
		return ScopeLink, nil
	case "host":
		return ScopeHost, nil
	}
	return 0, fmt.Errorf("netif: scope %q: want global, link or host", s)
}

// maxLabelLen is IFNAMSIZ-1: the kernel stores a label in ifa_label[IFNAMSIZ].
const maxLabelLen = 15

// AddrOptions are optional attributes of a bound address, as keepalived's
// `virtual_ipaddress { 192.168.20.15/24 dev eth0 label eth0:vip scope global }`
// accepts. The zero value is what Replace uses: no label (the kernel labels
// the address with the interface name) and global scope.
//
// Both apply to IPv4 addresses only: Linux keeps labels for IPv4 alone and
// derives an IPv6 address's scope from the address itself, so a non-zero
// AddrOptions with an IPv6 prefix is an error.
type AddrOptions struct {
	// Label is the IPv4 address label (IFA_LABEL), shown by `ip address`
	// and by ifconfig as an alias interface. It must be the interface
	// name followed by ":" and at least one more character, at most 15
	// bytes in all (e.g. "eth0:vip").
	Label string
	// Scope is the address scope. Zero value: global.
	Scope Scope
}

// IsZero reports whether o asks for nothing beyond the defaults.
func (o AddrOptions) IsZero() bool { return o == AddrOptions{} }

// CheckLabel reports whether label is usable on ifname: ifname + ":" +
// something, at most 15 bytes, no spaces or slashes.
func CheckLabel(ifname, label string) error {
	switch {
	case !strings.HasPrefix(label, ifname+":") || len(label) == len(ifname)+1:
		return fmt.Errorf("netif: label %q must be the interface name %q, a colon and a suffix (e.g. %q)", label, ifname, ifname+":vip")
	case len(label) > maxLabelLen:
		return fmt.Errorf("netif: label %q is %d bytes, the kernel allows %d", label, len(label), maxLabelLen)
	case strings.ContainsAny(label, " /\t\n"):
		return fmt.Errorf("netif: label %q contains a space or slash", label)
	}
	return nil
}

func (o AddrOptions) check(ifname string, p netip.Prefix) error {
	if o.IsZero() {
		return nil
	}
	if !p.Addr().Is4() {
		return fmt.Errorf("netif: label and scope apply to IPv4 addresses only, not %v", p)
	}
	if o.Label != "" {
		if err := CheckLabel(ifname, o.Label); err != nil {
			return err
		}
	}
	switch o.Scope {
	case ScopeGlobal, ScopeLink, ScopeHost:
	default:
		return fmt.Errorf("netif: unsupported %v for %v", o.Scope, p)
	}
	return nil
}

// ReplaceWith is [Handle.Replace] with a label and scope for the address.
//
// They take effect when the kernel creates the address (added=true). A
// refresh of an address that is already there only resets its lifetime:
// the kernel keeps the label and scope it was created with, so a change of
// either takes effect the next time the VIP is bound (after a release or a
// removal).
func (h *Handle) ReplaceWith(ifname string, p netip.Prefix, lifetime time.Duration, o AddrOptions) (added bool, err error) {
	if err := o.check(ifname, p); err != nil {
		return false, err
	}
	return h.replace(ifname, p, lifetime, o)
}

// Refresh resets the lifetime of p, which the caller knows is bound, with
// one netlink request (ReplaceWith needs two when the address exists).
// Should the address have gone, the request creates it again; the
// caller learns of that from the address event, not from Refresh.
func (h *Handle) Refresh(ifname string, p netip.Prefix, lifetime time.Duration, o AddrOptions) error {
	if err := o.check(ifname, p); err != nil {
		return err
	}
	_, err := h.setAddr(ifname, p, lifetime, o, true)
	return err
}
