//go:build linux

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/testpolicy"
)

// TestNftablesBlock runs the binary with nftables (XDP off): the SBC
// auto-blocks a scanner (User-Agent friendly-scanner), the element shows in
// `nft list table inet NAME` inside the namespace, the rule's counter and
// sbc_nft_dropped_packets_total count exactly what the blocked source sends
// while the SBC sees none of it and trunk calls complete; the block
// holds while the SBC is stopped and after it starts again; the CLI lists
// and removes it.
func TestNftablesBlock(t *testing.T) {
	tn := newTestNet(t)
	requireTools(t, "nft")
	table := fmt.Sprintf("e2e%d_%d", os.Getpid()%1000000, netSeq.Load())
	const threshold = 5
	cfg := writePolicy(t, policyOpts{
		stateDir: t.TempDir(),
		// XDP off; the SBC would remove pins found at pin_dir: a path
		// of the test's own that does not exist.
		pinDir: filepath.Join(t.TempDir(), "no-pins"),
		nft:    true, nftTable: table,
		autoblock: true, threshold: threshold,
	})
	startUAS(t, tn)
	s := startSBC(t, tn, cfg)

	m := tn.metrics(t)
	if m.sum("sbc_fastpath_info", "path", "nftables") != 1 || m.sum("sbc_fastpath_info", "path", "xdp") != 0 {
		t.Fatalf("sbc_fastpath_info: nftables=%v xdp=%v, want 1 and 0",
			m.sum("sbc_fastpath_info", "path", "nftables"), m.sum("sbc_fastpath_info", "path", "xdp"))
	}
	if _, ok := s.logLine("nftables", "installed", table); !ok {
		t.Fatalf("no log line saying the nftables table %s is installed", table)
	}
	if tn.xdpAttached(t) {
		t.Fatal("XDP attached although disabled")
	}
	tn.callsComplete(t, 2)

	// Auto-block: scanner requests, one at a time (each must reach the
	// SBC, where the gate for unknown sources drops and charges it), until
	// the SBC blocks the source.
	// The block is added just after the drop is counted: wait for either,
	// so that a request the new block stops does not hang the loop.
	blockedAt := 0
	for i := 1; i <= threshold+3 && blockedAt == 0; i++ {
		tn.sendOptions(t, attackIP, 1, "friendly-scanner")
		waitCond(t, fmt.Sprintf("scanner request %d counted or source blocked", i), func() (bool, string) {
			v := tn.metrics(t).get(attackSeen)
			if _, ok := findEntry(tn.blocklist(t), attackPrefix); ok {
				blockedAt = i
				return true, ""
			}
			return v >= float64(i), fmt.Sprintf("sbc_dropped_total{filter,unknown_source} = %v", v)
		})
	}
	if blockedAt == 0 {
		// The last failure may still be on its way to the blocklist.
		waitCond(t, "scanner auto-blocked", func() (bool, string) {
			l := tn.blocklist(t)
			_, ok := findEntry(l, attackPrefix)
			return ok, fmt.Sprintf("%d scanner requests, threshold %d, blocklist %+v", threshold+3, threshold, l)
		})
	}
	t.Logf("scanner blocked after %d requests (threshold %d; 0: after the last)", blockedAt, threshold)
	e, _ := findEntry(tn.blocklist(t), attackPrefix)
	t.Logf("auto-block entry: %+v", e)
	if e.Origin != "auto" {
		t.Errorf("auto-block entry origin %q, want \"auto\"", e.Origin)
	}
	if v := tn.metrics(t).sum("sbc_blocks_total", "origin", "auto"); v != 1 {
		t.Errorf("sbc_blocks_total{origin=\"auto\"} = %v, want 1", v)
	}
	waitNftElement(t, tn, table, attackIP, true)

	// The CLI sees the same list.
	if out, err := sbcCLI(t, tn, "block", "list", "-admin", adminAddr); err != nil || !strings.Contains(out, attackIP) {
		t.Errorf("sbc block list: %v\n%s", err, out)
	}

	round := func(what string) {
		t.Helper()
		before := tn.metrics(t)
		callErr := make(chan error, 1)
		dir := t.TempDir()
		go func() { callErr <- runUAC(tn, 3, dir) }()
		tn.sendOptions(t, attackIP, blockedBurst, "e2e-attacker")
		want := before.get(nftDropped) + blockedBurst
		tn.waitMetric(t, what+": nftables drops", nftDropped, func(v float64) bool { return v >= want })
		if err := <-callErr; err != nil {
			t.Fatalf("%s: trunk calls: %v", what, err)
		}
		tn.waitMetric(t, what+": trunk calls answered", answered, func(v float64) bool { return v >= before.get(answered)+3 })
		after := tn.metrics(t)
		if d := after.get(nftDropped) - before.get(nftDropped); d != blockedBurst {
			t.Errorf("%s: sbc_nft_dropped_packets_total rose by %v, want exactly %d", what, d, blockedBurst)
		}
		if d := after.get(attackSeen) - before.get(attackSeen); d != 0 {
			t.Errorf("%s: %v OPTIONS from the blocked source reached the SBC", what, d)
		}
		if d := after.get(filterBlock) - before.get(filterBlock); d != 0 {
			t.Errorf("%s: %v datagrams reached the user-space filter", what, d)
		}
		t.Logf("%s: sent %d; nft drops +%v, OPTIONS received +%v, user-space filter drops +%v, calls answered +%v",
			what, blockedBurst, after.get(nftDropped)-before.get(nftDropped), after.get(attackSeen)-before.get(attackSeen),
			after.get(filterBlock)-before.get(filterBlock), after.get(answered)-before.get(answered))
	}
	round("blocked")

	// Restart: the table stays while the SBC is down.
	s.stop(t)
	downBefore := nftCounter(t, tn, table)
	tn.sendOptions(t, attackIP, blockedBurst, "e2e-attacker")
	var downAfter uint64
	waitCond(t, "nftables counter while the SBC is down", func() (bool, string) {
		downAfter = nftCounter(t, tn, table)
		return downAfter >= downBefore+blockedBurst, fmt.Sprintf("%d -> %d", downBefore, downAfter)
	})
	if downAfter != downBefore+blockedBurst {
		t.Errorf("while down: nftables counter rose by %d, want exactly %d", downAfter-downBefore, blockedBurst)
	}

	startSBC(t, tn, cfg)
	if _, ok := findEntry(tn.blocklist(t), attackPrefix); !ok {
		t.Fatalf("blocklist after restart: %s missing", attackPrefix)
	}
	waitNftElement(t, tn, table, attackIP, true)
	if v := tn.metrics(t).get(nftDropped); v != float64(downAfter) {
		t.Errorf("after restart sbc_nft_dropped_packets_total = %v, the table's counter was %d", v, downAfter)
	}
	round("blocked after restart")

	// Unblock with the CLI: the source reaches the SBC again.
	if out, err := sbcCLI(t, tn, "block", "del", "-admin", adminAddr, attackPrefix.String()); err != nil {
		t.Fatalf("sbc block del: %v\n%s", err, out)
	}
	waitNftElement(t, tn, table, attackIP, false)
	before := tn.metrics(t)
	tn.sendOptions(t, attackIP, 1, "e2e-attacker")
	tn.waitMetric(t, "OPTIONS reaching the SBC after the unblock", attackSeen,
		func(v float64) bool { return v >= before.get(attackSeen)+1 })
	if d := tn.metrics(t).get(nftDropped) - before.get(nftDropped); d != 0 {
		t.Errorf("after unblock: nftables still dropped %v", d)
	}
}

