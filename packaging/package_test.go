package packaging

import (
	"bytes"
	"debug/elf"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/vipd/vipd/internal/prereq"
)

// buildBinaries builds vipd and vipctl with the given version into a temp
// dir, with the Makefile's build target (the flags the packages ship with),
// and returns it.
func buildBinaries(t *testing.T, version string) string {
	t.Helper()
	if _, err := exec.LookPath("make"); err != nil {
		prereq.Missing(t, "make not installed")
	}
	bin := t.TempDir()
	cmd := exec.Command("make", "--no-print-directory", "build", "BIN="+bin, "VERSION="+version)
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make build: %v\n%s", err, out)
	}
	return bin
}

// requireStatic fails unless path is a statically linked executable: the
// packages declare no libc dependency.
func requireStatic(t *testing.T, path string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s is dynamically linked (%v); the packages declare no libc dependency", path, p.Type)
		}
	}
}

// mkpkg builds packaging/cmd/mkpkg without the race detector (under -race,
// nfpm's compression of ~50 MB of binaries takes minutes instead of
// seconds) and returns a function that builds packages with it.
func mkpkg(t *testing.T) func(version, bin, out string, formats ...string) []string {
	t.Helper()
	tool := filepath.Join(t.TempDir(), "mkpkg")
	cmd := exec.Command("go", "build", "-o", tool, "./packaging/cmd/mkpkg")
	cmd.Dir = ".."
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./packaging/cmd/mkpkg: %v\n%s", err, out)
	}
	return func(version, bin, out string, formats ...string) []string {
		t.Helper()
		cmd := exec.Command(tool, "--version", version, "--bin", bin, "--out", out, "--formats", strings.Join(formats, ","))
		cmd.Dir = ".."
		stdout, err := cmd.Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("mkpkg: %v\n%s", err, stderr)
		}
		paths := strings.Fields(string(stdout))
		if len(paths) != len(formats) {
			t.Fatalf("mkpkg printed %q for formats %v", paths, formats)
		}
		return paths
	}
}

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

func exists(p string) bool {
	_, err := os.Lstat(p)
	return err == nil
}

// shipped maps each packaged path (deb layout) to its source in the repo.
func shipped(t *testing.T) map[string]string {
	t.Helper()
	m := map[string]string{
		"/lib/systemd/system/vipd.service":                  "../deploy/systemd/vipd.service",
		"/etc/vipd/vipd.yaml":                               "../deploy/examples/seed/web-node-1.yaml",
		"/usr/share/doc/vipd/README.md":                     "../README.md",
		"/usr/share/doc/vipd/examples/seed/haproxy.cfg":     "../deploy/examples/seed/haproxy.cfg",
		"/usr/share/doc/vipd/prometheus/vipd-alerts.yml":    "../deploy/prometheus/vipd-alerts.yml",
		"/usr/share/doc/vipd/grafana/vipd-dashboard.json":   "../deploy/grafana/vipd-dashboard.json",
		"/usr/share/doc/vipd/examples/seed/web-node-2.yaml": "../deploy/examples/seed/web-node-2.yaml",
	}
	docs, _ := filepath.Glob("../docs/*.md")
	for _, d := range docs {
		m["/usr/share/doc/vipd/"+filepath.Base(d)] = d
	}
	return m
}

