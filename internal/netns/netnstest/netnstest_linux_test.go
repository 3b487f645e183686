//go:build linux

package netnstest_test

import (
	"errors"
	"io/fs"
	"os"
	"runtime"
	"testing"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
)

func TestNewDeletesAtCleanup(t *testing.T) {
	netnstest.RequirePriv(t, "ip")
	var name string
	t.Run("make", func(t *testing.T) {
		name = netnstest.New(t, "sbc-nt")
		if _, err := os.Stat(netns.Path(name)); err != nil {
			t.Fatal(err)
		}
	})
	if name == "" {
		t.Fatal("no namespace made")
	}
	if _, err := os.Stat(netns.Path(name)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("namespace %s after cleanup: %v", name, err)
	}
}

// fakeTB records how RequirePriv ends a test.
type fakeTB struct {
	testing.TB
	skipped, failed bool
}

func (f *fakeTB) Helper()                         {}
func (f *fakeTB) Skipf(string, ...any)            { f.skipped = true; runtime.Goexit() }
func (f *fakeTB) Fatalf(string, ...any)           { f.failed = true; runtime.Goexit() }
func (f *fakeTB) Skip(...any)                     { f.skipped = true; runtime.Goexit() }
func (f *fakeTB) Fatal(...any)                    { f.failed = true; runtime.Goexit() }
func (f *fakeTB) Cleanup(func())                  {}
func (f *fakeTB) Logf(format string, args ...any) {}

func requirePriv(tools ...string) *fakeTB {
	f := &fakeTB{}
	done := make(chan struct{})
	go func() {
		defer close(done)
		netnstest.RequirePriv(f, tools...)
	}()
	<-done
	return f
}

func TestRequirePriv(t *testing.T) {
	const missing = "sbc-no-such-tool"
	t.Setenv(netnstest.RequireEnv, "")
	if f := requirePriv(missing); !f.skipped || f.failed {
		t.Fatalf("missing tool: skipped %v failed %v, want a skip", f.skipped, f.failed)
	}
	t.Setenv(netnstest.RequireEnv, "1")
	if f := requirePriv(missing); f.skipped || !f.failed {
		t.Fatalf("missing tool with %s=1: skipped %v failed %v, want a failure", netnstest.RequireEnv, f.skipped, f.failed)
	}
	if os.Geteuid() == 0 {
		if f := requirePriv("sh"); f.skipped || f.failed {
			t.Fatalf("root with sh: skipped %v failed %v, want neither", f.skipped, f.failed)
		}
	}
}
