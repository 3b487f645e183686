//go:build linux

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestFallback asks for XDP where it cannot run: the SBC must still start,
// say why in its log, run on the next path (sbc_fastpath_info), complete
// calls and keep blocking.
func TestFallback(t *testing.T) {
	t.Run("missing_interface_to_nftables", func(t *testing.T) {
		tn := newTestNet(t)
		requireTools(t, "nft")
		table := fmt.Sprintf("e2f%d_%d", os.Getpid()%1000000, netSeq.Load())
		const missing = "e2enope0"
		cfg := writePolicy(t, policyOpts{
			stateDir: t.TempDir(),
			xdp:      true, xdpIfaces: []string{missing}, pinDir: filepath.Join(mountBPFFS(t), "sbc"),
			nft: true, nftTable: table,
		})
		startUAS(t, tn)
		s := startSBC(t, tn, cfg)
		checkPath(t, tn, "nftables")
		if line, ok := s.logLine("xdp", "fall", missing); ok {
			t.Logf("reason logged: %s", line)
		} else {
			t.Errorf("no log line saying XDP falls back because %s is missing", missing)
		}
		if _, ok := s.logLine("nftables", "installed", table); !ok {
			t.Error("no log line saying the nftables table is installed")
		}
		tn.callsComplete(t, 2)
		// Blocking goes through nftables.
		tn.block(t, attackPrefix, "e2e test", "")
		waitNftElement(t, tn, table, attackIP, true)
		before := tn.metrics(t)
		tn.sendOptions(t, attackIP, blockedBurst, "e2e-attacker")
		tn.waitMetric(t, "nftables drops", nftDropped, func(v float64) bool { return v >= before.get(nftDropped)+blockedBurst })
		if d := tn.metrics(t).get(attackSeen) - before.get(attackSeen); d != 0 {
			t.Errorf("%v OPTIONS from the blocked source reached the SBC", d)
		}
	})

	t.Run("pin_dir_not_bpffs_to_userspace", func(t *testing.T) {
		tn := newTestNet(t)
		// A plain directory, not on a bpf filesystem and not below
		// /sys/fs/bpf (where the SBC would mount one).
		pinDir := filepath.Join(t.TempDir(), "not-bpffs")
		cfg := writePolicy(t, policyOpts{
			stateDir: t.TempDir(),
			xdp:      true, xdpIfaces: []string{tn.sbcIf}, pinDir: pinDir,
		})
		startUAS(t, tn)
		s := startSBC(t, tn, cfg)
		checkPath(t, tn, "userspace")
		if line, ok := s.logLine("xdp", "fall", "bpf filesystem", pinDir); ok {
			t.Logf("reason logged: %s", line)
		} else {
			t.Error("no log line saying XDP falls back because pin_dir is not on a bpf filesystem")
		}
		if _, ok := s.logLine("user-space filter"); !ok {
			t.Error("no log line saying the user-space filter drops blocked sources")
		}
		if tn.xdpAttached(t) {
			t.Errorf("XDP program attached to %s although the load failed", tn.sbcIf)
		}
		tn.callsComplete(t, 2)
		// Blocking goes through the user-space filter before the parser.
		tn.block(t, attackPrefix, "e2e test", "10m")
		before := tn.metrics(t)
		tn.sendOptions(t, attackIP, blockedBurst, "e2e-attacker")
		tn.waitMetric(t, "user-space filter drops", filterBlock, func(v float64) bool { return v >= before.get(filterBlock)+blockedBurst })
		after := tn.metrics(t)
		if d := after.get(filterBlock) - before.get(filterBlock); d != blockedBurst {
			t.Errorf("sbc_dropped_total{filter,blocked} rose by %v, want exactly %d", d, blockedBurst)
		}
		if d := after.get(attackSeen) - before.get(attackSeen); d != 0 {
			t.Errorf("%v OPTIONS from the blocked source reached the SBC", d)
		}
	})
}

// checkPath checks sbc_fastpath_info: 1 for path, nothing else set.
func checkPath(t *testing.T, tn *testNet, path string) {
	t.Helper()
	m := tn.metrics(t)
	for _, p := range []string{"xdp", "nftables", "userspace"} {
		want := 0.0
		if p == path {
			want = 1
		}
		if v := m.sum("sbc_fastpath_info", "path", p); v != want {
			t.Errorf("sbc_fastpath_info{path=%q} = %v, want %v", p, v, want)
		}
	}
}
