package keeper_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/etcdtest"
	"github.com/vipd/vipd/internal/fakenet"
	"github.com/vipd/vipd/internal/keepertest"
)

// R5: the same STOP invocation of notify.any says priority 101 in $4 and
// VIPD_PRIORITY=0 in its environment (stopped() built env with 0): both
// must say the last priority.
func TestReviewStopAnyEnvMatchesArgs(t *testing.T) {
	t.Parallel()
	m := etcdtest.Start(t)
	rec := fakenet.NewRecorder()
	dir := t.TempDir()
	hook := `["/bin/sh", "-c", "echo \"$4 $VIPD_PRIORITY\" > ` + dir + `/$3", "x"]`
	n1 := keepertest.Start(t, m, rec, keepertest.Spec{Name: "web-node-1", Priority: 101,
		Extra: "    notify: {any: " + hook + "}\n"})
	rec.WaitFor(t, "web-node-1", 10*time.Second)
	n1.Stop()
	for _, st := range []string{"MASTER", "STOP"} {
		b, err := os.ReadFile(filepath.Join(dir, st))
		if err != nil {
			t.Fatal(err)
		}
		if string(b) != "101 101\n" {
			t.Errorf("%s: argv priority and VIPD_PRIORITY disagree: %q", st, b)
		}
	}
}
