package sbc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
)

// relayRegister relays a REGISTER of a trunk that may register (stage 4/5
// for registrations; an AoR locked for its source after failed guesses is
// dropped first, register_guard.go) to a target of the pool its routes
// give for the To user. The registrar sees the SBC's internal face as the contact and a
// Call-ID of the SBC's own; the carrier sees its own contacts echoed. The
// address-of-record (To/From) and the request-URI domain are kept: they
// are what the registrar registers.
//
// Calls towards registered contacts (from the backends outwards) are not
// routed yet; the registration reaches the registrar so that it can
// authenticate and account for it.
func (s *SBC) relayRegister(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction) {
	if v := s.registerLocked(st, p, req); !v.pass() {
		s.act(ep, p, req, tx, v)
		return
	}
	pc, t, v := routeRegister(st, p, req)
	if !v.pass() {
		s.act(ep, p, req, tx, v)
		return
	}
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
	// The same carrier registration keeps the same Call-ID towards the
	// registrar (refreshes are matched by Call-ID), without revealing it.
	sum := sha256.Sum256([]byte(req.CallID().Value() + "\x00" + p.src.Addr().String()))
	cid := sip.CallIDHeader(hex.EncodeToString(sum[:12]))
	out.AppendHeader(&cid)
	out.AppendHeader(&sip.CSeqHeader{SeqNo: req.CSeq().SeqNo, MethodName: sip.REGISTER})
	for _, h := range req.GetHeaders("Contact") {
		ct, ok := h.(*sip.ContactHeader)
		if !ok {
			continue
		}
		if ct.Address.Wildcard {
			out.AppendHeader(sip.NewHeader("Contact", "*"))
			continue
		}
		c := face.Contact(ct.Address.User)
		if v, ok := ct.Params.Get("expires"); ok {
			c.Params = sip.NewParams()
			c.Params.Add("expires", v)
		}
		out.AppendHeader(c)
	}
	st.headers.Copy(out, req, "content-type")
	out.AppendHeader(sip.NewHeader("User-Agent", st.pol.Server.UserAgent))
	copyBody(out, req)

	ctx, cancel := context.WithTimeout(context.Background(), 64*sip.T1)
	defer cancel()
	res, err := bep.do(ctx, out, pc.Transport, t.addr)
	if err != nil {
		// Not a drop: the registrar did not answer.
		s.log.Warn("REGISTER relay failed", "pool", pc.Name, "target", t.addr.String(), "error", err.Error())
		s.reject(ep, req, tx, 408, "Request Timeout")
		return
	}
	if !s.validResponse(res) {
		// The invalid response is the drop (stage validate).
		s.reject(ep, req, tx, 502, "Bad Gateway")
		return
	}
	back := sip.NewResponseFromRequest(req, res.StatusCode, res.Reason, nil)
	st.headers.Copy(back, res, "content-type")
	if res.IsSuccess() {
		for _, h := range req.GetHeaders("Contact") {
			back.AppendHeader(sip.HeaderClone(h))
		}
	}
	back.AppendHeader(sip.NewHeader("Server", st.pol.Server.UserAgent))
	copyBody(back, res)
	// Watched before the answer leaves: the challenge's nonce is known
	// and a lock or block is in force before the sender can send again.
	s.watchRegister(st, p, req, res)
	_ = tx.Respond(back)
}

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

// registerAllowed checks "no public extensions": REGISTER only from trunks
// that allow it and only for their configured domains.
func registerAllowed(t *policy.Trunk, req *sip.Request) bool {
	if t == nil || !t.AllowRegister {
		return false
	}
	host := strings.Trim(req.Recipient.Host, "[]")
	for _, d := range t.RegisterDomains {
		if strings.EqualFold(d, host) {
			return true
		}
	}
	return false
}
