package keepalived

import (
	"os/exec"
	"strings"
	"testing"
)

// R8: keepalived (since v2.0.0, notify_shutdown in vrrp_notify.c) calls a
// vrrp_sync_group's generic notify script with "GROUP NAME STOP 0" on
// shutdown; the converted notify.any exits before calling it for STOP.
func TestReviewSyncGroupNotifyGetsStop(t *testing.T) {
	vi := func(name, addr string) string {
		return "vrrp_instance " + name + " {\n interface eth0\n priority 100\n virtual_ipaddress {\n  " + addr + "\n }\n}\n"
	}
	src := "vrrp_sync_group VG {\n group {\n  VI_a\n  VI_b\n }\n notify /bin/echo\n}\n" + vi("VI_a", "10.0.0.1/24") + vi("VI_b", "10.0.0.2/24")
	res := conv(t, src, Options{})
	argv := append(append([]string{}, res.Groups[0].Notify["any"]...), "INSTANCE", "VG", "STOP", "100") // as vipd runs it
	out, err := exec.Command(argv[0], argv[1:]...).Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.TrimSpace(string(out)); got != "GROUP VG STOP 0" {
		t.Errorf("on STOP the sync group's script got %q, keepalived passes %q", got, "GROUP VG STOP 0")
	}
}
