// Package packaging builds vipd's .deb and .rpm with nfpm's Go API. It is
// used by packaging/cmd/mkpkg (make package) and its tests only, so nfpm
// never links into vipd itself.
package packaging

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/goreleaser/nfpm/v2"
	_ "github.com/goreleaser/nfpm/v2/deb" // registers the deb packager
	_ "github.com/goreleaser/nfpm/v2/rpm" // registers the rpm packager
)

// Options say what to build.
type Options struct {
	// Config is the nfpm.yaml path. Its src paths are relative to Root.
	Config string
	// Root is the repository root. Empty: the current directory.
	Root string
	// Version is the package version (e.g. 0.3.0 or 0.3.0+g1a2b3c).
	Version string
	// Arch is the Go architecture (amd64, arm64); nfpm maps it per format.
	Arch string
	// Bin is the directory holding the built vipd and vipctl, relative to
	// Root or absolute.
	Bin string
	// OutDir receives the packages.
	OutDir string
}

// Build writes one package per format ("deb", "rpm") into opts.OutDir and
// returns their paths.
func Build(opts Options, formats ...string) ([]string, error) {
	for _, b := range []string{"vipd", "vipctl"} {
		p := opts.Bin
		if !filepath.IsAbs(p) {
			p = filepath.Join(opts.Root, p)
		}
		if _, err := os.Stat(filepath.Join(p, b)); err != nil {
			return nil, fmt.Errorf("binary %s: %w (run make build first)", b, err)
		}
	}
	env := map[string]string{"VERSION": opts.Version, "ARCH": opts.Arch, "BIN": opts.Bin}
	for k, v := range env {
		if v == "" {
			return nil, fmt.Errorf("packaging: %s is empty", k)
		}
	}
	cfgPath, err := filepath.Abs(opts.Config)
	if err != nil {
		return nil, err
	}
	outDir, err := filepath.Abs(opts.OutDir)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(outDir, 0o755); err != nil {
		return nil, err
	}
	root, err := filepath.Abs(opts.Root)
	if err != nil {
		return nil, err
	}
	// nfpm resolves relative paths against the working directory; anchor
	// them at Root instead, so callers need not chdir.
	abs := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	cfg, err := nfpm.ParseFileWithEnvMapping(cfgPath, func(k string) string { return env[k] })
	if err != nil {
		return nil, fmt.Errorf("%s: %w", opts.Config, err)
	}
	var out []string
	for _, format := range formats {
		info, err := cfg.Get(format)
		if err != nil {
			return nil, fmt.Errorf("%s: %s: %w", opts.Config, format, err)
		}
		info = nfpm.WithDefaults(info)
		for _, c := range info.Contents {
			c.Source = abs(c.Source)
		}
		sc := &info.Overridables.Scripts
		for _, p := range []*string{&sc.PreInstall, &sc.PostInstall, &sc.PreRemove, &sc.PostRemove} {
			*p = abs(*p)
		}
		pkgr, err := nfpm.Get(format)
		if err != nil {
			return nil, err
		}
		target := filepath.Join(outDir, pkgr.ConventionalFileName(info))
		info.Target = target
		f, err := os.Create(target)
		if err != nil {
			return nil, err
		}
		if err := pkgr.Package(info, f); err != nil {
			f.Close()
			os.Remove(target)
			return nil, fmt.Errorf("%s: %s: %w", opts.Config, format, err)
		}
		if err := f.Close(); err != nil {
			return nil, err
		}
		out = append(out, target)
	}
	return out, nil
}
