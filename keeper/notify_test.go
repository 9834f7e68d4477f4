package keeper

import (
	"reflect"
	"testing"

	"github.com/vipd/vipd/election"
)

// The generic hook gets keepalived's four arguments after its own:
// INSTANCE, the group, the state and the priority; INIT is not reported.
func TestAnyHookArgv(t *testing.T) {
	script := []string{"/etc/keepalived/notify.sh", "--from", "vipd"}
	cases := []struct {
		argv  []string
		state election.State
		prio  int
		want  []string
	}{
		{script, election.StateMaster, 103, []string{"/etc/keepalived/notify.sh", "--from", "vipd", "INSTANCE", "VI_1", "MASTER", "103"}},
		{script, election.StateBackup, 100, []string{"/etc/keepalived/notify.sh", "--from", "vipd", "INSTANCE", "VI_1", "BACKUP", "100"}},
		{script, election.StateFault, 0, []string{"/etc/keepalived/notify.sh", "--from", "vipd", "INSTANCE", "VI_1", "FAULT", "0"}},
		{script, election.StateStop, 101, []string{"/etc/keepalived/notify.sh", "--from", "vipd", "INSTANCE", "VI_1", "STOP", "101"}},
		{[]string{"/bin/n"}, election.StateMaster, 1, []string{"/bin/n", "INSTANCE", "VI_1", "MASTER", "1"}},
		{script, election.StateInit, 100, nil},
		{nil, election.StateMaster, 100, nil},
	}
	for _, c := range cases {
		got := anyHookArgv(c.argv, "VI_1", c.state, c.prio)
		if !reflect.DeepEqual(got, c.want) {
			t.Errorf("anyHookArgv(%q, %s, %d) = %q, want %q", c.argv, c.state, c.prio, got, c.want)
		}
	}
	// The configured argv is not modified (the hook runs on every change).
	if !reflect.DeepEqual(script, []string{"/etc/keepalived/notify.sh", "--from", "vipd"}) {
		t.Errorf("argv modified: %q", script)
	}
}
