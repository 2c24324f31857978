package main

import (
	"runtime"
	"runtime/debug"
	"strings"
)

// version says which haul this is, from the build information the Go
// toolchain embeds: the module version (a tag for `go install ...@v1.2.0`,
// "(devel)" for a build from a clone), the commit and its time, whether
// the tree had changes, and the Go version and platform.
func version() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "unknown (no build information) " + runtime.GOOS + "/" + runtime.GOARCH
	}
	return versionOf(bi, runtime.GOOS+"/"+runtime.GOARCH)
}

func versionOf(bi *debug.BuildInfo, platform string) string {
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	parts := []string{v}
	var rev, at string
	modified := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.time":
			at = s.Value
		case "vcs.modified":
			modified = s.Value == "true"
		}
	}
	if rev != "" {
		if len(rev) > 12 {
			rev = rev[:12]
		}
		if modified {
			rev += "+modified"
		}
		c := "commit " + rev
		if at != "" {
			c += " " + at
		}
		parts = append(parts, c)
	}
	return strings.Join(append(parts, bi.GoVersion, platform), ", ")
}
