package checks

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vipd/vipd/internal/prereq"
)

func TestParseStatState(t *testing.T) {
	tests := []struct {
		stat    string
		want    byte
		wantErr bool
	}{
		{"1234 (haproxy) S 1 1234 1234 0 -1", 'S', false},
		{"1234 (haproxy) Z 1 1234", 'Z', false},
		{"1234 (a) b) (c) R 1 2", 'R', false}, // comm with ')' and spaces
		{"1234 (x) X 0", 'X', false},
		{"garbage", 0, true},
		{"1 (x)", 0, true},
	}
	for _, tt := range tests {
		got, err := parseStatState([]byte(tt.stat))
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("parseStatState(%q) = %q, %v; want %q, err %v", tt.stat, got, err, tt.want, tt.wantErr)
		}
	}
}

// fakeProc builds a /proc tree: pid -> comm, state, exe target.
type fakeProcEntry struct {
	comm  string
	state byte
	exe   string
}

func fakeProc(t *testing.T, procs map[int]fakeProcEntry) string {
	t.Helper()
	root := t.TempDir()
	for pid, p := range procs {
		dir := filepath.Join(root, strconv.Itoa(pid))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		comm := p.comm
		if len(comm) > maxCommLen {
			comm = comm[:maxCommLen]
		}
		must(t, os.WriteFile(filepath.Join(dir, "comm"), []byte(comm+"\n"), 0o644))
		must(t, os.WriteFile(filepath.Join(dir, "stat"), []byte(strconv.Itoa(pid)+" ("+comm+") "+string(p.state)+" 1 1 1 0"), 0o644))
		if p.exe != "" {
			must(t, os.Symlink(p.exe, filepath.Join(dir, "exe")))
		}
	}
	// Non-PID entries are skipped.
	must(t, os.MkdirAll(filepath.Join(root, "net"), 0o755))
	must(t, os.WriteFile(filepath.Join(root, "uptime"), []byte("1 1"), 0o644))
	return root
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestProcessName(t *testing.T) {
	root := fakeProc(t, map[int]fakeProcEntry{
		10: {"haproxy", 'S', "/usr/sbin/haproxy"},
		11: {"nginx", 'Z', "/usr/sbin/nginx"},
		12: {"very-long-daemon-name", 'S', ""},      // comm truncated to 15
		13: {"python3", 'R', "/usr/bin/python3.13"}, // exe basename differs
		14: {"worker", 'S', "/opt/app/bin/appd (deleted)"},
		15: {"sleep", 'S', "/usr/bin/sleep"},
		16: {"sleep", 'Z', ""},
	})
	tests := []struct {
		name    string
		wantErr string
	}{
		{"haproxy", ""},
		{"nginx", "only zombies"},
		{"very-long-daemon-name", ""},
		{"very-long-daemon-other", ""}, // same 15-byte prefix: as killall, a match
		{"python3.13", ""},             // by exe basename
		{"appd", ""},                   // exe replaced by an upgrade
		{"sleep", ""},                  // one live among zombies
		{"keepalived", "no such process"},
		{"hapr", "no such process"}, // no prefix matching
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runProbe(t, newProcessName(root, tt.name), 5*time.Second)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v, want pass", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), `checks: process "`+tt.name+`"`) {
				t.Fatalf("err = %v, want a checks: process error naming %q and %q", err, tt.name, tt.wantErr)
			}
		})
	}
}

func TestPidfileFake(t *testing.T) {
	root := fakeProc(t, map[int]fakeProcEntry{100: {"haproxy", 'S', ""}, 101: {"haproxy", 'Z', ""}, 102: {"haproxy", 'X', ""}})
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	tests := []struct {
		name    string
		pidfile string
		wantErr string
	}{
		{"alive", write("a.pid", "100\n"), ""},
		{"alive, extra lines", write("b.pid", "  100\n200\n"), ""},
		{"zombie", write("z.pid", "101"), "zombie"},
		{"dead", write("x.pid", "102"), "zombie or dead"},
		{"no such process", write("n.pid", "999"), "no such process"},
		{"empty", write("e.pid", ""), "is empty"},
		{"not a pid", write("g.pid", "haproxy"), `"haproxy" is not a PID`},
		{"negative", write("m.pid", "-1"), "is not a PID"},
		{"missing pidfile", filepath.Join(dir, "missing.pid"), "no such file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := runProbe(t, newPidfile(root, tt.pidfile), 5*time.Second)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("err = %v, want pass", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), "checks: process ") {
				t.Fatalf("err = %v, want a checks: process error containing %q", err, tt.wantErr)
			}
		})
	}
}

// The real /proc: our own PID is alive; a child that exited and was not
// waited for is a zombie; after it is reaped it is gone. By name, a child
// sleep is found.
func TestProcessRealProc(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "self.pid")
	must(t, os.WriteFile(self, []byte(strconv.Itoa(os.Getpid())), 0o644))
	if err := runProbe(t, NewPidfile(self), 5*time.Second); err != nil {
		t.Fatalf("own pid: %v", err)
	}

	cmd := exec.Command("/bin/true")
	must(t, cmd.Start())
	zpid := filepath.Join(dir, "zombie.pid")
	must(t, os.WriteFile(zpid, []byte(strconv.Itoa(cmd.Process.Pid)), 0o644))
	// Until Wait, the exited child stays a zombie.
	deadline := time.Now().Add(realWait)
	for {
		err := runProbe(t, NewPidfile(zpid), 5*time.Second)
		if err != nil && strings.Contains(err.Error(), "zombie") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("exited child never seen as a zombie (last err %v)", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	_ = cmd.Wait()
	if err := runProbe(t, NewPidfile(zpid), 5*time.Second); err == nil || !strings.Contains(err.Error(), "no such process") {
		t.Fatalf("reaped child: err = %v, want no such process", err)
	}

	name := "vipd-chk-sleep"
	bin := filepath.Join(dir, name)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		prereq.Missing(t, "no sleep binary")
	}
	must(t, os.Symlink(sleep, bin)) // comm is the basename of the path run
	sl := exec.Command(bin, "30")
	must(t, sl.Start())
	t.Cleanup(func() { _ = sl.Process.Kill(); _ = sl.Wait() })
	if err := runProbe(t, NewProcessName(name), 5*time.Second); err != nil {
		t.Fatalf("by name %q: %v", name, err)
	}
	if err := runProbe(t, NewProcessName(name+"-not"), 5*time.Second); err == nil {
		t.Fatalf("by a name nothing has: passed")
	}
}
