package keepalived

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
)

// ppLines preprocesses src for config id and returns the lines as
// "LINE: text".
func ppLines(t *testing.T, src, id string) ([]string, *ppResult) {
	t.Helper()
	pp, err := preprocess("k.conf", src, id)
	if err != nil {
		t.Fatalf("preprocess: %v", err)
	}
	var out []string
	for _, l := range pp.lines {
		out = append(out, fmt.Sprintf("%02d: %s", l.line, l.text))
	}
	return out, pp
}

// keepalived's line rewriting: conditional lines, definitions (used after
// they are defined, replaced at use time, multi-line), ~SEQ, comments.
func TestPreprocess(t *testing.T) {
	cases := []struct {
		name, src, id string
		want          []string
	}{
		{"conditional", "@lb1 priority 150\n@lb2 priority 100\n@^lb1 state BACKUP\n@lb1\n", "lb1",
			[]string{"01: priority 150"}},
		{"conditional, other host", "@lb1 priority 150\n@lb2 priority 100\n@^lb1 state BACKUP\n", "lb2",
			[]string{"02: priority 100", "03: state BACKUP"}},
		{"no config id", "@lb1 priority 150\n@^lb1 state BACKUP\n", "",
			[]string{"02: state BACKUP"}},
		{"definitions", "$IF=eth0\n$PRIO=150\ninterface $IF\npriority ${PRIO}\nscript \"ping -c1 $HOME\"\n", "",
			[]string{"03: interface eth0", "04: priority 150", `05: script "ping -c1 $HOME"`}},
		{"braces needed before other text", "$N=10\naddress 10.0.${N}.1/24\naddress 10.0.$N.1/24\n", "",
			[]string{"02: address 10.0.10.1/24", "03: address 10.0.$N.1/24"}},
		{"replaced at use time, recursively", "$BASE=10.2.${SUB}\n$SUB=0\n${BASE}.100/32\n$SUB=10\n${BASE}.100/32\n", "",
			[]string{"03: 10.2.0.100/32", "05: 10.2.10.100/32"}},
		{"conditional definition", "@lb1 $PRIO=240\n@lb2 $PRIO=200\npriority $PRIO\n", "lb2",
			[]string{"03: priority 200"}},
		{"multi-line definition", "$VIPS= \\\n  10.0.0.1/24 \\\n  # a comment line does not end it\n  10.0.0.2/24\n\nvirtual_ipaddress {\n$VIPS\n}\n", "",
			[]string{"06: virtual_ipaddress {", "07: 10.0.0.1/24", "07: 10.0.0.2/24", "08: }"}},
		// keepalived evaluates a conditional on the lines of a multi-line
		// definition after the first; the first replaces the reference
		// in place, and keepalived does not look at it again.
		{"multi-line with conditionals", "$I= \\\n@a priority 1 \\\n@b priority 2 \\\n@a priority 3\n\n$I\n", "b",
			[]string{"06: @a priority 1", "06: priority 2"}},
		{"sequence", "~SEQ(N, 1, 3) 10.0.${N}.1/24\n~SEQx(H, 10, 2, 14) fe80::${H}\n", "",
			[]string{"01: 10.0.1.1/24", "01: 10.0.2.1/24", "01: 10.0.3.1/24", "02: fe80::a", "02: fe80::c", "02: fe80::e"}},
		{"comments", "a \"b # c\" # d\n  e ! f\n\\#g\n", "",
			[]string{`01: a "b # c"`, "02: e", "03: #g"}},
		{"predefined", "id ${_INSTANCE}\nh \"${_HASH}\"\n", "lb9",
			[]string{"01: id lb9", `02: h "#"`}},
		{"undefined stays", "x \"${NOPE}\" $NOPE\n", "",
			[]string{`01: x "${NOPE}" $NOPE`}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, _ := ppLines(t, c.src, c.id)
			if !reflect.DeepEqual(got, c.want) {
				t.Errorf("got %q\nwant %q", got, c.want)
			}
		})
	}
}

