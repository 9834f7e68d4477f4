// Package netif owns a VIP's presence on the wire: binding it with netlink
// (RFC 3549) under a kernel lifetime, announcing it with gratuitous ARP
// (RFC 826, RFC 5227 §3) or unsolicited Neighbor Advertisements
// (RFC 4861 §7.2.6), and watching address and link events.
//
// # Binding under a lifetime (DESIGN.md, safety point 3)
//
// [Handle.Replace] adds or refreshes an address with valid_lft =
// preferred_lft = the given lifetime, floored to whole seconds. The kernel
// deletes the address by itself when the lifetime runs out, so a vipd that is
// killed, frozen or OOM-killed stops holding the VIP without any help. The
// caller must pass a lifetime no longer than the time left to its fence
// deadline and call Replace again on every lease renewal; a refresh never
// removes the address (no flap) and only resets its lifetime.
//
// The kernel does not remove an address the instant its lifetime ends: the
// IPv4 (check_lifetime) and IPv6 (addrconf_verify) expiry timers are
// rounded up to a whole second (round_jiffies_up), so an address can
// outlive its lifetime by up to about one second. Measured on Linux 6.18:
// valid_lft 2 → gone after 2.01–2.28 s, for both families. A caller must
// keep that second inside its fence margin, i.e. pass at most (time left to
// the deadline − 1 s), floored.
//
// Setting a link administratively down makes the kernel delete its IPv6
// addresses (net.ipv6.conf.*.keep_addr_on_down defaults to 0), an IPv6 VIP
// included; IPv4 addresses stay, and a mere carrier loss keeps both. Watch
// reports the AddrRemoved, and the next Replace reports added=true so the
// caller announces again.
//
// # Announcing
//
// [Announcer] writes raw Ethernet frames with an AF_PACKET socket. It does
// not use arp.Client: arp.New (and so arp.Dial) refuses an interface without
// an IPv4 address of its own (e.g. a dedicated VIP interface), and its
// Request sends from the interface's first IPv4 address, not the VIP. For
// each IPv4 VIP one announcement round is an ARP request and an ARP reply,
// both broadcast, with sender and target protocol address = VIP. For each IPv6 VIP it is one unsolicited Neighbor
// Advertisement (Override flag set) to the all-nodes group ff02::1. [Burst]
// repeats rounds on an injected clock.
//
// # Watching
//
// [Handle.Watch] turns rtnetlink address and link notifications into
// [Event]s for a set of interface names, without polling.
package netif
