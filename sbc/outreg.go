package sbc

import (
	"context"
	"math/rand/v2"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/events"
	"github.com/sbc-project/sbc/policy"
)

// Outbound registration: the SBC registers with a carrier ([pool.register]
// on a carrier pool), one registration per target of the pool (after DNS,
// for a host-name target), from the SBC's face on the pool's realm.
//
// Each registration is a goroutine of its own (outreg.run), outside any
// sipgo callback, bound to the SBC's life: started by Start, and by a
// reload that adds it; a reload that changes what it sends (the pool's
// realm, transport, [pool.register], [pool.auth]) unregisters it and
// registers anew (the new one waits for the old one's unregistration);
// a reload that removes it, and Close, unregister it (bounded wait).
//
// A 401/407 is answered once with [pool.auth] (authorize, as for
// INVITEs); a second challenge is a failure. 423 takes the Min-Expires
// and registers again at once. A 2xx gives the granted expiry (the
// Contact's expires, else Expires, else what was asked); the refresh goes
// at the granted expiry minus the smaller of half of it and 30s. A
// failure (no answer, transport error, other final response) is retried
// after a backoff from retry_min doubling to retry_max, each delay drawn
// between half and all of it; a 5xx's Retry-After is honoured within
// retry_max.
//
// Calls the carrier sends to the registered contact arrive on the pool's
// realm from the carrier's address; they are classified like any request
// (classify.go): a trunk whose sources hold the carrier's address takes
// them (and routes them with [[route]]); without such a trunk, a request
// from a pool target is a backend's, and an INVITE from a carrier pool's
// target is refused (no_outbound_route). A registered carrier therefore
// needs a trunk too, as for any inbound carrier.

// outregs is the set of running registrations.
type outregs struct {
	mu   sync.Mutex
	ctx  context.Context // set by start; nil before Start and after Close
	regs map[regKey]*outreg
	wg   sync.WaitGroup
}

type regKey struct {
	pool   string
	target netip.AddrPort
}

// regConfig is everything a registration sends: a change re-registers.
type regConfig struct {
	realm, transport string
	reg              policy.PoolRegister
	auth             policy.PoolAuth // Clear is what matters
	hasAuth          bool
	name             string // the target's DNS name, "" for an IP target
}

func regConfigOf(pl *policy.Pool, t policy.Target) regConfig {
	c := regConfig{realm: pl.Realm, transport: strings.ToLower(pl.Transport), reg: *pl.Register, name: t.Name}
	if pl.Auth != nil {
		c.auth, c.hasAuth = *pl.Auth, true
		c.auth.Password = "" // sealed or not: Clear compares
	}
	return c
}

// outreg is one registration.
type outreg struct {
	key   regKey
	cfg   regConfig
	stop  chan struct{} // closed: unregister and end
	done  chan struct{} // closed when the goroutine ended
	after <-chan struct{}
}

// Registration states (event reasons, log).
const (
	outRegistered   = "registered"
	outRegFailed    = "failed"
	outUnregistered = "unregistered"
)

// Reasons of sbc_outbound_registration_failures_total.
const (
	regFailTimeout     = "timeout"     // no final response
	regFailTransport   = "transport"   // the request could not be sent
	regFailAuth        = "auth"        // a challenge without [pool.auth], unusable, or challenged again
	regFailRejected    = "rejected"    // a 3xx, 4xx or 6xx
	regFailUnavailable = "unavailable" // a 5xx
)

var regFailReasons = []string{regFailTimeout, regFailTransport, regFailAuth, regFailRejected, regFailUnavailable}

// regTimeout bounds one REGISTER transaction (Timer F is 32 s).
const regTimeout = 10 * time.Second

// unregisterWait bounds the unregistration at Close.
const unregisterWait = 2 * time.Second

