//go:build linux

package netns_test

import (
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
)

// inode returns the inode of a namespace file.
func inode(t testing.TB, path string) uint64 {
	t.Helper()
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// threadNS returns the inode of the calling thread's network namespace.
func threadNS() (uint64, error) {
	var st syscall.Stat_t
	err := syscall.Stat("/proc/thread-self/ns/net", &st)
	return st.Ino, err
}

func TestUniqueName(t *testing.T) {
	seen := map[string]bool{}
	prefix := fmt.Sprintf("sbc-u-%d-", os.Getpid())
	for range 100 {
		n := netns.UniqueName("sbc-u")
		if !strings.HasPrefix(n, prefix) || seen[n] {
			t.Fatalf("UniqueName = %q (seen before: %v), want a new name starting with %q", n, seen[n], prefix)
		}
		seen[n] = true
	}
}

func TestDoCurrentNamespace(t *testing.T) {
	want := errors.New("from fn")
	called := false
	if err := netns.Do("", func() error { called = true; return want }); !errors.Is(err, want) || !called {
		t.Fatalf("Do(\"\") = %v (called %v), want fn's error", err, called)
	}
}

func TestDoMissingNamespace(t *testing.T) {
	called := false
	err := netns.Do("sbc-netns-does-not-exist", func() error { called = true; return nil })
	if !errors.Is(err, fs.ErrNotExist) || called {
		t.Fatalf("Do(missing) = %v (called %v), want ErrNotExist and fn not called", err, called)
	}
}

func TestDo(t *testing.T) {
	ns := netnstest.New(t, "sbc-netns")
	host := inode(t, "/proc/self/ns/net")
	target := inode(t, netns.Path(ns))
	if host == target {
		t.Fatal("new namespace has the host's inode")
	}
	want := errors.New("from fn")
	var inside uint64
	var names []string
	var conn *net.UDPConn
	err := netns.Do(ns, func() error {
		var err error
		if inside, err = threadNS(); err != nil {
			return err
		}
		ifs, err := net.Interfaces()
		if err != nil {
			return err
		}
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		if conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}); err != nil {
			return err
		}
		return want
	})
	if !errors.Is(err, want) {
		t.Fatalf("Do = %v, want fn's error", err)
	}
	defer conn.Close()
	if inside != target {
		t.Fatalf("fn ran in namespace %d, want %d", inside, target)
	}
	if len(names) != 1 || names[0] != "lo" {
		t.Fatalf("interfaces in the new namespace: %v, want only lo", names)
	}
	if got, err := threadNS(); err != nil || got != host {
		t.Fatalf("caller's thread in namespace %d (%v) after Do, want %d", got, err, host)
	}
	// The socket stays in the namespace: a host socket cannot reach it.
	c, err := net.DialUDP("udp4", nil, conn.LocalAddr().(*net.UDPAddr))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, _ = c.Write([]byte("x"))
	_ = conn.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, _, err := conn.ReadFrom(make([]byte, 8)); err == nil {
		t.Fatal("a datagram from the host namespace reached a socket made in the test namespace")
	}
}

// TestDoConcurrent switches many goroutines between two namespaces while
// others check that no unlocked thread is left in a test namespace.
func TestDoConcurrent(t *testing.T) {
	nss := []string{netnstest.New(t, "sbc-netns"), netnstest.New(t, "sbc-netns")}
	want := map[string]uint64{}
	for _, ns := range nss {
		want[ns] = inode(t, netns.Path(ns))
	}
	host := inode(t, "/proc/self/ns/net")
	const workers, rounds = 8, 50
	errc := make(chan error, 2*workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range rounds {
				ns := nss[(w+i)%2]
				err := netns.Do(ns, func() error {
					got, err := threadNS()
					if err == nil && got != want[ns] {
						err = fmt.Errorf("in %s: namespace %d, want %d", ns, got, want[ns])
					}
					return err
				})
				if err != nil {
					errc <- err
					return
				}
			}
		})
		wg.Go(func() {
			for range rounds {
				got, err := threadNS()
				if err == nil && got != host {
					err = fmt.Errorf("unlocked goroutine in namespace %d, want the host's %d", got, host)
				}
				if err != nil {
					errc <- err
					return
				}
				runtime.Gosched()
			}
		})
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
}

