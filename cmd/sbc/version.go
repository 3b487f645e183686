package main

import (
	"runtime/debug"
	"strings"
)

// version is set at build time with -ldflags "-X main.version=…" (the
// Makefile does). Without it, the version comes from the build info.
var version = ""

// versionString is what "sbc version" prints after "sbc ".
func versionString() string {
	bi, _ := debug.ReadBuildInfo()
	return describeVersion(version, bi)
}

// describeVersion returns the -ldflags version if set, else the main
// module's version from the build information with the VCS revision and
// whether the work tree was modified, when the go command stamped them:
//
//	v1.2.3
//	v0.0.0-20260102150405-0123456789ab+dirty (rev 0123456789abcdef…, modified)
//	(devel) (rev 0123456789abcdef…)
func describeVersion(ldflags string, bi *debug.BuildInfo) string {
	if ldflags != "" {
		return ldflags
	}
	if bi == nil {
		return "unknown (no build information)"
	}
	v := bi.Main.Version
	if v == "" {
		v = "(devel)"
	}
	var rev, modified string
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			modified = s.Value
		}
	}
	var extra []string
	if rev != "" {
		extra = append(extra, "rev "+rev)
	}
	if modified == "true" {
		extra = append(extra, "modified")
	}
	if len(extra) > 0 {
		v += " (" + strings.Join(extra, ", ") + ")"
	}
	return v
}
