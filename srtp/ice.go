package srtp

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/stun/v4"
)

// ICECredentials are an agent's a=ice-ufrag and a=ice-pwd (RFC 8839
// §5.4: ufrag 4 to 256 ice-chars, pwd 22 to 256).
type ICECredentials struct{ Ufrag, Pwd string }

const iceChars = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// NewICECredentials makes random credentials: an 8-char ufrag (48 bits)
// and a 24-char pwd (144 bits).
func NewICECredentials() ICECredentials {
	return ICECredentials{Ufrag: randomICEString(8), Pwd: randomICEString(24)}
}

func randomICEString(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = iceChars[b[i]&63]
	}
	return string(b)
}

// Valid checks the RFC 8839 lengths and alphabet.
func (c ICECredentials) Valid() error {
	if len(c.Ufrag) < 4 || len(c.Ufrag) > 256 || len(c.Pwd) < 22 || len(c.Pwd) > 256 {
		return fmt.Errorf("srtp: ICE ufrag/pwd of %d/%d chars", len(c.Ufrag), len(c.Pwd))
	}
	for _, s := range []string{c.Ufrag, c.Pwd} {
		for i := range len(s) {
			if !isICEChar(s[i]) {
				return fmt.Errorf("srtp: ICE credential has %q", s[i])
			}
		}
	}
	return nil
}

func isICEChar(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '+' || c == '/'
}

// DefaultConsentTimeout is how long a selected address keeps consent
// without a valid check (RFC 7675 §5.1: 30 s).
const DefaultConsentTimeout = 30 * time.Second

// maxValidated bounds the addresses remembered as having passed a check.
const maxValidated = 8

// ICEConfig configures NewICELite.
type ICEConfig struct {
	// Local are our credentials; zero means NewICECredentials.
	Local ICECredentials
	// RemoteUfrag is the peer's a=ice-ufrag when known (we answer); set it
	// later with SetRemoteUfrag. Until it is known a check is accepted on
	// its local part (RFC 8445 §7.3: checks can come before the answer).
	RemoteUfrag string
	// ConsentTimeout: no valid check from the selected address for that
	// long stops media to the leg (RFC 7675); 0 means
	// DefaultConsentTimeout.
	ConsentTimeout time.Duration
	// OnConsentLost, if set, is called (on a timer goroutine) when consent
	// expires. Media to the leg is already stopped; a new valid check
	// from the peer resumes it. The owner decides whether to end the call.
	OnConsentLost func(LegID)
}

// ICEStats counts binding requests by outcome.
type ICEStats struct {
	// Succeeded: answered with a success response. Nominations: those
	// with USE-CANDIDATE.
	Succeeded, Nominations uint64
	// BadRequest (400: no USERNAME, MESSAGE-INTEGRITY or PRIORITY),
	// Unauthorized (401: wrong USERNAME or MESSAGE-INTEGRITY),
	// RoleConflict (487: the peer claims controlled too).
	BadRequest, Unauthorized, RoleConflict uint64
	// Discarded: not STUN, not a Binding request, bad FINGERPRINT;
	// indications (keep-alives) are discarded silently and not counted.
	Discarded uint64
	// ConsentLost counts consent expiries.
	ConsentLost uint64
}

// ICELite is an ICE-lite agent (RFC 8445 §2.5) on one leg of a Stream: it
// never sends checks, answers the peer's Binding requests on the leg's
// sockets, and makes the address of a valid request with USE-CANDIDATE
// the leg's destination (Stream.Expect), so media goes only to a
// validated address. It is always controlled: a peer that claims
// controlled gets 487. The leg should not learn and start with no remote
// address (LegConfig.Remote zero).
type ICELite struct {
	consent time.Duration
	onLost  func(LegID)

	s  *Stream
	id LegID

	mu          sync.Mutex
	local       ICECredentials
	remoteUfrag string
	integrity   stun.MessageIntegrity
	user        []byte // "local:remote", or "local:" until the remote is known
	req, res    stun.Message
	ip          [16]byte
	validated   [maxValidated]netip.AddrPort
	nValidated  int
	selected    [2]netip.AddrPort // per component (RTP, RTCP without mux)
	lastCheck   time.Time         // last valid check from selected[0]
	lost        bool
	timer       *time.Timer
	closed      bool
	onSelect    func(netip.AddrPort) // SecureLeg: the DTLS client's target

	succeeded, nominations, badRequest, unauthorized, roleConflict, discarded, consentLost atomic.Uint64
}

