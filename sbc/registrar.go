package sbc

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/internal/atomicfile"
	"github.com/sbc-project/sbc/policy"
)

// Registrations of remote users (stage 4/5 for REGISTER): a REGISTER of a
// trunk with allow_register is relayed to the registrar of the pool its
// routes give, with each device Contact replaced by a Contact of its own
// on the SBC's internal face (sip:TOKEN@face, regcache.go). The
// registrar's 200 is mapped back: the device sees its own Contacts with
// the expiry the registrar granted. Bindings enter the cache only once the
// registrar confirmed them, and leave it when the registrar confirms their
// removal, no longer lists them, or they expire.
//
// RFC 3261 10.3 step 8 has the registrar's 200 list every binding of the
// AoR. The SBC lists only the bindings of the device that sent the
// REGISTER (its own Contacts, or for a query the bindings from its
// source): the other bindings of the AoR are other devices' addresses or
// the internal network's, which topology hiding keeps from a device. A UA
// needs only its own bindings' expiry (RFC 3261 10.2.4).

// Results of sbc_registers_total.
const (
	regOK           = "ok"           // the registrar bound (or refreshed, or listed) the device's contacts
	regUnregistered = "unregistered" // the registrar confirmed a removal (expires 0, or Contact: *)
	regChallenged   = "challenged"   // 401/407 relayed
	regRejected     = "rejected"     // another final response of the registrar relayed
	regNoAnswer     = "no_answer"    // the registrar did not answer (408 to the device), or answered invalidly (502)
	regRefused      = "refused"      // refused by the SBC before the registrar (malformed, too many contacts, cache full, busy)
	regLocal        = "local"        // a refresh answered by the SBC (registrations.client_expires_max)
)

var regResults = []string{regOK, regUnregistered, regChallenged, regRejected, regNoAnswer, regRefused, regLocal}

// absorbSlack is how much longer than client_expires_max the registrar's
// binding must live for the SBC to answer a refresh itself: the device's
// next refresh (due within client_expires_max) then still finds it.
const absorbSlack = 32 * time.Second

// regKeyFile is the token key in server.state_dir: tokens survive a
// restart for devices that refresh from the same Call-ID and address.
const regKeyFile = "registrations.key"

// loadRegKey reads the token key from dir, or writes a new one there; no
// dir: a key for this process only.
func loadRegKey(dir string) ([]byte, error) {
	key := make([]byte, 32)
	if dir == "" {
		_, err := rand.Read(key)
		return key, err
	}
	path := filepath.Join(dir, regKeyFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		k, derr := hex.DecodeString(strings.TrimSpace(string(b)))
		if derr != nil || len(k) != 32 {
			return nil, fmt.Errorf("%s: not a 32-byte hex key", path)
		}
		return k, nil
	case !errors.Is(err, fs.ErrNotExist):
		return nil, err
	}
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, err
	}
	return key, atomicfile.Write(path, []byte(hex.EncodeToString(key)+"\n"), 0o600)
}

// regContact is one Contact of a REGISTER.
type regContact struct {
	uri      sip.Uri
	expires  int // the expires parameter; -1: none
	q        string
	instance string
	regID    string
	token    string
}

// regRequest is what a REGISTER asks.
type regRequest struct {
	wildcard bool
	contacts []regContact
}

// defaultExpires is the expiry of a binding the registrar's 2xx lists
// without one, when the device asked for none either (RFC 3261 10.2.1.1).
const defaultExpires = 3600

// maxExpires is where an expiry is capped (RFC 3261 20.19: 2**32-1).
const maxExpires = 1<<32 - 1