// desired lists the registrations p asks for.
func desired(p *policy.Policy) map[regKey]regConfig {
	out := map[regKey]regConfig{}
	for i := range p.Pools {
		pl := &p.Pools[i]
		if pl.Register == nil {
			continue
		}
		for _, t := range pl.Targets {
			if t.Addr.IsValid() {
				out[regKey{pl.Name, t.Addr}] = regConfigOf(pl, t)
			}
		}
	}
	return out
}

// start starts the registrations of p (Start).
func (o *outregs) start(ctx context.Context, s *SBC, p *policy.Policy) {
	o.mu.Lock()
	o.ctx = ctx
	o.mu.Unlock()
	o.apply(s, p)
}

// apply makes the running registrations those of p: removed or changed
// ones are stopped (they unregister in their goroutine), new or changed
// ones started. It does not block (called under s.mu by a reload).
func (o *outregs) apply(s *SBC, p *policy.Policy) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.ctx == nil {
		return // not started: Start applies the policy in force
	}
	if o.regs == nil {
		o.regs = map[regKey]*outreg{}
	}
	want := desired(p)
	for k, r := range o.regs {
		if c, ok := want[k]; !ok || c != r.cfg {
			close(r.stop)
			delete(o.regs, k)
			if ok {
				o.launch(s, k, c, r.done)
			}
		}
	}
	for k, c := range want {
		if o.regs[k] == nil {
			o.launch(s, k, c, nil)
		}
	}
}

// launch starts one registration; after, if not nil, is awaited first.
// Under o.mu.
func (o *outregs) launch(s *SBC, k regKey, c regConfig, after <-chan struct{}) {
	r := &outreg{key: k, cfg: c, stop: make(chan struct{}), done: make(chan struct{}), after: after}
	o.regs[k] = r
	o.wg.Add(1)
	ctx := o.ctx
	go func() {
		defer o.wg.Done()
		r.run(ctx, s)
	}()
}

// stopAll unregisters every registration, waiting at most unregisterWait
// (Close, before the listeners close).
func (o *outregs) stopAll() {
	o.mu.Lock()
	var dones []chan struct{}
	for k, r := range o.regs {
		close(r.stop)
		dones = append(dones, r.done)
		delete(o.regs, k)
	}
	o.ctx = nil
	o.mu.Unlock()
	deadline := time.NewTimer(unregisterWait)
	defer deadline.Stop()
	for _, d := range dones {
		select {
		case <-d:
		case <-deadline.C:
			return
		}
	}
}

// regSession is the dialog-like state of one registration: the same
// Call-ID and From tag throughout, CSeq increasing (RFC 3261 10.2).
type regSession struct {
	callID  string
	fromTag string
	cseq    uint32
}

// run registers, refreshes and retries until stopped.
func (r *outreg) run(ctx context.Context, s *SBC) {
	defer close(r.done)
	if r.after != nil {
		select {
		case <-r.after:
		case <-ctx.Done():
			return
		}
	}
	pool, target := r.key.pool, r.key.target.String()
	up := s.metrics.OutboundRegistered.WithLabelValues(pool, target)
	up.Set(0)
	defer s.metrics.OutboundRegistered.DeleteLabelValues(pool, target)
	sess := &regSession{callID: newID(), fromTag: sip.GenerateTagN(10)}
	expires := r.cfg.reg.Expires.Duration
	state, fails := "", 0
	for {
		granted, code, fail, retryAfter, minExpires := r.register(ctx, s, sess, expires)
		var wait time.Duration
		switch {
		case fail == "" && granted > 0:
			if state != outRegistered {
				r.report(s, state, outRegistered, code, "", granted)
				state = outRegistered
			}
			fails = 0
			up.Set(1)
			wait = refreshIn(granted)
		case code == 423 && minExpires > expires && minExpires <= 24*time.Hour:
			expires = minExpires // Interval Too Brief: again at once with Min-Expires
			continue
		default:
			if ctx.Err() != nil {
				return
			}
			if fail == "" {
				fail = regFailRejected // a 2xx granting nothing
			}
			s.metrics.OutboundRegFailures.WithLabelValues(pool, fail).Inc()
			if state != outRegFailed {
				r.report(s, state, outRegFailed, code, fail, 0)
				state = outRegFailed
			}
			up.Set(0)
			fails++
			wait = backoff(r.cfg.reg.RetryMin.Duration, r.cfg.reg.RetryMax.Duration, fails)
			if retryAfter > 0 {
				wait = min(retryAfter, r.cfg.reg.RetryMax.Duration)
			}
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-r.stop:
			t.Stop()
			if state == outRegistered {
				uctx, cancel := context.WithTimeout(ctx, unregisterWait)
				_, code, fail, _, _ := r.register(uctx, s, sess, 0)
				cancel()
				r.report(s, state, outUnregistered, code, fail, 0)
			}
			return
		case <-t.C:
		}
	}
}