func TestDoPanic(t *testing.T) {
	ns := netnstest.New(t, "sbc-netns")
	host := inode(t, "/proc/self/ns/net")
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Fatalf("recovered %v, want the panic of fn", r)
			}
		}()
		_ = netns.Do(ns, func() error { panic("boom") })
		t.Fatal("Do returned after fn panicked")
	}()
	if got, err := threadNS(); err != nil || got != host {
		t.Fatalf("thread in namespace %d (%v) after a panic, want %d", got, err, host)
	}
}

func TestDoGoexit(t *testing.T) {
	ns := netnstest.New(t, "sbc-netns")
	done := make(chan bool)
	go func() {
		returned := false
		defer func() { done <- returned }()
		_ = netns.Do(ns, func() error { runtime.Goexit(); return nil })
		returned = true
	}()
	select {
	case returned := <-done:
		if returned {
			t.Fatal("Do returned after fn called runtime.Goexit; want the caller to exit too")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Do did not come back after fn called runtime.Goexit")
	}
}

func TestAddDel(t *testing.T) {
	netnstest.RequirePriv(t, "ip")
	name := netns.UniqueName("sbc-netns")
	if err := netns.Add(name); err != nil {
		t.Fatal(err)
	}
	deleted := false
	t.Cleanup(func() {
		if !deleted {
			_ = netns.Del(name)
		}
	})
	if _, err := os.Stat(netns.Path(name)); err != nil {
		t.Fatalf("namespace file: %v", err)
	}
	var up bool
	if err := netns.Do(name, func() error {
		lo, err := net.InterfaceByName("lo")
		up = err == nil && lo.Flags&net.FlagUp != 0
		return err
	}); err != nil || !up {
		t.Fatalf("loopback up: %v %v", up, err)
	}
	if err := netns.Add(name); err == nil {
		t.Fatal("Add of an existing name succeeded")
	}
	for _, bad := range []string{"", "a/b"} {
		if err := netns.Add(bad); err == nil {
			t.Fatalf("Add(%q) succeeded", bad)
		}
	}
	if err := netns.Del(name); err != nil {
		t.Fatal(err)
	}
	deleted = true
	if _, err := os.Stat(netns.Path(name)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("namespace file after Del: %v", err)
	}
	if err := netns.Del(name); err == nil {
		t.Fatal("second Del succeeded")
	}
}

// neighbours returns the permanent neighbour entries of dev in ns:
// address -> lladdr.
func neighbours(t testing.TB, ns, dev string) map[string]string {
	t.Helper()
	out, err := netns.IP("-n", ns, "neigh", "show", "dev", dev, "nud", "permanent")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]string{}
	for line := range strings.Lines(out) {
		f := strings.Fields(line) // ADDR lladdr MAC PERMANENT
		if len(f) >= 3 && f[1] == "lladdr" {
			m[f[0]] = f[2]
		}
	}
	return m
}

func hwAddr(t testing.TB, ns, dev string) string {
	t.Helper()
	var hw string
	if err := netns.Do(ns, func() error {
		ifc, err := net.InterfaceByName(dev)
		if err == nil {
			hw = ifc.HardwareAddr.String()
		}
		return err
	}); err != nil {
		t.Fatal(err)
	}
	return hw
}