// parseExpires reads a delta-seconds value.
func parseExpires(v string) (int, bool) {
	v = strings.TrimSpace(v)
	if v == "" || len(v) > 20 {
		return 0, false
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil || n > maxExpires {
		return maxExpires, true
	}
	return int(n), true
}

// parseRegister checks the Contacts and expiry of a REGISTER (RFC 3261
// 10.3 step 6): a wildcard alone and with Expires: 0 only, at most max
// Contacts, expiry values that are numbers. Anything else is a 400.
func parseRegister(req *sip.Request, max int) (regRequest, verdict) {
	var rr regRequest
	bad := func(why string) (regRequest, verdict) {
		return regRequest{}, answer(stageRoute, reasonRegisterMalformed, 400, "Bad Request").charge(failMalformed).with("why", why)
	}
	hdrExp := -1
	if hs := req.GetHeaders("Expires"); len(hs) > 0 {
		if len(hs) > 1 {
			return bad("Expires twice")
		}
		n, ok := parseExpires(hs[0].Value())
		if !ok {
			return bad("Expires is no number")
		}
		hdrExp = n
	}
	cts := req.GetHeaders("Contact")
	if len(cts) > max {
		return regRequest{}, answer(stageRoute, reasonRegisterContacts, 400, "Bad Request").
			charge(failMalformed).with("contacts", len(cts), "max", max)
	}
	for _, h := range cts {
		ct, ok := h.(*sip.ContactHeader)
		if !ok {
			return bad("unreadable Contact")
		}
		if ct.Address.Wildcard {
			rr.wildcard = true
			continue
		}
		c := regContact{uri: *ct.Address.Clone(), expires: -1}
		if ct.Params != nil {
			if v, ok := ct.Params.Get("expires"); ok {
				n, ok := parseExpires(v)
				if !ok {
					return bad("Contact expires is no number")
				}
				c.expires = n
			}
			c.q, _ = ct.Params.Get("q")
			c.instance, _ = ct.Params.Get("+sip.instance")
			c.regID, _ = ct.Params.Get("reg-id")
		}
		if c.expires < 0 {
			c.expires = hdrExp
		}
		if c.uri.Host == "" {
			return bad("Contact without host")
		}
		rr.contacts = append(rr.contacts, c)
	}
	if rr.wildcard && (len(rr.contacts) > 0 || hdrExp != 0) {
		return bad("Contact: * with other Contacts or an Expires other than 0")
	}
	return rr, verdict{}
}

// relayRegister relays a REGISTER of a trunk that may register (an AoR
// locked for its source after failed guesses is dropped first,
// register_guard.go) to a target of the pool its routes give for the To
// user. The registrar sees one Contact per device binding on the SBC's
// internal face and a Call-ID of the SBC's own; the address-of-record
// (To/From) and the request-URI domain are kept: they are what the
// registrar registers. The handler waits for the registrar (the server
// transaction ends when it returns); at most registrations.max_pending
// REGISTERs wait at once.
func (s *SBC) relayRegister(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction) {
	if v := s.registerLocked(st, p, req); !v.pass() {
		s.act(ep, p, req, tx, v)
		return
	}
	rc := &st.pol.Registrations
	rr, v := parseRegister(req, rc.MaxBindingsPerAoR)
	if !v.pass() {
		s.regResult(regRefused)
		s.act(ep, p, req, tx, v)
		return
	}
	aor := aorKey(req.To().Address)
	callID := req.CallID().Value()
	var adding []string
	for i := range rr.contacts {
		c := &rr.contacts[i]
		c.token = s.regs.bindingToken(ep.name, aor, deviceKey(c.instance, c.regID, callID, p.src, c.uri.String()))
		if c.expires != 0 {
			adding = append(adding, c.token)
		}
	}
	clientMax := rc.ClientExpiresMax.Duration
	if clientMax > 0 && !rr.wildcard && len(rr.contacts) == 1 && rr.contacts[0].expires != 0 {
		c := rr.contacts[0]
		now := time.Now()
		if b, ok := s.regs.absorb(c.token, p.src, transportOf(req), callID, c.uri.String(), req.CSeq().SeqNo, now, clientMax+absorbSlack); ok {
			s.regResult(regLocal)
			back := sip.NewResponseFromRequest(req, 200, "OK", nil)
			back.AppendHeader(deviceContact(b.contact, clientExpiry(int(b.expires.Sub(now)/time.Second), c.expires, clientMax), b.instance, b.regID))
			back.AppendHeader(sip.NewHeader("Server", st.pol.Server.UserAgent))
			back.SetBody(nil)
			_ = tx.Respond(back)
			return
		}
	}
	pc, t, v := routeRegister(st, p, req)
	if !v.pass() {
		s.act(ep, p, req, tx, v)
		return
	}
	retry := sip.NewHeader("Retry-After", strconv.Itoa(max(st.pol.Routing.RetryAfter, 1)))
	if n := s.regPending.Add(1); n > int64(rc.MaxPending) {
		s.regPending.Add(-1)
		s.regResult(regRefused)
		s.act(ep, p, req, tx, answer(stageAdmit, reasonRegisterBusy, 503, "Service Unavailable", retry).with("pending", n-1))
		return
	}
	defer s.regPending.Add(-1)

	release, ok := s.regs.reserve(aor, adding, rc.MaxBindings, rc.MaxBindingsPerAoR)
	if !ok {
		s.regResult(regRefused)
		s.act(ep, p, req, tx, answer(stageAdmit, reasonRegistrationsFull, 503, "Service Unavailable", retry).
			with("bindings", s.regs.len(), "aor_bindings", len(s.regs.ofAoR(aor))))
		return
	}
	defer release()

	bep := s.realms[pc.Realm]
	face := bep.face(pc.Transport)
	out := sip.NewRequest(sip.REGISTER, sip.Uri{Scheme: "sip", Host: req.Recipient.Host, Port: req.Recipient.Port})
	out.AppendHeader(face.Via())
	mf := sip.MaxForwardsHeader(70)
	out.AppendHeader(&mf)
	from := &sip.FromHeader{DisplayName: req.From().DisplayName, Address: *req.From().Address.Clone(), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	out.AppendHeader(from)
	out.AppendHeader(&sip.ToHeader{DisplayName: req.To().DisplayName, Address: *req.To().Address.Clone(), Params: sip.NewParams()})
	// The same device registration keeps the same Call-ID towards the
	// registrar (refreshes are matched by Call-ID), without revealing it.
	sum := sha256.Sum256([]byte(callID + "\x00" + p.src.Addr().String()))
	cid := sip.CallIDHeader(hex.EncodeToString(sum[:12]))
	out.AppendHeader(&cid)
	out.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.REGISTER})
	if rr.wildcard {
		out.AppendHeader(sip.NewHeader("Contact", "*"))
	}
	for _, c := range rr.contacts {
		// The device's instance and reg-id stay with the SBC: the
		// registrar sees one plain binding per device (no RFC 5626 flow
		// of its own to keep).
		h := face.Contact(c.token)
		h.Params = sip.NewParams()
		if c.q != "" {
			h.Params.Add("q", c.q)
		}
		if c.expires >= 0 {
			h.Params.Add("expires", strconv.Itoa(c.expires))
		}
		out.AppendHeader(h)
	}
	st.headers.Copy(out, req, "content-type")
	out.AppendHeader(sip.NewHeader("User-Agent", st.pol.Server.UserAgent))
	copyBody(out, req)

	ctx, cancel := context.WithTimeout(context.Background(), 64*sip.T1)
	defer cancel()
	res, err := bep.do(ctx, out, pc.Transport, t.addr)
	if err != nil {
		// Not a drop: the registrar did not answer.
		s.regResult(regNoAnswer)
		s.log.Warn("REGISTER relay failed", "pool", pc.Name, "target", t.addr.String(), "error", err.Error())
		s.reject(ep, req, tx, 408, "Request Timeout")
		return
	}
	if !s.validResponse(res) {
		// The invalid response is the drop (stage validate).
		s.regResult(regNoAnswer)
		s.reject(ep, req, tx, 502, "Bad Gateway")
		return
	}
	back := sip.NewResponseFromRequest(req, res.StatusCode, res.Reason, nil)
	st.headers.Copy(back, res, "content-type")
	switch {
	case res.IsSuccess():
		for _, h := range s.applyRegistered(ep, p, req, aor, rr, res, clientMax) {
			back.AppendHeader(h)
		}
	case res.StatusCode == 401 || res.StatusCode == 407:
		s.regResult(regChallenged)
	default:
		s.regResult(regRejected)
	}
	back.AppendHeader(sip.NewHeader("Server", st.pol.Server.UserAgent))
	copyBody(back, res)
	// Released and watched before the answer leaves: the device's next
	// REGISTER (its credentials after a 401) finds the room given back,
	// the challenge's nonce known and a lock or block in force.
	release()
	s.watchRegister(st, p, req, res)
	_ = tx.Respond(back)
}

