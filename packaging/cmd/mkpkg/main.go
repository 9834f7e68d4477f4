// Command mkpkg builds vipd's .deb and .rpm from packaging/nfpm.yaml with
// nfpm's Go API (make package). Run it from the repository root after
// make build.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"

	"github.com/vipd/vipd/packaging"
)

func main() {
	var o packaging.Options
	flag.StringVar(&o.Config, "config", "packaging/nfpm.yaml", "nfpm config")
	flag.StringVar(&o.Root, "root", ".", "repository root (src paths in the config are relative to it)")
	flag.StringVar(&o.Version, "version", "", "version, as `git describe` prints it (required; made dpkg/rpm-safe)")
	flag.StringVar(&o.Arch, "arch", runtime.GOARCH, "Go architecture of the binaries")
	flag.StringVar(&o.Bin, "bin", "bin", "directory with the built vipd and vipctl")
	flag.StringVar(&o.OutDir, "out", "dist", "output directory")
	formats := flag.String("formats", "deb,rpm", "comma-separated package formats")
	flag.Parse()
	if o.Version == "" || flag.NArg() != 0 {
		flag.Usage()
		os.Exit(2)
	}
	o.Version = packaging.PackageVersion(o.Version)
	paths, err := packaging.Build(o, strings.Split(*formats, ",")...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "mkpkg: %v\n", err)
		os.Exit(1)
	}
	for _, p := range paths {
		fmt.Println(p)
	}
}