// Conditional lines for another host and definitions are accounted for in
// the report; --node selects the host.
func TestConditionalConversion(t *testing.T) {
	src := "$IF=eth0\n@lb1 $PRIO=150\n@lb2 $PRIO=100\nvrrp_instance VI_1 {\n interface $IF\n priority $PRIO\n@lb1 state MASTER\n virtual_ipaddress {\n  10.0.0.1/24\n }\n}\n"
	for node, prio := range map[string]int{"lb1": 150, "lb2": 100} {
		res := conv(t, src, Options{Node: node})
		if g := res.Groups[0]; g.Interface != "eth0" || g.Priority != prio {
			t.Errorf("node %s: group %+v, want eth0 priority %d", node, g, prio)
		}
		other := map[string]int{"lb1": 3, "lb2": 2}[node]
		if k := kindOf(t, res, other); k != Ignored || !hasNote(res, other, Ignored, "for host lb") {
			t.Errorf("node %s: line %d is %s, want ignored (for another host)", node, other, k)
		}
		if k := kindOf(t, res, 1); k != Carried {
			t.Errorf("definition line: %s", k)
		}
	}
	// ConfigID overrides Node.
	res := conv(t, src, Options{Node: "web-1", ConfigID: "lb2"})
	if res.Groups[0].Priority != 100 || res.Node != "web-1" {
		t.Errorf("config id lb2 with node web-1: %+v", res.Groups[0])
	}
}

func vi1(body string) string {
	return "vrrp_instance VI_1 {\n interface eth0\n virtual_ipaddress {\n  10.0.0.1/24\n }\n" + body + "}\n"
}

// keepalived clears nopreempt (and preempt_delay) with state MASTER and
// for the address owner; a MASTER without priority is the owner (255).
func TestStateMasterAndPreempt(t *testing.T) {
	cases := []struct {
		name, body string
		prio       int
		preempt    bool
		delay      time.Duration
		note       string
	}{
		{"backup nopreempt", " state BACKUP\n priority 100\n nopreempt\n", 100, false, 0, ""},
		{"master nopreempt", " state MASTER\n priority 100\n nopreempt\n", 100, true, 0, "keepalived clears nopreempt with state MASTER"},
		{"master preempt_delay", " state MASTER\n priority 100\n preempt_delay 10\n", 100, true, 0, "keepalived clears preempt_delay with state MASTER"},
		{"backup preempt_delay", " state BACKUP\n preempt_delay 10\n", 100, true, 10 * time.Second, ""},
		{"master without priority", " state MASTER\n", 255, true, 0, "priority 255"},
		{"owner nopreempt", " priority 255\n nopreempt\n", 255, true, 0, "clears nopreempt for the address owner"},
		{"preempt after nopreempt", " nopreempt\n preempt\n", 100, true, 0, ""},
		{"lowercase master is BACKUP", " state master\n nopreempt\n", 100, false, 0, `keepalived takes "master" as BACKUP`},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := conv(t, vi1(c.body), Options{})
			g := res.Groups[0]
			if g.Priority != c.prio || g.Preempt != c.preempt || g.PreemptDelay != c.delay {
				t.Errorf("priority %d preempt %v delay %v; want %d %v %v", g.Priority, g.Preempt, g.PreemptDelay, c.prio, c.preempt, c.delay)
			}
			if c.note != "" && !strings.Contains(res.FormatNotes("k.conf"), c.note) {
				t.Errorf("no note %q:\n%s", c.note, res.FormatNotes("k.conf"))
			}
		})
	}
}

