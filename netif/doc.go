// Package netif owns a VIP's presence on the wire: binding it with netlink
// (RFC 3549) under a kernel lifetime, announcing it with gratuitous ARP
// (RFC 826, RFC 5227 §3) or unsolicited Neighbor Advertisements
// (RFC 4861 §7.2.6), and watching address and link events.
//
// # Binding under a lifetime (docs/design.md §2.3)
//
// [Handle.Bind] adds or refreshes an address with valid_lft =
// preferred_lft = whole seconds, computed when the request leaves (not when
// the caller asked: it may have waited behind other requests) so that the
// lifetime runs out by the caller's deadline ([LifetimeUntil]); [Handle.Extend]
// refreshes a bound address with one request. The kernel deletes the
// address by itself when the lifetime runs out, so a vipd that is killed,
// frozen or OOM-killed stops holding the VIP without any help; a refresh
// never removes the address (no flap). The returned [Binding] says when the
// lifetime ends at the latest ([Binding.Ends], counted from the kernel's
// answer), so a caller that stalled inside the call can tell it set a
// lifetime that runs too long.
//
// The kernel does not remove an address the instant its lifetime ends: the
// IPv4 (check_lifetime) and IPv6 (addrconf_verify) expiry checks run about
// once a second as deferrable work, which waits for an idle CPU's next
// wake-up. [KernelExpiryLag] bounds the lag from measurement
// (TestKernelExpiryLag; up to 2.03 s measured, 2.5 s assumed), and
// [Binding.GoneBy] is the latest the address may linger.
//
// [Handle.Unbind] removes a VIP and confirms it gone: when the address is
// not found on the named interface (renamed, re-created, another prefix
// length, already expired) it looks the IP up on every link.
// [Handle.RemoveIPs] removes every address with given IPs, any link, any
// prefix length (startup cleanup and `vipd cleanup`).
//
// Setting a link administratively down makes the kernel delete its IPv6
// addresses (net.ipv6.conf.*.keep_addr_on_down defaults to 0), an IPv6 VIP
// included; IPv4 addresses stay, and a mere carrier loss keeps both. Watch
// reports the AddrRemoved, and the next Bind reports Added so the caller
// announces again.
//
// # Announcing
//
// [Announcer] writes raw Ethernet frames with an AF_PACKET socket, each
// only while its [Gate] is open (checked immediately before the frame: the
// caller's fence is live and the VIP bound). It does not use arp.Client:
// arp.New (and so arp.Dial) refuses an interface without an IPv4 address
// of its own (e.g. a dedicated VIP interface), and its Request sends from
// the interface's first IPv4 address, not the VIP. For each IPv4 VIP one
// announcement round is an ARP request and an ARP reply, both broadcast,
// with sender and target protocol address = VIP. For each IPv6 VIP it is
// one unsolicited Neighbor Advertisement (Override flag set) to the
// all-nodes group ff02::1. [Burst]
// repeats rounds on an injected clock; [Schedule] is a group's whole
// schedule: the burst (garp.count rounds, garp.interval apart, the first at
// once), then one round every garp.refresh while the group holds.
//
// # Label and scope
//
// [Handle.Bind] (and [Handle.ReplaceWith]) bind an IPv4 VIP with a label (`eth0:vip`, shown by
// `ip address` and as an ifconfig alias) and a scope (global, link, host),
// as keepalived's virtual_ipaddress accepts. Linux has no IPv6 labels and
// derives an IPv6 scope from the address, so both are IPv4 only. The
// kernel applies them when it creates the address; a refresh keeps them.
//
// # Probing before claiming
//
// [Prober] (and [Handle.ProbeARP], which opens one in the handle's
// namespace) sends ARP probes in the form of RFC 5227 §2.1.1 — broadcast
// requests with sender IP 0.0.0.0, so no cache learns from them — for the
// VIPs a node is about to bind, and listens for a short wait. A reply or
// announcement with a probed address as sender IP, or another host's probe
// for it, from a MAC that is not one of the namespace's own, is a
// [Conflict]. RFC 5227 probes for 1–2 s (PROBE_NUM 3, PROBE_WAIT 1 s);
// vipd's failover budget is 0.5 s, so it sends two probes per address, at
// once and half-way, within garp.probe_wait (default 50 ms, at most
// 500 ms): hosts on a LAN answer an ARP request in well under a
// millisecond, and a host slower than the wait is missed. The wait delays
// every bind of a group that enables the probe, so it counts against the
// failover time.
//
// Policy (in keeper's bind): a conflict is logged at WARN, with the other
// host's MAC, and counted (vipd_address_conflicts_total); vipd then binds
// the VIP anyway. etcd, not ARP, decides which vipd node holds a group,
// and no vipd node binds without the key, so the other host is outside
// vipd's control (a stray manual address, a forgotten keepalived).
// Refusing would turn that host into an outage for every client, and the
// next candidate would win the key, probe, see the same host and refuse
// too. Binding and announcing pulls the clients back to the holder while
// the report tells the operator to remove the stray address. This is
// keepalived's outcome without its silence.
//
// # Watching
//
// [Handle.Watch] turns rtnetlink address and link notifications into
// [Event]s for a set of interface names, without polling.
package netif
