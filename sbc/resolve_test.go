package sbc

import (
	"context"
	"crypto/tls"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// testDNS is an authoritative DNS server on 127.0.0.1 (UDP, a port of
// its own) for the names the test gives it: A records with a TTL of 1 s,
// no AAAA; SERVFAIL for everything while failing is set.
type testDNS struct {
	addr    string
	srv     *dns.Server
	mu      sync.Mutex
	a       map[string][]string // fqdn -> IPv4 addresses
	failing atomic.Bool
	queries atomic.Int64
}

func newTestDNS(t *testing.T) *testDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	d := &testDNS{addr: pc.LocalAddr().String(), a: map[string][]string{}}
	started := make(chan struct{})
	d.srv = &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(d.serve), NotifyStartedFunc: func() { close(started) }}
	go func() { _ = d.srv.ActivateAndServe() }()
	<-started
	t.Cleanup(func() { _ = d.srv.Shutdown() })
	return d
}

func (d *testDNS) set(name string, addrs ...string) {
	d.mu.Lock()
	d.a[dns.Fqdn(name)] = addrs
	d.mu.Unlock()
}

func (d *testDNS) serve(w dns.ResponseWriter, q *dns.Msg) {
	d.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(q)
	m.Authoritative = true
	if d.failing.Load() {
		m.Rcode = dns.RcodeServerFailure
		_ = w.WriteMsg(m)
		return
	}
	d.mu.Lock()
	addrs, known := d.a[q.Question[0].Name]
	d.mu.Unlock()
	switch {
	case !known:
		m.Rcode = dns.RcodeNameError
	case q.Question[0].Qtype == dns.TypeA:
		for _, a := range addrs {
			m.Answer = append(m.Answer, &dns.A{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: 1},
				A: net.ParseIP(a)})
		}
	}
	_ = w.WriteMsg(m)
}

// TestHostNameTargetFollowsDNS: a carrier pool's target is a host name
// resolved through the test's DNS server; a call reaches the address it
// resolves to, and the address is a pool target for the defence (never
// blocked, recognised as a backend source). The name then moves to
// another address: the next call goes there, and the defence follows
// (the old address is no longer protected nor a backend). When the
// server fails, the last good address stays.
func TestHostNameTargetFollowsDNS(t *testing.T) {
	const ip1, ip2 = carrierAIP, "127.0.0.8"
	srv := newTestDNS(t)
	// A second carrier on the same port at the other address (a few
	// tries: the port may be taken there).
	var first, second *sipua.Backend
	var port uint16
	for try := 0; second == nil; try++ {
		var err error
		if first, err = sipua.NewBackend(sipua.BackendOptions{UDP: ip1 + ":0", Logger: testLogger()}); err != nil {
			t.Fatal(err)
		}
		port = netip.MustParseAddrPort(first.Addr()).Port()
		second, err = sipua.NewBackend(sipua.BackendOptions{UDP: netip.AddrPortFrom(netip.MustParseAddr(ip2), port).String(), Logger: testLogger()})
		if err != nil {
			first.Close()
			if try == 5 {
				t.Fatalf("no port free on both %s and %s: %v", ip1, ip2, err)
			}
		}
	}
	t.Cleanup(func() { first.Close(); second.Close() })
	srv.set("sip.carrier.test", ip1)
	name := "sip.carrier.test:" + strconv.Itoa(int(port))

	e := newOutboundEnv(t, nil, nil, func(p *testpolicy.Policy) {
		for i := range p.Pools {
			if p.Pools[i].Name == "carrier-a" {
				p.Pools[i].Targets = testpolicy.Targets(name)
				p.Pools[i].Auth = nil
			}
		}
		p.Extra += "[dns]\nservers = [\"" + srv.addr + "\"]\nmin_ttl = \"1s\"\nmax_ttl = \"1s\"\nstale_for = \"1h\"\n"
	})
	s := e.sbc
	targetOf := func() []netip.AddrPort {
		var out []netip.AddrPort
		for _, tg := range s.Policy().Pool("carrier-a").Targets {
			out = append(out, tg.Addr)
		}
		return out
	}
	if got := targetOf(); !slices.Equal(got, []netip.AddrPort{netip.AddrPortFrom(netip.MustParseAddr(ip1), port)}) {
		t.Fatalf("carrier-a targets %v, want %s:%d", got, ip1, port)
	}
	ext := s.realms["external"]
	protected := func(ip string) bool {
		_, ok := s.def.blocklist.NeverBlocked(netip.MustParsePrefix(ip + "/32"))
		return ok
	}
	backend := func(ip string) bool {
		return s.classify(s.state.Load(), ext, netip.AddrPortFrom(netip.MustParseAddr(ip), port), "udp").backend
	}
	if !protected(ip1) || !backend(ip1) || protected(ip2) || backend(ip2) {
		t.Fatalf("defence: %s protected %v backend %v; %s protected %v backend %v", ip1, protected(ip1), backend(ip1), ip2, protected(ip2), backend(ip2))
	}

	placeCall := func(to *sipua.Backend) {
		t.Helper()
		n := len(to.Calls())
		c, res := e.call(t, "+442079460000")
		if res.StatusCode != 200 {
			t.Fatalf("call: %d, want 200", res.StatusCode)
		}
		if len(to.Calls()) != n+1 {
			t.Fatalf("the call did not reach %s", to.Addr())
		}
		if err := c.Bye(e.ctx); err != nil {
			t.Fatal(err)
		}
	}
	placeCall(first)

	srv.set("sip.carrier.test", ip2)
	waitUntil(e.ctx, t, "carrier-a follows the name to "+ip2, func() bool {
		got := targetOf()
		return len(got) == 1 && got[0].Addr().String() == ip2
	})
	placeCall(second)
	if len(first.Calls()) != 1 {
		t.Fatalf("the old address got %d calls, want 1", len(first.Calls()))
	}
	if !protected(ip2) || !backend(ip2) || protected(ip1) || backend(ip1) {
		t.Fatalf("defence after the move: %s protected %v backend %v; %s protected %v backend %v", ip2, protected(ip2), backend(ip2), ip1, protected(ip1), backend(ip1))
	}

	// The server fails: the name keeps its last good address (stale_for).
	failed := testutil.ToFloat64(s.metrics.DNSResolutions.WithLabelValues(dnsFailed))
	srv.failing.Store(true)
	waitUntil(e.ctx, t, "two failed resolutions", func() bool {
		return testutil.ToFloat64(s.metrics.DNSResolutions.WithLabelValues(dnsFailed)) >= failed+2
	})
	if got := targetOf(); len(got) != 1 || got[0].Addr().String() != ip2 {
		t.Fatalf("targets %v after failures, want the last good %s", got, ip2)
	}
	placeCall(second)
}