func TestAddVeth(t *testing.T) {
	a, b := netnstest.New(t, "sbc-netns"), netnstest.New(t, "sbc-netns")
	pfx := netip.MustParsePrefix
	v := netns.Veth{
		A: netns.End{NS: a, Name: "vta", MAC: "02:5b:c0:00:00:0a",
			Addrs: []netip.Prefix{pfx("10.214.0.2/24"), pfx("10.214.0.3/24"), pfx("fd00:214::2/64")}},
		B: netns.End{NS: b, Name: "vtb", // MAC picked by the kernel
			Addrs: []netip.Prefix{pfx("10.214.0.1/24"), pfx("fd00:214::1/64")}},
		StaticNeighbours: true,
		Probes: []netns.Probe{
			{Src: pfx("10.214.0.3/24").Addr(), Dst: pfx("10.214.0.1/24").Addr()},
			{Src: pfx("fd00:214::2/64").Addr(), Dst: pfx("fd00:214::1/64").Addr()},
		},
	}
	netnstest.Veth(t, v)

	if got := hwAddr(t, a, "vta"); got != v.A.MAC {
		t.Fatalf("MAC of A %s, want %s", got, v.A.MAC)
	}
	macB := hwAddr(t, b, "vtb")
	wantA := map[string]string{"10.214.0.1": macB, "fd00:214::1": macB}
	wantB := map[string]string{"10.214.0.2": v.A.MAC, "10.214.0.3": v.A.MAC, "fd00:214::2": v.A.MAC}
	for _, c := range []struct {
		ns, dev string
		want    map[string]string
	}{{a, "vta", wantA}, {b, "vtb", wantB}} {
		got := neighbours(t, c.ns, c.dev)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("permanent neighbours in %s: %v, want %v", c.ns, got, c.want)
		}
	}

	// The link carries traffic both ways at once (the probes waited for it).
	var rc *net.UDPConn
	if err := netns.Do(b, func() (err error) {
		rc, err = net.ListenUDP("udp", &net.UDPAddr{Port: 5060})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	var sc *net.UDPConn
	if err := netns.Do(a, func() (err error) {
		sc, err = net.DialUDP("udp", &net.UDPAddr{IP: net.ParseIP("10.214.0.2")}, &net.UDPAddr{IP: net.ParseIP("10.214.0.1"), Port: 5060})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sc.Close()
	if _, err := sc.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	_ = rc.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 16)
	n, from, err := rc.ReadFromUDPAddrPort(buf)
	if err != nil || string(buf[:n]) != "hello" || from.Addr().Unmap() != netip.MustParseAddr("10.214.0.2") {
		t.Fatalf("received %q from %v (%v), want hello from 10.214.0.2", buf[:n], from, err)
	}
}

func TestAddVethWithoutNeighbours(t *testing.T) {
	a, b := netnstest.New(t, "sbc-netns"), netnstest.New(t, "sbc-netns")
	netnstest.Veth(t, netns.Veth{
		A: netns.End{NS: a, Name: "va", Addrs: []netip.Prefix{netip.MustParsePrefix("10.215.0.2/24")}},
		B: netns.End{NS: b, Name: "vb", Addrs: []netip.Prefix{netip.MustParsePrefix("10.215.0.1/24")}},
		// Resolved by ARP.
		Probes: []netns.Probe{{Src: netip.MustParseAddr("10.215.0.2"), Dst: netip.MustParseAddr("10.215.0.1")}},
	})
	if got := neighbours(t, a, "va"); len(got) != 0 {
		t.Fatalf("permanent neighbours without StaticNeighbours: %v", got)
	}
}

func TestAddVethErrors(t *testing.T) {
	a, b := netnstest.New(t, "sbc-netns"), netnstest.New(t, "sbc-netns")
	if err := netns.AddVeth(netns.Veth{A: netns.End{NS: a, Name: "va"}, B: netns.End{NS: b}}); err == nil {
		t.Error("AddVeth without a name for B succeeded")
	}
	if err := netns.AddVeth(netns.Veth{A: netns.End{NS: a, Name: "va"}, B: netns.End{NS: "sbc-netns-does-not-exist", Name: "vb"}}); err == nil {
		t.Error("AddVeth into a missing namespace succeeded")
	}
	// A probe that cannot arrive (its destination is also an address of
	// A, so it never leaves A) fails after the timeout and explains itself.
	err := netns.AddVeth(netns.Veth{
		A:            netns.End{NS: a, Name: "va", Addrs: []netip.Prefix{netip.MustParsePrefix("10.216.0.2/24"), netip.MustParsePrefix("10.216.0.1/32")}},
		B:            netns.End{NS: b, Name: "vb", Addrs: []netip.Prefix{netip.MustParsePrefix("10.216.0.1/24")}},
		Probes:       []netns.Probe{{Src: netip.MustParseAddr("10.216.0.2"), Dst: netip.MustParseAddr("10.216.0.1")}},
		ProbeTimeout: 300 * time.Millisecond,
	})
	if err == nil || !strings.Contains(err.Error(), "no datagram from 10.216.0.2") || !strings.Contains(err.Error(), "--- "+b+": ip -s -d link") {
		t.Fatalf("unreachable probe: %v", err)
	}
}
