//go:build linux

package sbc

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sbc-project/sbc/bench/attack"
	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// Bounded memory under a spoofed-source flood across a /48, on UDP and
// TCP (issue 12). The SBC, its backend and the trunk run in a network
// namespace the test makes (root); the floods come from two /48s the
// namespace holds as local (AnyIP routes), so that every answer to a
// spoofed source stays in it. UDP: one datagram per source, the sources
// spread over the /64s of 2001:db8:66::/48 (per-source state is kept per
// /64). TCP: connections from the /64s of 2001:db8:77::/48, held open.
// Each phase runs with the gate closed (drop mode, the default) and open
// (reject mode: every spoofed datagram is parsed, answered 403 and
// charged; every connection is accepted up to the caps), while the trunk
// places calls. After each phase the per-source tables are measured
// against their bounds, with the heap in use (after a GC) and the
// process's RSS; "unbounded" runs reject mode with limits.udp_peers out of
// reach, which is what sipgo did before: one entry per source.
//
// SBC_FLOOD_UDP and SBC_FLOOD_TCP scale the floods (datagrams,
// connections; defaults 30000 and 3000). BENCHMARKS.md has the figures.
func TestSpoofedFloodAcrossSlash48BoundedMemory(t *testing.T) {
	ns := netnstest.New(t, "sbcflood")
	nUDP, nTCP := envInt("SBC_FLOOD_UDP", 30000), envInt("SBC_FLOOD_TCP", 3000)
	// The rates of the UDP floods: with the gate closed, with it open.
	fast, slow := 50000.0, 10000.0
	if raceEnabled {
		nUDP, nTCP, fast, slow = min(nUDP, 6000), min(nTCP, 600), 5000, 1000
	}
	const (
		udpPfx = "2001:db8:66::/48"
		tcpPfx = "2001:db8:77::/48"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s, caller, pb := nsSBC(t, ns, ctx, []string{udpPfx, tcpPfx}, func(pb *testpolicy.Policy) {
		pb.Limits = &testpolicy.Limits{SourceCPS: new(1000), UDPPeers: envInt("SBC_FLOOD_UDP_PEERS", 2048)}
	})
	udpAddr, _ := s.ListenAddr("external", "udp")
	tcpAddr, _ := s.ListenAddr("external", "tcp")
	dropped := func(st, r string) float64 { return testutilValue(s.metrics.Dropped.WithLabelValues(st, r)) }
	eventually := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				t.Fatalf("timed out waiting for %s", what)
			case <-time.After(5 * time.Millisecond):
			}
		}
	}
	// calls places trunk calls until stop is closed.
	calls := func(stop <-chan struct{}) (ok, failed *atomic.Int32, done chan struct{}) {
		ok, failed, done = new(atomic.Int32), new(atomic.Int32), make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; i < 200; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if placeCall(ctx, caller, udpAddr.String()) {
					ok.Add(1)
				} else {
					failed.Add(1)
				}
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond): // a call every so often, not a call flood
				}
			}
		}()
		return ok, failed, done
	}
	limits := func() (udpPeers, conns, maxSources int) {
		l := s.state.Load().pol.Limits
		return l.UDPPeers, l.TCPConnections, l.MaxSources
	}
	pool := s.realms["external"].ua.TransportLayer().Pool("udp")
	type row struct {
		phase                         string
		sent                          int
		udpPeak, connsPeak            int // sampled during the phase
		udp, tracker, limiter, blocks int // at its end
		heapMB, rssMB, hwmMB          float64
		callsOK, callsFailed          int32
	}
	var rows []row
	// phase runs flood while the trunk places calls and the UDP peer
	// table and the open connections are sampled, then measures.
	phase := func(name string, flood func() int) row {
		t.Helper()
		stop := make(chan struct{})
		ok, failed, done := calls(stop)
		var udpPeak, connsPeak atomic.Int64
		sampled := make(chan struct{})
		go func() {
			defer close(sampled)
			for {
				c, _ := s.conns.len()
				connsPeak.Store(max(connsPeak.Load(), int64(c)))
				udpPeak.Store(max(udpPeak.Load(), int64(pool.Size())))
				select {
				case <-stop:
					return
				case <-time.After(time.Millisecond):
				}
			}
		}()
		sent := flood()
		close(stop)
		<-done
		<-sampled
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		r := row{phase: name, sent: sent, udpPeak: int(udpPeak.Load()), connsPeak: int(connsPeak.Load()),
			udp: pool.Size(), tracker: s.def.tracker.Stats().Len, limiter: s.def.pps.Stats().Len, blocks: s.def.blocklist.Len(),
			heapMB: float64(m.HeapAlloc) / (1 << 20), rssMB: procStatusMB("VmRSS"), hwmMB: procStatusMB("VmHWM"),
			callsOK: ok.Load(), callsFailed: failed.Load()}
		rows = append(rows, r)
		up, conns, maxSrc := limits()
		if bound := udpPeersHard*up + 2*udpCheckEvery + 8; r.udpPeak > bound {
			t.Errorf("%s: %d UDP peer entries, bound %d", name, r.udpPeak, bound)
		}
		if r.connsPeak > conns {
			t.Errorf("%s: %d connections, cap %d", name, r.connsPeak, conns)
		}
		if r.tracker > maxSrc || r.limiter > maxSrc {
			t.Errorf("%s: tracker %d, limiter %d entries, max_sources %d", name, r.tracker, r.limiter, maxSrc)
		}
		return r
	}
	reload := func(edit func(*testpolicy.Policy)) {
		t.Helper()
		c := pb.Clone()
		edit(c)
		if err := s.Reload(c.Parse(t)); err != nil {
			t.Fatal(err)
		}
		pb = c
	}
	udpFlood := func(n int, rate float64, sources string, payload []byte) func() int {
		return func() int {
			before, lost := dropped("filter", "unknown_source"), udpRcvbufErrors(t, ns)
			rep, err := attack.SpoofedFlood(ctx, attack.SpoofedFloodConfig{
				Target: udpAddr, Sources: netip.MustParsePrefix(sources), Mode: attack.SpoofPktinfo,
				Count: n, Rate: rate, Duration: 5 * time.Minute, NetNS: ns, Payload: payload,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Errors > 0 {
				t.Fatalf("%d send errors: %v", rep.Errors, rep.FirstError)
			}
			if pb.Headers == nil || pb.Headers.UnknownSourceAction != "reject" {
				// Every datagram is dropped at the gate, or by the kernel
				// when the socket's buffer is full (counted there).
				eventually("the flood dropped at the gate", func() bool {
					return dropped("filter", "unknown_source")-before+float64(udpRcvbufErrors(t, ns)-lost) >= float64(rep.Sent)
				})
			}
			return rep.Sent
		}
	}
	tcpFlood := func(n int) func() int {
		return func() int {
			rep, err := attack.ConnFlood(ctx, attack.ConnFloodConfig{
				Target: tcpAddr, Sources: netip.MustParsePrefix(tcpPfx), Count: n, Rate: 2000,
				Payload: []byte("OPTIONS sip:100@[fd00::3] SIP/2.0\r\n"), Hold: 3 * time.Second, Duration: 5 * time.Minute, NetNS: ns,
			})
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%d connections opened, %d closed by the SBC first, %d held, %d refused", rep.Opened, rep.ClosedByPeer, rep.Held, rep.Errors)
			return rep.Opened + rep.Errors
		}
	}
	callsOK := func(r row) {
		t.Helper()
		if r.callsFailed != 0 || r.callsOK == 0 {
			t.Errorf("%s: trunk calls ok=%d failed=%d", r.phase, r.callsOK, r.callsFailed)
		}
	}

	phase("start", func() int { return 0 })
	callsOK(phase("udp, drop mode", udpFlood(nUDP, fast, udpPfx, nil)))
	if n := dropped("classify", "unknown_source") + dropped("parse", "malformed"); n != 0 {
		t.Errorf("%v spoofed datagrams reached the parser in drop mode", n)
	}
	callsOK(phase("tcp, drop mode", tcpFlood(nTCP)))

	// What the UDP peer entries cost alone: CRLF keep-alives (sipgo
	// records the source, then drops them: no transaction, no answer)
	// from the addresses of one /64 (one entry of the per-source tables),
	// with the gate open and the packet budget off; with the bound, then
	// without it.
	reload(func(p *testpolicy.Policy) {
		p.Headers = &testpolicy.Headers{UnknownSourceAction: "reject"}
		p.Limits.SourcePPS = new(0)
	})
	ka := []byte("\r\n\r\n")
	const oneSlash64 = "2001:db8:66:ffff::/64"
	callsOK(phase("keep-alives from a /64, reject mode", udpFlood(nUDP, fast, oneSlash64, ka)))
	eventually("the table back under its limit", func() bool { up, _, _ := limits(); return pool.Size() <= up })
	reload(func(p *testpolicy.Policy) { p.Limits.UDPPeers = 10000000 })
	before := phase("(settled)", func() int { return 0 })
	r := phase("keep-alives from a /64, udp_peers out of reach (as before)", udpFlood(nUDP, fast, oneSlash64, ka))
	if r.udp > before.udp {
		t.Logf("without the bound: %d entries, %.0f bytes of heap each", r.udp-before.udp,
			(r.heapMB-before.heapMB)*(1<<20)/float64(r.udp-before.udp))
	}

	// OPTIONS from the /48 (parsed, answered 403, charged) and
	// connections, with the gate open.
	reload(func(p *testpolicy.Policy) {
		p.Limits.SourcePPS = nil
		p.Limits.UDPPeers = envInt("SBC_FLOOD_UDP_PEERS", 2048)
	})
	eventually("the table back under its limit", func() bool { up, _, _ := limits(); return pool.Size() <= up })
	phase("udp, reject mode", udpFlood(nUDP, slow, udpPfx, nil))
	callsOK(phase("tcp, reject mode", tcpFlood(nTCP)))

	var b strings.Builder
	fmt.Fprintf(&b, "\n| phase | sent | UDP peer entries, peak (end) | connections, peak | tracker | limiter | blocklist | heap MB | RSS MB (peak) | trunk calls ok/failed |\n|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s | %d | %d (%d) | %d | %d | %d | %d | %.1f | %.0f (%.0f) | %d/%d |\n",
			r.phase, r.sent, r.udpPeak, r.udp, r.connsPeak, r.tracker, r.limiter, r.blocks, r.heapMB, r.rssMB, r.hwmMB, r.callsOK, r.callsFailed)
	}
	t.Log(b.String())
}

