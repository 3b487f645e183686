package policy

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	_ "time/tzdata" // time zones of outbound_route.timezone on hosts without tzdata
)

// Outbound to carriers, the rest: outbound registration ([pool.register]),
// host-name targets and their resolver ([dns]), time-of-day outbound
// routes (hours, days, timezone).

// PoolRegister is the SBC's registration with a carrier: it sends
// REGISTER to each target of the pool (resolved, for a host-name target),
// answers its digest challenge with [pool.auth], refreshes before the
// granted expiry, retries with backoff after a failure and unregisters
// when it stops (shutdown, or a reload that removes or changes it).
type PoolRegister struct {
	// User is the user part of the address of record (To and From):
	// required; letters, digits and -_.!~*'()+ (RFC 3261 unreserved, "+").
	User string `toml:"user"`
	// Domain is the host of the address of record and of the
	// request-URI (sip:domain). Default: the target's address.
	Domain string `toml:"domain"`
	// ContactUser is the user part of the Contact the carrier sends its
	// calls to (the SBC's address on the pool's realm). Default: User.
	ContactUser string `toml:"contact_user"`
	// Expires asked for. Default "3600s"; "2s" to "24h". The carrier's
	// answer decides; the SBC refreshes at the granted expiry minus the
	// smaller of half of it and 30s.
	Expires Duration `toml:"expires"`
	// RetryMin, RetryMax: the backoff after a failed registration starts
	// at RetryMin and doubles up to RetryMax (each delay drawn between
	// half and all of it). A 503 or 500 with Retry-After waits that long,
	// within RetryMax. Defaults "5s" and "5m"; RetryMin <= RetryMax.
	RetryMin Duration `toml:"retry_min"`
	RetryMax Duration `toml:"retry_max"`
}

// DNS is the resolver of host-name pool targets: A and AAAA queries
// (no SRV, no NAPTR: the policy gives port and transport), answers cached
// for their TTL clamped to [MinTTL, MaxTTL] and re-resolved in the
// background.
type DNS struct {
	// Servers: "ip" or "ip:port" of recursive resolvers, tried in order.
	// Default: the nameservers of /etc/resolv.conf (/etc/hosts is not
	// read).
	Servers []string `toml:"servers"`
	// MinTTL, MaxTTL clamp the TTL of an answer. Defaults "30s" and
	// "1h"; MinTTL at least "1s".
	MinTTL Duration `toml:"min_ttl"`
	MaxTTL Duration `toml:"max_ttl"`
	// StaleFor: a name that stops resolving (error, no address) keeps
	// its last good addresses this long, then has none. Default "1h".
	StaleFor Duration `toml:"stale_for"`
	// Timeout of one query to one server. Default "2s".
	Timeout Duration `toml:"timeout"`

	ServerAddrs []netip.AddrPort `toml:"-"`
}

// Window is an outbound route's time of day: active from Start to End
// (minutes after midnight, End exclusive; End < Start wraps past midnight
// and belongs to the day it started on) on Days, in Loc.
type Window struct {
	Start, End int
	Days       [7]bool // by time.Weekday
	Loc        *time.Location
}

// Active reports whether t is inside the window.
func (w *Window) Active(t time.Time) bool {
	if w == nil {
		return true
	}
	t = t.In(w.Loc)
	m := t.Hour()*60 + t.Minute()
	day := t.Weekday()
	switch {
	case w.Start < w.End:
		return w.Days[day] && m >= w.Start && m < w.End
	case w.Start == w.End: // the whole day
		return w.Days[day]
	}
	// Past midnight: the evening of a listed day, or the morning after it.
	return (w.Days[day] && m >= w.Start) || (w.Days[(day+6)%7] && m < w.End)
}

// Defaults of [pool.register] and [dns].
const (
	DefaultRegisterExpires  = time.Hour
	DefaultRegisterRetryMin = 5 * time.Second
	DefaultRegisterRetryMax = 5 * time.Minute
	minRegisterExpires      = 2 * time.Second
	maxRegisterExpires      = 24 * time.Hour
	DefaultDNSMinTTL        = 30 * time.Second
	DefaultDNSMaxTTL        = time.Hour
	DefaultDNSStaleFor      = time.Hour
	DefaultDNSTimeout       = 2 * time.Second
)