// applyRegistered updates the cache from the registrar's 2xx to rr and
// returns the Contacts of the device's answer: its own Contacts with the
// expiry granted.
func (s *SBC) applyRegistered(ep *endpoint, p peer, req *sip.Request, aor string, rr regRequest, res *sip.Response, clientMax time.Duration) []sip.Header {
	// The bindings the registrar holds, by token, with their expiry.
	resExp := -1
	if h := res.GetHeader("Expires"); h != nil {
		if n, ok := parseExpires(h.Value()); ok {
			resExp = n
		}
	}
	granted := map[string]int{}
	for _, h := range res.GetHeaders("Contact") {
		ct, ok := h.(*sip.ContactHeader)
		if !ok || ct.Address.Wildcard || !isToken(ct.Address.User) {
			continue
		}
		e := resExp
		if ct.Params != nil {
			if v, ok := ct.Params.Get("expires"); ok {
				if n, ok := parseExpires(v); ok {
					e = n
				}
			}
		}
		if e != 0 {
			granted[ct.Address.User] = e // -1: listed without an expiry
		}
	}
	now := time.Now()
	var hdrs []sip.Header
	bound, removed := 0, 0
	if rr.wildcard {
		removed += s.regs.removeAoR(aor)
	}
	mine := map[string]bool{}
	for _, c := range rr.contacts {
		mine[c.token] = true
		g, ok := granted[c.token]
		if g < 0 {
			// Listed without an expiry (RFC 3261 10.3 step 8 says it
			// must have one): what the device asked, or the default.
			g = c.expires
			if g < 0 {
				g = defaultExpires
			}
		}
		if c.expires == 0 || !ok {
			if s.regs.remove(c.token) {
				removed++
			}
			continue
		}
		s.regs.put(&binding{token: c.token, aor: aor, realm: ep.name, trunk: p.trunk.Name, transport: transportOf(req),
			src: p.src, contact: c.uri, instance: c.instance, regID: c.regID, callID: strings.Clone(req.CallID().Value()), cseq: req.CSeq().SeqNo,
			expires: now.Add(time.Duration(g) * time.Second)})
		bound++
		hdrs = append(hdrs, deviceContact(c.uri, clientExpiry(g, c.expires, clientMax), c.instance, c.regID))
	}
	// The AoR's other bindings of the SBC: those the registrar no longer
	// lists are gone there (expired, removed); the others get its expiry.
	// For a query (no Contact), the device's answer lists the bindings
	// from its source.
	for _, b := range s.regs.ofAoR(aor) {
		if mine[b.token] {
			continue
		}
		g, ok := granted[b.token]
		if !ok {
			s.regs.remove(b.token)
			removed++
			continue
		}
		if g < 0 {
			g = int(time.Until(b.expires) / time.Second)
		}
		if len(rr.contacts) == 0 && !rr.wildcard && b.src == p.src {
			hdrs = append(hdrs, deviceContact(b.contact, clientExpiry(g, -1, clientMax), b.instance, b.regID))
		}
	}
	switch {
	case bound > 0 || (len(rr.contacts) == 0 && !rr.wildcard):
		s.regResult(regOK)
	default:
		s.regResult(regUnregistered)
	}
	s.log.Debug("registration", "aor", aor, "source", p.src.String(), "transport", transportOf(req),
		"bound", bound, "removed", removed, "bindings", s.regs.len())
	return hdrs
}

