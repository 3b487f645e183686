package sbc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/miekg/dns"
	"github.com/sbc-project/sbc/policy"
)

// Host-name pool targets ("sip.carrier.example:5060").
//
// Decision (issue 13): A and AAAA only, no SRV or NAPTR. The policy
// already says the port and the transport of a pool, and a carrier that
// publishes SRV records publishes them for the same hosts; SRV would add
// a second source of priority and weight next to the policy's. A name's
// addresses (A first, then AAAA, each in the order of the answer) become
// targets of the pool, each with the weight and priority of the named
// target.
//
// The resolver asks the servers of [dns] (default: /etc/resolv.conf) with
// github.com/miekg/dns, which gives the TTL that net.Resolver hides.
// Answers are cached for their TTL clamped to [dns] min_ttl..max_ttl and
// re-resolved in the background (resolveLoop). A name that stops
// resolving (an error, NXDOMAIN, no address) keeps its last good
// addresses for [dns] stale_for, logged at WARN, then has none.
//
// The policy in force is the file's policy with the names replaced by
// their addresses (policy.WithResolved): everything that reads the pool
// targets (classification of backends, the never-block list, the kernel
// allow-list, TLS towards targets, health checks, outbound registrations)
// sees the resolved addresses as it sees static ones. When an answer
// changes the addresses, the SBC reloads the policy in force with the new
// ones (reloadResolved): the same all-or-nothing path as a reload, so the
// never-block list and the kernel allow-list follow.

// resolver resolves and caches the names of host-name targets.
type resolver struct {
	log *slog.Logger
	m   *Metrics

	mu    sync.Mutex
	cfg   policy.DNS
	names map[string]*dnsName
	// wake is signalled when a reload changed the names or the settings.
	wake chan struct{}
}

// dnsName is one name in the cache.
type dnsName struct {
	addrs    []netip.Addr // in service (the last good answer)
	next     time.Time    // when to resolve again
	good     time.Time    // when addrs were last confirmed
	failing  bool         // the last attempt failed
	resolved bool         // at least one attempt finished
}

func newResolver(log *slog.Logger, m *Metrics) *resolver {
	return &resolver{log: log, m: m, names: map[string]*dnsName{}, wake: make(chan struct{}, 1)}
}

// servers returns the servers to ask: [dns] servers, else those of
// /etc/resolv.conf.
func (r *resolver) servers(cfg policy.DNS) []netip.AddrPort {
	if len(cfg.ServerAddrs) > 0 {
		return cfg.ServerAddrs
	}
	cc, err := dns.ClientConfigFromFile("/etc/resolv.conf")
	if err != nil {
		return nil
	}
	var out []netip.AddrPort
	for _, s := range cc.Servers {
		if a, err := netip.ParseAddr(s); err == nil {
			out = append(out, netip.AddrPortFrom(a.Unmap(), 53))
		}
	}
	return out
}

