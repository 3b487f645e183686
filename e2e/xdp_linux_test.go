//go:build linux

package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"
)

// blockedBurst is how many datagrams the attacker sends per round. The
// counters compared are exact: nothing else comes from the attacker's
// address (static neighbours, no answers are sent to it).
const blockedBurst = 200

// TestXDPBlock runs the binary with XDP (generic mode) on the veth facing
// the peers, blocks the attacker through the admin API and checks, with
// exact counts, that the XDP program drops what it sends while trunk calls
// complete; that the block holds while the SBC is stopped (pinned maps and
// link) and after it starts again (state_dir); and that an unblock lets the
// attacker's traffic reach the SBC again.
func TestXDPBlock(t *testing.T) {
	tn := newTestNet(t)
	pinDir := filepath.Join(mountBPFFS(t), "sbc")
	cfg := writePolicy(t, policyOpts{
		stateDir: t.TempDir(),
		xdp:      true, xdpIfaces: []string{tn.sbcIf}, xdpMode: "generic", pinDir: pinDir,
		// Auto-block off: the attacker's traffic after the unblock
		// (unknown source) must not block it again.
		autoblock: false,
	})
	startUAS(t, tn)
	s := startSBC(t, tn, cfg)

	m := tn.metrics(t)
	if m.sum("sbc_fastpath_info", "path", "xdp") != 1 {
		t.Fatalf("sbc_fastpath_info{path=\"xdp\"} != 1:\n%v", m.sum("sbc_fastpath_info"))
	}
	if _, ok := s.logLine("xdp", "attached", tn.sbcIf); !ok {
		t.Fatalf("no log line saying XDP is attached to %s", tn.sbcIf)
	}
	if !tn.xdpAttached(t) {
		t.Fatalf("no XDP program on %s", tn.sbcIf)
	}
	tn.callsComplete(t, 2)

	// Block the attacker; the mirror puts it into the pinned deny map.
	tn.block(t, attackPrefix, "e2e test", "10m")
	if e, ok := findEntry(tn.blocklist(t), attackPrefix); !ok || e.Origin == "" || e.Expires.IsZero() {
		t.Fatalf("blocklist entry of %s: %+v (found %v), want an origin and an expiry", attackPrefix, e, ok)
	}
	waitDenied(t, pinDir, attackPrefix, true)

	// Blocked traffic while trunk calls go on.
	round := func(what string) {
		t.Helper()
		before := tn.metrics(t)
		callErr := make(chan error, 1)
		dir := t.TempDir()
		go func() { callErr <- runUAC(tn, 3, dir) }()
		tn.sendOptions(t, attackIP, blockedBurst, "e2e-attacker")
		want := before.get(xdpDeny) + blockedBurst
		got := tn.waitMetric(t, what+": XDP drops", xdpDeny, func(v float64) bool { return v >= want })
		if err := <-callErr; err != nil {
			t.Fatalf("%s: trunk calls: %v", what, err)
		}
		tn.waitMetric(t, what+": trunk calls answered", answered, func(v float64) bool { return v >= before.get(answered)+3 })
		after := tn.metrics(t)
		if d := after.get(xdpDeny) - before.get(xdpDeny); d != blockedBurst || got != want {
			t.Errorf("%s: XDP drop_deny rose by %v, want exactly %d", what, d, blockedBurst)
		}
		if d := after.get(attackSeen) - before.get(attackSeen); d != 0 {
			t.Errorf("%s: %v OPTIONS from the blocked source reached the SBC", what, d)
		}
		if d := after.get(filterBlock) - before.get(filterBlock); d != 0 {
			t.Errorf("%s: %v datagrams reached the user-space filter", what, d)
		}
		t.Logf("%s: sent %d; XDP drop_deny +%v, OPTIONS received +%v, user-space filter drops +%v, calls answered +%v",
			what, blockedBurst, after.get(xdpDeny)-before.get(xdpDeny), after.get(attackSeen)-before.get(attackSeen),
			after.get(filterBlock)-before.get(filterBlock), after.get(answered)-before.get(answered))
	}
	round("blocked")

	// Restart. While the SBC is down, the pinned program keeps dropping.
	s.stop(t)
	if !tn.xdpAttached(t) {
		t.Fatal("XDP program detached when the SBC stopped")
	}
	downBefore := pinnedDenyDrops(t, pinDir)
	tn.sendOptions(t, attackIP, blockedBurst, "e2e-attacker")
	var downAfter uint64
	waitCond(t, "pinned drop counter while the SBC is down", func() (bool, string) {
		downAfter = pinnedDenyDrops(t, pinDir)
		return downAfter >= downBefore+blockedBurst, fmt.Sprintf("%d -> %d", downBefore, downAfter)
	})
	if downAfter != downBefore+blockedBurst {
		t.Errorf("while down: pinned drop counter rose by %d, want exactly %d", downAfter-downBefore, blockedBurst)
	}

	s = startSBC(t, tn, cfg)
	if _, ok := s.logLine("blocklist loaded", `"entries":1`); !ok {
		t.Error("no log line \"blocklist loaded\" with 1 entry after the restart")
	}
	if e, ok := findEntry(tn.blocklist(t), attackPrefix); !ok {
		t.Fatalf("blocklist after restart: %s missing", attackPrefix)
	} else {
		t.Logf("after restart: %+v", e)
	}
	if _, ok := s.logLine("xdp", "attached", tn.sbcIf); !ok {
		t.Fatal("no log line \"xdp fast path attached\" after restart")
	}
	// The counters are pinned: the metric continues from before.
	if v := tn.metrics(t).get(xdpDeny); v < float64(downAfter) {
		t.Errorf("after restart sbc_xdp_packets_total{drop_deny} = %v, pinned counter was %d", v, downAfter)
	}
	waitDenied(t, pinDir, attackPrefix, true)
	round("blocked after restart")

	// Unblock: the attacker's OPTIONS reach the SBC again.
	if code := tn.unblock(t, attackPrefix); code != http.StatusOK {
		t.Fatalf("DELETE /v1/blocklist: %d, want 200", code)
	}
	if code := tn.unblock(t, attackPrefix); code != http.StatusNotFound {
		t.Errorf("second DELETE /v1/blocklist: %d, want 404", code)
	}
	waitDenied(t, pinDir, attackPrefix, false)
	before := tn.metrics(t)
	tn.sendOptions(t, attackIP, blockedBurst, "e2e-attacker")
	tn.waitMetric(t, "OPTIONS reaching the SBC after the unblock", attackSeen,
		func(v float64) bool { return v >= before.get(attackSeen)+blockedBurst })
	after := tn.metrics(t)
	if d := after.get(attackSeen) - before.get(attackSeen); d != blockedBurst {
		t.Errorf("after unblock: %v OPTIONS reached the SBC, want %d", d, blockedBurst)
	}
	if d := after.get(xdpDeny) - before.get(xdpDeny); d != 0 {
		t.Errorf("after unblock: XDP still dropped %v", d)
	}
}
