package main

import (
	"bytes"
	"runtime/debug"
	"strings"
	"testing"
)

func TestVersionFromBuildInfo(t *testing.T) {
	vcs := func(rev, modified string) []debug.BuildSetting {
		return []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: rev}, {Key: "vcs.modified", Value: modified}}
	}
	const rev = "0123456789abcdef0123456789abcdef01234567"
	for _, c := range []struct {
		ldflags string
		bi      *debug.BuildInfo
		want    string
	}{
		{"v9.9.9", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v9.9.9"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}}, "v1.2.3"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "v0.0.0-20260102150405-0123456789ab+dirty"}, Settings: vcs(rev, "true")},
			"v0.0.0-20260102150405-0123456789ab+dirty (rev " + rev + ", modified)"},
		{"", &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: vcs(rev, "false")}, "(devel) (rev " + rev + ")"},
		{"", &debug.BuildInfo{}, "(devel)"},
		{"", nil, "unknown (no build information)"},
	} {
		if got := describeVersion(c.ldflags, c.bi); got != c.want {
			t.Errorf("describeVersion(%q, %+v) = %q, want %q", c.ldflags, c.bi, got, c.want)
		}
	}
}

// Without -ldflags, "sbc version" reports the build information, never
// the old placeholder "dev".
func TestVersionWithoutLdflags(t *testing.T) {
	old := version
	defer func() { version = old }()
	version = ""
	var out, errb bytes.Buffer
	if code := runMain([]string{"version"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	got := strings.TrimSpace(out.String())
	if got == "sbc dev" || got == "sbc" || !strings.HasPrefix(got, "sbc ") {
		t.Fatalf("version: %q", got)
	}
	bi, ok := debug.ReadBuildInfo()
	if ok && !strings.Contains(got, bi.Main.Version) && bi.Main.Version != "" {
		t.Fatalf("version %q does not name the main module version %q", got, bi.Main.Version)
	}
}