// NewICELite makes an agent for one leg. Put it in LegConfig.Handler (or
// a SecureLeg).
func NewICELite(cfg ICEConfig) (*ICELite, error) {
	if cfg.Local == (ICECredentials{}) {
		cfg.Local = NewICECredentials()
	}
	if err := cfg.Local.Valid(); err != nil {
		return nil, err
	}
	a := &ICELite{consent: cfg.ConsentTimeout, onLost: cfg.OnConsentLost}
	if a.consent <= 0 {
		a.consent = DefaultConsentTimeout
	}
	a.setCredentialsLocked(cfg.Local, cfg.RemoteUfrag)
	return a, nil
}

func (a *ICELite) setCredentialsLocked(local ICECredentials, remoteUfrag string) {
	a.local, a.remoteUfrag = local, remoteUfrag
	a.integrity = stun.NewShortTermIntegrity(local.Pwd)
	a.user = append(append(a.user[:0], local.Ufrag...), ':')
	a.user = append(a.user, remoteUfrag...)
}

// Local returns our credentials, for the SDP sent to the leg.
func (a *ICELite) Local() ICECredentials {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.local
}

// SetRemoteUfrag gives the peer's a=ice-ufrag (from its answer).
func (a *ICELite) SetRemoteUfrag(ufrag string) {
	a.mu.Lock()
	a.setCredentialsLocked(a.local, ufrag)
	a.mu.Unlock()
}

// Restart changes both sides' credentials (an ICE restart, RFC 8445 §9):
// checks with the old ones fail from now on; media keeps flowing to the
// selected address until the peer nominates again.
func (a *ICELite) Restart(local ICECredentials, remoteUfrag string) error {
	if err := local.Valid(); err != nil {
		return err
	}
	a.mu.Lock()
	a.setCredentialsLocked(local, remoteUfrag)
	a.mu.Unlock()
	return nil
}

// Selected returns the nominated RTP address, if any and with consent.
func (a *ICELite) Selected() (netip.AddrPort, bool) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.selected[0], a.selected[0].IsValid() && !a.lost
}

// Stats returns the agent's counters.
func (a *ICELite) Stats() ICEStats {
	return ICEStats{Succeeded: a.succeeded.Load(), Nominations: a.nominations.Load(), BadRequest: a.badRequest.Load(),
		Unauthorized: a.unauthorized.Load(), RoleConflict: a.roleConflict.Load(), Discarded: a.discarded.Load(),
		ConsentLost: a.consentLost.Load()}
}

// BindStream is called by the stream.
func (a *ICELite) BindStream(s *Stream, id LegID) {
	a.mu.Lock()
	a.s, a.id = s, id
	a.mu.Unlock()
}

// Close stops the consent timer.
func (a *ICELite) Close() error {
	a.mu.Lock()
	a.closed = true
	if a.timer != nil {
		a.timer.Stop()
	}
	a.mu.Unlock()
	return nil
}

// validatedAddr reports whether from passed a check (and consent holds):
// the DTLS gate in a SecureLeg.
func (a *ICELite) validatedAddr(from netip.AddrPort) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, v := range a.validated[:a.nValidated] {
		if v == from {
			return true
		}
	}
	return false
}

var (
	errSTUNUnauthorized = errors.New("unauthorized")
	errSTUNBadRequest   = errors.New("bad request")
	errSTUNRoleConflict = errors.New("role conflict")
)