// query resolves host (A, then AAAA) at the servers in order: its
// addresses and the smallest TTL of the answers.
func (r *resolver) query(ctx context.Context, cfg policy.DNS, host string) ([]netip.Addr, time.Duration, error) {
	srv := r.servers(cfg)
	if len(srv) == 0 {
		return nil, 0, errors.New("no DNS server ([dns] servers, /etc/resolv.conf)")
	}
	c := &dns.Client{Net: "udp", Timeout: cfg.Timeout.Duration}
	var addrs []netip.Addr
	ttl := cfg.MaxTTL.Duration
	var errs []error
	answered := 0
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		m := new(dns.Msg)
		m.SetQuestion(dns.Fqdn(host), qt)
		m.RecursionDesired = true
		for _, s := range srv {
			if ctx.Err() != nil {
				return nil, 0, ctx.Err()
			}
			in, _, err := c.ExchangeContext(ctx, m, s.String())
			if err == nil && in.Truncated {
				in, _, err = (&dns.Client{Net: "tcp", Timeout: cfg.Timeout.Duration}).ExchangeContext(ctx, m, s.String())
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s %s: %w", s, dns.TypeToString[qt], err))
				continue
			}
			if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
				errs = append(errs, fmt.Errorf("%s %s: %s", s, dns.TypeToString[qt], dns.RcodeToString[in.Rcode]))
				continue
			}
			answered++
			for _, rr := range in.Answer {
				var a netip.Addr
				switch v := rr.(type) {
				case *dns.A:
					a, _ = netip.AddrFromSlice(v.A.To4())
				case *dns.AAAA:
					a, _ = netip.AddrFromSlice(v.AAAA)
				default:
					continue // CNAME: the recursive server follows it
				}
				if a.IsValid() && !slices.Contains(addrs, a) {
					addrs = append(addrs, a.Unmap())
					ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
				}
			}
			break
		}
	}
	switch {
	case answered == 0:
		return nil, 0, errors.Join(errs...)
	case len(addrs) == 0:
		return nil, 0, fmt.Errorf("no A or AAAA record for %s", host)
	}
	return addrs, max(cfg.MinTTL.Duration, min(ttl, cfg.MaxTTL.Duration)), nil
}

// add resolves now the names of hosts new to the cache, with cfg (in
// parallel, bounded by ctx). Names are forgotten only by commit.
func (r *resolver) add(ctx context.Context, cfg policy.DNS, hosts []string) {
	r.mu.Lock()
	var todo []string
	for _, h := range hosts {
		if r.names[h] == nil {
			r.names[h] = &dnsName{}
			todo = append(todo, h)
		}
	}
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, h := range todo {
		wg.Go(func() { r.refreshWith(ctx, cfg, h, time.Now()) })
	}
	wg.Wait()
}

// commit installs the [dns] settings and names of the policy in force:
// names no longer used are forgotten.
func (r *resolver) commit(cfg policy.DNS, hosts []string) {
	r.mu.Lock()
	r.cfg = cfg
	for h := range r.names {
		if !slices.Contains(hosts, h) {
			delete(r.names, h)
		}
	}
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// addrs returns the addresses in service for host.
func (r *resolver) addrs(host string) []netip.Addr {
	r.mu.Lock()
	defer r.mu.Unlock()
	if n := r.names[host]; n != nil {
		return n.addrs
	}
	return nil
}

// refresh resolves host once and updates its entry: whether the addresses
// in service changed.
func (r *resolver) refresh(ctx context.Context, host string, now time.Time) bool {
	r.mu.Lock()
	cfg := r.cfg
	r.mu.Unlock()
	return r.refreshWith(ctx, cfg, host, now)
}

func (r *resolver) refreshWith(ctx context.Context, cfg policy.DNS, host string, now time.Time) bool {
	addrs, ttl, err := r.query(ctx, cfg, host)
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.names[host]
	if n == nil {
		return false // forgotten by a reload meanwhile
	}
	n.resolved = true
	if err == nil {
		r.m.DNSResolutions.WithLabelValues(dnsOK).Inc()
		if n.failing {
			r.log.Info("dns: target name resolves again", "name", host, "addresses", addrStrings(addrs))
		}
		n.failing, n.good, n.next = false, now, now.Add(ttl)
		if sameAddrs(n.addrs, addrs) {
			return false // servers that rotate their answers change nothing
		}
		if n.addrs != nil {
			r.log.Warn("dns: target addresses changed", "name", host, "old", addrStrings(n.addrs), "new", addrStrings(addrs), "ttl", ttl.String())
		}
		n.addrs = addrs
		return true
	}
	r.m.DNSResolutions.WithLabelValues(dnsFailed).Inc()
	n.next = now.Add(cfg.MinTTL.Duration)
	if !n.failing {
		r.log.Warn("dns: target name does not resolve; keeping its last good addresses for [dns] stale_for", "name", host,
			"error", err.Error(), "addresses", addrStrings(n.addrs), "stale_for", cfg.StaleFor.Duration.String())
	}
	n.failing = true
	if n.addrs != nil && now.Sub(n.good) >= cfg.StaleFor.Duration {
		r.log.Warn("dns: target name unresolved past stale_for: its addresses leave the pool", "name", host, "addresses", addrStrings(n.addrs))
		n.addrs = nil
		return true
	}
	return false
}

// due returns the names to resolve at now and the time of the next one.
func (r *resolver) due(now time.Time) (hosts []string, next time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next = now.Add(time.Hour)
	for h, n := range r.names {
		if !n.next.After(now) {
			hosts = append(hosts, h)
			continue
		}
		if n.next.Before(next) {
			next = n.next
		}
	}
	return hosts, next
}

// loop re-resolves names as their TTLs run out; onChange is called (from
// this goroutine) when the addresses of some name changed.
func (r *resolver) loop(ctx context.Context, onChange func()) {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.wake:
		}
		hosts, _ := r.due(time.Now())
		changed := false
		for _, h := range hosts {
			if r.refresh(ctx, h, time.Now()) {
				changed = true
			}
		}
		if changed && ctx.Err() == nil {
			onChange()
		}
		_, next := r.due(time.Now())
		t.Reset(max(time.Until(next), 100*time.Millisecond))
	}
}

