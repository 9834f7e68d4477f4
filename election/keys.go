package election

import "strings"

// Keys builds and parses vipd's etcd key layout under one prefix:
//
//	<prefix>/groups/<group>/leader             value: node name, on the holder's lease
//	<prefix>/groups/<group>/candidates/<node>  value: JSON Candidate, on the node's lease
type Keys struct {
	Prefix string // e.g. "/vipd", no trailing slash
}

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
)

// Parse splits a key under Groups() into group, kind and (for candidates)
// node. Anything else is KeyUnknown, which callers log and ignore.
func (k Keys) Parse(key string) (group string, kind KeyKind, node string) {
	rest, ok := strings.CutPrefix(key, k.Groups())
	if !ok {
		return "", KeyUnknown, ""
	}
	parts := strings.Split(rest, "/")
	switch {
	case len(parts) == 2 && parts[1] == "leader" && parts[0] != "":
		return parts[0], KeyLeader, ""
	case len(parts) == 3 && parts[1] == "candidates" && parts[0] != "" && parts[2] != "":
		return parts[0], KeyCandidate, parts[2]
	}
	return "", KeyUnknown, ""
}
