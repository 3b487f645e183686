//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLoadWithoutCapabilities drops CAP_BPF, CAP_SYS_ADMIN and CAP_NET_ADMIN
// from one locked OS thread (capabilities are per thread) and loads there.
func TestLoadWithoutCapabilities(t *testing.T) {
	requirePriv(t)
	dir := t.TempDir()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		data[0].Effective &^= 1<<unix.CAP_NET_ADMIN | 1<<unix.CAP_SYS_ADMIN
		data[1].Effective &^= 1 << (unix.CAP_BPF - 32)
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			errc <- err
			return
		}
		_, err := Load(Options{Interfaces: []string{"lo"}, PinDir: dir})
		errc <- err
	}()
	err := <-errc
	if !errors.Is(err, ErrPermission) {
		t.Fatalf("Load without capabilities: %v, want ErrPermission", err)
	}
	for _, want := range []string{"CAP_BPF", "CAP_NET_ADMIN"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
}

func TestEnsureBPFFS(t *testing.T) {
	requirePriv(t)
	plain := t.TempDir()
	// Not on bpffs and not below the mount point: a clear error.
	err := ensureBPFFS(filepath.Join(plain, "x", "sbc"), filepath.Join(plain, "elsewhere"))
	if !errors.Is(err, ErrNoBPFFS) {
		t.Fatalf("got %v, want ErrNoBPFFS", err)
	}
	// Same through Load.
	if _, err := Load(Options{Interfaces: []string{"lo"}, PinDir: filepath.Join(plain, "sbc")}); !errors.Is(err, ErrNoBPFFS) {
		t.Fatalf("Load: %v, want ErrNoBPFFS", err)
	}
	// Below the mount point: a bpffs is mounted there.
	mnt := t.TempDir()
	pinDir := filepath.Join(mnt, "a", "sbc")
	if err := ensureBPFFS(pinDir, mnt); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	for _, p := range []string{mnt, pinDir} {
		if ok, err := isBPFFS(p); err != nil || !ok {
			t.Fatalf("%s on bpffs: %v %v", p, ok, err)
		}
	}
	// Already mounted: no second mount, still fine.
	if err := ensureBPFFS(filepath.Join(mnt, "b"), mnt); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOptionErrors(t *testing.T) {
	if _, err := Load(Options{Interfaces: []string{"lo"}, Mode: "offload"}); err == nil {
		t.Error("unknown mode accepted")
	}
	if _, err := Load(Options{}); !errors.Is(err, ErrNoInterface) {
		t.Errorf("no interfaces: %v", err)
	}
	if _, err := Load(Options{Interfaces: []string{"sbc-missing9"}}); !errors.Is(err, ErrNoInterface) {
		t.Errorf("missing interface: %v", err)
	}
	var le *LoadError
	if _, err := Load(Options{Interfaces: []string{"sbc-missing9"}}); !errors.As(err, &le) || le.Interface != "sbc-missing9" {
		t.Errorf("LoadError does not name the interface: %v", err)
	}
}

func TestNormalizePrefix(t *testing.T) {
	for in, want := range map[string]string{
		"192.0.2.77/24":              "192.0.2.0/24",
		"::ffff:192.0.2.77/120":      "192.0.2.0/24",
		"::ffff:192.0.2.77/128":      "192.0.2.77/32",
		"::ffff:0:0/96":              "0.0.0.0/0",
		"::/64":                      "::/64",
		"2001:db8::1/64":             "2001:db8::/64",
		"::ffff:192.0.2.77/80":       "::/80",
		"2001:db8:1:2:3::/128":       "2001:db8:1:2:3::/128",
		"10.1.2.3/0":                 "0.0.0.0/0",
		"::ffff:10.1.2.3/95":         "::fffe:0:0/95",
		"fe80::1/10":                 "fe80::/10",
		"::ffff:255.255.255.255/128": "255.255.255.255/32",
	} {
		got, err := normalizePrefix(mustPrefixes(in)[0])
		if err != nil || got.String() != want {
			t.Errorf("normalizePrefix(%s) = %v, %v; want %s", in, got, err, want)
		}
	}
}
