package policy

import (
	"slices"
	"strings"
	"time"
)

// lookup holds the tables validation builds for the query methods. It is
// read-only once built, so a *Policy may be queried from many goroutines.
type lookup struct {
	realms map[string]*Realm
	trunks map[string]*Trunk
	pools  map[string]*Pool

	// routes maps trunk name ("" = any trunk) -> prefix -> pool.
	routes map[string]map[string]*Pool
	// routeLens are the distinct prefix lengths of all routes, longest first.
	routeLens   []int
	defaultPool *Pool

	allowed map[string]struct{} // lower-case header names
}

func buildLookup(p *Policy) *lookup {
	l := &lookup{
		realms:  make(map[string]*Realm, len(p.Realms)),
		trunks:  make(map[string]*Trunk, len(p.Trunks)),
		pools:   make(map[string]*Pool, len(p.Pools)),
		routes:  make(map[string]map[string]*Pool),
		allowed: make(map[string]struct{}, len(p.Headers.Allow)),
	}
	for i := range p.Realms {
		l.realms[p.Realms[i].Name] = &p.Realms[i]
	}
	for i := range p.Trunks {
		l.trunks[p.Trunks[i].Name] = &p.Trunks[i]
	}
	for i := range p.Pools {
		l.pools[p.Pools[i].Name] = &p.Pools[i]
	}
	for _, r := range p.Routes {
		m := l.routes[r.Trunk]
		if m == nil {
			m = make(map[string]*Pool)
			l.routes[r.Trunk] = m
		}
		m[r.Prefix] = l.pools[r.Pool]
		if !slices.Contains(l.routeLens, len(r.Prefix)) {
			l.routeLens = append(l.routeLens, len(r.Prefix))
		}
	}
	slices.Sort(l.routeLens)
	slices.Reverse(l.routeLens)
	l.defaultPool = l.pools[p.Routing.DefaultPool]
	for _, h := range p.Headers.Allow {
		l.allowed[strings.ToLower(h)] = struct{}{}
	}
	return l
}

// Realm returns the realm called name, or nil.
func (p *Policy) Realm(name string) *Realm {
	if p.look != nil {
		return p.look.realms[name]
	}
	for i := range p.Realms {
		if p.Realms[i].Name == name {
			return &p.Realms[i]
		}
	}
	return nil
}

// Trunk returns the trunk called name, or nil.
func (p *Policy) Trunk(name string) *Trunk {
	if p.look != nil {
		return p.look.trunks[name]
	}
	for i := range p.Trunks {
		if p.Trunks[i].Name == name {
			return &p.Trunks[i]
		}
	}
	return nil
}

// Pool returns the pool called name, or nil.
func (p *Policy) Pool(name string) *Pool {
	if p.look != nil {
		return p.look.pools[name]
	}
	for i := range p.Pools {
		if p.Pools[i].Name == name {
			return &p.Pools[i]
		}
	}
	return nil
}

// RouteFor returns the pool for a call from trunk (its name; "" when the
// source is not a known trunk) to the request-URI user part user.
//
// The most specific route wins: the one with the longest Prefix that user
// starts with; at equal prefix length a route naming the trunk beats one
// that does not. Routes naming another trunk never match. Without a
// matching route the result is Routing.DefaultPool, and nil when that is
// empty (the caller answers 404).
//
// On a validated policy the cost is one or two map lookups per distinct
// route prefix length, independent of the number of routes, with no
// allocation.
func (p *Policy) RouteFor(trunk, user string) *Pool {
	l := p.look
	if l == nil {
		return p.routeForScan(trunk, user)
	}
	named, generic := l.routes[trunk], l.routes[""]
	for _, n := range l.routeLens {
		if n > len(user) {
			continue
		}
		prefix := user[:n]
		if pool, ok := named[prefix]; ok {
			return pool
		}
		if pool, ok := generic[prefix]; ok {
			return pool
		}
	}
	return l.defaultPool
}

