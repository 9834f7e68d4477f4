package config

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// R1: a YAML merge key inside the checks MAP is valid YAML that the
// yaml.v3 decoder applies (main accepts it); the schema walk treats "<<"
// as a check name and rejects its content as unknown keys.
func TestReviewMergeKeyInChecksMap(t *testing.T) {
	src := strings.Replace(seed, "checks:\n", "checks:\n  <<: {web: {type: http, url: \"http://127.0.0.1:80/\"}}\n", 1)
	c, err := Parse(strings.NewReader(src))
	if err != nil {
		t.Fatalf("valid config rejected: %v", err)
	}
	if _, ok := c.Checks["web"]; !ok {
		t.Errorf("merged check missing: %v", c.Checks)
	}
}

// R3: the walk expands aliases without the decoder's alias budget: a
// few-KB file yields K^3 errors (K^3 fmt.Errorf + edit distances) before
// the decoder's "excessive aliasing" guard is ever reached.
func TestReviewAliasAmplification(t *testing.T) {
	const k = 60
	var keys []string
	for i := range k {
		keys = append(keys, fmt.Sprintf("w%d: 1", i))
	}
	var b strings.Builder
	b.WriteString(strings.Replace(seed, "track: [{check: haproxy, weight: 2}]",
		"track: [&t {check: haproxy, "+strings.Join(keys, ", ")+"}]", 1))
	b.WriteString("  - &g\n    name: VI_2\n    interface: ens160\n    addresses: [192.168.20.16/24]\n    track: [")
	for i := range k {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString("*t")
	}
	b.WriteString("]\n")
	for range k {
		b.WriteString("  - *g\n")
	}
	src := b.String()
	start := time.Now()
	_, err := Parse(strings.NewReader(src))
	n := strings.Count(fmt.Sprint(err), "unknown key")
	t.Logf("input %d bytes -> %d errors, %d bytes of message, in %v", len(src), n, len(fmt.Sprint(err)), time.Since(start))
	if n > 10*k {
		t.Errorf("a %d-byte file produced %d unknown-key errors", len(src), n)
	}
}

// R7: a merge key whose value is a sequence of mappings is skipped by the
// walk; the decoder still rejects the unknown key, with the Go type name
// the commit set out to remove.
func TestReviewMergeSequenceMessage(t *testing.T) {
	src := strings.Replace(seed, "garp: {count: 5, interval: 1s, refresh: 0s}",
		"garp: {<<: [{count: 5}, {intreval: 1s}], refresh: 0s}", 1)
	_, err := Parse(strings.NewReader(src))
	if err == nil {
		t.Fatal("accepted")
	}
	if !strings.Contains(err.Error(), "garp.intreval") || strings.Contains(err.Error(), "not found in type") {
		t.Errorf("unknown key in a merged sequence: %v", err)
	}
}

// An aliased node's unknown keys are reported once, however often it is
// aliased; past maxKeyErrors the rest are counted.
func TestUnknownKeysAliasedOnceAndCapped(t *testing.T) {
	build := func(k int) string {
		var keys []string
		for i := range k {
			keys = append(keys, fmt.Sprintf("w%d: 1", i))
		}
		src := strings.Replace(seed, "track: [{check: haproxy, weight: 2}]",
			"track: [&t {check: haproxy, "+strings.Join(keys, ", ")+"}, *t, *t]", 1)
		return src + "  - {name: VI_2, interface: ens160, addresses: [192.168.20.16/24], track: [*t, *t]}\n"
	}
	_, err := Parse(strings.NewReader(build(10)))
	if n := strings.Count(fmt.Sprint(err), "unknown key"); n != 10 {
		t.Errorf("10 unknown keys aliased 4 times: %d errors: %v", n, err)
	}
	_, err = Parse(strings.NewReader(build(maxKeyErrors + 7)))
	if n := strings.Count(fmt.Sprint(err), ": unknown key"); n != maxKeyErrors {
		t.Errorf("%d errors listed, want %d", n, maxKeyErrors)
	}
	if !strings.Contains(fmt.Sprint(err), "…and 7 more unknown keys") {
		t.Errorf("the rest not counted: %v", err)
	}
}

// A merge key in a map of checks is walked with the map's type: an
// unknown key in a merged check is named by its path.
func TestMergeKeyInChecksMapUnknownKey(t *testing.T) {
	src := strings.Replace(seed, "checks:\n", "checks:\n  <<: {web: {type: http, url: \"http://127.0.0.1:80/\", intreval: 1s}}\n", 1)
	_, err := Parse(strings.NewReader(src))
	if err == nil || !strings.Contains(err.Error(), "checks.web.intreval: unknown key") {
		t.Errorf("unknown key in a merged check: %v", err)
	}
}