// placeCall places one call from caller to addr, hangs it up, and
// reports whether it was answered 200.
func placeCall(ctx context.Context, caller *sipua.Caller, addr string) bool {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	call, err := caller.Dial(ctx, addr, sipua.DialOptions{SDP: sipua.SDP("2001:db8::10", 40000, 1, "sendrecv")})
	if err != nil {
		return false
	}
	res, err := call.WaitFinal(ctx)
	if err != nil || res.StatusCode != 200 {
		return false
	}
	call.Bye(ctx)
	return true
}

// nsTrunk is the trunk's address in the namespaces of nsSBC.
const nsTrunk = "fd00::1"

// nsSBC starts, in namespace ns, an SBC on fd00::3 (external) and fd00::4
// (internal), a backend on fd00::2 and the trunk's caller on nsTrunk, and
// makes the prefixes local to the namespace (AnyIP routes: floods from
// them, and answers to them, stay in it). edit changes the policy.
func nsSBC(t *testing.T, ns string, ctx context.Context, local []string, edit func(*testpolicy.Policy)) (*SBC, *sipua.Caller, *testpolicy.Policy) {
	t.Helper()
	ipns := func(args ...string) {
		t.Helper()
		if _, err := netns.IP(append([]string{"-n", ns}, args...)...); err != nil {
			t.Fatal(err)
		}
	}
	for _, a := range []string{nsTrunk, "fd00::2", "fd00::3", "fd00::4"} {
		ipns("addr", "add", a+"/128", "dev", "lo", "nodad")
	}
	for _, p := range local {
		ipns("route", "add", "local", p, "dev", "lo")
	}
	var (
		s      *SBC
		caller *sipua.Caller
		pb     *testpolicy.Policy
	)
	err := netns.Do(ns, func() error {
		b, err := sipua.NewBackend(sipua.BackendOptions{UDP: "[fd00::2]:0", Logger: testLogger()})
		if err != nil {
			return err
		}
		t.Cleanup(func() { b.Close() })
		pb = testpolicy.New("fd00::3", "fd00::4", b.Addr())
		pb.Trunk("carrier").Sources = []string{nsTrunk + "/128"}
		// No media relay: its sockets are opened per call, from
		// whatever thread, so in the host's namespace, where fd00:: is
		// not. Signalling is what these tests measure.
		pb.Media = &testpolicy.Media{Anchor: new(false)}
		if edit != nil {
			edit(pb)
		}
		s, err = New(pb.Parse(t), Options{Logger: testLogger()})
		if err != nil {
			return err
		}
		if err := s.Start(ctx); err != nil {
			return err
		}
		t.Cleanup(func() { s.Close() })
		caller, err = sipua.NewCaller(sipua.CallerOptions{Addr: "[" + nsTrunk + "]:0", Logger: testLogger()})
		if err != nil {
			return err
		}
		t.Cleanup(func() { caller.Close() })
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, caller, pb
}

// The per-source connection cap counts an IPv6 /64 as one source, over
// real connections: 40 from 40 addresses of one /64 (gate open: reject
// mode) get tcp_connections_per_source (16) and no more; 40 from 40
// other /64s all get theirs. The trunk calls meanwhile.
func TestConnectionsPerSlash64CappedOverTCP(t *testing.T) {
	ns := netnstest.New(t, "sbcconns")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, caller, _ := nsSBC(t, ns, ctx, []string{"2001:db8:88::/48"}, func(p *testpolicy.Policy) {
		p.Headers = &testpolicy.Headers{UnknownSourceAction: "reject"}
	})
	tcpAddr, _ := s.ListenAddr("external", "tcp")
	udpAddr, _ := s.ListenAddr("external", "udp")
	flood := func(sources string) attack.ConnReport {
		t.Helper()
		rep, err := attack.ConnFlood(ctx, attack.ConnFloodConfig{Target: tcpAddr, Sources: netip.MustParsePrefix(sources),
			Count: 40, Hold: 500 * time.Millisecond, NetNS: ns})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	one := flood("2001:db8:88:1::/64")
	if one.Held != 16 || one.ClosedByPeer != 24 {
		t.Errorf("40 connections from one /64: %d held, %d closed at accept; want 16 and 24", one.Held, one.ClosedByPeer)
	}
	many := flood("2001:db8:88::/48") // spread: one /64 each
	if many.Held != 40 {
		t.Errorf("40 connections from 40 /64s: %d held, %d closed", many.Held, many.ClosedByPeer)
	}
	if n := testutilValue(s.metrics.Dropped.WithLabelValues("accept", "source_connections")); n != 24 {
		t.Errorf("accept/source_connections = %v, want 24", n)
	}
	if !placeCall(ctx, caller, udpAddr.String()) {
		t.Error("trunk call failed")
	}
}

// udpRcvbufErrors is the namespace's count of UDP datagrams the kernel
// dropped for a full socket buffer (IPv6).
func udpRcvbufErrors(t *testing.T, ns string) uint64 {
	t.Helper()
	var n uint64
	err := netns.Do(ns, func() error {
		b, err := os.ReadFile("/proc/thread-self/net/snmp6")
		if err != nil {
			return err
		}
		for _, l := range strings.Split(string(b), "\n") {
			if f := strings.Fields(l); len(f) == 2 && f[0] == "Udp6RcvbufErrors" {
				n, _ = strconv.ParseUint(f[1], 10, 64)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// procStatusMB reads a kB field of /proc/self/status, in MiB.
func procStatusMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && k == field {
			kb, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
			return float64(kb) / 1024
		}
	}
	return 0
}