// TestResolverCache: TTLs are clamped to [min_ttl, max_ttl]; a name that
// stops resolving keeps its addresses for stale_for, then loses them
// (times injected, no sleeping).
func TestResolverCache(t *testing.T) {
	srv := newTestDNS(t)
	srv.set("a.test", "192.0.2.1", "192.0.2.2")
	r := newResolver(testLogger(), newMetrics())
	cfg := policy.DNS{ServerAddrs: []netip.AddrPort{netip.MustParseAddrPort(srv.addr)},
		MinTTL: policy.D(30 * time.Second), MaxTTL: policy.D(time.Hour), StaleFor: policy.D(10 * time.Minute), Timeout: policy.D(2 * time.Second)}
	ctx := context.Background()
	r.add(ctx, cfg, []string{"a.test", "missing.test"})
	r.commit(cfg, []string{"a.test", "missing.test"})
	if got := addrStrings(r.addrs("a.test")); !slices.Equal(got, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Fatalf("a.test: %v", got)
	}
	if got := r.addrs("missing.test"); got != nil {
		t.Fatalf("missing.test (NXDOMAIN): %v", got)
	}
	t0 := time.Now()
	r.mu.Lock()
	next := r.names["a.test"].next
	r.mu.Unlock()
	if d := next.Sub(t0); d < 25*time.Second || d > 31*time.Second {
		t.Fatalf("a TTL of 1s re-resolves in %s, want min_ttl 30s", d)
	}
	if hosts, _ := r.due(t0.Add(31 * time.Second)); !slices.Contains(hosts, "a.test") {
		t.Fatalf("due after the TTL: %v", hosts)
	}
	// The same addresses in another order (a server rotating its
	// answers): no change, the order in service stays.
	srv.set("a.test", "192.0.2.2", "192.0.2.1")
	if r.refresh(ctx, "a.test", t0.Add(31*time.Second)) || !slices.Equal(addrStrings(r.addrs("a.test")), []string{"192.0.2.1", "192.0.2.2"}) {
		t.Fatalf("a rotated answer is a change: %v", r.addrs("a.test"))
	}
	// Fails from t0: kept until stale_for, then gone (a change).
	srv.failing.Store(true)
	if r.refresh(ctx, "a.test", t0.Add(time.Minute)) || len(r.addrs("a.test")) != 2 {
		t.Fatal("a failure one minute after the last good answer dropped the addresses")
	}
	if !r.refresh(ctx, "a.test", t0.Add(11*time.Minute)) || r.addrs("a.test") != nil {
		t.Fatal("the addresses outlived stale_for")
	}
	srv.failing.Store(false)
	if !r.refresh(ctx, "a.test", t0.Add(12*time.Minute)) || len(r.addrs("a.test")) != 2 {
		t.Fatal("the name did not come back")
	}
	r.commit(cfg, []string{"missing.test"})
	if r.addrs("a.test") != nil {
		t.Fatal("a name no longer used is still cached")
	}
}

// TestHostNameTargetTLSName: over TLS, an address of a host-name target
// is verified against the name (unless the pool sets server_name); an IP
// target against its IP.
func TestHostNameTargetTLSName(t *testing.T) {
	// The policy as WithResolved leaves it (a TLS listener needs
	// certificates that this test does not need).
	p := &policy.Policy{Pools: []policy.Pool{{Name: "carrier-t", Realm: "external", Transport: "tls",
		TLS: &policy.TLS{Min: tls.VersionTLS12},
		Targets: []policy.Target{
			{Addr: netip.MustParseAddrPort("127.0.0.10:5061"), Name: "sip.carrier.test"},
			{Addr: netip.MustParseAddrPort("127.0.0.11:5061")},
		}}}}
	s := &SBC{log: testLogger(), metrics: newMetrics()}
	s.tls = newTLSFiles(s.log, s.metrics)
	tt, err := s.buildTLS(p)
	if err != nil {
		t.Fatal(err)
	}
	if ct := tt.targets[netip.MustParseAddr("127.0.0.10")]; ct == nil || ct.serverName != "sip.carrier.test" {
		t.Fatalf("the resolved address's TLS: %+v", ct)
	}
	if ct := tt.targets[netip.MustParseAddr("127.0.0.11")]; ct == nil || ct.serverName != "" {
		t.Fatalf("the IP target's TLS: %+v", ct)
	}
}