// hostTarget parses a host-name target address "name:port".
func hostTarget(s string) (host string, port uint16, err error) {
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, err
	}
	pn, err := strconv.ParseUint(ps, 10, 16)
	if err != nil || pn == 0 {
		return "", 0, fmt.Errorf("port must be 1..65535")
	}
	h = strings.TrimSuffix(h, ".") // a fully qualified name
	if !validHostname(h) || !strings.ContainsFunc(h, func(r rune) bool { return (r < '0' || r > '9') && r != '.' }) {
		return "", 0, fmt.Errorf("not a DNS name")
	}
	return strings.ToLower(h), uint16(pn), nil
}

// register checks a pool's [pool.register].
func (v *validator) register(pp string, pl *Pool) {
	r := pl.Register
	if r == nil {
		return
	}
	rp := pp + ".register"
	if r.User == "" {
		v.errf(rp+".user", "user is required (the user part of the address of record)")
	} else if !sipUser(r.User) {
		v.errf(rp+".user", "invalid user %s: letters, digits and -_.!~*'()+ only", quote(r.User))
	}
	if r.ContactUser == "" {
		r.ContactUser = r.User
	} else if !sipUser(r.ContactUser) {
		v.errf(rp+".contact_user", "invalid user %s: letters, digits and -_.!~*'()+ only", quote(r.ContactUser))
	}
	if r.Domain != "" {
		h := r.Domain
		if hh, _, err := net.SplitHostPort(h); err == nil {
			h = hh
		}
		if _, err := netip.ParseAddr(h); err != nil && !validHostname(h) {
			v.errf(rp+".domain", "invalid domain %s: a DNS name or an IP address, optionally with :port", quote(r.Domain))
		}
	}
	v.duration(rp+".expires", &r.Expires, DefaultRegisterExpires, true)
	if r.Expires.IsSet() && (r.Expires.Duration < minRegisterExpires || r.Expires.Duration > maxRegisterExpires) {
		v.errf(rp+".expires", "must be between %s and %s (got %s)", minRegisterExpires, maxRegisterExpires, r.Expires.Duration)
	}
	v.duration(rp+".retry_min", &r.RetryMin, DefaultRegisterRetryMin, true)
	v.duration(rp+".retry_max", &r.RetryMax, DefaultRegisterRetryMax, true)
	if r.RetryMin.Duration > r.RetryMax.Duration {
		v.errf(rp+".retry_min", "retry_min %s is longer than retry_max %s", r.RetryMin.Duration, r.RetryMax.Duration)
	}
}

// sipUser reports whether s is a user part the SBC writes unescaped.
func sipUser(s string) bool {
	if len(s) > 64 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-_.!~*'()+", c) >= 0) {
			return false
		}
	}
	return s != ""
}

// dns checks [dns].
func (v *validator) dns() {
	d := &v.p.DNS
	for i, s := range d.Servers {
		ip := elemPath("dns.servers", i)
		ap, err := netip.ParseAddrPort(s)
		if err != nil {
			a, err2 := netip.ParseAddr(s)
			if err2 != nil {
				v.errf(ip, "invalid server %s: want an IP address, optionally with :port", quote(s))
				continue
			}
			ap = netip.AddrPortFrom(a, 53)
		}
		if ap.Port() == 0 {
			v.errf(ip, "port must not be 0")
			continue
		}
		d.ServerAddrs = append(d.ServerAddrs, netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port()))
	}
	v.duration("dns.min_ttl", &d.MinTTL, DefaultDNSMinTTL, true)
	v.duration("dns.max_ttl", &d.MaxTTL, DefaultDNSMaxTTL, true)
	v.duration("dns.stale_for", &d.StaleFor, DefaultDNSStaleFor, false)
	v.duration("dns.timeout", &d.Timeout, DefaultDNSTimeout, true)
	if d.MinTTL.Duration > 0 && d.MinTTL.Duration < time.Second {
		v.errf("dns.min_ttl", "must be at least 1s (got %s)", d.MinTTL.Duration)
	}
	if d.MinTTL.Duration > d.MaxTTL.Duration {
		v.errf("dns.max_ttl", "max_ttl %s is shorter than min_ttl %s", d.MaxTTL.Duration, d.MinTTL.Duration)
	}
}

var dayNames = []string{"sun", "mon", "tue", "wed", "thu", "fri", "sat"}

