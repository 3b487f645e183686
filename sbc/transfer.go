package sbc

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
)

// Transfers (RFC 3515 REFER, RFC 3891 Replaces, RFC 3892 Referred-By).
//
// A REFER inside a call is handled by the refer mode of whoever sent it:
// the trunk's refer for the carrier's leg of an inbound call, the pool's
// refer for a pool target's leg (a backend's, or a carrier pool's).
//
//   - relay (default): the REFER goes to the other leg like any other
//     in-dialog request (onRequest), with Refer-To re-homed on the SBC's
//     face of the receiving leg (the transferee's new INVITE comes back
//     through the SBC and is routed as any call from that side), an
//     embedded Replaces mapped to the same call's dialog on the receiving
//     side, and Referred-By re-homed the same way. NOTIFYs (sipfrag) are
//     relayed back as in-dialog requests.
//   - local (3PCC): the SBC carries the transfer out itself and the other
//     side never sees the REFER: 202, NOTIFY "100 Trying", a new leg to
//     the Refer-To user by the routing of the referrer's side, NOTIFY of
//     its final answer; on a 2xx the new leg takes the referrer's place in
//     the call (the media relay's side of the referrer is re-pointed at
//     the new leg: the transferee's SDP, relay address and keys do not
//     change, it is sent nothing) and the referrer's leg gets a BYE.
//   - refuse: 403 with a Reason.
//
// Policing (every mode): exactly one Refer-To, at most maxReferTo bytes,
// a sip: or sips: URI with a user part (tel:, http: and the like: 416);
// of the URI's embedded headers only Replaces is kept (mapped), the
// others are removed and counted (transfer/refer_to_header); a Replaces
// that names no dialog the SBC has is refused (403, not 481: a 481 to an
// in-dialog request would end the transferor's call, RFC 5057).
//
// An INVITE with Replaces that names, by its from-tag, a dialog the SBC
// placed on the realm it arrives on (the value a relayed Refer-To
// carried) is a hairpin: it goes to that dialog's peer, with Replaces
// unchanged (transferHairpin). That is how an attended transfer reaches
// the party it replaces: the transferee's INVITE comes to the SBC, which
// hands it to the holder of the replaced dialog.

// maxReferTo bounds a Refer-To header value (bytes).
const maxReferTo = 1024

// Results of sbc_transfers_total.
const (
	xferAccepted  = "accepted"  // relay: the other side accepted the REFER (2xx)
	xferRejected  = "rejected"  // relay: the other side refused it; refuse: refused by policy
	xferInvalid   = "invalid"   // refused by the SBC's policing of Refer-To (any mode)
	xferCompleted = "completed" // local: the new leg answered and took the referrer's place
	xferFailed    = "failed"    // local: the new leg did not answer 2xx (or could not be placed)
)

// xferModeResults are the (mode, result) pairs sbc_transfers_total
// carries, as "mode/result".
var xferModeResults = []string{"relay/" + xferAccepted, "relay/" + xferRejected, "relay/" + xferInvalid,
	"local/" + xferCompleted, "local/" + xferFailed, "local/" + xferInvalid, "refuse/" + xferRejected}

// xfer is a transfer the SBC carries out itself (refer = "local").
type xfer struct {
	referrer, transferee *leg
	br                   *branch // the new leg's INVITE
	event                string  // the Event header of the NOTIFYs ("refer;id=<REFER's CSeq>")
	done                 bool    // the final NOTIFY was queued
}

// referMode is the refer mode for a REFER received on leg from.
func (c *call) referMode(from *leg) string {
	mode := ""
	switch {
	case from == c.a && c.trunk != nil:
		mode = c.trunk.Refer
	case from == c.a:
		if sp := c.st.pol.Pool(c.srcPool); sp != nil {
			mode = sp.Refer
		}
	case c.kept != nil:
		mode = c.kept.pool.cfg.Refer
	}
	if mode == "" {
		return "relay"
	}
	return mode
}

func (c *call) countTransfer(mode, result string) {
	c.s.metrics.Transfers.WithLabelValues(mode, result).Inc()
}