// dev is compared with the instance's interface wherever interface is
// written: addresses on two interfaces each keep theirs; all of them on
// one other interface go there, the instance's interface tracked as
// keepalived tracks it.
func TestDevOrdering(t *testing.T) {
	before := "vrrp_instance VI_1 {\n virtual_ipaddress {\n  10.0.0.1/24 dev eth1\n  10.0.0.3/24\n }\n interface eth0\n}\n"
	res := conv(t, before, Options{})
	if g := res.Groups[0]; g.Interface != "eth0" || !reflect.DeepEqual(g.AddressIfaces, map[string]string{"10.0.0.1/24": "eth1"}) ||
		!hasNote(res, 3, Carried, "on eth1, the address's own interface") {
		t.Errorf("virtual_ipaddress before interface: %+v\n%s", g, notesText("k.conf", res.Notes))
	}
	if y := string(res.Render("k.conf")); !strings.Contains(y, "addresses: [{address: 10.0.0.1/24, interface: eth1}, 10.0.0.3/24]") {
		t.Errorf("rendered:\n%s", y)
	}
	// dont_track_primary with no address on the VRRP interface: the group
	// names none and tracks its addresses' interfaces only.
	apart := "vrrp_instance VI_1 {\n interface eth0\n dont_track_primary\n virtual_ipaddress {\n  10.0.0.1/24 dev eth1\n  10.0.2.1/24 dev eth2\n }\n}\n"
	res = conv(t, apart, Options{})
	if g := res.Groups[0]; g.Interface != "" || !reflect.DeepEqual(g.AddressIfaces, map[string]string{"10.0.0.1/24": "eth1", "10.0.2.1/24": "eth2"}) || kindOf(t, res, 3) != Carried {
		t.Errorf("dont_track_primary, addresses elsewhere: %+v\n%s", g, res.FormatNotes("k.conf"))
	}
	res = conv(t, strings.Replace(before, " interface eth0\n", " interface eth0\n dont_track_primary\n", 1), Options{})
	if kindOf(t, res, 7) != Changed {
		t.Errorf("dont_track_primary with an address on eth0 not reported as changed:\n%s", res.FormatNotes("k.conf"))
	}
	same := strings.Replace(before, "dev eth1", "dev eth0", 1)
	if res := conv(t, same, Options{}); res.Groups[0].Interface != "eth0" || len(res.Groups[0].Addresses) != 2 || len(res.Groups[0].Track) != 0 {
		t.Errorf("dev = interface: %+v", res.Groups[0])
	}
	other := "vrrp_instance VI_1 {\n virtual_ipaddress {\n  10.0.0.1/24 dev eth1\n }\n interface eth0\n}\n"
	res = conv(t, other, Options{})
	if g := res.Groups[0]; g.Interface != "eth1" || !reflect.DeepEqual(g.Track, []Track{{"if_eth0", 0, false}}) {
		t.Errorf("every address on eth1: %+v", g)
	}
	res = conv(t, strings.Replace(other, " interface eth0\n", " interface eth0\n dont_track_primary\n", 1), Options{})
	if g := res.Groups[0]; g.Interface != "eth1" || len(g.Track) != 0 || kindOf(t, res, 6) != Carried {
		t.Errorf("dont_track_primary: %+v\n%s", g, res.FormatNotes("k.conf"))
	}
	// --skip-refused writes the other groups and still says what was left out.
	// (VI_2 shares an address with VI_1: refused.)
	two := before + strings.Replace(same, "VI_1", "VI_2", 1)
	res, err := Convert("k.conf", two, Options{SkipRefused: true})
	if err != nil || !res.Refused || len(res.Groups) != 1 || res.Groups[0].Name != "VI_1" {
		t.Errorf("skip refused: %v %+v", err, res)
	}
}

// An instance without addresses (cloud configs, where the hook moves the
// address) becomes a group without addresses: its holder runs the hooks.
func TestNoVIPGroup(t *testing.T) {
	src := "vrrp_instance cloud {\n interface eth0\n notify_master /usr/local/bin/attach\n}\n"
	res := conv(t, src, Options{})
	g := res.Groups[0]
	if len(g.Addresses) != 0 || g.Interface != "eth0" || !reflect.DeepEqual(g.Notify["master"], []string{"/usr/local/bin/attach"}) ||
		!hasNote(res, 1, Carried, "group cloud has no addresses; its holder (MASTER) runs its hooks") {
		t.Fatalf("%+v\n%s", g, notesText("k.conf", res.Notes))
	}
	if _, err := config.Parse(bytes.NewReader(res.Render("k.conf"))); err != nil {
		t.Errorf("vipd check: %v\n%s", err, res.Render("k.conf"))
	}
	for _, l := range res.Lines {
		if l.Kind == Refused {
			t.Errorf("line %d is %s", l.Line, l.Kind)
		}
	}
}