// TestPackages builds the .deb and .rpm, inspects the .deb with dpkg-deb
// and, as root, installs, upgrades, removes and purges it for real.
func TestPackages(t *testing.T) {
	if _, err := exec.LookPath("dpkg-deb"); err != nil {
		prereq.Missing(t, "dpkg-deb not installed")
	}
	bin := buildBinaries(t, "v9.8.7-test")
	out := t.TempDir()
	build := mkpkg(t)
	pkgs := build("v9.8.7", bin, out, "deb", "rpm")
	deb, rpm := pkgs[0], pkgs[1]

	t.Run("rpm", func(t *testing.T) {
		data, err := os.ReadFile(rpm)
		if err != nil {
			t.Fatal(err)
		}
		// The lead's magic, and the (uncompressed) header naming the files.
		if !bytes.HasPrefix(data, []byte{0xed, 0xab, 0xee, 0xdb}) {
			t.Fatalf("%s is not an rpm", rpm)
		}
		hdr := data[:min(len(data), 64<<10)]
		for _, s := range []string{"vipd.service", "/usr/lib/systemd/system/", "/etc/vipd/", "vipd.yaml", "vipctl", "useradd --system", "9.8.7"} {
			if !bytes.Contains(hdr, []byte(s)) {
				t.Errorf("rpm header lacks %q", s)
			}
		}
	})

	// Contents and control data.
	list := run(t, "dpkg-deb", "-c", deb)
	for _, want := range []string{"-rwxr-xr-x root/root", "./usr/bin/vipd\n", "./usr/bin/vipctl\n"} {
		if !strings.Contains(list, want) {
			t.Errorf("dpkg-deb -c lacks %q:\n%s", want, list)
		}
	}
	for p := range shipped(t) {
		if !strings.Contains(list, "."+p+"\n") {
			t.Errorf("dpkg-deb -c lacks %s", p)
		}
	}
	info := run(t, "dpkg-deb", "-I", deb)
	for _, want := range []string{"Package: vipd\n", "Version: 9.8.7\n", "Architecture: " + runtime.GOARCH + "\n", "postinst", "prerm", "postrm"} {
		if !strings.Contains(info, want) {
			t.Errorf("dpkg-deb -I lacks %q:\n%s", want, info)
		}
	}
	if cf := run(t, "dpkg-deb", "-I", deb, "conffiles"); strings.TrimSpace(cf) != "/etc/vipd/vipd.yaml" {
		t.Errorf("conffiles = %q, want /etc/vipd/vipd.yaml", cf)
	}
	if pi := run(t, "dpkg-deb", "-I", deb, "postinst"); !strings.Contains(pi, "useradd --system") {
		t.Errorf("postinst does not create the vipd user:\n%s", pi)
	}

	// Unpacked, the files are the repo's, and the binary runs.
	x := t.TempDir()
	run(t, "dpkg-deb", "-x", deb, x)
	for p, src := range shipped(t) {
		got, err1 := os.ReadFile(filepath.Join(x, p))
		want, err2 := os.ReadFile(src)
		if err1 != nil || err2 != nil || !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (%v, %v)", p, src, err1, err2)
		}
	}
	if v := run(t, filepath.Join(x, "usr/bin/vipd"), "version"); v != "vipd v9.8.7-test\n" {
		t.Errorf("unpacked vipd version = %q", v)
	}
	requireStatic(t, filepath.Join(x, "usr/bin/vipd"))
	requireStatic(t, filepath.Join(x, "usr/bin/vipctl"))

	t.Run("install", func(t *testing.T) {
		installCycle(t, deb, func() string { return build("v9.8.8", bin, filepath.Join(out, "next"), "deb")[0] })
	})
}

