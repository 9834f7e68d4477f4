// Package prereq ends a test that cannot run here for a missing
// prerequisite (root, a tool, a built binary): a skip on a developer's
// machine, a failure in CI.
package prereq

import (
	"fmt"
	"os"
	"strconv"
	"testing"
)

// Missing ends t for a missing prerequisite. Outside CI it skips with the
// message. Under CI=true (.ci/run exports it; it runs the tests as root
// after `make deps` installed every package they need) it fails instead:
// there a missing prerequisite is a broken install or build step, and a
// tier that skipped itself must never pass CI silently.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if InCI() {
		t.Fatalf("%s — CI=true: a missing prerequisite fails the test instead of skipping it", msg)
	}
	t.Skip(msg)
}

// InCI reports whether CI is set to a true value (CI=true, as CI systems
// and .ci/run set it).
func InCI() bool {
	v, err := strconv.ParseBool(os.Getenv("CI"))
	return err == nil && v
}