// clientExpiry is the expiry a device is told: what the registrar granted,
// at most client_expires_max (0: no bound) and never more than the device
// asked for (asked < 0: it asked nothing).
func clientExpiry(granted, asked int, clientMax time.Duration) int {
	e := granted
	if m := int(clientMax / time.Second); m > 0 && e > m {
		e = m
	}
	if asked > 0 && e > asked {
		e = asked
	}
	return max(e, 1)
}

// deviceContact is a device's own Contact with the expiry granted (and its
// RFC 5626 parameters, which a registrar echoes).
func deviceContact(u sip.Uri, expires int, instance, regID string) *sip.ContactHeader {
	h := &sip.ContactHeader{Address: *u.Clone(), Params: sip.NewParams()}
	h.Params.Add("expires", strconv.Itoa(expires))
	if instance != "" {
		h.Params.Add("+sip.instance", instance)
	}
	if regID != "" {
		h.Params.Add("reg-id", regID)
	}
	return h
}

func (s *SBC) regResult(r string) { s.metrics.Registers.WithLabelValues(r).Inc() }

// routeRegister is stage 4 for a REGISTER: the pool its routes give for
// the To user, and a target of it; or the verdict when there is none.
func routeRegister(st *snapshot, p peer, req *sip.Request) (*policy.Pool, *target, verdict) {
	pc := st.pol.RouteFor(p.trunk.Name, req.To().Address.User)
	if pc == nil {
		return nil, nil, answer(stageRoute, reasonNoRoute, 404, "Not Found").with("to_user", req.To().Address.User)
	}
	t := st.pools[pc.Name].pick(nil)
	if t == nil {
		return nil, nil, answer(stageRoute, reasonNoTarget, 503, "Service Unavailable",
			sip.NewHeader("Retry-After", strconv.Itoa(st.pol.Routing.RetryAfter))).with("pool", pc.Name)
	}
	return pc, t, verdict{}
}