// installCycle installs the .deb on this machine, upgrades it, removes and
// purges it, and leaves the machine as it found it.
// next builds the upgrade package.
func installCycle(t *testing.T, deb string, next func() string) {
	if os.Geteuid() != 0 {
		prereq.Missing(t, "installing with dpkg needs root")
	}
	if _, err := exec.LookPath("dpkg"); err != nil {
		prereq.Missing(t, "dpkg not installed")
	}
	if err := exec.Command("dpkg-query", "-W", "vipd").Run(); err == nil {
		t.Skip("a vipd package is already installed here; not touching it")
	}
	for _, p := range []string{"/usr/bin/vipd", "/usr/bin/vipctl", "/etc/vipd"} {
		if exists(p) {
			t.Skipf("%s exists outside dpkg; not touching it", p)
		}
	}
	hadUser := exec.Command("getent", "passwd", "vipd").Run() == nil
	hadGroup := exec.Command("getent", "group", "vipd").Run() == nil
	t.Cleanup(func() {
		if exec.Command("dpkg-query", "-W", "vipd").Run() == nil {
			if out, err := exec.Command("dpkg", "-P", "vipd").CombinedOutput(); err != nil {
				t.Errorf("cleanup: dpkg -P vipd: %v\n%s", err, out)
			}
		}
		if !hadUser && exec.Command("getent", "passwd", "vipd").Run() == nil {
			if out, err := exec.Command("userdel", "vipd").CombinedOutput(); err != nil {
				t.Errorf("cleanup: userdel vipd: %v\n%s", err, out)
			}
		}
		if !hadGroup && exec.Command("getent", "group", "vipd").Run() == nil {
			_ = exec.Command("groupdel", "vipd").Run()
		}
	})

	run(t, "dpkg", "-i", deb)
	if v := run(t, "/usr/bin/vipd", "version"); v != "vipd v9.8.7-test\n" {
		t.Errorf("installed vipd version = %q", v)
	}
	if v := run(t, "/usr/bin/vipd", "check", "--config", "/etc/vipd/vipd.yaml"); !strings.Contains(v, "ok") {
		t.Errorf("vipd check on the installed config: %q", v)
	}
	// The peer channel's key: created at install, readable by vipd only.
	if fi, err := os.Stat("/etc/vipd/peer.key"); err != nil {
		t.Errorf("peer key not created: %v", err)
	} else if fi.Mode().Perm() != 0o600 || fi.Size() < 32 {
		t.Errorf("/etc/vipd/peer.key: mode %v, %d bytes; want 0600 and at least 32", fi.Mode().Perm(), fi.Size())
	}
	if owner := strings.TrimSpace(run(t, "stat", "-c", "%U:%G", "/etc/vipd/peer.key")); owner != "vipd:vipd" {
		t.Errorf("/etc/vipd/peer.key owned by %s, want vipd:vipd", owner)
	}
	pw := strings.Split(strings.TrimSpace(run(t, "getent", "passwd", "vipd")), ":")
	if len(pw) != 7 || pw[6] != "/usr/sbin/nologin" || pw[5] != "/var/lib/vipd" {
		t.Errorf("vipd user = %q, want a nologin system user with home /var/lib/vipd", pw)
	}
	installed := strings.Split(run(t, "dpkg", "-L", "vipd"), "\n")
	files := []string{"/usr/bin/vipd", "/usr/bin/vipctl"}
	for p := range shipped(t) {
		files = append(files, p)
	}
	for _, p := range files {
		if !exists(p) {
			t.Errorf("%s not installed", p)
		}
		found := false
		for _, l := range installed {
			found = found || l == p
		}
		if !found {
			t.Errorf("dpkg -L vipd lacks %s", p)
		}
	}

	// Upgrade: a locally edited config is kept (config|noreplace).
	edited := append(must(os.ReadFile("/etc/vipd/vipd.yaml")), []byte("# local edit\n")...)
	if err := os.WriteFile("/etc/vipd/vipd.yaml", edited, 0o644); err != nil {
		t.Fatal(err)
	}
	run(t, "dpkg", "-i", next())
	if got := must(os.ReadFile("/etc/vipd/vipd.yaml")); !bytes.Equal(got, edited) {
		t.Errorf("upgrade replaced the edited /etc/vipd/vipd.yaml:\n%s", got)
	}
	if v := run(t, "dpkg-query", "-W", "-f", "${Version}", "vipd"); v != "9.8.8" {
		t.Errorf("after upgrade, version %q", v)
	}

	// Remove: everything but the conffile goes.
	run(t, "dpkg", "-r", "vipd")
	for _, p := range files {
		if p != "/etc/vipd/vipd.yaml" && exists(p) {
			t.Errorf("%s left after dpkg -r", p)
		}
	}
	if !exists("/etc/vipd/vipd.yaml") {
		t.Errorf("dpkg -r removed the config file; it must stay until purge")
	}
	// Purge: the config goes too, and dpkg forgets the package.
	run(t, "dpkg", "-P", "vipd")
	for _, p := range append(files, "/etc/vipd", "/usr/share/doc/vipd") {
		if exists(p) {
			t.Errorf("%s left after dpkg -P", p)
		}
	}
	if err := exec.Command("dpkg-query", "-W", "vipd").Run(); err == nil {
		t.Errorf("dpkg still knows vipd after purge")
	}
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}
