package checks

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/config"
	"github.com/vipd/vipd/internal/clock"
)

func TestParseFileValue(t *testing.T) {
	tests := []struct {
		content string
		want    int
		wantErr string
	}{
		{"0", 0, ""},
		{"1\n", 1, ""},
		{"  -3  \n", -3, ""},
		{"42 trailing words", 42, ""},
		{"0x10", 16, ""},
		{"010", 8, ""}, // C strtol base 0, as keepalived
		{"+5", 5, ""},
		{"300", 254, ""}, // clamped as keepalived
		{"-300", -254, ""},
		{"99999999999999999999999", 254, ""},
		{"-99999999999999999999999", -254, ""},
		{"", 0, "empty"},
		{" \n\t", 0, "empty"},
		{"maintenance", 0, `"maintenance" is not an integer`},
		{"1.5", 0, "not an integer"},
	}
	for _, tt := range tests {
		got, err := parseFileValue("/etc/vipd/w", tt.content)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "checks: file /etc/vipd/w: ") {
				t.Errorf("%q: err = %v, want a checks: file error naming the path and %q", tt.content, err, tt.wantErr)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("%q: = %d, %v; want %d", tt.content, got, err, tt.want)
		}
	}
}

// runValued runs p once inside a Runner-like context and returns the value
// it reported.
func runValued(t *testing.T, p Probe) (int, bool, error) {
	t.Helper()
	ri := &runInfo{}
	ctx, cancel := context.WithTimeout(context.WithValue(t.Context(), runKey{}, ri), 5*time.Second)
	defer cancel()
	err := p(ctx)
	return ri.value, ri.set, err
}

func TestFileProbe(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "weight")
	down, zero := NewFile(path, false), NewFile(path, true)

	if _, _, err := runValued(t, down); err == nil || !strings.Contains(err.Error(), "missing") || !strings.Contains(err.Error(), path) {
		t.Errorf("missing, missing: down: err = %v, want one naming the path and missing", err)
	}
	if v, set, err := runValued(t, zero); err != nil || !set || v != 0 {
		t.Errorf("missing, missing: zero: = %d, %v, %v; want 0, reported, nil", v, set, err)
	}
	must(t, os.WriteFile(path, []byte("3\n"), 0o644))
	for _, p := range []Probe{down, zero} {
		if v, set, err := runValued(t, p); err != nil || !set || v != 3 {
			t.Errorf("file with 3: = %d, %v, %v", v, set, err)
		}
	}
	must(t, os.WriteFile(path, []byte("drain"), 0o644))
	if _, _, err := runValued(t, zero); err == nil {
		t.Error("bad content passed")
	}
	// Through NewProbe and a Runner: the value reaches the Status.
	p, err := NewProbe(config.Check{Type: "file", Path: path, Missing: "zero"})
	if err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(path, []byte("-2"), 0o644))
	r := NewRunner(clock.NewFake(t0), testLogger(t))
	r.Add("w", config.Check{Interval: time.Hour}, p)
	changes := make(chan Status, 4)
	start(t, r, func(s Status) { changes <- s })
	if s := recv(t, changes, "the first result"); !s.Up || !s.Valued || s.Value != -2 {
		t.Errorf("status %+v, want up with value -2", s)
	}
}

func TestScanInotify(t *testing.T) {
	// Built from real events: see TestFileTrigger for the kernel's.
	if hit, gone := scanInotify(nil, "x"); hit || gone {
		t.Error("empty buffer")
	}
	if hit, gone := scanInotify([]byte{1, 2, 3}, "x"); hit || gone {
		t.Error("short buffer")
	}
}

// The inotify trigger kicks on create, write, rename in, delete of the
// watched file, not on other files in the directory, and stops with ctx.
func TestFileTrigger(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "maint")
	kicks := make(chan struct{}, 100)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- NewFileTrigger(path)(ctx, func() { kicks <- struct{}{} }) }()
	recv(t, kicks, "the initial kick")

	expectKick := func(what string) {
		t.Helper()
		recv(t, kicks, "a kick after "+what)
		// Drain the rest of this step's events (a write is several).
		time.Sleep(20 * time.Millisecond)
		for len(kicks) > 0 {
			<-kicks
		}
	}
	expectQuiet := func(what string) {
		t.Helper()
		select {
		case <-kicks:
			t.Errorf("kick after %s, which does not concern the file", what)
		case <-time.After(100 * time.Millisecond):
		}
	}
	must(t, os.WriteFile(filepath.Join(dir, "other"), []byte("1"), 0o644))
	expectQuiet("writing another file")
	must(t, os.WriteFile(path, []byte("1"), 0o644))
	expectKick("create and write")
	must(t, os.WriteFile(path, []byte("2"), 0o644))
	expectKick("rewrite")
	tmp := filepath.Join(dir, ".maint.tmp")
	must(t, os.WriteFile(tmp, []byte("3"), 0o644))
	for len(kicks) > 0 {
		<-kicks
	}
	must(t, os.Rename(tmp, path))
	expectKick("rename into place")
	must(t, os.Remove(path))
	expectKick("delete")

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("trigger returned %v on cancel, want nil", err)
		}
	case <-time.After(realWait):
		t.Fatal("trigger did not return after cancel")
	}
}

func TestFileTriggerDirectoryGone(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "d")
	must(t, os.Mkdir(dir, 0o755))
	kicks := make(chan struct{}, 100)
	done := make(chan error, 1)
	go func() { done <- NewFileTrigger(filepath.Join(dir, "w"))(t.Context(), func() { kicks <- struct{}{} }) }()
	recv(t, kicks, "the initial kick")
	must(t, os.Remove(dir))
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "removed or moved") {
			t.Errorf("err = %v, want the directory's removal", err)
		}
	case <-time.After(realWait):
		t.Fatal("trigger did not return after its directory was removed")
	}
	// A directory that does not exist cannot be watched.
	err := NewFileTrigger(filepath.Join(dir, "w"))(t.Context(), func() {})
	if err == nil || !strings.HasPrefix(err.Error(), "checks: file ") {
		t.Errorf("missing directory: err = %v", err)
	}
}

// End to end in real time: a Runner with a one-hour interval still sees a
// file change at once through the trigger.
func TestFileCheckReactsWithoutPolling(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "weight")
	must(t, os.WriteFile(path, []byte("0"), 0o644))
	c := config.Check{Type: "file", Path: path, Missing: "down", Interval: time.Hour, Timeout: time.Second}
	p, err := NewProbe(c)
	if err != nil {
		t.Fatal(err)
	}
	r := NewRunner(clock.Real{}, testLogger(t))
	r.Add("w", c, p, WithTrigger(NewTrigger(c)))
	changes := make(chan Status, 16)
	start(t, r, func(s Status) { changes <- s })
	if s := recv(t, changes, "the first result"); !s.Up || s.Value != 0 {
		t.Fatalf("first %+v", s)
	}
	// os.WriteFile truncates, then writes: a run between the two events
	// reads the file empty (down), as any reader of a non-atomic write
	// may. The write's own event must then bring the value.
	must(t, os.WriteFile(path, []byte("5"), 0o644))
	for s := recv(t, changes, "the value change"); !s.Up || s.Value != 5; s = recv(t, changes, "the value change") {
		if s.Up || !strings.Contains(fmt.Sprint(s.Err), "empty") {
			t.Fatalf("after writing 5: %+v", s)
		}
	}
	must(t, os.Remove(path))
	if s := recv(t, changes, "the removal"); s.Up {
		t.Fatalf("after removal: %+v, want down (missing: down)", s)
	}
}
