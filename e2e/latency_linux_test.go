//go:build linux

package e2e

import (
	"fmt"
	"net/http"
	"net/netip"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/cilium/ebpf"
)

// latencyRounds is how many block/unblock cycles TestBlockToXDPLatency
// measures.
const latencyRounds = 200

// pollEvery is the pause between two lookups of the pinned map while
// waiting for a change: the resolution of the measurement.
const pollEvery = 50 * time.Microsecond

// latencySample is one block/unblock cycle.
type latencySample struct {
	post    time.Duration // POST /v1/blocklist, request to answer
	visible time.Duration // POST answered -> prefix in the pinned deny map
	total   time.Duration // POST sent -> prefix in the pinned deny map
	del     time.Duration // DELETE /v1/blocklist, request to answer
	gone    time.Duration // DELETE answered -> prefix out of the map
}

// xdpBench is a running SBC with XDP and the test's handle on its pinned
// deny map.
type xdpBench struct {
	tn   *testNet
	deny *ebpf.Map
}

func newXDPBench(t testing.TB) *xdpBench {
	t.Helper()
	tn := newTestNet(t)
	pinDir := filepath.Join(mountBPFFS(t), "sbc")
	cfg := writePolicy(t, policyOpts{
		stateDir: t.TempDir(),
		xdp:      true, xdpIfaces: []string{tn.sbcIf}, xdpMode: "generic", pinDir: pinDir,
	})
	startSBC(t, tn, cfg)
	if v := tn.metrics(t).sum("sbc_fastpath_info", "path", "xdp"); v != 1 {
		t.Fatalf("sbc_fastpath_info{path=\"xdp\"} = %v, want 1", v)
	}
	deny := openDenyV4(t, pinDir)
	t.Cleanup(func() { deny.Close() })
	return &xdpBench{tn: tn, deny: deny}
}

// waitMap polls the deny map until it holds p (want) or not, for at most
// waitTimeout, and returns when it saw the change.
func (x *xdpBench) waitMap(t testing.TB, p netip.Prefix, want bool) time.Time {
	t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got, err := denied(x.deny, p)
		now := time.Now()
		if err != nil {
			t.Fatalf("lookup %s in the pinned deny map: %v", p, err)
		}
		if got == want {
			return now
		}
		if now.After(deadline) {
			t.Fatalf("pinned deny map: %s present=%v after %s, want %v", p, got, waitTimeout, want)
		}
		time.Sleep(pollEvery)
	}
}

// cycle blocks p through the admin API, waits for the pinned map to hold
// it, unblocks it and waits for it to leave the map.
func (x *xdpBench) cycle(t testing.TB, p netip.Prefix) latencySample {
	t.Helper()
	var s latencySample
	t0 := time.Now()
	x.tn.block(t, p, "latency", "10m")
	t1 := time.Now()
	t2 := x.waitMap(t, p, true)
	s.post, s.visible, s.total = t1.Sub(t0), t2.Sub(t1), t2.Sub(t0)
	t0 = time.Now()
	if code := x.tn.unblock(t, p); code != http.StatusOK {
		t.Fatalf("DELETE %s: %d", p, code)
	}
	t1 = time.Now()
	t2 = x.waitMap(t, p, false)
	s.del, s.gone = t1.Sub(t0), t2.Sub(t1)
	return s
}

// benchPrefix is the i-th test prefix: 10.99.0.0/16, never a trunk.
func benchPrefix(i int) netip.Prefix {
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 99, byte(i / 250 % 256), byte(i%250 + 1)}), 32)
}

type quantiles struct{ p50, p99, max time.Duration }

func quantilesOf(ds []time.Duration) quantiles {
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) time.Duration { return s[min(len(s)-1, int(q*float64(len(s))))] }
	return quantiles{p50: at(0.50), p99: at(0.99), max: s[len(s)-1]}
}

func (q quantiles) String() string {
	return fmt.Sprintf("median %v, p99 %v, max %v", q.p50, q.p99, q.max)
}

// TestBlockToXDPLatency measures, latencyRounds times, the delay between
// the admin API answering a block and the XDP deny map (read from its pin)
// holding the prefix, and the same for an unblock. The figures are logged
// (see BENCHMARKS.md (e2e)), not asserted: only the bounded wait can fail.
func TestBlockToXDPLatency(t *testing.T) {
	x := newXDPBench(t)
	var post, visible, total, del, gone []time.Duration
	for i := range latencyRounds {
		s := x.cycle(t, benchPrefix(i))
		post, visible, total = append(post, s.post), append(visible, s.visible), append(total, s.total)
		del, gone = append(del, s.del), append(gone, s.gone)
	}
	t.Logf("%d rounds, map polled every %v:", latencyRounds, pollEvery)
	t.Logf("  POST /v1/blocklist answered:         %v", quantilesOf(post))
	t.Logf("  answered -> in pinned XDP deny map:  %v", quantilesOf(visible))
	t.Logf("  POST sent -> in pinned XDP deny map: %v", quantilesOf(total))
	t.Logf("  DELETE /v1/blocklist answered:       %v", quantilesOf(del))
	t.Logf("  answered -> out of the deny map:     %v", quantilesOf(gone))
}

// BenchmarkBlockToXDP runs block/unblock cycles against one SBC and
// reports the block -> deny-map delay (after the POST answer) as
// visible-p50-µs and visible-p99-µs; ns/op is a whole cycle.
func BenchmarkBlockToXDP(b *testing.B) {
	x := newXDPBench(b)
	b.ReportAllocs()
	var visible []time.Duration
	i := 0
	for b.Loop() {
		s := x.cycle(b, benchPrefix(i))
		visible = append(visible, s.visible)
		i++
	}
	q := quantilesOf(visible)
	b.ReportMetric(float64(q.p50.Microseconds()), "visible-p50-µs")
	b.ReportMetric(float64(q.p99.Microseconds()), "visible-p99-µs")
}