// refreshIn is when to refresh a registration granted for d: d minus the
// smaller of half of it and 30s.
func refreshIn(d time.Duration) time.Duration {
	return d - min(d/2, 30*time.Second)
}

// backoff is the delay before retry n (1, 2, …): lo doubled n-1 times,
// at most hi, drawn between half and all of it.
func backoff(lo, hi time.Duration, n int) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// report logs and emits a change of state.
func (r *outreg) report(s *SBC, from, to string, code int, fail string, granted time.Duration) {
	attrs := []any{"pool", r.key.pool, "target", r.key.target.String(), "state", to}
	detail := map[string]string{"pool": r.key.pool, "target": r.key.target.String()}
	if r.cfg.name != "" {
		attrs = append(attrs, "name", r.cfg.name)
		detail["name"] = r.cfg.name
	}
	if code != 0 {
		attrs = append(attrs, "code", code)
		detail["code"] = strconv.Itoa(code)
	}
	if fail != "" {
		attrs = append(attrs, "reason", fail)
		detail["reason"] = fail
	}
	if granted > 0 {
		attrs = append(attrs, "expires", granted.String())
		detail["expires"] = strconv.Itoa(int(granted / time.Second))
	}
	switch {
	case to == outRegistered && from == "":
		s.log.Info("outbound registration: registered", attrs...)
	case to == outUnregistered:
		s.log.Info("outbound registration: unregistered", attrs...)
	default:
		s.log.Warn("outbound registration state changed", append(attrs, "previous", from)...)
	}
	s.emit(events.Event{Kind: events.OutboundRegistration, Reason: to, Detail: detail})
}

