package election

import "strings"

// Keys builds and parses vipd's etcd key layout under one prefix:
//
//	<prefix>/groups/<group>/leader             value: node name, on the holder's lease
//	<prefix>/groups/<group>/candidates/<node>  value: JSON Candidate, on the node's lease
//	<prefix>/groups/<group>/handover           value: JSON Handover, on vipctl's short lease
//	<prefix>/nodes/<node>/drained              value: anything; present = drained (no lease: survives restarts)
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

// Leader is the leader key of group.
func (k Keys) Leader(group string) string { return k.Groups() + group + "/leader" }

// Candidate is node's candidate record key in group.
func (k Keys) Candidate(group, node string) string {
	return k.Groups() + group + "/candidates/" + node
}

// KeyKind says what a parsed key is.
type KeyKind int

// Kinds of keys under Groups().
const (
	KeyUnknown KeyKind = iota
	KeyLeader
	KeyCandidate
	KeyHandover
	KeyDrained
)

// Parse splits a key under All() into group, kind and (for candidates and
// drain marks) node. Anything else is KeyUnknown, which callers log and
// ignore.
func (k Keys) Parse(key string) (group string, kind KeyKind, node string) {
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
	case len(parts) == 3 && parts[1] == "candidates" && parts[0] != "" && parts[2] != "":
		return parts[0], KeyCandidate, parts[2]
	}
	return "", KeyUnknown, ""
}