// routeForScan is RouteFor for a policy that was not validated.
func (p *Policy) routeForScan(trunk, user string) *Pool {
	var best *Route
	for i := range p.Routes {
		r := &p.Routes[i]
		if (r.Trunk != "" && r.Trunk != trunk) || !strings.HasPrefix(user, r.Prefix) {
			continue
		}
		if best == nil || len(r.Prefix) > len(best.Prefix) ||
			(len(r.Prefix) == len(best.Prefix) && best.Trunk == "" && r.Trunk != "") {
			best = r
		}
	}
	if best != nil {
		return p.Pool(best.Pool)
	}
	if p.Routing.DefaultPool == "" {
		return nil
	}
	return p.Pool(p.Routing.DefaultPool)
}

// AllowedHeader reports whether the header called name may be copied from
// one leg to the other. The match is case-insensitive; a compact form
// ("k", "o", ...) is looked up as its long form. It does not allocate for
// names of up to 64 bytes.
func (p *Policy) AllowedHeader(name string) bool {
	if len(name) == 1 {
		if long, ok := compactHeaders[lowerASCII(name[0])]; ok {
			name = long
		}
	}
	if p.look == nil {
		allow := p.Headers.Allow
		if allow == nil {
			allow = DefaultAllowedHeaders
		}
		for _, h := range allow {
			if strings.EqualFold(h, name) {
				return true
			}
		}
		return false
	}
	var buf [64]byte
	if len(name) > len(buf) {
		_, ok := p.look.allowed[strings.ToLower(name)]
		return ok
	}
	b := buf[:len(name)]
	for i := 0; i < len(name); i++ {
		b[i] = lowerASCII(name[i])
	}
	_, ok := p.look.allowed[string(b)]
	return ok
}

func lowerASCII(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// Carrier reports whether the pool called name is a carrier pool: one
// an outbound route sends calls to. Calls from a carrier pool's targets
// are never routed out.
func (p *Policy) Carrier(name string) bool {
	for i := range p.OutboundRoutes {
		if slices.Contains(p.OutboundRoutes[i].Pools, name) {
			return true
		}
	}
	return false
}

// OutboundRouteFor is OutboundRouteAt now.
func (p *Policy) OutboundRouteFor(source, user string) *OutboundRoute {
	return p.OutboundRouteAt(source, user, time.Now())
}

// OutboundRouteAt returns the outbound route for a call from a target of
// pool source to the dialled number user at time now, or nil when none
// matches: among the routes whose time window (hours, days, timezone)
// holds now, the route with the longest prefix that user starts with; at
// equal length the one naming source over one that names no pool, then
// one with a time window over one without (a window is the exception to
// the route that always applies), then the first in the file. Routes
// naming another pool never match. It does not allocate; routes are few
// and scanned.
func (p *Policy) OutboundRouteAt(source, user string, now time.Time) *OutboundRoute {
	var best *OutboundRoute
	for i := range p.OutboundRoutes {
		r := &p.OutboundRoutes[i]
		if (r.SourcePool != "" && r.SourcePool != source) || !strings.HasPrefix(user, r.Prefix) || !r.Window.Active(now) {
			continue
		}
		if best == nil || better(r, best) {
			best = r
		}
	}
	return best
}

// better reports whether route r is more specific than b.
func better(r, b *OutboundRoute) bool {
	if len(r.Prefix) != len(b.Prefix) {
		return len(r.Prefix) > len(b.Prefix)
	}
	if (r.SourcePool != "") != (b.SourcePool != "") {
		return r.SourcePool != ""
	}
	return r.Window != nil && b.Window == nil
}

// Normalise applies the route's number rules to the dialled number user
// (which matched the route's prefix): strip leading characters, then
// prepend.
func (r *OutboundRoute) Normalise(user string) string {
	if r.Strip > 0 && r.Strip <= len(user) {
		user = user[r.Strip:]
	}
	return r.Prepend + user
}