// register sends one REGISTER (expires 0: unregister), answers one
// challenge, and returns the granted expiry, the final status code, the
// failure reason ("" on a 2xx), a 5xx's Retry-After and a 423's
// Min-Expires.
func (r *outreg) register(ctx context.Context, s *SBC, sess *regSession, expires time.Duration) (granted time.Duration, code int, fail string, retryAfter, minExpires time.Duration) {
	ep := s.realms[r.cfg.realm]
	if ep == nil {
		return 0, 0, regFailTransport, 0, 0
	}
	face := ep.face(r.cfg.transport)
	reg := r.cfg.reg
	domain := reg.Domain
	if domain == "" {
		domain = r.key.target.String()
	}
	host, port := domain, 0
	if h, p, err := splitHostPort(domain); err == nil {
		host, port = h, p
	}
	ruri := sip.Uri{Scheme: "sip", Host: host, Port: port}
	aor := sip.Uri{Scheme: "sip", User: reg.User, Host: host, Port: port}
	contact := face.Contact(reg.ContactUser)
	secs := strconv.Itoa(int(expires / time.Second))
	build := func() *sip.Request {
		sess.cseq++
		req := sip.NewRequest(sip.REGISTER, ruri)
		req.AppendHeader(face.Via())
		from := &sip.FromHeader{Address: aor, Params: sip.NewParams()}
		from.Params.Add("tag", sess.fromTag)
		req.AppendHeader(from)
		req.AppendHeader(&sip.ToHeader{Address: aor, Params: sip.NewParams()})
		cid := sip.CallIDHeader(sess.callID)
		req.AppendHeader(&cid)
		req.AppendHeader(&sip.CSeqHeader{SeqNo: sess.cseq, MethodName: sip.REGISTER})
		mf := sip.MaxForwardsHeader(70)
		req.AppendHeader(&mf)
		req.AppendHeader(contact.Clone())
		req.AppendHeader(sip.NewHeader("Expires", secs))
		req.AppendHeader(sip.NewHeader("User-Agent", s.state.Load().pol.Server.UserAgent))
		req.SetBody(nil)
		return req
	}
	req := build()
	answered := false
	for {
		tctx, cancel := context.WithTimeout(ctx, regTimeout)
		res, err := ep.do(tctx, req, r.cfg.transport, r.key.target)
		cancel()
		if err != nil {
			if tctx.Err() != nil || ctx.Err() != nil {
				return 0, 0, regFailTimeout, 0, 0
			}
			return 0, 0, regFailTransport, 0, 0
		}
		code = res.StatusCode
		switch {
		case code == 401 || code == 407:
			if answered || !r.cfg.hasAuth {
				return 0, code, regFailAuth, 0, 0
			}
			answered = true
			req = build()
			if err := authorize(req, res, &r.cfg.auth); err != nil {
				s.log.Warn("outbound registration: challenge not answered", "pool", r.key.pool, "target", r.key.target.String(), "error", err.Error())
				return 0, code, regFailAuth, 0, 0
			}
			continue
		case code >= 200 && code < 300:
			return grantedExpiry(res, contact, expires), code, "", 0, 0
		case code == 423:
			return 0, code, regFailRejected, 0, headerSeconds(res, "Min-Expires")
		case code >= 500 && code < 600:
			return 0, code, regFailUnavailable, headerSeconds(res, "Retry-After"), 0
		}
		return 0, code, regFailRejected, 0, 0
	}
}

// grantedExpiry is the expiry a 2xx to REGISTER granted our contact: its
// Contact's expires parameter, else the Expires header, else asked.
func grantedExpiry(res *sip.Response, ours *sip.ContactHeader, asked time.Duration) time.Duration {
	for _, h := range res.GetHeaders("Contact") {
		c, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		if c.Address.User != ours.Address.User || !strings.EqualFold(c.Address.Host, ours.Address.Host) || c.Address.Port != ours.Address.Port {
			continue
		}
		if v, ok := c.Params.Get("expires"); ok {
			if n, err := strconv.Atoi(v); err == nil && n >= 0 {
				return time.Duration(n) * time.Second
			}
		}
	}
	if d := headerSeconds(res, "Expires"); d > 0 || res.GetHeader("Expires") != nil {
		return d
	}
	return asked
}

// headerSeconds reads a header of delta-seconds (Retry-After may carry a
// comment after them); 0 when absent or invalid.
func headerSeconds(res *sip.Response, name string) time.Duration {
	h := res.GetHeader(name)
	if h == nil {
		return 0
	}
	v := strings.TrimSpace(h.Value())
	if i := strings.IndexAny(v, " ;("); i >= 0 {
		v = v[:i]
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 0 || n > 86400*7 {
		return 0
	}
	return time.Duration(n) * time.Second
}

// splitHostPort splits "host:port" ("[v6]:port"); an error without a port.
func splitHostPort(s string) (string, int, error) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().String(), int(ap.Port()), nil
	}
	i := strings.LastIndexByte(s, ':')
	if i < 0 || strings.Contains(s[:i], ":") {
		return s, 0, strconv.ErrSyntax
	}
	n, err := strconv.Atoi(s[i+1:])
	if err != nil || n <= 0 || n > 65535 {
		return s, 0, strconv.ErrSyntax
	}
	return s[:i], n, nil
}

// now is the time of day for outbound routes (clock in tests).
func (s *SBC) now() time.Time {
	if c := s.clock.Load(); c != nil {
		return (*c)()
	}
	return time.Now()
}