// onRefer polices a REFER received on from (towards to) and applies the
// refer mode. It returns the Refer-To (and Referred-By, or nil) to relay
// on to, or handled: the REFER was answered here.
func (c *call) onRefer(from, to *leg, req *sip.Request, reject func(int, string, ...sip.Header)) (rt *sip.ReferToHeader, rb sip.Header, handled bool) {
	mode := c.referMode(from)
	refuse := func(code int, phrase string, r reason, attrs ...any) {
		c.s.drop(stageTransfer, r)
		c.logf("REFER refused", append([]any{"reason", string(r), "mode", mode, "leg", from.name}, attrs...)...)
		reject(code, phrase, sip.NewHeader("Reason", `SIP;cause=`+strconv.Itoa(code)+`;text="`+string(r)+`"`))
	}
	if mode == "refuse" {
		refuse(403, "Forbidden", reasonReferRefused)
		c.countTransfer(mode, xferRejected)
		return nil, nil, true
	}
	hs := req.GetHeaders("Refer-To")
	if len(hs) != 1 || len(hs[0].Value()) > maxReferTo {
		refuse(400, "Bad Request", reasonReferToInvalid, "refer_to_headers", len(hs))
		c.countTransfer(mode, xferInvalid)
		return nil, nil, true
	}
	h := req.ReferTo()
	if h == nil {
		refuse(400, "Bad Request", reasonReferToInvalid)
		c.countTransfer(mode, xferInvalid)
		return nil, nil, true
	}
	if s := strings.ToLower(h.Address.Scheme); s != "sip" && s != "sips" {
		refuse(416, "Unsupported URI Scheme", reasonReferToScheme, "scheme", capped(h.Address.Scheme))
		c.countTransfer(mode, xferInvalid)
		return nil, nil, true
	}
	if h.Address.User == "" {
		refuse(400, "Bad Request", reasonReferToInvalid, "refer_to", "no user part")
		c.countTransfer(mode, xferInvalid)
		return nil, nil, true
	}
	// The embedded headers: Replaces only (mapped); the others removed.
	var replaces string
	if hp := h.Address.Headers; hp != nil {
		for _, k := range hp.Keys() {
			v, _ := hp.Get(k)
			if !strings.EqualFold(k, "Replaces") {
				c.s.drop(stageTransfer, reasonReferToHeader)
				c.logf("Refer-To header removed", "header", capped(k))
				continue
			}
			raw, err := url.QueryUnescape(v)
			if err != nil || replaces != "" {
				refuse(400, "Bad Request", reasonReferToInvalid, "replaces", capped(v))
				c.countTransfer(mode, xferInvalid)
				return nil, nil, true
			}
			replaces = raw
		}
	}
	if mode == "local" {
		if replaces != "" {
			refuse(501, "Not Implemented", reasonReferLocalUnsupported, "why", "attended transfer (Replaces) is relayed only")
			c.countTransfer(mode, xferInvalid)
			return nil, nil, true
		}
		c.startLocalTransfer(from, to, req, h.Address.User, reject)
		return nil, nil, true
	}
	u := to.uri(h.Address.User)
	if replaces != "" {
		rm := c.referMap
		mapped, ok := "", false
		if rm != nil && rm.raw == replaces {
			mapped, ok = rm.mapped, rm.ok
		}
		if !ok {
			refuse(403, "Forbidden", reasonReferReplaces)
			c.countTransfer(mode, xferInvalid)
			return nil, nil, true
		}
		u.Headers = sip.NewParams()
		u.Headers.Add("Replaces", url.QueryEscape(mapped))
	}
	rt = &sip.ReferToHeader{Address: u}
	if by := req.ReferredBy(); by != nil {
		// RFC 3892: the referrer, as the SBC on the receiving leg (its
		// user part kept; host, parameters and cid dropped).
		rb = &sip.ReferredByHeader{DisplayName: by.DisplayName, Address: to.uri(by.Address.User)}
	}
	return rt, rb, false
}

// referAnswered counts a relayed REFER's final answer.
func (c *call) referAnswered(rel *relay, code int) {
	if rel.req.Method != sip.REFER {
		return
	}
	if code >= 200 && code < 300 {
		c.countTransfer("relay", xferAccepted)
	} else {
		c.countTransfer("relay", xferRejected)
	}
}