// keepalived's GARP schedule (a burst, a second after garp_master_delay,
// then refreshes) maps onto rounds at the same times.
func TestGARPMapping(t *testing.T) {
	cases := []struct {
		name, global, body string
		want               GARP
		kind               Kind
	}{
		{"nothing set: vipd's defaults", "", "", GARP{}, Carried},
		{"delay", "", " garp_master_delay 10\n", GARP{Count: 2, Interval: 10 * time.Second}, Carried},
		{"delay 0", "", " garp_master_delay 0\n", GARP{Count: 1}, Carried},
		{"repeat alone: default delay 5", "", " garp_master_repeat 1\n", GARP{Count: 2, Interval: 5 * time.Second}, Carried},
		{"repeat 5 is more frames", "", " garp_master_repeat 5\n", GARP{Count: 2, Interval: 5 * time.Second}, Changed},
		{"refresh", "", " garp_master_delay 3\n garp_master_refresh 60\n", GARP{Count: 2, Interval: 3 * time.Second, Refresh: time.Minute}, Carried},
		{"global default, instance override", "global_defs {\n vrrp_garp_master_delay 1\n vrrp_garp_master_refresh 30\n}\n", " garp_master_delay 2\n",
			GARP{Count: 2, Interval: 2 * time.Second, Refresh: 30 * time.Second}, Carried},
		{"keepalived reads 1.5 as 1", "", " garp_master_delay 1.5\n", GARP{Count: 2, Interval: time.Second}, Carried},
		{"min garp", "global_defs {\n vrrp_min_garp\n}\n", "", GARP{Count: 1}, Carried},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := conv(t, c.global+vi1(c.body), Options{})
			if g := res.Groups[0].GARP; g != c.want {
				t.Errorf("garp = %+v, want %+v", g, c.want)
			}
			worst := Carried
			for _, l := range res.Lines {
				worst = max(worst, l.Kind)
			}
			if worst != c.kind {
				t.Errorf("worst line %s, want %s\n%s", worst, c.kind, res.FormatNotes("k.conf"))
			}
		})
	}
}

// A sync group whose instances share an interface and settings becomes one
// group (its addresses move together); its hooks are carried; weighted
// member tracks are ignored as keepalived ignores them. Otherwise it is
// refused by name.
func TestSyncGroups(t *testing.T) {
	head := "vrrp_script chk {\n script \"killall -0 haproxy\"\n weight 2\n}\n"
	vi := func(name, iface, addr, extra string) string {
		return "vrrp_instance " + name + " {\n interface " + iface + "\n priority 100\n virtual_ipaddress {\n  " + addr + "\n }\n" + extra + "}\n"
	}
	sync := "vrrp_sync_group VG {\n group {\n  VI_a\n  VI_b\n }\n notify_master \"/bin/m g\"\n notify /bin/n\n}\n"
	src := head + sync + vi("VI_a", "eth0", "10.0.0.1/24", " track_script {\n  chk\n }\n") + vi("VI_b", "eth0", "10.0.0.2/24", "")
	res := conv(t, src, Options{})
	if len(res.Groups) != 1 {
		t.Fatalf("groups = %+v", res.Groups)
	}
	g := res.Groups[0]
	if g.Name != "VG" || !reflect.DeepEqual(g.Addresses, []string{"10.0.0.1/24", "10.0.0.2/24"}) || len(g.Track) != 0 ||
		!reflect.DeepEqual(g.Notify["master"], []string{"/bin/m", "g"}) {
		t.Errorf("merged = %+v", g)
	}
	wantAny := []string{"/bin/sh", "-c", `/bin/n GROUP VG "$3" 0`, "notify"}
	if !reflect.DeepEqual(g.Notify["any"], wantAny) {
		t.Errorf("group notify = %q, want %q", g.Notify["any"], wantAny)
	}
	if !strings.Contains(res.FormatNotes("k.conf"), "keepalived ignores weighted tracking in a member of vrrp_sync_group VG") {
		t.Errorf("weighted member track not reported:\n%s", res.FormatNotes("k.conf"))
	}
	// With sync_group_tracking_weight the weights count, if alike.
	tw := strings.Replace(sync, " notify /bin/n\n", " notify /bin/n\n sync_group_tracking_weight\n", 1)
	res = conv(t, head+tw+vi("VI_a", "eth0", "10.0.0.1/24", " track_script {\n  chk\n }\n")+vi("VI_b", "eth0", "10.0.0.2/24", " track_script {\n  chk\n }\n"), Options{})
	if tr := res.Groups[0].Track; !reflect.DeepEqual(tr, []Track{{"chk", 2, false}}) {
		t.Errorf("tracking weight: %+v", tr)
	}

	// Members on two interfaces: each address stays on its member's.
	res = conv(t, sync+vi("VI_a", "eth0", "10.0.0.1/24", "")+vi("VI_b", "eth1", "10.1.0.1/24", ""), Options{})
	if g := res.Groups[0]; g.Interface != "eth0" || !reflect.DeepEqual(g.AddressIfaces, map[string]string{"10.1.0.1/24": "eth1"}) {
		t.Errorf("two interfaces: %+v", g)
	}
	if _, err := config.Parse(bytes.NewReader(res.Render("k.conf"))); err != nil {
		t.Errorf("vipd check: %v\n%s", err, res.Render("k.conf"))
	}

	refusals := []struct {
		name, src, want string
	}{
		{"priorities", sync + vi("VI_a", "eth0", "10.0.0.1/24", "") + strings.Replace(vi("VI_b", "eth0", "10.0.0.2/24", ""), "priority 100", "priority 90", 1),
			"different priorities (VI_a 100, VI_b 90)"},
		{"two hooks", sync + vi("VI_a", "eth0", "10.0.0.1/24", " notify_master /bin/x\n") + vi("VI_b", "eth0", "10.0.0.2/24", ""),
			"two notify_master hooks (vrrp_sync_group VG and vrrp_instance VI_a)"},
	}
	for _, r := range refusals {
		t.Run(r.name, func(t *testing.T) {
			res, err := Convert("k.conf", r.src, Options{})
			if !errors.Is(err, ErrRefused) || !hasNote(res, 1, Refused, r.want) {
				t.Errorf("%v\n%s", err, notesText("k.conf", res.Notes))
			}
		})
	}
}

