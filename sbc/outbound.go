package sbc

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/icholy/digest"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/policy"
)

// Outbound calls: from a backend (a pool target, the PBX, on its pool's
// realm) to carriers (the pools an outbound route names). Stage 3 admits
// them under the outbound caps (admitOutbound); stage 4 routes them
// (routeOutbound): the outbound route for the dialled number, its number
// normalisation and caller-ID policy, and the toll-fraud deny lists.
// The call itself is the same state machine as an inbound call, with the
// route's carrier pools tried in order (tryNext) and a carrier's digest
// challenge answered once (onBResponse, authBranch).

// callPlan is where a new call goes and what it carries there.
type callPlan struct {
	pools    []*pool               // in order of preference (one for an inbound call)
	route    *policy.OutboundRoute // nil: an inbound call
	srcPool  string                // an outbound call's source pool
	user     string                // request-URI user towards B
	toUser   string                // To user towards B
	fromUser string                // From user towards B
	// rewritten names the numbers the route changed (for the
	// STIR/SHAKEN log line): "ruri", "to", "from".
	rewritten []string
	// binding: a call to a registered user's device (regcall.go).
	binding *binding
	// hairpin: an INVITE with Replaces to the peer of the dialog it names
	// (transfer.go, transferHairpin).
	hairpin bool
}

// routeOutbound is stage 4 for a new call from a backend: the carriers of
// its outbound route, or the verdict on a call that has none or is to a
// denied destination.
func routeOutbound(st *snapshot, p peer, req *sip.Request, now time.Time) (*callPlan, verdict) {
	pol := st.pol
	dialled := req.Recipient.User
	if p.pool == "" || pol.Carrier(p.pool) {
		// A carrier's target sending an INVITE on the carrier's realm (and
		// not a trunk there): calls from carriers are never routed out.
		return nil, answer(stageRoute, reasonNoOutboundRoute, 403, "Forbidden").with("ruri_user", dialled, "source_pool", p.pool)
	}
	r := pol.OutboundRouteAt(p.pool, dialled, now)
	if r == nil {
		return nil, answer(stageRoute, reasonNoOutboundRoute, 403, "Forbidden").with("ruri_user", dialled, "source_pool", p.pool)
	}
	number := r.Normalise(dialled)
	if why, pfx := deniedDestination(&pol.Outbound, dialled, number); why != "" {
		return nil, answer(stageRoute, why, 403, "Forbidden",
			sip.NewHeader("Reason", `SIP;cause=403;text="`+string(why)+`"`)).
			with("ruri_user", dialled, "number", number, "prefix", pfx, "source_pool", p.pool)
	}
	plan := &callPlan{route: r, srcPool: p.pool, user: number, toUser: req.To().Address.User, fromUser: req.From().Address.User}
	if number != dialled {
		plan.rewritten = append(plan.rewritten, "ruri")
		if plan.toUser == dialled {
			plan.toUser = number
			plan.rewritten = append(plan.rewritten, "to")
		}
	}
	if r.FromUser != "" && r.FromUser != plan.fromUser {
		plan.fromUser = r.FromUser
		plan.rewritten = append(plan.rewritten, "from")
	}
	for _, n := range r.Pools {
		if pl := st.pools[n]; pl != nil {
			plan.pools = append(plan.pools, pl)
		}
	}
	return plan, verdict{}
}

// deniedDestination applies the toll-fraud deny lists to the dialled
// number and to the number after normalisation: the reason and the
// prefix that matched, or "" when the call may go.
func deniedDestination(o *policy.Outbound, dialled, number string) (reason, string) {
	for _, d := range o.DenyPrefixes {
		if strings.HasPrefix(number, d) || strings.HasPrefix(dialled, d) {
			return reasonDeniedDestination, d
		}
	}
	if o.DenyPremium {
		for _, d := range o.PremiumPrefixes {
			if strings.HasPrefix(number, d) || strings.HasPrefix(dialled, d) {
				return reasonPremiumDestination, d
			}
		}
	}
	if o.DenyInternational && international(number, o.HomePrefix) {
		return reasonInternational, o.HomePrefix
	}
	return "", ""
}