// referReplaces is a REFER's Refer-To Replaces (raw: unescaped) and its
// mapping to the receiving side (mapReplaces), made before the REFER's
// transition: the dialog it names may be another call's, whose lock a
// transition (under its own call's lock) must not take.
type referReplaces struct {
	raw, mapped string
	ok          bool
}

// referReplaces maps the Replaces of req's Refer-To, or returns nil.
func (s *SBC) referReplaces(req *sip.Request) *referReplaces {
	h := req.ReferTo()
	if h == nil || h.Address.Headers == nil {
		return nil
	}
	for _, k := range h.Address.Headers.Keys() {
		if !strings.EqualFold(k, "Replaces") {
			continue
		}
		v, _ := h.Address.Headers.Get(k)
		raw, err := url.QueryUnescape(v)
		if err != nil {
			return nil
		}
		mapped, ok := s.mapReplaces(raw)
		return &referReplaces{raw: raw, mapped: mapped, ok: ok}
	}
	return nil
}

// parseReplaces splits a Replaces value (RFC 3891): Call-ID, to-tag,
// from-tag and the other parameters (early-only).
func parseReplaces(v string) (callID, toTag, fromTag string, rest []string) {
	parts := strings.Split(v, ";")
	callID = strings.TrimSpace(parts[0])
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		switch strings.ToLower(k) {
		case "to-tag":
			toTag = val
		case "from-tag":
			fromTag = val
		default:
			rest = append(rest, strings.TrimSpace(p))
		}
	}
	return callID, toTag, fromTag, rest
}

func replacesValue(callID, toTag, fromTag string, rest []string) string {
	out := callID + ";to-tag=" + toTag + ";from-tag=" + fromTag
	for _, r := range rest {
		out += ";" + r
	}
	return out
}

// transferHairpin is the plan of an INVITE arriving on ep whose Replaces
// names, by its from-tag, a dialog of a call through the SBC on that same
// realm (the SBC's tag is the from-tag: the peer of that dialog is the
// one to be replaced from, RFC 3891): the new call goes to that dialog's
// peer, with Replaces as it is. nil when the Replaces is not such a one.
func (s *SBC) transferHairpin(ep *endpoint, req *sip.Request) *callPlan {
	h := req.GetHeader("Replaces")
	if h == nil {
		return nil
	}
	callID, toTag, fromTag, _ := parseReplaces(h.Value())
	if callID == "" || fromTag == "" {
		return nil
	}
	oc, l := s.calls.get(callID, fromTag)
	if oc == nil || oc.done.Load() || l.ep != ep || l.getRemoteTag() != toTag || l.transport == "wss" {
		return nil
	}
	oc.mu.Lock()
	var pc policy.Pool
	switch {
	case l != oc.a && oc.kept != nil:
		pc = *oc.kept.pool.cfg
	case oc.trunk != nil:
		pc = policy.Pool{MediaEncryption: oc.trunk.MediaEncryption}
	default:
		pc = policy.Pool{MediaEncryption: "none"}
	}
	oc.mu.Unlock()
	dest := l.dest()
	l.mu.Lock()
	user := l.target.User
	l.mu.Unlock()
	off := false
	pc.Name, pc.Realm, pc.Transport, pc.TCPForLarge, pc.Auth, pc.Refer = "transfer", ep.name, l.transport, &off, nil, "relay"
	if pc.MediaEncryption == "any" && l == oc.a {
		pc.MediaEncryption = "none"
	}
	t := &target{pool: pc.Name, addr: dest, up: true}
	pl := &pool{cfg: &pc, targets: []*target{t}, weights: []int{1}, prios: []int{0}, hairpin: true}
	return &callPlan{pools: []*pool{pl}, user: user, toUser: l.remoteURI.User, fromUser: req.From().Address.User, hairpin: true}
}