// sbcCLI runs the binary's client verbs in the sbc namespace (the admin
// API is on its loopback).
func sbcCLI(t testing.TB, tn *testNet, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cmd := nsCommand(ctx, tn.sbcNS, append([]string{sbcBinary(t)}, args...)...)
	cmd.Env = append(os.Environ(), "SBC_API_KEY="+testpolicy.AdminKey) // the test policy's key (role admin)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// nftList is `nft list table inet NAME` inside the sbc namespace.
func nftList(t testing.TB, tn *testNet, table string) string {
	t.Helper()
	out, err := nsOutput(t, tn.sbcNS, "nft", "list", "table", "inet", table)
	if err != nil {
		t.Fatalf("nft list table inet %s: %v\n%s", table, err, out)
	}
	return out
}

var elemRE = regexp.MustCompile(`(?s)set blocked4 \{.*?\n\s*\}`)

func waitNftElement(t testing.TB, tn *testNet, table, addr string, want bool) {
	t.Helper()
	waitCond(t, fmt.Sprintf("nft set blocked4 of inet %s holds %s = %v", table, addr, want), func() (bool, string) {
		set := elemRE.FindString(nftList(t, tn, table))
		has := regexp.MustCompile(`\b` + regexp.QuoteMeta(addr) + `\b`).MatchString(set)
		return has == want, set
	})
}

var counterRE = regexp.MustCompile(`packets (\d+) bytes`)

// nftCounter reads the table's "blocked" counter with the nft command.
func nftCounter(t testing.TB, tn *testNet, table string) uint64 {
	t.Helper()
	out, err := nsOutput(t, tn.sbcNS, "nft", "list", "counter", "inet", table, "blocked")
	if err != nil {
		t.Fatalf("nft list counter inet %s blocked: %v\n%s", table, err, out)
	}
	mm := counterRE.FindStringSubmatch(out)
	if mm == nil {
		t.Fatalf("nft counter: no packets in\n%s", out)
	}
	n, err := strconv.ParseUint(mm[1], 10, 64)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