// Results of sbc_dns_resolutions_total.
const (
	dnsOK     = "ok"
	dnsFailed = "failed"
)

var dnsResults = []string{dnsOK, dnsFailed}

// sameAddrs reports whether a and b hold the same addresses, in any order.
func sameAddrs(a, b []netip.Addr) bool {
	if len(a) != len(b) {
		return false
	}
	x, y := slices.Clone(a), slices.Clone(b)
	slices.SortFunc(x, netip.Addr.Compare)
	slices.SortFunc(y, netip.Addr.Compare)
	return slices.Equal(x, y)
}

func addrStrings(as []netip.Addr) []string {
	out := make([]string, len(as))
	for i, a := range as {
		out[i] = a.String()
	}
	return out
}

// expand is the policy in force for the file's policy p: its host-name
// targets replaced by their addresses. Names new to the cache are
// resolved first (bounded by [dns] timeout).
func (s *SBC) expand(p *policy.Policy) *policy.Policy {
	hosts := p.Hosts()
	if len(hosts) == 0 {
		return p
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*p.DNS.Timeout.Duration*time.Duration(max(1, len(p.DNS.ServerAddrs)))+time.Second)
	defer cancel()
	s.dns.add(ctx, p.DNS, hosts)
	for _, h := range hosts {
		if len(s.dns.addrs(h)) == 0 {
			s.log.Warn("dns: target name has no address: its pool has no target from it until it resolves", "name", h)
		}
	}
	return p.WithResolved(s.dns.addrs)
}

// reloadResolved applies new addresses of the names: the file's policy in
// force, expanded again, through the reload path.
func (s *SBC) reloadResolved() {
	s.reload.mu.Lock()
	defer s.reload.mu.Unlock()
	raw := s.raw.Load()
	if raw == nil {
		return
	}
	s.log.Info("dns: applying the new addresses of target names")
	_ = s.reloadLocked(raw)
}

// loopHandle stops a goroutine and waits for it.
type loopHandle struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// startResolveLoop runs the resolver's loop until stopResolveLoop. It is
// not one of s.wg's goroutines: applying new addresses takes s.mu, which
// Close holds while it waits for those.
func (s *SBC) startResolveLoop(ctx context.Context) {
	ctx, cancel := context.WithCancel(ctx)
	h := &loopHandle{cancel: cancel, done: make(chan struct{})}
	s.dnsRun.Store(h)
	go func() {
		defer close(h.done)
		s.dns.loop(ctx, s.reloadResolved)
	}()
}

// stopResolveLoop ends the resolver's loop (waiting for a reload it is
// applying), if it runs.
func (s *SBC) stopResolveLoop() {
	if h := s.dnsRun.Swap(nil); h != nil {
		h.cancel()
		<-h.done
	}
}