// startLocalTransfer carries out a REFER on from (refer = "local"): 202,
// NOTIFY 100, and the INVITE of the new leg that is to take from's place.
// Under the call's lock.
func (c *call) startLocalTransfer(from, to *leg, req *sip.Request, user string, reject func(int, string, ...sip.Header)) {
	refuse := func(code int, phrase string, r reason, attrs ...any) {
		c.s.drop(stageTransfer, r)
		c.logf("REFER refused", append([]any{"reason", string(r), "mode", "local", "leg", from.name}, attrs...)...)
		reject(code, phrase, sip.NewHeader("Reason", `SIP;cause=`+strconv.Itoa(code)+`;text="`+string(r)+`"`))
		c.countTransfer("local", xferInvalid)
	}
	switch {
	case c.phase != phConfirmed || c.xfer != nil:
		reject(491, "Request Pending", sip.NewHeader("Retry-After", "1"))
		return
	case c.media == nil:
		refuse(501, "Not Implemented", reasonReferLocalUnsupported, "why", "media not anchored")
		return
	}
	plan, why := c.transferPlan(from == c.a, user)
	if why != "" {
		refuse(403, "Forbidden", why, "user", capped(user))
		return
	}
	var pl *pool
	var t *target
	for _, p := range plan.pools {
		if t = p.pick(nil); t != nil {
			pl = p
			break
		}
	}
	if t == nil {
		refuse(503, "Service Unavailable", reasonNoTarget, "user", capped(user))
		return
	}
	if pl.cfg.Realm != from.ep.name {
		// The relay's ports of the referrer's side are on its realm.
		refuse(501, "Not Implemented", reasonReferLocalUnsupported, "why", "the target is on another realm than the referrer", "pool", pl.cfg.Name)
		return
	}
	side := "b"
	if from == c.a {
		side = "a"
	}
	tside := "a"
	if side == "a" {
		tside = "b"
	}
	offer, err := c.media.body(tside, true, "application/sdp", c.lastSDP[tside])
	c.closeReplaced()
	if err != nil || len(offer) == 0 {
		refuse(488, "Not Acceptable Here", reasonReferLocalUnsupported, "why", "no SDP to offer the new leg", "error", errString(err))
		return
	}
	nl := c.xferLeg(pl, t, plan.user, from, to)
	inv := nl.newRequest(sip.INVITE, 0, c.st.pol.Server.UserAgent)
	nl.inviteCSeq = inv.CSeq().SeqNo
	ct := sip.ContentTypeHeader("application/sdp")
	inv.AppendHeader(&ct)
	inv.SetBody(offer)
	c.attempts++
	br := &branch{n: c.attempts, tgt: t, pool: pl, leg: nl, inv: inv, xfer: true,
		acks: map[string][]byte{}, byed: map[string]bool{}}
	c.branches = append(c.branches, br)
	c.xfer = &xfer{referrer: from, transferee: to, br: br, event: "refer;id=" + strconv.FormatUint(uint64(req.CSeq().SeqNo), 10)}
	reject(202, "Accepted")
	c.notifyXfer(100, "Trying")
	c.logf("transfer carried out by the sbc", "leg", from.name, "user", capped(plan.user), "pool", pl.cfg.Name, "target", t.addr.String())
	c.queueAct(action{kind: actInvite, br: br})
	c.startTimer(timerKey{kind: tmTransfer, id: br.n}, c.st.limits.RingTimeout.Duration)
}

// transferPlan routes a local transfer's new leg, which takes the place
// of the referrer (fromA: the A-leg) on its side: towards the backends,
// as a call from the call's trunk (or to the call's source pool); towards
// the carriers, by the outbound route of the call's backend pool.
func (c *call) transferPlan(fromA bool, user string) (*callPlan, reason) {
	pol := c.st.pol
	switch {
	case c.route == nil && c.trunk != nil && !fromA:
		// An inbound call's backend transfers the carrier: to the pool
		// the trunk's routes give the user.
		pc := pol.RouteFor(c.trunk.Name, user)
		if pc == nil || c.st.pools[pc.Name] == nil {
			return nil, reasonNoRoute
		}
		return &callPlan{pools: []*pool{c.st.pools[pc.Name]}, user: user}, ""
	case c.route != nil && fromA:
		// An outbound call's backend transfers the carrier: to a target
		// of its own pool.
		if c.st.pools[c.srcPool] == nil {
			return nil, reasonNoRoute
		}
		return &callPlan{pools: []*pool{c.st.pools[c.srcPool]}, user: user}, ""
	case c.route == nil && c.trunk == nil:
		return nil, reasonNoRoute // a hairpin (itself a transfer)
	}
	// A carrier transfers the backend: out by the backend pool's route.
	src := c.srcPool
	if c.route == nil {
		src = c.pools[0].cfg.Name
	}
	r := pol.OutboundRouteFor(src, user)
	if r == nil {
		return nil, reasonNoOutboundRoute
	}
	number := r.Normalise(user)
	if why, _ := deniedDestination(&pol.Outbound, user, number); why != "" {
		return nil, why
	}
	plan := &callPlan{user: number, route: r}
	for _, n := range r.Pools {
		if pl := c.st.pools[n]; pl != nil {
			plan.pools = append(plan.pools, pl)
		}
	}
	return plan, ""
}