// international reports whether number ("+CC..." or "00CC...") is outside
// the country whose prefix is home ("+44").
func international(number, home string) bool {
	switch {
	case strings.HasPrefix(number, "+"):
		return !strings.HasPrefix(number, home)
	case strings.HasPrefix(number, "00"):
		return !strings.HasPrefix(number, "00"+strings.TrimPrefix(home, "+"))
	}
	return false
}

// outboundCaps counts the outbound calls in progress and the minutes of
// the current window per source pool and per source address. It lives as
// long as the SBC (counts survive a reload; the caps are read from the
// snapshot of each call). Keys come only from pool targets (the sources
// of outbound calls), so the maps are bounded by the policy.
type outboundCaps struct {
	mu      sync.Mutex
	calls   map[string]int
	minutes map[string]*minuteWindow
	warned  map[string]time.Time // last WARN per cap key
}

type minuteWindow struct {
	start time.Time
	used  time.Duration
}

// capWarnEvery bounds the WARN lines and audit events of one tripped cap.
const capWarnEvery = time.Minute

func poolKey(name string) string          { return "pool:" + name }
func sourceKey(a netip.AddrPort) string   { return "source:" + acl.SourceKey(a.Addr()).String() }
func capKey(kind, key string) string      { return kind + "|" + key }
func (w *minuteWindow) over(cap int) bool { return cap > 0 && w.used >= time.Duration(cap)*time.Minute }

// admitOutbound is stage 3 for a call from a backend: the release of its
// slots, or the verdict on a call over an outbound cap (503 with
// Retry-After, or a drop, per limits.over_limit_action). A cap that trips
// is logged at WARN and emitted as a limit_tripped event, at most once a
// minute per cap and key.
func (s *SBC) admitOutbound(st *snapshot, p peer, called string) (release func(), v verdict) {
	// A draining node places no new calls out either (admin API).
	if r := s.closedFor(p); r != "" {
		return nil, answer(stageAdmit, r, 503, "Service Unavailable", sip.NewHeader("Retry-After", strconv.Itoa(max(st.pol.Routing.RetryAfter, 1))))
	}
	o := &st.pol.Outbound
	now := time.Now()
	oc := &s.outbound
	pk, sk := poolKey(p.pool), sourceKey(p.src)
	oc.mu.Lock()
	if oc.calls == nil {
		oc.calls, oc.minutes, oc.warned = map[string]int{}, map[string]*minuteWindow{}, map[string]time.Time{}
	}
	var r reason
	var cap string
	var wait time.Duration
	switch {
	case o.PoolMaxCalls > 0 && oc.calls[pk] >= o.PoolMaxCalls:
		r, cap, wait = reasonOutboundPoolCalls, "pool_max_calls", time.Second
	case o.SourceMaxCalls > 0 && oc.calls[sk] >= o.SourceMaxCalls:
		r, cap, wait = reasonOutboundSourceCalls, "source_max_calls", time.Second
	case oc.window(pk, now, o.MinutesWindow.Duration).over(o.PoolMaxMinutes):
		r, cap, wait = reasonOutboundPoolMinutes, "pool_max_minutes", oc.minutes[pk].start.Add(o.MinutesWindow.Duration).Sub(now)
	case oc.window(sk, now, o.MinutesWindow.Duration).over(o.SourceMaxMinutes):
		r, cap, wait = reasonOutboundSourceMinutes, "source_max_minutes", oc.minutes[sk].start.Add(o.MinutesWindow.Duration).Sub(now)
	}
	if r != "" {
		key := capKey(cap, p.pool)
		if strings.HasPrefix(cap, "source") {
			key = capKey(cap, sk)
		}
		warn := now.Sub(oc.warned[key]) >= capWarnEvery
		if warn {
			oc.warned[key] = now
		}
		oc.mu.Unlock()
		if warn {
			s.capTripped(p, cap, called)
		}
		return nil, overLimit(st, r, wait)
	}
	oc.calls[pk]++
	oc.calls[sk]++
	oc.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			oc.mu.Lock()
			for _, k := range []string{pk, sk} {
				if oc.calls[k]--; oc.calls[k] <= 0 {
					delete(oc.calls, k)
				}
			}
			oc.mu.Unlock()
		})
	}, verdict{}
}