// window checks an outbound route's hours, days and timezone and builds
// its Window (nil when none is given).
func (v *validator) window(rp string, r *OutboundRoute) {
	if r.Hours == "" && len(r.Days) == 0 && r.Timezone == "" {
		return
	}
	w := &Window{Loc: time.UTC}
	ok := true
	if r.Timezone != "" {
		loc, err := time.LoadLocation(r.Timezone)
		if err != nil || r.Timezone == "Local" {
			v.errf(rp+".timezone", "unknown time zone %s: want an IANA name such as \"Europe/London\" or \"UTC\"", quote(r.Timezone))
			ok = false
		} else {
			w.Loc = loc
		}
	}
	if r.Hours == "" {
		w.Start, w.End = 0, 0
	} else if s, e, err := parseHours(r.Hours); err != nil {
		v.errf(rp+".hours", "invalid hours %s: %v (want \"HH:MM-HH:MM\", e.g. \"08:00-18:00\"; \"22:00-06:00\" runs past midnight)", quote(r.Hours), err)
		ok = false
	} else {
		w.Start, w.End = s, e
	}
	if len(r.Days) == 0 {
		for i := range w.Days {
			w.Days[i] = true
		}
	}
	for i, d := range r.Days {
		ip := elemPath(rp+".days", i)
		from, to, isRange := strings.Cut(strings.ToLower(d), "-")
		a, b := slices.Index(dayNames, from), slices.Index(dayNames, to)
		if !isRange {
			b = a
		}
		if a < 0 || b < 0 {
			v.errf(ip, "invalid day %s: want \"mon\" … \"sun\" or a range such as \"mon-fri\"", quote(d))
			ok = false
			continue
		}
		for x := a; ; x = (x + 1) % 7 {
			if w.Days[x] && !isRange {
				v.errf(ip, "day %s is listed twice", quote(d))
			}
			w.Days[x] = true
			if x == b {
				break
			}
		}
	}
	if ok {
		r.Window = w
	}
}

// parseHours parses "HH:MM-HH:MM" into minutes after midnight; the end
// may be "24:00".
func parseHours(s string) (start, end int, err error) {
	a, b, found := strings.Cut(s, "-")
	if !found {
		return 0, 0, fmt.Errorf("no \"-\"")
	}
	if start, err = hhmm(a, false); err != nil {
		return 0, 0, err
	}
	if end, err = hhmm(b, true); err != nil {
		return 0, 0, err
	}
	if end == 24*60 {
		end = 0
		if start == 0 {
			return 0, 0, nil
		}
	}
	if start == end {
		return 0, 0, fmt.Errorf("empty window (start = end); \"00:00-24:00\" is the whole day")
	}
	return start, end, nil
}

func hhmm(s string, endOK bool) (int, error) {
	s = strings.TrimSpace(s)
	if len(s) != 5 || s[2] != ':' {
		return 0, fmt.Errorf("%s is not HH:MM", strconv.Quote(s))
	}
	h, err1 := strconv.Atoi(s[:2])
	m, err2 := strconv.Atoi(s[3:])
	switch {
	case err1 != nil || err2 != nil || h < 0 || m < 0 || m > 59:
		return 0, fmt.Errorf("%s is not HH:MM", strconv.Quote(s))
	case h == 24 && m == 0 && endOK:
		return 24 * 60, nil
	case h > 23:
		return 0, fmt.Errorf("%s: hour past 23", strconv.Quote(s))
	}
	return h*60 + m, nil
}

// Hosts lists the DNS names of the host-name targets, each once.
func (p *Policy) Hosts() []string {
	var out []string
	for i := range p.Pools {
		for _, t := range p.Pools[i].Targets {
			if t.Host != "" && !slices.Contains(out, t.Host) {
				out = append(out, t.Host)
			}
		}
	}
	return out
}

// WithResolved returns a copy of p in which every host-name target is
// replaced by one target per address that resolve gives for its name, in
// that order, with the target's weight and priority (none when it gives
// none), and Name set to the name. An address already a target of the
// pool is not added twice. p itself is returned when it has no host-name
// target; it is not changed.
func (p *Policy) WithResolved(resolve func(host string) []netip.Addr) *Policy {
	if len(p.Hosts()) == 0 {
		return p
	}
	q := *p
	q.Pools = slices.Clone(p.Pools)
	for i := range q.Pools {
		pl := &q.Pools[i]
		var out []Target
		seen := map[netip.AddrPort]bool{}
		for _, t := range pl.Targets {
			if t.Host == "" {
				if !seen[t.Addr] {
					seen[t.Addr] = true
					out = append(out, t)
				}
				continue
			}
			for _, a := range resolve(t.Host) {
				ap := netip.AddrPortFrom(a.Unmap(), t.Port)
				if seen[ap] {
					continue
				}
				seen[ap] = true
				r := t
				r.Addr, r.Name, r.Host, r.Port = ap, t.Host, "", 0
				r.Address = ap.String()
				out = append(out, r)
			}
		}
		pl.Targets = out
	}
	q.look = buildLookup(&q)
	return &q
}
