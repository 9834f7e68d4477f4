package config

import (
	"fmt"
	"reflect"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxKeyErrors is how many unknown keys are reported one by one; the
// rest are counted.
const maxKeyErrors = 50

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
	w := keyWalker{seen: map[walked]bool{}}
	w.walk(doc, reflect.TypeOf(Config{}), "")
	if w.more > 0 {
		w.errs = append(w.errs, fmt.Errorf("…and %d more unknown keys", w.more))
	}
	return w.errs
}

// keyWalker collects the unknown keys of one document.
type keyWalker struct {
	errs []error
	more int // unknown keys past maxKeyErrors
	// seen holds the collections already walked, by type: an alias
	// repeats its anchor's keys, not their errors, so a small file of
	// aliases of aliases cannot multiply them.
	seen map[walked]bool
}

type walked struct {
	n *yaml.Node
	t reflect.Type
}

func (w *keyWalker) unknown(err func() error) {
	if len(w.errs) >= maxKeyErrors {
		w.more++
		return
	}
	w.errs = append(w.errs, err())
}

func (w *keyWalker) walk(n *yaml.Node, t reflect.Type, path string) {
	n = resolve(n)
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if n.Kind == yaml.MappingNode || n.Kind == yaml.SequenceNode {
		if w.seen[walked{n, t}] {
			return
		}
		w.seen[walked{n, t}] = true
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // a type error: the decoder reports it
		}
		fields := yamlFields(t)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				w.merge(v, t, path)
				continue
			}
			key := joinKey(path, k.Value)
			ft, ok := fields[k.Value]
			if !ok {
				w.unknown(func() error {
					return fmt.Errorf("%s: unknown key (line %d); %s", key, k.Line, keyHint(t, k.Value, fields))
				})
				continue
			}
			w.walk(v, ft, key)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			if isMerge(k) {
				w.merge(v, t, path) // merges entries of the same map
				continue
			}
			w.walk(v, t.Elem(), joinKey(path, k.Value))
		}
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			if name := mappingValue(resolve(item), "name"); name != "" {
				p += " (" + name + ")" // as Validate names groups
			}
			w.walk(item, t.Elem(), p)
		}
	}
}

// merge walks the value of a "<<" key in a mapping of type t: a mapping
// (or an alias of one) merged into it, or a sequence of them.
func (w *keyWalker) merge(v *yaml.Node, t reflect.Type, path string) {
	v = resolve(v)
	if v.Kind == yaml.SequenceNode {
		for _, item := range v.Content {
			w.walk(item, t, path)
		}
		return
	}
	w.walk(v, t, path)
}

// isMerge reports whether k is a YAML merge key.
func isMerge(k *yaml.Node) bool { return k.Value == "<<" && k.Tag == "!!merge" }

// resolve follows aliases to the node they name.
func resolve(n *yaml.Node) *yaml.Node {
	for n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	return n
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

// knownMistake is the hint for a mistake people make moving from
// keepalived or from another section, with what to write instead.
func knownMistake(t reflect.Type, key string) string {
	switch t {
	case reflect.TypeOf(Check{}):
		switch key {
		case "interface":
			return "an interface check names its interface with name:"
		case "script":
			return "an exec check's argv is command: (a list, no shell unless you name one)"
		case "weight":
			return "weights belong on the group's track entry: track: [{check: NAME, weight: N}]"
		case "process":
			return "a process check names its process with name: (or pidfile:)"
		case "file":
			return "a file check names its file with path:"
		}
	case reflect.TypeOf(Group{}):
		switch key {
		case "virtual_ipaddress", "vip":
			return "the VIPs are addresses: [A/P, ...]"
		case "nopreempt":
			return "write preempt: false"
		case "track_script":
			return "tracked checks are track: [{check: NAME, weight: N}]"
		case "virtual_router_id":
			return "groups are named, not numbered: name: is the key in etcd"
		}
	}
	return ""
}

// keyHint says what the author probably meant by key: a hint for a known
// mistake, the nearest valid key, or the valid keys.
func keyHint(t reflect.Type, key string, fields map[string]reflect.Type) string {
	if h := knownMistake(t, key); h != "" {
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