// window returns key's minute window, renewed when it is over. Under mu.
func (oc *outboundCaps) window(key string, now time.Time, d time.Duration) *minuteWindow {
	w := oc.minutes[key]
	if w == nil || now.Sub(w.start) >= d {
		w = &minuteWindow{start: now}
		oc.minutes[key] = w
	}
	return w
}

// addMinutes counts an answered outbound call's duration against its
// source pool and source address.
func (s *SBC) addMinutes(st *snapshot, srcPool string, src netip.AddrPort, d time.Duration) {
	if d <= 0 {
		return
	}
	now := time.Now()
	oc := &s.outbound
	oc.mu.Lock()
	defer oc.mu.Unlock()
	if oc.minutes == nil {
		oc.calls, oc.minutes, oc.warned = map[string]int{}, map[string]*minuteWindow{}, map[string]time.Time{}
	}
	for _, k := range []string{poolKey(srcPool), sourceKey(src)} {
		oc.window(k, now, st.pol.Outbound.MinutesWindow.Duration).used += d
	}
}

// capTripped reports a tripped outbound cap: WARN and an audit event.
func (s *SBC) capTripped(p peer, cap, called string) {
	s.log.Warn("outbound cap tripped", "cap", cap, "source_pool", p.pool, "source", p.src.Addr().String(), "called", called)
	s.emit(events.Event{Kind: events.LimitTripped, SourceIP: p.src.Addr().String(), Called: called, Reason: cap,
		Detail: map[string]string{"source_pool": p.pool}})
}

// Results of sbc_carrier_auth_total.
const (
	authAnswered = "answered" // a challenge answered with the pool's credentials
	authRejected = "rejected" // the answer was challenged again: the target failed
	authUnusable = "unusable" // a challenge the SBC cannot answer (realm, algorithm): the target failed
)

var authResults = []string{authAnswered, authRejected, authUnusable}

// authorize adds to inv the credentials answering res's challenge (401:
// Authorization, 407: Proxy-Authorization) with the pool's auth.
func authorize(inv *sip.Request, res *sip.Response, a *policy.PoolAuth) error {
	chName, crName := "WWW-Authenticate", "Authorization"
	if res.StatusCode == 407 {
		chName, crName = "Proxy-Authenticate", "Proxy-Authorization"
	}
	h := res.GetHeader(chName)
	if h == nil {
		return errors.New("no " + chName + " header")
	}
	chal, err := digest.ParseChallenge(h.Value())
	if err != nil {
		return fmt.Errorf("challenge: %w", err)
	}
	chal.Algorithm = strings.ToUpper(chal.Algorithm)
	if a.Realm != "" && chal.Realm != a.Realm {
		return fmt.Errorf("challenge for realm %s, credentials for %s", strconv.Quote(chal.Realm), strconv.Quote(a.Realm))
	}
	if !digest.CanDigest(chal) {
		return fmt.Errorf("unsupported algorithm %q or qop %v", chal.Algorithm, chal.QOP)
	}
	cred, err := digest.Digest(chal, digest.Options{Method: string(inv.Method), URI: inv.Recipient.String(),
		Username: a.Username, Password: a.Clear, Count: 1})
	if err != nil {
		return err
	}
	inv.RemoveHeader(crName)
	inv.AppendHeader(sip.NewHeader(crName, cred.String()))
	return nil
}