// xferLeg is the new leg of a local transfer towards target t of pool
// pl: the SBC is its UAC; it carries the transferee's identity (the user
// part the transferee's leg knows it by) to the Refer-To user.
func (c *call) xferLeg(pl *pool, t *target, user string, replaced, transferee *leg) *leg {
	ep := c.s.realms[pl.cfg.Realm]
	tr := pl.cfg.Transport
	face := ep.face(tr)
	host := t.addr.Addr().String()
	l := &leg{
		name: replaced.name, ep: ep, transport: tr, peer: t.addr, placed: true,
		callID: newID(), localTag: sip.GenerateTagN(16),
		localURI:  sip.Uri{Scheme: "sip", User: transferee.remoteURI.User, Host: face.Host},
		localName: transferee.remoteName,
		remoteURI: sip.Uri{Scheme: "sip", User: user, Host: host},
		target:    sip.Uri{Scheme: "sip", User: user, Host: host, Port: int(t.addr.Port())},
		routes:    []sip.Uri{},
	}
	if tr != "udp" {
		l.target.UriParams = sip.NewParams()
		l.target.UriParams.Add("transport", tr)
	}
	l.cseq.Store(1)
	return l
}

// notifyXfer queues a NOTIFY (message/sipfrag) of the local transfer's
// progress to the referrer; a final status ends the subscription.
func (c *call) notifyXfer(code int, phrase string) {
	x := c.xfer
	if x == nil || x.done {
		return
	}
	n := x.referrer.newRequest(sip.NOTIFY, 0, c.st.pol.Server.UserAgent)
	n.AppendHeader(sip.NewHeader("Event", x.event))
	state := "active;expires=60"
	if code >= 200 {
		state = "terminated;reason=noresource"
		x.done = true
	}
	n.AppendHeader(sip.NewHeader("Subscription-State", state))
	ct := sip.ContentTypeHeader("message/sipfrag;version=2.0")
	n.AppendHeader(&ct)
	n.SetBody([]byte(fmt.Sprintf("SIP/2.0 %d %s\r\n", code, phrase)))
	c.queueAct(action{kind: actSend, leg: x.referrer, req: n})
}

