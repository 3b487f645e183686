package sbc

import (
	"net/netip"
	"strconv"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/policy"
)

// Calls to registered users: an INVITE from a backend (the registrar or
// PBX, a pool target) whose request-URI user is a binding token
// (regcache.go) goes to that binding's device, over its flow: the
// connection it registered over (TCP, TLS, WSS) or its source address
// (UDP), with the device's own Contact as request-URI. The call is the
// same state machine as any other (call.go), with one "pool" of one
// target: the device.

// Results of sbc_user_calls_total besides the call results (which
// include not_found: a 404, here the SBC's own for an unknown token).
const (
	userCallNotFound    = resultNotFound
	userCallUnreachable = "unreachable"
)

func userCallResults() []string {
	return append([]string{userCallUnreachable}, callResults...)
}

// userPoolName names the pool of a call to a registered user (logs,
// sbc_failovers_total never: one target).
const userPoolName = "registered"

// newUserCall starts a call from a backend to the device of a binding.
func (s *SBC) newUserCall(ep *endpoint, st *snapshot, p peer, req *sip.Request, tx sip.ServerTransaction) {
	token := req.Recipient.User
	b, ok := s.regs.get(token)
	if !ok {
		s.log.Info("call to an unknown registration", "source_pool", p.pool, "from_user", req.From().Address.User)
		s.metrics.UserCalls.WithLabelValues(userCallNotFound).Inc()
		s.act(ep, p, req, tx, answer(stageRoute, reasonUserUnknown, 404, "Not Found"))
		return
	}
	var up func(string, netip.AddrPort) bool
	if bep := s.realms[b.realm]; bep != nil {
		up = bep.connUp
	}
	if why := unreachableWhy(b, time.Now(), up); why != "" {
		s.log.Info("call to an unreachable registration", "source_pool", p.pool, "aor", b.aor, "transport", b.transport, "why", why)
		s.metrics.UserCalls.WithLabelValues(userCallUnreachable).Inc()
		s.act(ep, p, req, tx, answer(stageRoute, reasonUserUnreachable, 480, "Temporarily Unavailable").with("why", why))
		return
	}
	if r := s.closedFor(p); r != "" {
		s.act(ep, p, req, tx, answer(stageAdmit, r, 503, "Service Unavailable",
			sip.NewHeader("Retry-After", strconv.Itoa(max(st.pol.Routing.RetryAfter, 1)))))
		return
	}
	plan := &callPlan{pools: []*pool{userPool(st, b)}, srcPool: p.pool, user: b.contact.User,
		toUser: req.To().Address.User, fromUser: req.From().Address.User, binding: &b}
	s.startCall(ep, st, p, req, tx, func() {}, plan)
}

// unreachableWhy says why binding b cannot be called at now ("": it
// can): it expired (not yet swept), or its connection is closed (marked
// by the sweep, or found closed now by up, which is nil when b's realm is
// gone).
func unreachableWhy(b binding, now time.Time, up func(transport string, src netip.AddrPort) bool) string {
	switch {
	case up == nil:
		return "realm gone"
	case !now.Before(b.expires):
		return "expired"
	case b.unreachable || (b.transport != "udp" && !up(b.transport, b.src)):
		return "connection closed"
	}
	return ""
}

// userPool is the one-target pool of a call to binding b: its realm, its
// transport, its source as the target; media as its trunk takes it
// (DTLS-SRTP for a WebSocket client).
func userPool(st *snapshot, b binding) *pool {
	enc := "none"
	if t := st.pol.Trunk(b.trunk); t != nil && t.MediaEncryption == "sdes" {
		enc = "sdes"
	}
	if b.transport == "wss" {
		enc = "dtls"
	}
	no := false
	cfg := &policy.Pool{Name: userPoolName, Realm: b.realm, Transport: b.transport, MediaEncryption: enc, TCPForLarge: &no}
	return &pool{cfg: cfg, targets: []*target{{pool: userPoolName, addr: b.src, up: true}}, weights: []int{1}, prios: []int{0}, binding: true}
}
