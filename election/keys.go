package election

import (
	"net/netip"
	"strings"
)

// Keys builds and parses vipd's etcd key layout under one prefix:
//
//	<prefix>/groups/<group>/leader             value: node name, on the holder's lease
//	<prefix>/groups/<group>/candidates/<node>  value: JSON Candidate, on the node's lease
//	<prefix>/groups/<group>/handover           value: JSON Handover, on vipctl's short lease
//	<prefix>/groups/<group>/released           value: JSON Released, no lease: the last graceful release
//	<prefix>/nodes/<node>/drained              value: anything; present = drained (no lease: survives restarts)
//	<prefix>/addresses/<ip>                    value: JSON AddressClaim, on the holder's lease
//	<prefix>/members/<ip>                      value: JSON Members, no lease: who may claim the address next
//
// A leader key and the address keys of its group's VIPs are created in one
// transaction, on one lease, only if all are absent, so they share one
// CreateRevision: "never two holders" then holds per address as well as
// per group, whatever the groups are called on each node.
type Keys struct {
	Prefix string // e.g. "/vipd", no trailing slash
}

// All is the prefix of every vipd key; one watch on it serves a node.
func (k Keys) All() string { return k.Prefix + "/" }

// Handover is the planned-switchover request key of group.
func (k Keys) Handover(group string) string { return k.Groups() + group + "/handover" }

// Drained is the key that marks node as drained.
func (k Keys) Drained(node string) string { return k.Prefix + "/nodes/" + node + "/drained" }

// Groups is the prefix under which every group key lives; one watch on it
// serves all groups of a node.
func (k Keys) Groups() string { return k.Prefix + "/groups/" }

// Released is the key where a holder that resigns records which claim it
// released (with its VIPs confirmed gone), in the same transaction.
func (k Keys) Released(group string) string { return k.Groups() + group + "/released" }

// Leader is the leader key of group.
func (k Keys) Leader(group string) string { return k.Groups() + group + "/leader" }

// Candidate is node's candidate record key in group.
func (k Keys) Candidate(group, node string) string {
	return k.Groups() + group + "/candidates/" + node
}

// Addresses is the prefix of every address claim key.
func (k Keys) Addresses() string { return k.Prefix + "/addresses/" }

// Address is the claim key of one VIP address (its canonical text form,
// without prefix length or zone).
func (k Keys) Address(ip netip.Addr) string { return k.Addresses() + ip.Unmap().String() }

// MembersPrefix is the prefix of every address membership key.
func (k Keys) MembersPrefix() string { return k.Prefix + "/members/" }

// Members is the membership key of one VIP address (see Members).
func (k Keys) Members(ip netip.Addr) string { return k.MembersPrefix() + ip.Unmap().String() }

// KeyKind says what a parsed key is.
type KeyKind int

// Kinds of keys under Groups().
const (
	KeyUnknown KeyKind = iota
	KeyLeader
	KeyCandidate
	KeyHandover
	KeyDrained
	KeyAddress
	KeyReleased
	KeyMembers
)

// Parse splits a key under All() into group, kind and (for candidates and
// drain marks) node. Anything else is KeyUnknown, which callers log and
// ignore.
func (k Keys) Parse(key string) (group string, kind KeyKind, node string) {
	if _, ok := k.ParseAddress(key); ok {
		return "", KeyAddress, ""
	}
	if _, ok := k.ParseMembers(key); ok {
		return "", KeyMembers, ""
	}
	if rest, ok := strings.CutPrefix(key, k.Prefix+"/nodes/"); ok {
		if n, ok := strings.CutSuffix(rest, "/drained"); ok && n != "" && !strings.Contains(n, "/") {
			return "", KeyDrained, n
		}
		return "", KeyUnknown, ""
	}
	rest, ok := strings.CutPrefix(key, k.Groups())
	if !ok {
		return "", KeyUnknown, ""
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 2 && parts[1] == "handover" && parts[0] != "":
		return parts[0], KeyHandover, ""
	case len(parts) == 2 && parts[1] == "leader" && parts[0] != "":
		return parts[0], KeyLeader, ""
	case len(parts) == 2 && parts[1] == "released" && parts[0] != "":
		return parts[0], KeyReleased, ""
	case len(parts) == 3 && parts[1] == "candidates" && parts[0] != "" && parts[2] != "":
		return parts[0], KeyCandidate, parts[2]
	}
	return "", KeyUnknown, ""
}

// ParseAddress returns the address of an address claim key.
func (k Keys) ParseAddress(key string) (netip.Addr, bool) { return parseIPKey(key, k.Addresses()) }

// ParseMembers returns the address of an address membership key.
func (k Keys) ParseMembers(key string) (netip.Addr, bool) { return parseIPKey(key, k.MembersPrefix()) }

func parseIPKey(key, prefix string) (netip.Addr, bool) {
	rest, ok := strings.CutPrefix(key, prefix)
	if !ok {
		return netip.Addr{}, false
	}
	ip, err := netip.ParseAddr(rest)
	if err != nil || ip.Zone() != "" || ip.String() != rest {
		return netip.Addr{}, false
	}
	return ip, true
}