// onXferResponse handles a response to the local transfer's INVITE.
func (c *call) onXferResponse(br *branch, res *sip.Response) {
	tag := tagOf(res.To().Params)
	x := c.xfer
	live := x != nil && x.br == br && !br.abandoned && c.phase == phConfirmed
	if res.IsProvisional() {
		if br.state == brCalling {
			br.state = brEarly
		}
		if !live {
			if res.StatusCode > 100 || !br.cancelSent {
				c.sendCancel(br)
			}
			return
		}
		if res.StatusCode == 180 || res.StatusCode == 183 {
			c.notifyXfer(res.StatusCode, res.Reason)
		}
		return
	}
	if !res.IsSuccess() {
		if br.state >= brAnswered {
			return
		}
		br.state = brFailed
		c.stopTimer(timerKey{kind: tmTransfer, id: br.n})
		c.stopTimer(timerKey{kind: tmCancel, id: br.n})
		if live {
			c.xferFailed(res.StatusCode, res.Reason)
		}
		return
	}
	c.stopTimer(timerKey{kind: tmTransfer, id: br.n})
	c.stopTimer(timerKey{kind: tmCancel, id: br.n})
	if raw := br.acks[tag]; raw != nil {
		if ack := parseRequest(raw); ack != nil {
			c.queueAct(action{kind: actWrite, leg: br.leg, req: ack}) // a retransmitted 2xx
		}
		return
	}
	if !live || br.state >= brAnswered {
		// Given up (or a second dialog of a fork): confirm and hang up.
		d := br.leg
		if br.state >= brAnswered || br.leg.hasRemote() && !br.leg.remoteTagIs(tag) {
			d = br.leg.fork(tag, res)
		} else {
			d.setRemote(tag, res.Contact(), recordRoutes(res, true))
		}
		br.state = brAnswered
		ack := d.newRequest(sip.ACK, d.inviteCSeq, c.st.pol.Server.UserAgent)
		ack.SetBody(nil)
		br.acks[strings.Clone(tag)] = requestBytes(ack)
		br.byed[tag] = true
		c.queueAct(action{kind: actWrite, leg: d, req: ack})
		c.byeLeg(d, "")
		return
	}
	br.state = brAnswered
	nl := br.leg
	nl.setRemote(tag, res.Contact(), recordRoutes(res, true))
	ack := nl.newRequest(sip.ACK, nl.inviteCSeq, c.st.pol.Server.UserAgent)
	ack.SetBody(nil)
	br.acks[strings.Clone(tag)] = requestBytes(ack)
	c.queueAct(action{kind: actWrite, leg: nl, req: ack})
	side := "b"
	if x.referrer == c.a {
		side = "a"
	}
	var ct string
	if h := res.ContentType(); h != nil {
		ct = h.Value()
	}
	_, err := c.media.body(side, false, ct, res.Body())
	c.closeReplaced()
	if err != nil || len(res.Body()) == 0 {
		c.logf("transfer target's answer not usable; hanging it up", "error", errString(err))
		br.byed[tag] = true
		c.byeLeg(nl, "")
		c.xferFailed(488, "Not Acceptable Here")
		return
	}
	c.lastSDP[side] = res.Body()
	// The new leg takes the referrer's place.
	old := x.referrer
	if old == c.a {
		c.a = nl
	} else {
		c.kept = br
	}
	c.detached = append(c.detached, old)
	c.countTransfer("local", xferCompleted)
	c.logf("transfer completed", "leg", old.name, "target", nl.peer.String(), "b_call_id", nl.callID)
	c.notifyXfer(200, "OK")
	c.xfer = nil
	c.byeLeg(old, "transferred")
}

// onXferDone: the local transfer's INVITE transaction ended without a
// final response.
func (c *call) onXferDone(br *branch, err error) {
	if br.state == brCalling || br.state == brEarly {
		br.state = brGone
	}
	c.stopTimer(timerKey{kind: tmTransfer, id: br.n})
	c.stopTimer(timerKey{kind: tmCancel, id: br.n})
	if c.xfer != nil && c.xfer.br == br && br.state == brGone {
		c.logf("transfer target not reached", "target", br.tgt.addr.String(), "error", errString(err))
		c.xferFailed(408, "Request Timeout")
	}
}

// xferTimeout: the transfer target did not answer in calls.ring_timeout.
func (c *call) xferTimeout(n int) {
	x := c.xfer
	if x == nil || x.br.n != n {
		return
	}
	c.logf("transfer target did not answer", "target", x.br.tgt.addr.String())
	c.abandon(x.br)
	c.xferFailed(408, "Request Timeout")
}

// xferFailed ends a local transfer that did not complete: the referrer
// hears the status; the call goes on as it was.
func (c *call) xferFailed(code int, phrase string) {
	c.countTransfer("local", xferFailed)
	c.notifyXfer(code, phrase)
	c.xfer = nil
}

// endTransfer gives up a local transfer when the call ends.
func (c *call) endTransfer() {
	if x := c.xfer; x != nil {
		c.abandon(x.br)
		c.countTransfer("local", xferFailed)
		c.xfer = nil
	}
}

// detachedLeg reports whether l is a leg a local transfer took out of
// the call (its BYE is answered and ends nothing).
func (c *call) detachedLeg(l *leg) bool {
	for _, d := range c.detached {
		if d == l {
			return true
		}
	}
	return false
}
