package keepalived

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/vipd/vipd/config"
)

// corpusOptions are the options each corpus file is converted with, as
// `vipd import-keepalived --node NODE --etcd ...` would; files with @ID
// lines name the host they are converted for.
func corpusOptions(name string) Options {
	o := Options{Node: "node-1", Endpoints: []string{"http://10.0.0.1:2379", "http://10.0.0.2:2379", "http://10.0.0.3:2379"}}
	switch name {
	case "09-ka-sample-conditional.conf":
		o.ConfigID = "high"
	case "41-kubeadm-apiserver-defs.conf":
		o.Node = "cp1"
	}
	return o
}

// TestCorpus converts every real keepalived.conf of testdata/corpus (see
// its SOURCES): each either converts to a configuration vipd's own
// validation accepts, or fails naming exactly what cannot be carried; every
// line is accounted for; the result is golden-tested.
func TestCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "corpus", "*.conf"))
	if err != nil || len(files) < 30 {
		t.Fatalf("corpus: %d files (%v), want at least 30", len(files), err)
	}
	var summary strings.Builder
	counts := map[string]int{}
	for _, path := range files {
		name := filepath.Base(path)
		src, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		opts := corpusOptions(name)
		res, cerr := Convert(name, string(src), opts)
		var out bytes.Buffer
		args := fmt.Sprintf("--node %s", opts.Node)
		if opts.ConfigID != "" {
			args += " --config-id " + opts.ConfigID
		}
		fmt.Fprintf(&out, "$ vipd import-keepalived %s --etcd %s %s\n", args, strings.Join(opts.Endpoints, ","), name)
		var outcome string
		switch {
		case cerr == nil:
			if res.Faithful() {
				outcome = "converted"
			} else {
				outcome = "converted with stated differences"
			}
			fmt.Fprintf(&out, "exit 0 (--strict: %d)\n", map[bool]int{true: 0, false: 4}[res.Faithful()])
			yaml := res.Render(name)
			if _, err := config.Parse(bytes.NewReader(yaml)); err != nil {
				t.Errorf("%s: the converted configuration fails vipd check: %v\n%s", name, err, yaml)
			}
			fmt.Fprintf(&out, "--- vipd.yaml\n%s", yaml)
		case errors.Is(cerr, ErrRefused):
			outcome = "refused"
			fmt.Fprintf(&out, "exit 3: %v\n", cerr)
			refused := 0
			for _, n := range res.Notes {
				if n.Kind == Refused {
					refused++
				}
			}
			if refused == 0 {
				t.Errorf("%s: refused without naming what", name)
			}
		case errors.Is(cerr, ErrNothingToConvert):
			outcome = "nothing to convert"
			fmt.Fprintf(&out, "exit 1: %v\n", cerr)
		default:
			t.Errorf("%s: %v", name, cerr)
			continue
		}
		counts[outcome]++
		if res != nil {
			if res.Unhandled != 0 {
				t.Errorf("%s: %d directives or lines not accounted for:\n%s", name, res.Unhandled, res.FormatNotes(name))
			}
			fmt.Fprintf(&out, "--- notes\n%s--- lines\n%s--- %s\n", res.FormatNotes(name), res.FormatLines(), res.Summary())
			fmt.Fprintf(&summary, "%-36s %-34s %s\n", name, outcome, res.Summary())
		} else {
			fmt.Fprintf(&summary, "%-36s %s\n", name, outcome)
		}
		golden(t, strings.TrimSuffix(path, ".conf")+".golden", out.Bytes())
	}
	var keys []string
	for k := range counts {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(&summary, "\n%d files:", len(files))
	for _, k := range keys {
		fmt.Fprintf(&summary, " %d %s;", counts[k], k)
	}
	summary.WriteString("\n")
	golden(t, filepath.Join("testdata", "corpus", "SUMMARY"), []byte(summary.String()))
}
