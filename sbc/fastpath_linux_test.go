//go:build linux

package sbc

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/ebpf"
	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"golang.org/x/sys/unix"
)

// TestKernelMirrorOverflow gives the XDP deny map less room than the
// blocklist holds (the SBC sizes it to the blocklist's capacity; here the
// test shrinks it) and checks the overflow policy with the real kernel: the
// map takes what fits, the rest is reported once (one WARN line,
// sbc_fastpath_missing_entries, sbc_fastpath_overflows_total) and the
// mirror does not resync (sbc_fastpath_syncs_total stays 1) while blocks
// keep coming; removals let the pending entries in, and the end of the
// episode is reported once.
func TestKernelMirrorOverflow(t *testing.T) {
	const room = 64
	ns := netnstest.New(t, "sbc-fp")
	pinDir := privateBPFFS(t)
	var x *ebpf.XDP
	err := netns.Do(ns, func() error {
		var err error
		x, err = ebpf.Load(ebpf.Options{Interfaces: []string{"lo"}, Mode: ebpf.ModeGeneric, PinDir: pinDir,
			UDPPorts: []uint16{5060}, MaxEntries: room})
		return err
	})
	if err != nil {
		t.Fatalf("ebpf.Load: %v", err)
	}
	t.Cleanup(func() { _ = x.Remove() })

	bl := acl.NewBlocklist(acl.Options{MaxEntries: 1000, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { bl.Close() })
	addr := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 9, byte(i >> 8), byte(i)}), 32)
	}
	add := func(from, to int) {
		for i := from; i < to; i++ {
			if err := bl.Add(acl.Entry{Prefix: addr(i), Reason: "test", Origin: acl.OriginAuto}); err != nil {
				t.Fatal(err)
			}
		}
	}
	add(0, 100)

	var logs syncBuf
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	reg := prometheus.NewRegistry()
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	startMirror(ctx, &wg, log, reg, bl, pathXDP, xdpSink{x}, room)
	t.Cleanup(func() { cancel(); wg.Wait() })

	waitMissing := func(want int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for regSum(t, reg, "sbc_fastpath_missing_entries") != float64(want) {
			if time.Now().After(deadline) {
				t.Fatalf("sbc_fastpath_missing_entries = %v, want %d", regSum(t, reg, "sbc_fastpath_missing_entries"), want)
			}
			time.Sleep(5 * time.Millisecond) // polling the mirror's goroutine
		}
	}
	waitMissing(100 - room)
	add(100, 200) // blocks keep coming while the map is full
	waitMissing(200 - room)
	denied, err := x.Denied()
	if err != nil || len(denied) != room {
		t.Fatalf("deny map holds %d prefixes (%v), want %d", len(denied), err, room)
	}
	if v := regSum(t, reg, "sbc_fastpath_syncs_total"); v != 1 {
		t.Errorf("sbc_fastpath_syncs_total = %v, want 1 (no resync on a full map)", v)
	}
	if v := regSum(t, reg, "sbc_fastpath_overflows_total"); v != 1 {
		t.Errorf("sbc_fastpath_overflows_total = %v, want 1", v)
	}
	if n := strings.Count(logs.String(), "kernel copy of the blocklist is full"); n != 1 {
		t.Errorf("%d WARN lines about the full map, want 1:\n%s", n, logs.String())
	}

	// Removals free room: pending entries get in, until none is left.
	for i := range 150 {
		bl.Remove(addr(i))
	}
	waitMissing(0)
	// The last removals may still be on their way to the map.
	deadline := time.Now().Add(10 * time.Second)
	for {
		denied, err = x.Denied()
		if err != nil {
			t.Fatal(err)
		}
		if len(denied) == 50 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deny map holds %d prefixes, want the 50 left", len(denied))
		}
		time.Sleep(5 * time.Millisecond) // polling the mirror's goroutine
	}
	for _, p := range denied {
		if _, ok := bl.Get(p); !ok {
			t.Errorf("deny map holds %s, which the blocklist does not", p)
		}
	}
	if n := strings.Count(logs.String(), "holds every entry again"); n != 1 {
		t.Errorf("%d INFO lines about the end of the overflow, want 1", n)
	}
	if s, o := regSum(t, reg, "sbc_fastpath_syncs_total"), regSum(t, reg, "sbc_fastpath_overflows_total"); s != 1 || o != 1 {
		t.Errorf("syncs %v, overflows %v; want 1 and 1", s, o)
	}
}

// privateBPFFS mounts a bpf filesystem on a temporary directory (unmounted
// at cleanup) and returns a pin directory below it.
func privateBPFFS(t *testing.T) string {
	t.Helper()
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs: %v", err)
	}
	t.Cleanup(func() { _ = unix.Unmount(mnt, unix.MNT_DETACH) })
	return mnt + "/sbc"
}

// regSum sums the samples of a family in reg.
func regSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var v float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			v += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return v
}

type syncBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