// The generic notify script becomes notify.any; vipd's arguments are
// keepalived's for an instance that keeps its name, and a shell wrapper
// passes keepalived's otherwise.
func TestGenericNotify(t *testing.T) {
	cases := []struct {
		name, src string
		want      []string
	}{
		{"plain", vi1(" notify \"/etc/keepalived/notify.sh x\"\n"), []string{"/etc/keepalived/notify.sh", "x"}},
		{"shell", vi1(" notify \"/etc/n.sh >> /var/log/n\"\n"), []string{"/bin/sh", "-c", `/etc/n.sh >> /var/log/n "$@"`, "notify"}},
		{"renamed instance", strings.Replace(vi1(" notify /etc/n.sh\n"), "VI_1", "VI:1", 1),
			[]string{"/bin/sh", "-c", `/etc/n.sh INSTANCE VI:1 "$3" "$4"`, "notify"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			res := conv(t, c.src, Options{})
			if got := res.Groups[0].Notify["any"]; !reflect.DeepEqual(got, c.want) {
				t.Errorf("notify.any = %q, want %q", got, c.want)
			}
		})
	}
}

// Labels: IF:suffix is carried; another form is dropped with the reason;
// one label per group, differences stated.
func TestLabels(t *testing.T) {
	src := "vrrp_instance VI_1 {\n interface eth0\n virtual_ipaddress {\n  10.0.0.1/24 label eth0:1\n  10.0.0.2/24 label eth0:2\n  10.0.0.3/24 label vip\n  10.0.0.4/24\n }\n}\n"
	res := conv(t, src, Options{})
	if g := res.Groups[0]; g.Label != "eth0:1" || len(g.Addresses) != 4 {
		t.Errorf("group %+v", g)
	}
	for line, want := range map[int]struct {
		k    Kind
		text string
	}{
		5: {Changed, `gets the group's label "eth0:1", not "eth0:2"`},
		6: {Dropped, `label "vip" does not start with the interface name "eth0"`},
		7: {Changed, "keepalived: none on this one"},
	} {
		if !hasNote(res, line, want.k, want.text) {
			t.Errorf("line %d: no %s note %q:\n%s", line, want.k, want.text, res.FormatNotes("k.conf"))
		}
	}
	// interface after the addresses: the label is judged against it.
	late := "vrrp_instance VI_1 {\n virtual_ipaddress {\n  10.0.0.1/24 label ens3:vip\n }\n interface ens3\n}\n"
	if g := conv(t, late, Options{}).Groups[0]; g.Label != "ens3:vip" {
		t.Errorf("late interface: %+v", g)
	}
}