// HandleDatagram answers the leg's STUN Binding requests (see
// DatagramHandler). About a microsecond per check (BenchmarkICECheck).
func (a *ICELite) HandleDatagram(_ LegID, kind DatagramKind, pkt []byte, from netip.AddrPort, via PacketWriter) {
	if kind != KindSTUN {
		a.discarded.Add(1)
		return
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	comp := 0
	if a.s != nil && a.s.isRTCPSocket(a.id, via) {
		comp = 1
	}
	use, err := a.checkLocked(pkt)
	if err == errDiscard {
		a.mu.Unlock()
		if len(pkt) < 2 || pkt[0] != 0x00 || pkt[1] != 0x11 { // a Binding indication is a keep-alive
			a.discarded.Add(1)
		}
		return
	}
	a.respondLocked(err, from)
	if err != nil {
		switch err {
		case errSTUNUnauthorized:
			a.unauthorized.Add(1)
		case errSTUNRoleConflict:
			a.roleConflict.Add(1)
		default:
			a.badRequest.Add(1)
		}
		_, _ = via.WriteToUDPAddrPort(a.res.Raw, from)
		a.mu.Unlock()
		return
	}
	a.succeeded.Add(1)
	// State first, then the answer: when the peer hears success, media
	// already goes to the address it nominated.
	var selected func(netip.AddrPort)
	var sel netip.AddrPort
	a.rememberLocked(from)
	switch {
	case use:
		a.nominations.Add(1)
		if a.selected[comp] != from || a.lost {
			a.selected[comp] = from
			a.lost = false
			if a.s != nil {
				a.s.Expect(a.id, a.selected[0], a.selected[1])
			}
			if comp == 0 {
				selected, sel = a.onSelect, from
			}
		}
	case a.lost && comp == 0 && from == a.selected[0]:
		// Consent comes back from the selected address.
		a.lost = false
		if a.s != nil {
			a.s.Expect(a.id, a.selected[0], a.selected[1])
		}
	}
	a.touchLocked(comp, from)
	_, _ = via.WriteToUDPAddrPort(a.res.Raw, from)
	a.mu.Unlock()
	if selected != nil {
		selected(sel)
	}
}

var errDiscard = errors.New("discard")

// checkLocked decodes and checks a request (RFC 8445 §7.3, RFC 8489
// §9.1.3); it reports USE-CANDIDATE.
func (a *ICELite) checkLocked(pkt []byte) (useCandidate bool, err error) {
	m := &a.req
	m.Raw = append(m.Raw[:0], pkt...)
	if m.Decode() != nil || m.Type != stun.BindingRequest {
		return false, errDiscard
	}
	if stun.Fingerprint.Check(m) != nil {
		return false, errDiscard // not a STUN message of this usage (RFC 8489 §7.3)
	}
	user, uerr := m.Get(stun.AttrUsername)
	if uerr != nil || !m.Contains(stun.AttrMessageIntegrity) {
		return false, errSTUNBadRequest
	}
	if !a.usernameOK(user) || a.integrity.Check(m) != nil {
		return false, errSTUNUnauthorized
	}
	if !m.Contains(stun.AttrPriority) {
		return false, errSTUNBadRequest
	}
	if m.Contains(stun.AttrICEControlled) {
		// Both controlled: a lite agent cannot switch (RFC 8445 §7.3.1.1
		// with our tie-breaker taken as the larger).
		return false, errSTUNRoleConflict
	}
	return m.Contains(stun.AttrUseCandidate), nil
}

func (a *ICELite) usernameOK(user []byte) bool {
	if a.remoteUfrag != "" {
		return string(user) == string(a.user)
	}
	return len(user) > len(a.user) && string(user[:len(a.user)]) == string(a.user)
}

// respondLocked builds the response to a.req in a.res: success with
// XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY and FINGERPRINT; an error with
// ERROR-CODE, MESSAGE-INTEGRITY only when the request was authenticated
// (487), and FINGERPRINT.
func (a *ICELite) respondLocked(err error, from netip.AddrPort) {
	r := &a.res
	r.Reset()
	r.TransactionID = a.req.TransactionID
	integrity := true
	switch err {
	case nil:
		r.Type = stun.BindingSuccess
		r.WriteHeader()
		ip := from.Addr().Unmap()
		var n int
		if ip.Is4() {
			b := ip.As4()
			n = copy(a.ip[:], b[:])
		} else {
			b := ip.As16()
			n = copy(a.ip[:], b[:])
		}
		_ = stun.XORMappedAddress{IP: a.ip[:n], Port: int(from.Port())}.AddTo(r)
	case errSTUNRoleConflict:
		r.Type = stun.BindingError
		r.WriteHeader()
		_ = stun.CodeRoleConflict.AddTo(r)
	case errSTUNUnauthorized:
		r.Type = stun.BindingError
		r.WriteHeader()
		_ = stun.CodeUnauthorized.AddTo(r)
		integrity = false
	default:
		r.Type = stun.BindingError
		r.WriteHeader()
		_ = stun.CodeBadRequest.AddTo(r)
		integrity = false
	}
	if integrity {
		_ = a.integrity.AddTo(r)
	}
	_ = stun.Fingerprint.AddTo(r)
}

func (a *ICELite) rememberLocked(from netip.AddrPort) {
	for _, v := range a.validated[:a.nValidated] {
		if v == from {
			return
		}
	}
	if a.nValidated < maxValidated {
		a.validated[a.nValidated] = from
		a.nValidated++
		return
	}
	copy(a.validated[:], a.validated[1:])
	a.validated[maxValidated-1] = from
}

// touchLocked records a valid check for consent (RTP component, selected
// address) and arms the consent timer.
func (a *ICELite) touchLocked(comp int, from netip.AddrPort) {
	if comp != 0 || from != a.selected[0] {
		return
	}
	a.lastCheck = time.Now()
	if a.timer == nil {
		a.timer = time.AfterFunc(a.consent, a.checkConsent)
	}
}

func (a *ICELite) checkConsent() {
	a.mu.Lock()
	if a.closed || a.lost {
		a.timer = nil
		a.mu.Unlock()
		return
	}
	if since := time.Since(a.lastCheck); since < a.consent {
		a.timer.Reset(a.consent - since)
		a.mu.Unlock()
		return
	}
	a.lost = true
	a.timer = nil
	a.nValidated = 0 // no DTLS from them either, until a new check
	a.consentLost.Add(1)
	if a.s != nil {
		a.s.Expect(a.id, netip.AddrPort{}, netip.AddrPort{})
	}
	onLost, id := a.onLost, a.id
	a.mu.Unlock()
	if onLost != nil {
		onLost(id)
	}
}

// SecureLeg is the DatagramHandler of a WebRTC-style leg: ICE-lite answers
// its STUN, DTLS terminates its DTLS, and DTLS accepts only sources that
// passed an ICE check (a forged ClientHello from elsewhere creates no
// session); as client, DTLS starts towards the nominated address. Either
// may be nil (ICE with SDES; DTLS without ICE needs no SecureLeg).
type SecureLeg struct {
	ICE  *ICELite
	DTLS *DTLS
}

// HandleDatagram dispatches by kind.
func (h *SecureLeg) HandleDatagram(leg LegID, kind DatagramKind, pkt []byte, from netip.AddrPort, via PacketWriter) {
	switch {
	case kind == KindSTUN && h.ICE != nil:
		h.ICE.HandleDatagram(leg, kind, pkt, from, via)
	case kind == KindDTLS && h.DTLS != nil:
		h.DTLS.HandleDatagram(leg, kind, pkt, from, via)
	}
}

// BindStream binds both and links them.
func (h *SecureLeg) BindStream(s *Stream, id LegID) {
	if h.ICE != nil && h.DTLS != nil {
		h.DTLS.mu.Lock()
		h.DTLS.gate = h.ICE.validatedAddr
		h.DTLS.mu.Unlock()
		h.ICE.mu.Lock()
		h.ICE.onSelect = h.DTLS.peerSelected
		h.ICE.mu.Unlock()
	}
	if h.ICE != nil {
		h.ICE.BindStream(s, id)
	}
	if h.DTLS != nil {
		h.DTLS.BindStream(s, id)
	}
}

// Close closes both.
func (h *SecureLeg) Close() error {
	if h.DTLS != nil {
		_ = h.DTLS.Close()
	}
	if h.ICE != nil {
		_ = h.ICE.Close()
	}
	return nil
}
