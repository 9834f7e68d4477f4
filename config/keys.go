package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// unknownKeys walks a decoded YAML document against the Config schema and
// returns one error per key the schema does not have, each naming the
// key's full path (checks.haproxy.interface, groups[0] (VI_1).lable), its
// line, and the nearest valid key or a hint, instead of the decoder's
// "field interface not found in type config.Check".
func unknownKeys(doc *yaml.Node) []error {
	if doc == nil {
		return nil
	}
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil
		}
		doc = doc.Content[0]
	}
	var errs []error
	walkKeys(doc, reflect.TypeOf(Config{}), "", &errs)
	return errs
}

func walkKeys(n *yaml.Node, t reflect.Type, path string, errs *[]error) {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // a type error: the decoder reports it
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if k.Value == "<<" && k.Tag == "!!merge" {
				walkKeys(v, t, path, errs)
				continue
			}
			key := joinKey(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				*errs = append(*errs, fmt.Errorf("%s: unknown key (line %d); %s", key, k.Line, keyHint(t, k.Value, fields)))
				continue
			}
			walkKeys(v, ft, key, errs)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			walkKeys(n.Content[i+1], t.Elem(), joinKey(path, n.Content[i].Value), errs)
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if name := mappingValue(item, "name"); name != "" {
				p += " (" + name + ")" // as Validate names groups
			}
			walkKeys(item, t.Elem(), p, errs)
		}
	}
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// mappingValue is the scalar value of key in a mapping node, or "".
func mappingValue(n *yaml.Node, key string) string {
	if n.Kind != yaml.MappingNode {
		return ""
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		if n.Content[i].Value == key && n.Content[i+1].Kind == yaml.ScalarNode {
			return n.Content[i+1].Value
		}
	}
	return ""
}

// yamlFields maps a struct's YAML keys to their types (fields tagged "-"
// or unexported are not keys).
func yamlFields(t reflect.Type) map[string]reflect.Type {
	out := map[string]reflect.Type{}
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		out[name] = f.Type
	}
	return out
}

// keyHints are the mistakes people make moving from keepalived or from
// another section, with what to write instead.
var keyHints = map[reflect.Type]map[string]string{
	reflect.TypeOf(Check{}): {
		"interface": "an interface check names its interface with name:",
		"script":    "an exec check's argv is command: (a list, no shell unless you name one)",
		"weight":    "weights belong on the group's track entry: track: [{check: NAME, weight: N}]",
		"process":   "a process check names its process with name: (or pidfile:)",
		"file":      "a file check names its file with path:",
	},
	reflect.TypeOf(Group{}): {
		"virtual_ipaddress": "the VIPs are addresses: [A/P, ...]",
		"vip":               "the VIPs are addresses: [A/P, ...]",
		"nopreempt":         "write preempt: false",
		"track_script":      "tracked checks are track: [{check: NAME, weight: N}]",
		"virtual_router_id": "groups are named, not numbered: name: is the key in etcd",
	},
}

// keyHint says what the author probably meant by key: a hint for a known
// mistake, the nearest valid key, or the valid keys.
func keyHint(t reflect.Type, key string, fields map[string]reflect.Type) string {
	if h, ok := keyHints[t][key]; ok {
		return h
	}
	names := make([]string, 0, len(fields))
	for name := range fields {
		names = append(names, name)
	}
	sort.Strings(names)
	best, bestD := "", -1
	for _, name := range names {
		if d := editDistance(key, name); bestD < 0 || d < bestD {
			best, bestD = name, d
		}
	}
	if bestD >= 0 && bestD <= max(2, len(key)/3) {
		return fmt.Sprintf("did you mean %s?", best)
	}
	return "valid keys here: " + strings.Join(names, ", ")
}

// editDistance is the Levenshtein distance between a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