// vrrp_track_process becomes a process check by name; what a process
// check cannot test is refused by name; delays become rise/fall.
func TestTrackProcess(t *testing.T) {
	def := func(body string) string {
		return "vrrp_track_process chk_ha {\n process haproxy\n" + body + "}\n" + vi1(" track_process {\n  chk_ha\n }\n")
	}
	res := conv(t, def(" weight 10 reverse\n delay 2.5\n"), Options{})
	ch := res.Checks[0]
	if ch.Type != "process" || ch.Process != "haproxy" || ch.Interval != time.Second || ch.Rise != 3 || ch.Fall != 4 || ch.FastInterval != time.Second {
		t.Errorf("check = %+v", ch)
	}
	if tr := res.Groups[0].Track; !reflect.DeepEqual(tr, []Track{{"chk_ha", 10, true}}) {
		t.Errorf("track = %+v", tr)
	}
	if !hasNote(res, 1, Carried, "a process check by name: vipd sees an exit at once") || !hasNote(res, 4, Changed, "rise 3 at interval 1s, fall 4") {
		t.Errorf("notes:\n%s", res.FormatNotes("k.conf"))
	}
	for _, body := range []string{" quorum 2\n", " full_command\n", " param_match initial\n", " quorum_max 1\n"} {
		res, err := Convert("k.conf", def(body), Options{})
		if !errors.Is(err, ErrRefused) || !strings.Contains(res.FormatNotes("k.conf"), "it tracks vrrp_track_process chk_ha, which cannot be carried") {
			t.Errorf("%q: %v\n%s", body, err, res.FormatNotes("k.conf"))
		}
	}
}

func TestTrackFile(t *testing.T) {
	src := "track_file maint {\n file /var/run/maint\n weight -50\n init_file\n}\n" + vi1(" track_file {\n  maint\n }\n")
	res := conv(t, src, Options{})
	if ch := res.Checks[0]; ch.Type != "file" || ch.Path != "/var/run/maint" {
		t.Errorf("check %+v", ch)
	}
	if tr := res.Groups[0].Track; !reflect.DeepEqual(tr, []Track{{"maint", -50, false}}) {
		t.Errorf("track %+v", tr)
	}
}

// keepalived looks a tracked script up as it reads the file: one defined
// after the instance is not tracked, and the importer says so.
func TestScriptDefinedAfterInstance(t *testing.T) {
	src := vi1(" track_script {\n  late\n }\n") + "vrrp_script late {\n script \"killall -0 x\"\n weight 2\n}\n"
	res := conv(t, src, Options{})
	if len(res.Groups[0].Track) != 0 || !hasNote(res, 7, Ignored, "defined after this") {
		t.Errorf("%+v\n%s", res.Groups[0], res.FormatNotes("k.conf"))
	}
}

// Every line of every test file is accounted for.
func TestEveryLineAccounted(t *testing.T) {
	for _, name := range []string{"full.conf", "seed-keepalived-1.conf"} {
		res := convertFile(t, name, Options{})
		if res.Unhandled != 0 {
			t.Errorf("%s: %d unhandled\n%s", name, res.Unhandled, res.FormatNotes(name))
		}
	}
}

// FuzzConvert: whatever the input, the converter does not panic, accounts
// for every directive and line, and what it writes passes vipd check.
func FuzzConvert(f *testing.F) {
	for _, name := range []string{"full.conf", "seed-keepalived-1.conf"} {
		src, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src))
	}
	files, _ := filepath.Glob(filepath.Join("testdata", "corpus", "*.conf"))
	for _, p := range files {
		src, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(src))
	}
	f.Add("vrrp_instance I {\n priority 100 {\n  x\n }\n interface eth0\n virtual_ipaddress {\n  10.0.0.1\n }\n}\n")
	f.Fuzz(func(t *testing.T, src string) {
		var res *Result
		var err error
		done := make(chan struct{})
		go func() { res, err = Convert("f.conf", src, Options{Node: "n1", SkipRefused: true}); close(done) }()
		select {
		case <-done:
		case <-time.After(3 * time.Second):
			t.Fatalf("Convert does not return: %q", src)
		}
		if res == nil {
			return
		}
		if errors.Is(err, ErrInvalidResult) {
			t.Fatalf("written configuration fails vipd check: %v\n%s", err, src)
		}
		if res.Unhandled != 0 {
			t.Fatalf("%d unaccounted:\n%s\n%s", res.Unhandled, res.FormatNotes("f.conf"), src)
		}
	})
}
