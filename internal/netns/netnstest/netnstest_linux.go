//go:build linux

package netnstest

import (
	"os"
	"os/exec"
	"testing"

	"github.com/sbc-project/sbc/internal/netns"
)

// RequireEnv is the environment variable that turns a skip for missing
// privileges or tools into a failure when set to "1" (CI sets it).
const RequireEnv = "SBC_REQUIRE_PRIV"

// RequirePriv skips t unless it runs as root and every program in tools
// is on PATH; with SBC_REQUIRE_PRIV=1 it fails t instead of skipping.
func RequirePriv(t testing.TB, tools ...string) {
	t.Helper()
	why := ""
	if os.Geteuid() != 0 {
		why = "test needs root"
	} else {
		for _, tool := range tools {
			if _, err := exec.LookPath(tool); err != nil {
				why = "test needs the " + tool + " command"
				break
			}
		}
	}
	if why == "" {
		return
	}
	if os.Getenv(RequireEnv) == "1" {
		t.Fatalf("%s and %s=1", why, RequireEnv)
	}
	t.Skipf("%s (set %s=1 to make this a failure)", why, RequireEnv)
}

// New makes a network namespace named prefix-PID-N with its loopback up
// and returns its name; it is deleted at cleanup, and a failed delete is
// a test error. New calls RequirePriv(t, "ip") first.
func New(t testing.TB, prefix string) string {
	t.Helper()
	RequirePriv(t, "ip")
	name := netns.UniqueName(prefix)
	if err := netns.Add(name); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := netns.Del(name); err != nil {
			t.Error(err)
		}
	})
	return name
}

// Veth makes the veth pair v describes ([netns.AddVeth]) or fails t. Its
// ends go when their namespaces are deleted.
func Veth(t testing.TB, v netns.Veth) {
	t.Helper()
	if err := netns.AddVeth(v); err != nil {
		t.Fatal(err)
	}
}