// regSweepEvery is how often expired bindings are swept and connection
// bindings checked.
const regSweepEvery = 2 * time.Second

// regLoop sweeps the cache and, every registrations.keepalive_interval,
// pings the bindings over UDP (OPTIONS) to keep their NAT bindings open.
// A round of pings runs beside the sweep; the next round starts only once
// it is over.
func (s *SBC) regLoop(ctx context.Context) {
	t := time.NewTicker(regSweepEvery)
	defer t.Stop()
	var lastPing time.Time
	var pinging sync.WaitGroup
	var busy atomic.Bool
	defer pinging.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.regs.sweep(now, func(b binding) bool {
				ep := s.realms[b.realm]
				return ep == nil || !ep.connUp(b.transport, b.src)
			})
			iv := s.state.Load().pol.Registrations.KeepaliveInterval.Duration
			if iv > 0 && now.Sub(lastPing) >= iv && busy.CompareAndSwap(false, true) {
				lastPing = now
				pinging.Add(1)
				go func() {
					defer pinging.Done()
					defer busy.Store(false)
					s.pingBindings(ctx)
				}()
			}
		}
	}
}

// pingTimeout bounds one keep-alive OPTIONS transaction.
const pingTimeout = 5 * time.Second

// pingConcurrency bounds the keep-alive OPTIONS in flight.
const pingConcurrency = 16

// pingBindings sends one OPTIONS to each binding over UDP and waits for
// them (each bounded by pingTimeout). An answer of any kind, or none, changes
// nothing: the ping is for the NAT on the way, not a health check.
func (s *SBC) pingBindings(ctx context.Context) {
	flows := s.regs.udpFlows()
	sem := make(chan struct{}, pingConcurrency)
	var wg sync.WaitGroup
	ua := s.state.Load().pol.Server.UserAgent
	for _, b := range flows {
		ep := s.realms[b.realm]
		if ep == nil {
			continue
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			wg.Wait()
			return
		}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			req := keepaliveOptions(ep, b, ua)
			c, cancel := context.WithTimeout(ctx, pingTimeout)
			defer cancel()
			if _, err := ep.do(c, req, "udp", b.src); err != nil {
				s.log.Debug("keep-alive OPTIONS not answered", "realm", b.realm, "aor", b.aor, "error", err.Error())
			}
		}()
	}
	wg.Wait()
}

// keepaliveOptions is the OPTIONS that keeps b's flow open.
func keepaliveOptions(ep *endpoint, b binding, ua string) *sip.Request {
	face := ep.face("udp")
	req := sip.NewRequest(sip.OPTIONS, *b.contact.Clone())
	req.AppendHeader(face.Via())
	mf := sip.MaxForwardsHeader(70)
	req.AppendHeader(&mf)
	from := &sip.FromHeader{Address: face.URI(""), Params: sip.NewParams()}
	from.Params.Add("tag", sip.GenerateTagN(16))
	req.AppendHeader(from)
	req.AppendHeader(&sip.ToHeader{Address: *b.contact.Clone(), Params: sip.NewParams()})
	cid := sip.CallIDHeader(newID())
	req.AppendHeader(&cid)
	req.AppendHeader(&sip.CSeqHeader{SeqNo: 1, MethodName: sip.OPTIONS})
	req.AppendHeader(sip.NewHeader("User-Agent", ua))
	req.SetBody(nil)
	return req
}
