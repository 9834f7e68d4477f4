package prereq

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
)

// tb records how Missing ended the test. It embeds testing.TB for the
// methods Missing does not call.
type tb struct {
	testing.TB
	skipped, fatal string
}

func (t *tb) Helper() {}

func (t *tb) Skip(args ...any) {
	t.skipped = args[0].(string)
	runtime.Goexit()
}

func (t *tb) Fatalf(format string, args ...any) {
	t.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// missing runs Missing on a fake TB in its own goroutine (Skip and Fatalf
// end it, as the real ones end the test's goroutine).
func missing() *tb {
	f := &tb{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		Missing(f, "namespace e2e needs %v", []string{"/usr/sbin/haproxy"})
	}()
	<-done
	return f
}

func TestMissingSkipsOutsideCI(t *testing.T) {
	for _, v := range []string{"", "false", "0", "no"} {
		t.Setenv("CI", v)
		f := missing()
		if f.fatal != "" || f.skipped != "namespace e2e needs [/usr/sbin/haproxy]" {
			t.Errorf("CI=%q: skipped %q, fatal %q; want a skip with the message", v, f.skipped, f.fatal)
		}
	}
}

func TestMissingFailsInCI(t *testing.T) {
	for _, v := range []string{"true", "1", "TRUE"} {
		t.Setenv("CI", v)
		f := missing()
		if f.skipped != "" || !strings.HasPrefix(f.fatal, "namespace e2e needs [/usr/sbin/haproxy] — CI=true") {
			t.Errorf("CI=%q: skipped %q, fatal %q; want a failure", v, f.skipped, f.fatal)
		}
	}
}
