package sbc

import (
	"strconv"
	"strings"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/events"
)

// Registration brute force (stages 3 and 6 for REGISTER): the registrar
// behind the SBC challenges REGISTERs (digest); a REGISTER with
// credentials that it refuses again (401/407 without stale=true, or 403)
// is a failed guess of its address-of-record. Failed guesses are counted
// by the Guard (ratelimit) per source and per AoR:
//
//   - autoblock.register_guesses of one AoR from one source within
//     register_window lock that AoR for that source for register_lock: its
//     REGISTERs are dropped before the registrar sees them (aor_locked).
//     The other AoRs behind the same address (a NAT's other phones) keep
//     registering;
//   - autoblock.register_source_guesses from one source within the window,
//     all AoRs together, block the source (Tracker.Convict: block_for with
//     escalation; a protected source is never blocked, see trust.go).
//
// Only guesses that prove a return path count: over TCP, TLS or WSS (the
// handshake), or over UDP when the credentials answer a nonce the
// registrar challenged to that same source, which the SBC saw go back. A
// forged REGISTER in someone else's name cannot carry a nonce its sender
// never received, so nobody can lock out a phone or block an address by
// spoofing it. Observe mode counts and logs locks and would-be blocks but
// drops nothing.

// Proofs of a return path: the proof label of sbc_register_guesses_total.
const (
	proofNonce      = "nonce"      // the credentials answer a nonce challenged to this source
	proofConnection = "connection" // the REGISTER came over TCP, TLS or WSS
	proofNone       = "none"       // neither: not counted against the source
)

var guessProofs = []string{proofNonce, proofConnection, proofNone}

// aorOf is the address-of-record a REGISTER registers: the To URI's user
// and host (the host lower-cased).
func aorOf(req *sip.Request) string {
	to := req.To()
	if to == nil {
		return ""
	}
	return to.Address.User + "@" + strings.ToLower(to.Address.Host)
}

// registerLocked is stage 3 for a REGISTER whose AoR is locked for its
// source: dropped without a word (a guesser learns nothing, the registrar
// sees nothing). The zero verdict when it is not locked, in observe mode,
// or with autoblock off.
func (s *SBC) registerLocked(st *snapshot, p peer, req *sip.Request) verdict {
	if !st.pol.AutoBlock.Enabled || st.pol.AutoBlock.Observe {
		return verdict{}
	}
	aor := aorOf(req)
	if locked, until := s.def.guard.Locked(acl.SourceKey(p.src.Addr()), aor, time.Now()); locked {
		return silent(stageAdmit, reasonAoRLocked).with("aor", aor, "until", until)
	}
	return verdict{}
}

// watchRegister is stage 6 for the registrar's final answer res to a
// REGISTER req relayed for source p: it remembers the nonces challenged
// to the source, and counts a failed guess (see above).
func (s *SBC) watchRegister(st *snapshot, p peer, req *sip.Request, res *sip.Response) {
	ab := st.pol.AutoBlock
	now := time.Now()
	key := acl.SourceKey(p.src.Addr())
	code := res.StatusCode
	if code == 401 || code == 407 {
		for _, h := range challenges(res) {
			s.def.guard.Challenged(key, digestParam(h.Value(), "nonce"), now)
		}
	}
	cred := credentials(req)
	switch {
	case res.IsSuccess():
		s.def.tracker.Success(key, now)
		if cred != nil {
			s.def.guard.Success(key, aorOf(req), now)
		}
		return
	case cred == nil: // the first challenge: how digest starts
		return
	case (code == 401 || code == 407) && stale(res): // right password, old nonce
		return
	case code != 401 && code != 407 && code != 403:
		return
	}
	proof := proofNone
	switch {
	case !strings.EqualFold(req.Transport(), "udp"):
		proof = proofConnection
	case s.def.guard.Issued(key, digestParam(cred.Value(), "nonce")):
		proof = proofNonce
	}
	s.metrics.RegisterGuesses.WithLabelValues(proof).Inc()
	aor := aorOf(req)
	if proof == proofNone {
		return // maybe forged: counted, neither audited nor charged
	}
	ev := events.Event{Kind: events.AuthFailure, SourceIP: p.src.Addr().Unmap().String(),
		UserAgent: headerValue(req, "User-Agent"), Reason: reasonRegisterGuess,
		Detail: map[string]string{"aor": capped(aor), "proof": proof, "code": strconv.Itoa(code), "transport": strings.ToLower(req.Transport())}}
	if p.trunk != nil {
		ev.Trunk = p.trunk.Name
	}
	if !ab.Enabled {
		s.emit(ev)
		return
	}
	d := s.def.guard.Fail(key, aor, now)
	if d.Locked && !ab.Observe {
		ev.Detail["locked_until"] = d.LockedUntil.UTC().Format(time.RFC3339)
	}
	s.emit(ev)
	if d.Locked {
		s.metrics.RegisterLocks.Inc()
		s.log.Warn("registration locked after failed guesses", "source", p.src.String(), "aor", aor,
			"guesses", d.IdentityFailures, "source_guesses", d.SourceFailures, "until", d.LockedUntil,
			"proof", proof, "observe", ab.Observe)
	}
	if d.Block {
		dec := s.def.tracker.Convict(key, string(failRegisterBrute), now)
		s.decided(dec, failRegisterBrute, "guesses", d.SourceFailures, "last_aor", aor, "proof", proof)
	}
}

// credentials is the Authorization (or Proxy-Authorization) header of a
// request, nil when it has none.
func credentials(req *sip.Request) sip.Header {
	if h := req.GetHeader("Authorization"); h != nil {
		return h
	}
	return req.GetHeader("Proxy-Authorization")
}

// challenges are the digest challenges of a 401 or 407.
func challenges(res *sip.Response) []sip.Header {
	return append(res.GetHeaders("WWW-Authenticate"), res.GetHeaders("Proxy-Authenticate")...)
}

// stale reports whether a challenge says stale=true: the credentials were
// right, only their nonce had expired (RFC 2617 3.2.1).
func stale(res *sip.Response) bool {
	for _, h := range challenges(res) {
		if strings.EqualFold(digestParam(h.Value(), "stale"), "true") {
			return true
		}
	}
	return false
}

// digestParam returns the value of parameter name of a Digest challenge
// or credentials header value (quoted or not), "" when absent.
func digestParam(v, name string) string {
	rest := v
	if i := strings.IndexByte(rest, ' '); i >= 0 && !strings.Contains(rest[:i], "=") {
		rest = rest[i+1:] // the scheme
	}
	for rest != "" {
		rest = strings.TrimLeft(rest, " \t,")
		eq := strings.IndexByte(rest, '=')
		if eq < 0 {
			return ""
		}
		key := strings.TrimSpace(rest[:eq])
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var val string
		if strings.HasPrefix(rest, `"`) {
			end := 1
			for end < len(rest) && rest[end] != '"' {
				if rest[end] == '\\' {
					end++
				}
				end++
			}
			val = rest[1:min(end, len(rest))]
			rest = rest[min(end+1, len(rest)):]
		} else {
			end := strings.IndexByte(rest, ',')
			if end < 0 {
				end = len(rest)
			}
			val = strings.TrimSpace(rest[:end])
			rest = rest[end:]
		}
		if strings.EqualFold(key, name) {
			return val
		}
	}
	return ""
}
