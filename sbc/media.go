package sbc

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/pion/sdp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/srtp"
	"github.com/sbc-project/sbc/srtp/kfwd"
)

// Media anchoring: the RTP of every call flows through relay sockets of
// the SBC (package srtp), one stream per m= line, and each side's SDP is
// rewritten to carry the SBC's address and ports of its own realm and its
// own keys. What srtp does not know, and this file does, is SIP's
// offer/answer: which leg offered, what each leg's policy allows, which
// keys go into which SDP.
//
// The relay ports of a call are allocated when its INVITE arrives (before
// its state machine starts: binding sockets is I/O), one pair per m= line
// on each side (one m= line for an INVITE without SDP). After that,
// everything here is computation and atomic stores on the streams
// (Expect, SetTransform), done under the call's lock by the builders of
// the messages that carry SDP: the B-leg INVITE, the responses towards A,
// the ACKs, and the in-dialog requests and responses relayed between the
// legs. The streams are closed by the call's end action.
//
// Profiles: a leg is plain (RTP/AVP), SDES (RTP/SAVP with a=crypto, RFC
// 4568) or DTLS (UDP/TLS/RTP/SAVP(F), RFC 5763/5764, with ICE-lite when the
// peer does ICE: WebRTC). The caller's leg takes what the caller offers,
// within its trunk's media_encryption; the backend's leg takes what the
// pool's media_encryption says ("any": the caller's, SDES for a WebRTC
// caller). SRTP is terminated on each side with keys of the SBC's own:
// each side's keys stay on its side. Towards a DTLS leg the SBC answers
// a=setup:passive (the peer, which knows the ICE pair, starts DTLS) and
// offers actpass; its certificate is server.state_dir/dtls-cert.pem.
// WebRTC-only attributes (mid, BUNDLE, msid, ssrc, extmap, rtcp-fb) do
// not cross to SIP peers; towards a WebRTC peer the SBC adds a=mid and
// a=rtcp-mux, and a=group:BUNDLE of those mids when the peer's SDP had a
// BUNDLE group (Chrome with max-bundle refuses an answer without one).
//
// Early dialogs: a forking backend's 183s and 2xx may come from several
// dialogs (To tags) with different addresses and keys. The caller's side
// keeps one relay and one key throughout; the backend's side follows the
// SDP of the dialog that answered last, and the 2xx's dialog once kept,
// also when that 2xx has no SDP (its answer was in its reliable 183:
// answerFrom, followDialog). The caller's SRTP egress is normalised, so
// the switch between the dialogs' sources is one continuous stream.
//
// A line a re-offer removes (port 0) passes as port 0 and its stream
// stops relaying; a later offer with a port brings it back.
//
// Not yet: a relay for m= lines added by a re-INVITE (they are refused
// with port 0: ports are bound before the state machine, never under the
// call's lock), non-RTP media (refused with port 0), bodies other than
// application/sdp (488), DTLS without rtcp-mux (488), DTLS on a forking
// backend's early dialogs (one association per leg).

// mediaPlane is the relay port pool of each realm, fixed at New (a change
// of a realm's media addresses or ports needs a restart).
type mediaPlane struct {
	pools map[string]*srtp.PortPool
	cert  *srtp.Certificate // the SBC's DTLS certificate (state_dir/dtls-cert.pem, or made at start)

	mu     sync.Mutex
	live   map[*callMedia]bool     // calls whose streams are open
	ended  map[string]*mediaTotals // counters of closed streams, by realm
	events map[string]*mediaEvents // DTLS handshakes and media ends, by realm

	// consent is the ICE consent timeout of new agents (RFC 7675: 30 s;
	// tests shorten it).
	consent atomic.Int64

	// kernel is the in-kernel relay for plain RTP (media.kernel_relay),
	// set at Start before any call; nil without one.
	kernel *kfwd.Forwarder
}

// openKernel attaches the in-kernel relay to media.kernel_relay's
// interfaces, if any.
func (mp *mediaPlane) openKernel(p *policy.Policy) error {
	if len(p.Media.KernelRelay) == 0 {
		return nil
	}
	f, err := kfwd.Open(kfwd.Config{Interfaces: p.Media.KernelRelay})
	if err != nil {
		return fmt.Errorf("media.kernel_relay: %w", err)
	}
	mp.kernel = f
	return nil
}

// closeKernel detaches it (calls still relaying fall back to user space).
func (mp *mediaPlane) closeKernel() {
	if mp.kernel != nil {
		_ = mp.kernel.Close()
		mp.kernel = nil
	}
}

// mediaEvents are a realm's counts of what happens to calls' media
// rather than to packets.
type mediaEvents struct {
	dtls     [len(dtlsResults)]uint64  // handshakes by result
	timeouts [len(mediaEndings)]uint64 // calls the SBC ended for their media, by reason
}

// dtlsResults are the values of srtp.DTLSResult.Reason: the result label
// of sbc_media_dtls_handshakes_total.
var dtlsResults = [...]string{"ok", "fingerprint", "role", "timeout", "error"}

// mediaEndings are the reason label values of sbc_media_timeouts_total:
// the call results that end a call for its media.
var mediaEndings = [...]string{resultMediaTimeout, resultConsentLost}

// newMediaPlane builds the relay's port pools and loads the DTLS
// certificate of state_dir (its key sealed by sealer when a master key is
// configured; see srtp.LoadOrCreateSealedCertificate), or makes one.
func newMediaPlane(p *policy.Policy, sealer srtp.KeySealer) (*mediaPlane, error) {
	mp := &mediaPlane{pools: map[string]*srtp.PortPool{}, events: map[string]*mediaEvents{}}
	mp.consent.Store(int64(srtp.DefaultConsentTimeout))
	var err error
	if p.Server.StateDir != "" {
		mp.cert, err = srtp.LoadOrCreateSealedCertificate(p.Server.StateDir, sealer)
	} else {
		mp.cert, err = srtp.GenerateCertificate()
	}
	if err != nil {
		return nil, fmt.Errorf("media: DTLS certificate: %w", err)
	}
	// Realms with the same relay address and range share one pool: the
	// pool keeps its sockets bound (srtp.PortPool), so two pools on one
	// range would split it for good instead of sharing it.
	type rangeKey struct {
		ip       netip.Addr
		min, max int
	}
	shared := map[rangeKey]*srtp.PortPool{}
	for _, r := range p.Realms {
		if !r.Media.Addr.IsValid() || r.Media.Addr.IsUnspecified() {
			continue // anchoring off and no address to relay on: calls of this realm pass SDP through
		}
		key := rangeKey{r.Media.Addr.Unmap(), r.Media.Min, r.Media.Max}
		pp := shared[key]
		if pp == nil {
			var err error
			if pp, err = srtp.NewPortPool(srtp.PortPoolConfig{IP: r.Media.Addr, Min: r.Media.Min, Max: r.Media.Max,
				Quarantine: p.Media.Quarantine.Duration}); err != nil {
				return nil, fmt.Errorf("realm %s media: %w", r.Name, err)
			}
			shared[key] = pp
		}
		mp.pools[r.Name] = pp
		mp.events[r.Name] = &mediaEvents{}
	}
	return mp, nil
}

// closePools closes the relay sockets the pools keep (those of calls
// still relaying close when their calls end).
func (mp *mediaPlane) closePools() {
	for _, pp := range mp.pools {
		_ = pp.Close() // idempotent: a shared pool is closed once
	}
}

// countDTLS counts a finished DTLS handshake of a leg on realm.
func (mp *mediaPlane) countDTLS(realm string, r srtp.DTLSResult) {
	i := slices.Index(dtlsResults[:], r.Reason())
	if i < 0 {
		i = len(dtlsResults) - 1 // "error"
	}
	mp.mu.Lock()
	if e := mp.events[realm]; e != nil {
		e.dtls[i]++
	}
	mp.mu.Unlock()
}

// countEnding counts a call the SBC ends for its media (media_timeout,
// consent_lost) once on each of the realms given.
func (mp *mediaPlane) countEnding(reason string, realms ...string) {
	i := slices.Index(mediaEndings[:], reason)
	if i < 0 {
		return
	}
	mp.mu.Lock()
	defer mp.mu.Unlock()
	for j, r := range realms {
		if e := mp.events[r]; e != nil && !slices.Contains(realms[:j], r) {
			e.timeouts[i]++
		}
	}
}

// mediaError is why a call's media cannot be set up: the answer to the
// INVITE and the reason of the drop.
type mediaError struct {
	code   int
	phrase string
	r      reason
	err    error
}

func (e *mediaError) Error() string { return string(e.r) + ": " + e.err.Error() }

// Reasons of stage media.
const (
	reasonMediaPorts      reason = "ports_exhausted"    // no relay port left in the realm's range: 503
	reasonMediaBadSDP     reason = "bad_sdp"            // an SDP the SBC cannot read (or a body that is not SDP): 488
	reasonMediaEncryption reason = "encryption_refused" // the offer's media profile is not what the trunk allows (media_encryption, media_required), or no acceptable a=crypto: 488
	reasonMediaDTLS       reason = "dtls_refused"       // DTLS-SRTP parameters the SBC cannot take (no rtcp-mux, a=setup, fingerprints, an answer without our offer): 488
	reasonMediaBind       reason = "relay_unavailable"  // the relay could not open its sockets: 503
)

var mediaReasons = []reason{reasonMediaPorts, reasonMediaBadSDP, reasonMediaEncryption, reasonMediaDTLS, reasonMediaBind}

func mediaErr(code int, phrase string, r reason, err error) *mediaError {
	return &mediaError{code: code, phrase: phrase, r: r, err: err}
}

// profile is how a leg carries media.
type profile uint8

const (
	profPlain profile = iota // RTP/AVP
	profSDES                 // RTP/SAVP with a=crypto (RFC 4568)
	profDTLS                 // UDP/TLS/RTP/SAVP(F): DTLS-SRTP (RFC 5763/5764), with ICE-lite towards WebRTC
)

// side is one leg's media profile and keys, per m= line.
type side struct {
	prof  profile
	known bool         // the profile was set by an offer or answer
	our   *srtp.Crypto // SDES: our key in the SDP sent to this leg
	their *srtp.Crypto // SDES: the leg's key from its SDP
	dtls  *srtp.DTLS   // DTLS: the leg's handshake handler
	ice   *srtp.ICELite
	mid   string // the leg's a=mid (WebRTC), echoed in our SDP to it
	// The handler installed on the leg (what dtls and ice were then).
	hDTLS *srtp.DTLS
	hICE  *srtp.ICELite
}

func (sd *side) sdes() bool { return sd.prof == profSDES }

// mstream is one m= line of the call.
type mstream struct {
	st   *srtp.Stream // nil for a refused line
	a, b side
	// off: the line was removed (port 0) by a later offer or answer: the
	// stream relays nothing (no destination on either leg) and does not
	// count for the media timeout.
	off bool
}

// callMedia is a call's media: its streams and the offer/answer state.
// Its methods run under the call's lock (close excepted).
type callMedia struct {
	trunk   *policy.Trunk
	poolEnc string
	// bWebRTC: the B-leg is a WebSocket peer (a pool over wss, a user
	// registered over WSS): an offer to it carries ICE-lite.
	bWebRTC      bool
	aAddr, bAddr netip.Addr // what each side's SDP gets as c=
	aOrig, bOrig *srtp.Origin
	streams      []*mstream
	held         bool // the last exchange put the media on hold (inactive, or c=0.0.0.0)
	timeout      time.Duration
	delayed      bool // the caller's INVITE had no SDP: the backend offers
	// bundled: the last SDP of the leg ("a", "b") had an a=group:BUNDLE;
	// the SBC's SDP to it then has one too, of the mids it echoes.
	bundled map[string]bool
	// early is the last SDP answer of each of the backend's early
	// dialogs, by To tag (a forking proxy's 183s), and applied the tag
	// whose SDP the backend's leg follows now: a 2xx without SDP from
	// another dialog (its answer was in its reliable 183) moves the leg
	// back to that dialog's address and keys. The caller's side keeps
	// its one relay and key whatever the backend's dialogs do.
	early   map[string][]byte
	applied string
	// spare: relay streams bound outside the call's lock for the m=
	// lines the offer being handled adds, by line index
	// (SBC.preallocLines); fromLeg takes them, the transition closes the
	// rest.
	spare map[int]*mstream
	// closers: what an offer or answer replaced (an old DTLS
	// association), closed after the transition (takeClosers).
	closers []io.Closer

	plane          *mediaPlane // certificate, metrics (track, untrack)
	log            *slog.Logger
	aRealm, bRealm string
	// lost is what the call does when an ICE leg's consent expires (set
	// once the call exists; an agent's timer may fire on any goroutine).
	lost atomic.Pointer[func(realm string)]
}

// onConsentLost sets what happens when an ICE leg of the call loses
// consent (RFC 7675): the call posts an event and ends.
func (cm *callMedia) onConsentLost(f func(realm string)) { cm.lost.Store(&f) }

// consentLost is an ICE agent's OnConsentLost for leg ("a" or "b"); it
// runs on the agent's timer goroutine, outside every lock.
func (cm *callMedia) consentLost(leg string) func(srtp.LegID) {
	realm := cm.aRealm
	if leg == "b" {
		realm = cm.bRealm
	}
	return func(srtp.LegID) {
		if f := cm.lost.Load(); f != nil {
			(*f)(realm)
		}
	}
}

// isSDP tells whether a message body is a session description.
func isSDP(ct string, body []byte) bool {
	if len(body) == 0 {
		return false
	}
	mt, _, _ := strings.Cut(strings.ToLower(strings.TrimSpace(ct)), ";")
	return mt == "" || strings.TrimSpace(mt) == "application/sdp"
}

// setupMedia allocates a call's relay (before its state machine starts)
// and returns the SDP for the B-leg's INVITE (nil for a delayed offer).
func (s *SBC) setupMedia(st *snapshot, aRealm, bRealm string, trunk *policy.Trunk, pool *policy.Pool, body []byte, ct string) (*callMedia, []byte, error) {
	if s.media == nil || !st.pol.Media.Anchored() || s.media.pools[aRealm] == nil || s.media.pools[bRealm] == nil {
		return nil, nil, nil
	}
	ra, rb := realmOf(st.pol, aRealm), realmOf(st.pol, bRealm)
	cm := &callMedia{trunk: trunk, poolEnc: pool.MediaEncryption, bWebRTC: pool.Transport == "wss", aAddr: ra.Media.AdvertiseAddr, bAddr: rb.Media.AdvertiseAddr,
		aOrig: srtp.NewOrigin("sbc", ra.Media.AdvertiseAddr), bOrig: srtp.NewOrigin("sbc", rb.Media.AdvertiseAddr),
		timeout: st.pol.Media.Timeout.Duration, plane: s.media, log: s.log, aRealm: aRealm, bRealm: bRealm}
	if len(body) == 0 {
		// Delayed offer: the backend offers in its 2xx. One stream.
		ms, err := s.allocStream(aRealm, bRealm, legShape{}, legShape{mux: pool.MediaEncryption == "dtls", normalize: pool.MediaEncryption == "sdes" || pool.MediaEncryption == "dtls"})
		if err != nil {
			return nil, nil, err
		}
		cm.streams = []*mstream{ms}
		cm.delayed = true
		s.media.track(cm)
		return cm, nil, nil
	}
	if !isSDP(ct, body) {
		return nil, nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, fmt.Errorf("body of type %q", ct))
	}
	offer, err := srtp.ParseSDP(body)
	if err != nil {
		return nil, nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
	}
	for i, md := range offer.MediaDescriptions {
		switch cm.lineKind(md) {
		case lineRefused:
			cm.streams = append(cm.streams, &mstream{})
			continue
		case lineUDPTL:
			ms, err := s.allocStream(aRealm, bRealm, legShape{mux: true}, legShape{mux: true})
			if err != nil {
				cm.close()
				return nil, nil, err
			}
			cm.streams = append(cm.streams, ms)
			continue
		}
		rm, err := srtp.Remote(offer, i)
		if err != nil {
			cm.close()
			return nil, nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
		}
		// SRTP legs get normalised egress (one SSRC, continuous sequence
		// numbers: notes, pitfall 7); DTLS legs need rtcp-mux.
		sec, _ := srtp.RemoteSecurity(offer, i)
		aSRTP := sec.DTLS() || savpProto(md.MediaName.Protos)
		bSRTP := pool.MediaEncryption == "sdes" || pool.MediaEncryption == "dtls" || (pool.MediaEncryption == "any" && aSRTP)
		// An ICE peer's leg does not learn: its destination is the address
		// its checks nominated, and only while consent holds (RFC 7675).
		ms, err := s.allocStream(aRealm, bRealm, legShape{mux: rm.Mux, normalize: aSRTP, noLearn: sec.ICE.Ufrag != ""},
			legShape{mux: rm.Mux || pool.MediaEncryption == "dtls", normalize: bSRTP})
		if err != nil {
			cm.close()
			return nil, nil, err
		}
		cm.streams = append(cm.streams, ms)
	}
	out, err := cm.fromLeg("a", true, offer)
	if err != nil {
		cm.close()
		return nil, nil, err
	}
	s.media.track(cm)
	return cm, out, nil
}

func realmOf(p *policy.Policy, name string) *policy.Realm {
	for i := range p.Realms {
		if p.Realms[i].Name == name {
			return &p.Realms[i]
		}
	}
	return nil
}

// rtpProto: an m= line the relay carries (RTP in any profile).
func rtpProto(protos []string) bool {
	return protosHave(protos, "RTP/")
}

// lineKind is what the relay does with an m= line.
type lineKind uint8

const (
	lineRefused lineKind = iota // port 0, or nothing the relay carries: refused with port 0
	lineRTP                     // RTP in any profile (plain, SDES, DTLS)
	lineUDPTL                   // UDPTL (T.38 fax): relayed as opaque datagrams
)

// lineKind classifies an m= line of an SDP the call received.
func (cm *callMedia) lineKind(md *sdp.MediaDescription) lineKind {
	switch {
	case md.MediaName.Port.Value == 0:
		return lineRefused
	case rtpProto(md.MediaName.Protos):
		return lineRTP
	case protosHave(md.MediaName.Protos, "UDPTL") && cm.udptlOK():
		return lineUDPTL
	}
	return lineRefused
}

// udptlOK: the call may carry UDPTL (T.38, ITU-T T.38 Annex D / RFC
// 3362), which has no SRTP: not when the trunk requires encrypted media,
// and not towards a WebRTC peer or a DTLS-only side (browsers have no
// UDPTL). A line refused here is answered with port 0, and a fax gateway
// falls back to G.711 pass-through.
func (cm *callMedia) udptlOK() bool {
	return !cm.bWebRTC && cm.poolEnc != "dtls" && cm.trunk.MediaEncryption != "dtls" &&
		!(cm.trunk.MediaRequired && cm.trunk.MediaEncryption != "none")
}

func savpProto(protos []string) bool {
	return protosHave(protos, "SAVP")
}

// protosHave reports whether strings.ToUpper(strings.Join(protos, "/"))
// contains sub (upper case), joining in a stack buffer: both ran for every
// m= line of every SDP.
func protosHave(protos []string, sub string) bool {
	var buf [64]byte
	b := buf[:0]
	for i, p := range protos {
		if i > 0 {
			b = append(b, '/')
		}
		for j := 0; j < len(p); j++ {
			c := p[j]
			if c >= 0x80 { // ToUpper's Unicode cases
				return strings.Contains(strings.ToUpper(strings.Join(protos, "/")), sub)
			}
			if 'a' <= c && c <= 'z' {
				c -= 'a' - 'A'
			}
			b = append(b, c)
		}
	}
	return bytes.Contains(b, []byte(sub))
}

// legShape is what a leg's relay needs to know before any SDP is
// processed: one socket (rtcp-mux) or two, normalised egress (SRTP), and
// for the caller's leg whether it learns its source (not an ICE peer's).
type legShape struct{ mux, normalize, noLearn bool }

// allocStream opens a stream's relay sockets on both sides.
func (s *SBC) allocStream(aRealm, bRealm string, a, b legShape) (*mstream, error) {
	ap, err := s.media.pools[aRealm].Allocate(a.mux)
	if err != nil {
		return nil, allocErr(err)
	}
	bp, err := s.media.pools[bRealm].Allocate(b.mux)
	if err != nil {
		ap.Close()
		return nil, allocErr(err)
	}
	cfg := srtp.StreamConfig{
		// The caller's leg learns its source from the first packet (NAT);
		// the backend's accepts only the address its SDP gives.
		A: srtp.LegConfig{Ports: ap, Learn: !a.noLearn, Normalize: a.normalize},
		B: srtp.LegConfig{Ports: bp, Normalize: b.normalize},
	}
	if s.media.kernel != nil {
		cfg.Kernel = s.media.kernel
	}
	st, err := srtp.NewStream(cfg)
	if err != nil {
		ap.Close()
		bp.Close()
		return nil, mediaErr(503, "Service Unavailable", reasonMediaBind, err)
	}
	return &mstream{st: st}, nil
}

func allocErr(err error) error {
	if errors.Is(err, srtp.ErrPortsExhausted) {
		return mediaErr(503, "Service Unavailable", reasonMediaPorts, err)
	}
	return mediaErr(503, "Service Unavailable", reasonMediaBind, err)
}

// fromLeg takes an SDP received on leg from ("a" or "b"), an offer or an
// answer (the caller knows which: RFC 3261 13.2.1, RFC 3262, RFC 3311),
// and returns the SDP for the other leg. The same SDP again (a 200 after
// a 183 with the same answer, a retransmission) changes nothing.
func (cm *callMedia) fromLeg(from string, isOffer bool, in *sdp.SessionDescription) ([]byte, error) {
	to := "b"
	toAddr, toOrig := cm.bAddr, cm.bOrig
	if from == "b" {
		to, toAddr, toOrig = "a", cm.aAddr, cm.aOrig
	}
	anchor := srtp.Anchor{Addr: toAddr, Origin: toOrig}
	held, webrtc := false, false
	if cm.bundled == nil {
		cm.bundled = map[string]bool{}
	}
	cm.bundled[from] = hasBundle(in)
	var mids []string // echoed to a WebRTC leg, for its BUNDLE group
	for i, md := range in.MediaDescriptions {
		if i == len(cm.streams) && isOffer {
			// A line this offer adds (RFC 3264 8.2): relayed on the
			// streams bound for it before the transition, refused if
			// there are none.
			ms := cm.spare[i]
			delete(cm.spare, i)
			if ms == nil {
				ms = &mstream{}
			}
			unlock := cm.lockStreams()
			cm.streams = append(cm.streams, ms)
			unlock()
		}
		var ms *mstream
		if i < len(cm.streams) {
			ms = cm.streams[i]
		}
		kind := cm.lineKind(md)
		if ms == nil || ms.st == nil || kind == lineRefused {
			// Refused, removed (port 0), not RTP, or beyond the lines the
			// call has relay ports for: port 0 towards the other side,
			// and a stream the line had relays nothing any more (until
			// an offer brings the line back).
			if ms != nil && ms.st != nil && !ms.off {
				ms.off = true
				ms.st.Expect(srtp.LegA, netip.AddrPort{}, netip.AddrPort{})
				ms.st.Expect(srtp.LegB, netip.AddrPort{}, netip.AddrPort{})
			}
			anchor.Media = append(anchor.Media, srtp.MediaAnchor{Refuse: true})
			continue
		}
		ms.off = false
		rm, err := srtp.Remote(in, i)
		if err != nil {
			return nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
		}
		srcLeg, dstLeg := srtp.LegA, srtp.LegB
		if from == "b" {
			srcLeg, dstLeg = srtp.LegB, srtp.LegA
		}
		if kind == lineUDPTL {
			// Opaque datagrams from the port the line names; the line
			// keeps its transport and T38* attributes, with the SBC's
			// port. The stream turns opaque once the line is agreed
			// (the answer): until then it carries what it carried.
			if !rm.Hold {
				ms.st.Expect(srcLeg, rm.RTP, netip.AddrPort{})
			}
			if !isOffer {
				ms.st.SetOpaque(true)
			}
			lrtp, _ := ms.st.LocalAddr(dstLeg)
			anchor.Media = append(anchor.Media, srtp.MediaAnchor{Port: int(lrtp.Port())})
			continue
		}
		if !isOffer {
			ms.st.SetOpaque(false)
		}
		sec, err := srtp.RemoteSecurity(in, i)
		if err != nil {
			return nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
		}
		if rm.Hold || hasDirection(md, "inactive") {
			held = true
		}
		src, dst := &ms.a, &ms.b
		if from == "b" {
			src, dst = &ms.b, &ms.a
		}
		if err := cm.takeLeg(from, isOffer, ms.st, srcLeg, src, md, rm, sec); err != nil {
			return nil, err
		}
		// The other side's profile: decided by its policy when we offer,
		// kept when we answer.
		if isOffer {
			if err := cm.offerTo(to, ms.st, dstLeg, dst, src.prof); err != nil {
				return nil, err
			}
		}
		ma := cm.anchorTo(ms.st, dstLeg, dst, isOffer, md)
		anchor.Media = append(anchor.Media, ma)
		if dst.ice != nil {
			webrtc = true
			if dst.mid != "" {
				mids = append(mids, dst.mid)
			}
			lrtp, _ := ms.st.LocalAddr(dstLeg)
			if err := anchor.AddICELite(len(anchor.Media)-1, dst.ice.Local(), netip.AddrPortFrom(toAddr, lrtp.Port())); err != nil {
				return nil, err
			}
		}
		if dst.dtls != nil {
			setup := srtp.SetupActpass
			if !isOffer {
				setup = srtp.SetupPassive
				if dst.dtls.Client() {
					setup = srtp.SetupActive
				}
			}
			if err := anchor.AddDTLS(len(anchor.Media)-1, setup, dst.dtls.Fingerprint()); err != nil {
				return nil, err
			}
		}
	}
	if !webrtc {
		// What only WebRTC peers use does not cross to SIP peers.
		anchor.DropAttributes = webrtcOnly
	} else {
		anchor.DropAttributes = []string{"ssrc", "ssrc-group", "msid", "extmap", "group"}
		// Chrome (bundlePolicy max-bundle, as JsSIP apps often set)
		// refuses an answer without the BUNDLE group of its offer:
		// "Answer cannot remove m= section with mid='0' from
		// already-established BUNDLE group". One relay port pair per m=
		// line: right for a single line; several lines would need one
		// shared transport (not yet).
		if cm.bundled[to] && len(mids) > 0 {
			anchor.SessionAttributes = append(anchor.SessionAttributes, sdp.Attribute{Key: "group", Value: "BUNDLE " + strings.Join(mids, " ")})
		}
	}
	cm.held = held
	b, err := srtp.RewriteSDP(in, anchor)
	if err != nil {
		return nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
	}
	return b, nil
}

// hasBundle tells whether an SDP has a BUNDLE group (RFC 8843).
func hasBundle(in *sdp.SessionDescription) bool {
	for _, a := range in.Attributes {
		if strings.EqualFold(a.Key, "group") {
			sem, _, _ := strings.Cut(strings.TrimSpace(a.Value), " ")
			if strings.EqualFold(sem, "BUNDLE") {
				return true
			}
		}
	}
	return false
}

// webrtcOnly are attributes of WebRTC SDP that mean nothing to a SIP peer
// (and name the browser's streams and extensions).
var webrtcOnly = []string{"mid", "group", "msid", "msid-semantic", "ssrc", "ssrc-group", "extmap",
	"extmap-allow-mixed", "rtcp-fb", "rtcp-rsize"}

// takeLeg applies what a leg's SDP says: where its media comes from, its
// profile (within its policy), its keys or its DTLS and ICE parameters.
func (cm *callMedia) takeLeg(from string, isOffer bool, st *srtp.Stream, id srtp.LegID, sd *side,
	md *sdp.MediaDescription, rm srtp.RemoteMedia, sec srtp.Security) error {
	prof := profPlain
	switch {
	case sec.DTLS():
		prof = profDTLS
	case savpProto(md.MediaName.Protos):
		prof = profSDES
	}
	if !isOffer && sd.known && prof != sd.prof {
		return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, fmt.Errorf("answered with another media profile than offered"))
	}
	if from == "a" {
		enc, required := cm.trunk.MediaEncryption, cm.trunk.MediaRequired
		switch {
		case enc == "none" && prof != profPlain:
			return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, errors.New("SRTP offered, the trunk takes plain RTP only"))
		case required && prof != profileOf(enc):
			return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, fmt.Errorf("the trunk requires %s media", enc))
		}
	}
	for _, a := range md.Attributes {
		if strings.EqualFold(a.Key, "mid") {
			sd.mid = a.Value
		}
	}
	sd.prof, sd.known = prof, true
	switch prof {
	case profPlain, profSDES:
		if !rm.Hold {
			st.Expect(id, rm.RTP, rm.RTCP)
		}
		if prof == profSDES {
			if err := cm.sdesKeys(isOffer, sd, rm); err != nil {
				return err
			}
		} else {
			sd.their = nil
		}
		return setKeys(st, id, sd)
	}
	// DTLS: one association, or one per component on a leg without
	// rtcp-mux (srtp.DTLS).
	if sec.ICE.Ufrag == "" && !rm.Hold {
		st.Expect(id, rm.RTP, rm.RTCP) // no ICE: the SDP address is where the peer is
	}
	if isOffer {
		if sd.dtls != nil && sd.dtls.SetRemote(sec.Setup, sec.Fingerprints) == nil {
			return cm.iceFrom(from, st, id, sd, sec) // the same association
		}
		setup, err := srtp.AnswerSetup(sec.Setup, srtp.SetupPassive)
		if err != nil {
			return mediaErr(488, "Not Acceptable Here", reasonMediaDTLS, err)
		}
		d, err := srtp.NewDTLS(srtp.DTLSConfig{Certificate: cm.plane.cert, Setup: setup, RemoteSetup: sec.Setup,
			RemoteFingerprints: sec.Fingerprints, OnDone: cm.dtlsDone(from)})
		if err != nil {
			return mediaErr(488, "Not Acceptable Here", reasonMediaDTLS, err)
		}
		return cm.replaceDTLS(from, st, id, sd, sec, d)
	}
	// The answer to our offer (actpass): its role and fingerprint.
	if sd.dtls == nil {
		return mediaErr(488, "Not Acceptable Here", reasonMediaDTLS, errors.New("DTLS answer to an offer without DTLS"))
	}
	err := sd.dtls.SetRemote(sec.Setup, sec.Fingerprints)
	if errors.Is(err, srtp.ErrDTLSChanged) {
		// Another answer with other DTLS parameters: another early
		// dialog of a forking backend (its 183, or the 2xx of the fork
		// that answered), or the peer's new certificate. A new
		// association with it, in the role its answer leaves us; the
		// caller's side is not touched.
		setup := srtp.SetupPassive
		if sec.Setup == srtp.SetupPassive {
			setup = srtp.SetupActive
		}
		d, derr := srtp.NewDTLS(srtp.DTLSConfig{Certificate: cm.plane.cert, Setup: setup, RemoteSetup: sec.Setup,
			RemoteFingerprints: sec.Fingerprints, OnDone: cm.dtlsDone(from)})
		if derr != nil {
			return mediaErr(488, "Not Acceptable Here", reasonMediaDTLS, derr)
		}
		return cm.replaceDTLS(from, st, id, sd, sec, d)
	}
	if err != nil {
		return mediaErr(488, "Not Acceptable Here", reasonMediaDTLS, err)
	}
	return cm.iceFrom(from, st, id, sd, sec)
}

// replaceDTLS makes d the side's DTLS handler; the one it replaces is
// closed after the transition (its close_notify is a send).
func (cm *callMedia) replaceDTLS(from string, st *srtp.Stream, id srtp.LegID, sd *side, sec srtp.Security, d *srtp.DTLS) error {
	old := sd.dtls
	sd.dtls = d
	if err := cm.iceFrom(from, st, id, sd, sec); err != nil {
		return err
	}
	if old != nil {
		old.Retire()
		cm.closers = append(cm.closers, old)
	}
	return nil
}

// takeClosers returns what the media's last change replaced, to close
// after the transition, and forgets it.
func (cm *callMedia) takeClosers() []io.Closer {
	if cm == nil {
		return nil
	}
	c := cm.closers
	cm.closers = nil
	return c
}

// iceFrom installs (or updates) the leg's handler: DTLS alone, or ICE-lite
// and DTLS when the peer does ICE (WebRTC).
// setHandler gives the stream's leg the side's DTLS (and ICE) handler,
// when they changed since it last did.
func (sd *side) setHandler(st *srtp.Stream, id srtp.LegID) {
	if sd.hDTLS == sd.dtls && sd.hICE == sd.ice {
		return
	}
	var h srtp.DatagramHandler = sd.dtls
	if sd.ice != nil {
		h = &srtp.SecureLeg{ICE: sd.ice, DTLS: sd.dtls}
	}
	st.SetHandler(id, h)
	sd.hDTLS, sd.hICE = sd.dtls, sd.ice
}

func (cm *callMedia) iceFrom(from string, st *srtp.Stream, id srtp.LegID, sd *side, sec srtp.Security) error {
	if sec.ICE.Ufrag != "" {
		if sd.ice == nil {
			// Consent freshness: a peer whose checks stop for the consent
			// timeout gets no more media (the agent stops it) and its
			// call ends (consentLost).
			ice, err := srtp.NewICELite(srtp.ICEConfig{RemoteUfrag: sec.ICE.Ufrag,
				ConsentTimeout: time.Duration(cm.plane.consent.Load()), OnConsentLost: cm.consentLost(from)})
			if err != nil {
				return mediaErr(488, "Not Acceptable Here", reasonMediaDTLS, err)
			}
			sd.ice = ice
		} else {
			sd.ice.SetRemoteUfrag(sec.ICE.Ufrag)
		}
	}
	sd.setHandler(st, id)
	return nil
}

// dtlsDone counts and logs the end of a leg's DTLS handshake.
func (cm *callMedia) dtlsDone(leg string) func(srtp.DTLSResult) {
	realm := cm.aRealm
	if leg == "b" {
		realm = cm.bRealm
	}
	return func(r srtp.DTLSResult) {
		if cm.plane != nil {
			cm.plane.countDTLS(realm, r)
		}
		if cm.log == nil {
			return
		}
		if r.Err != nil {
			cm.log.Warn("DTLS handshake failed", "leg", leg, "peer", r.Peer.String(), "reason", r.Reason(), "error", r.Err.Error())
			return
		}
		cm.log.Debug("DTLS-SRTP up", "leg", leg, "peer", r.Peer.String(), "client", r.Client, "suite", r.Suite.String())
	}
}

func profileOf(enc string) profile {
	switch enc {
	case "sdes":
		return profSDES
	case "dtls":
		return profDTLS
	}
	return profPlain
}

// offerTo sets the profile the SBC offers leg to: by the pool's policy
// towards the backend ("any": the caller's, SDES for a DTLS caller), the
// caller's own once known towards the caller.
func (cm *callMedia) offerTo(to string, st *srtp.Stream, id srtp.LegID, dst *side, other profile) error {
	if !dst.known {
		prof := profPlain
		if to == "b" {
			switch cm.poolEnc {
			case "any":
				prof = other
				if prof == profDTLS {
					prof = profSDES
				}
			default:
				prof = profileOf(cm.poolEnc)
			}
		} else {
			prof = profileOf(cm.trunk.MediaEncryption)
		}
		dst.prof = prof
	}
	switch dst.prof {
	case profSDES:
		if dst.our == nil {
			c, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
			if err != nil {
				return err
			}
			dst.our = &c
		}
	case profDTLS:
		if dst.dtls == nil {
			d, err := srtp.NewDTLS(srtp.DTLSConfig{Certificate: cm.plane.cert, Setup: srtp.SetupActpass, OnDone: cm.dtlsDone(to)})
			if err != nil {
				return err
			}
			dst.dtls = d
		}
		if to == "b" && cm.bWebRTC && dst.ice == nil {
			// A WebSocket peer is a browser: it takes no offer without
			// ICE. Our ICE-lite side goes in the offer; the peer's
			// ufrag comes with its answer (iceFrom).
			ice, err := srtp.NewICELite(srtp.ICEConfig{ConsentTimeout: time.Duration(cm.plane.consent.Load()), OnConsentLost: cm.consentLost(to)})
			if err != nil {
				return err
			}
			dst.ice = ice
		}
		dst.setHandler(st, id)
	}
	return nil
}

// anchorTo is the SBC's side of one m= line in the SDP sent to leg dst.
func (cm *callMedia) anchorTo(st *srtp.Stream, id srtp.LegID, dst *side, isOffer bool, md *sdp.MediaDescription) srtp.MediaAnchor {
	lrtp, lrtcp := st.LocalAddr(id)
	ma := srtp.MediaAnchor{Port: int(lrtp.Port()), Proto: "RTP/AVP"}
	if lrtcp == lrtp {
		ma.RTCPPort = ma.Port // rtcp-mux
	}
	switch dst.prof {
	case profSDES:
		ma.Proto = "RTP/SAVP"
		c := *dst.our
		if !isOffer && dst.their != nil {
			c.Tag = dst.their.Tag // our answer echoes the tag of the line we chose
		}
		ma.Attributes = []sdp.Attribute{{Key: "crypto", Value: c.String()}}
	case profDTLS:
		ma.Proto = "UDP/TLS/RTP/SAVP"
		if dst.ice != nil {
			ma.Proto = "UDP/TLS/RTP/SAVPF"
			if dst.mid != "" && !hasDirection(md, "mid") {
				ma.Attributes = append(ma.Attributes, sdp.Attribute{Key: "mid", Value: dst.mid})
			}
		}
		if lrtcp == lrtp && !hasDirection(md, "rtcp-mux") {
			ma.Attributes = append(ma.Attributes, sdp.Attribute{Key: "rtcp-mux"})
		}
	}
	return ma
}

// sdesKeys reads a leg's SDES keys from its SDP.
func (cm *callMedia) sdesKeys(isOffer bool, sd *side, rm srtp.RemoteMedia) error {
	if isOffer {
		c, err := srtp.Negotiate(rm.Cryptos, srtp.DefaultSuites)
		if err != nil {
			return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, err)
		}
		if sd.our == nil || sd.our.Suite != c.Suite {
			a, err := c.Answer()
			if err != nil {
				return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, err)
			}
			sd.our = &a
		}
		sd.their = &c
		return nil
	}
	// An answer to our offer: the line with our tag.
	if sd.our == nil {
		return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, errors.New("SRTP answer to a plain offer"))
	}
	for _, c := range rm.Cryptos {
		if c.Tag == sd.our.Tag && c.Suite == sd.our.Suite {
			sd.their = &c
			return nil
		}
	}
	return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, errors.New("the answer has no a=crypto for the offered tag and suite"))
}

func hasDirection(md *sdp.MediaDescription, keys ...string) bool {
	for _, a := range md.Attributes {
		for _, k := range keys {
			if strings.EqualFold(a.Key, k) {
				return true
			}
		}
	}
	return false
}

// setKeys gives a leg the transform its profile and keys call for (plain
// or SDES; a DTLS leg's comes from its handshake). An SRTP leg that
// already has one is rekeyed in place: contexts whose keys did not change
// are kept, and the rollover counter of the current source carries over a
// new key (RFC 3711 3.3.1), so a re-INVITE (hold, a refresh) does not
// reset the index the peer is at (notes, pitfall 6).
func setKeys(st *srtp.Stream, id srtp.LegID, sd *side) error {
	if !sd.sdes() {
		if _, plain := st.Transform(id).(srtp.Plain); !plain {
			st.SetTransform(id, srtp.Plain{})
		}
		return nil
	}
	if cur, ok := st.Transform(id).(*srtp.SRTP); ok {
		if err := cur.RekeySDES(*sd.our, *sd.their); err != nil {
			return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, err)
		}
		return nil
	}
	t, err := srtp.NewSDES(*sd.our, *sd.their)
	if err != nil {
		return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, err)
	}
	st.SetTransform(id, t)
	return nil
}

// body rewrites a body received on leg from, an offer or an answer, for
// the other leg. An empty body stays empty; a body that is not SDP is
// refused (it could carry addresses the SBC does not rewrite).
func (cm *callMedia) body(from string, offer bool, ct string, b []byte) ([]byte, error) {
	if cm == nil || len(b) == 0 {
		return b, nil
	}
	if !isSDP(ct, b) {
		return nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, fmt.Errorf("body of type %q", ct))
	}
	in, err := srtp.ParseSDP(b)
	if err != nil {
		return nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
	}
	return cm.fromLeg(from, offer, in)
}

// maxEarlyDialogs bounds the early dialogs whose answers a call keeps.
const maxEarlyDialogs = 16

// answerFrom records the SDP answer (raw, as received) of the backend's
// dialog tag, once relayed: the leg now follows that dialog.
func (cm *callMedia) answerFrom(tag string, b []byte) {
	if cm == nil || len(b) == 0 {
		return
	}
	if cm.early == nil {
		cm.early = map[string][]byte{}
	}
	if _, ok := cm.early[tag]; ok || len(cm.early) < maxEarlyDialogs {
		cm.early[tag] = b
	}
	cm.applied = tag
}

// followDialog makes the backend's leg follow dialog tag, whose answer
// came earlier (a 2xx without SDP after that dialog's 183): its SDP is
// applied again if another dialog's was applied since. The SDP towards
// the caller does not change (the same relay and keys), so nothing is
// returned.
func (cm *callMedia) followDialog(tag string) error {
	if cm == nil || tag == cm.applied {
		return nil
	}
	b, ok := cm.early[tag]
	if !ok {
		return nil
	}
	if _, err := cm.body("b", false, "application/sdp", b); err != nil {
		return err
	}
	cm.applied = tag
	return nil
}

// idle is how long no media arrived from either side of any stream.
func (cm *callMedia) idle(now time.Time) time.Duration {
	var least time.Duration = -1
	for _, ms := range cm.streams {
		if ms.st == nil || ms.off {
			continue
		}
		if d := ms.st.Idle(now); least < 0 || d < least {
			least = d
		}
	}
	if least < 0 {
		return 0
	}
	return least
}

// MediaStats is a call's media as a CDR or the "call ended" log sees it:
// each leg's encryption profile and counters, summed over the call's
// streams (m= lines). Leg A faces the caller, leg B the backend.
type MediaStats struct {
	A, B LegMediaStats
	// Streams is the number of m= lines relayed (refused lines excluded).
	Streams int
}

// LegMediaStats is one leg of a call's media.
type LegMediaStats struct {
	Realm string
	// Encryption is the leg's profile: "none" (plain RTP), "sdes" or
	// "dtls" (SRTP keyed by SDES or DTLS-SRTP); "" when no SDP set it.
	Encryption string
	// Received counts the valid packets (RTP and RTCP) the leg's peer
	// sent the SBC, ReceivedBytes their bytes, RTCP the RTCP among them;
	// Sent the packets the SBC sent to the peer (relayed from the other
	// leg).
	Received, ReceivedBytes, RTCP, Sent uint64
	// Dropped counts the peer's packets not relayed, AuthFailures those
	// among them that failed SRTP authentication.
	Dropped, AuthFailures uint64
}

// Stats returns the call's media counters and profiles. Like the other
// methods it runs under the call's lock; the counters are final once
// close has run.
func (cm *callMedia) Stats() MediaStats {
	if cm == nil {
		return MediaStats{}
	}
	out := MediaStats{A: LegMediaStats{Realm: cm.aRealm}, B: LegMediaStats{Realm: cm.bRealm}}
	for _, ms := range cm.streams {
		if ms.st == nil {
			continue
		}
		out.Streams++
		st := ms.st.Stats()
		for _, l := range []struct {
			o         *LegMediaStats
			in, other srtp.LegStats
			sd        *side
		}{{&out.A, st.A, st.B, &ms.a}, {&out.B, st.B, st.A, &ms.b}} {
			l.o.Received += l.in.Packets
			l.o.ReceivedBytes += l.in.Bytes
			l.o.RTCP += l.in.RTCPPackets
			l.o.Sent += l.other.Forwarded
			for _, n := range l.in.Dropped {
				l.o.Dropped += n
			}
			l.o.AuthFailures += l.in.AuthFailures()
			if l.o.Encryption == "" && l.sd.known {
				l.o.Encryption = l.sd.prof.String()
			}
		}
	}
	return out
}

// String is the profile's name in MediaStats and the log: none, sdes, dtls.
func (p profile) String() string {
	switch p {
	case profSDES:
		return "sdes"
	case profDTLS:
		return "dtls"
	}
	return "none"
}

// close releases every relay socket (I/O: the call's end action).
func (cm *callMedia) close() {
	if cm == nil {
		return
	}
	for _, ms := range cm.streams {
		if ms.st != nil {
			ms.st.Close()
		}
	}
	for _, cl := range cm.takeClosers() {
		_ = cl.Close()
	}
	if cm.plane != nil {
		cm.plane.untrack(cm)
	}
}

// Metrics of the media plane: per realm, what the relay received from
// the peers on that realm (ingress of the legs facing it), summed over the
// calls in progress and those that ended, and the state of its ports.

// mediaTotals are a realm's counters of ended streams.
type mediaTotals struct {
	packets, bytes, forwarded, offloaded uint64
	dropped                              [srtp.NumDropReasons]uint64
}

func (t *mediaTotals) add(s srtp.LegStats) {
	t.packets += s.Packets
	t.bytes += s.Bytes
	t.forwarded += s.Forwarded
	t.offloaded += s.Offloaded
	for i, n := range s.Dropped {
		t.dropped[i] += n
	}
}

// track registers a call's media for the metrics until it is closed (its
// realms are set when it is made: a DTLS handshake may end before this).
func (mp *mediaPlane) track(cm *callMedia) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	if mp.live == nil {
		mp.live = map[*callMedia]bool{}
		mp.ended = map[string]*mediaTotals{}
	}
	cm.plane = mp
	mp.live[cm] = true
}

// untrack folds a closed call's counters into its realms' totals.
func (mp *mediaPlane) untrack(cm *callMedia) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	if !mp.live[cm] {
		return
	}
	delete(mp.live, cm)
	for _, ms := range cm.streams {
		if ms.st == nil {
			continue
		}
		st := ms.st.Stats()
		mp.totals(cm.aRealm).add(st.A)
		mp.totals(cm.bRealm).add(st.B)
	}
}

func (mp *mediaPlane) totals(realm string) *mediaTotals {
	t := mp.ended[realm]
	if t == nil {
		t = &mediaTotals{}
		mp.ended[realm] = t
	}
	return t
}

// snapshot sums ended and live streams by realm, counts live streams, and
// copies the realms' events.
func (mp *mediaPlane) snapshot() (map[string]*mediaTotals, map[string]int, map[string]mediaEvents) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	out := map[string]*mediaTotals{}
	active := map[string]int{}
	events := map[string]mediaEvents{}
	for r, e := range mp.events {
		events[r] = *e
	}
	for r, t := range mp.ended {
		c := *t
		out[r] = &c
	}
	get := func(r string) *mediaTotals {
		if out[r] == nil {
			out[r] = &mediaTotals{}
		}
		return out[r]
	}
	for cm := range mp.live {
		for _, ms := range cm.streams {
			if ms.st == nil {
				continue
			}
			st := ms.st.Stats()
			get(cm.aRealm).add(st.A)
			get(cm.bRealm).add(st.B)
			active[cm.aRealm]++
			active[cm.bRealm]++
		}
	}
	return out, active, events
}

var (
	mediaPacketsDesc = prometheus.NewDesc("sbc_media_packets_total",
		"RTP and RTCP packets the relay received from the peers of a realm and accepted (valid, from the latched source).", []string{"realm"}, nil)
	mediaBytesDesc = prometheus.NewDesc("sbc_media_bytes_total",
		"Bytes of the packets counted in sbc_media_packets_total.", []string{"realm"}, nil)
	mediaForwardedDesc = prometheus.NewDesc("sbc_media_forwarded_packets_total",
		"Packets received from the peers of a realm and sent on to the other side of their call.", []string{"realm"}, nil)
	mediaOffloadedDesc = prometheus.NewDesc("sbc_media_offloaded_packets_total",
		"Packets counted in sbc_media_forwarded_packets_total that the in-kernel relay forwarded (media.kernel_relay), without the SBC process.", []string{"realm"}, nil)
	mediaDroppedDesc = prometheus.NewDesc("sbc_media_dropped_packets_total",
		"Packets received from a realm's side and not relayed, by reason (srtp_auth: SRTP authentication failures).", []string{"realm", "reason"}, nil)
	mediaStreamsDesc = prometheus.NewDesc("sbc_media_streams_active",
		"Media streams (m= lines of calls in progress) with a leg on the realm.", []string{"realm"}, nil)
	mediaPortsDesc = prometheus.NewDesc("sbc_media_ports",
		"Relay port pairs of a realm's range by state: in_use, quarantined (released, resting before reuse), free.", []string{"realm", "state"}, nil)
	mediaExhaustedDesc = prometheus.NewDesc("sbc_media_ports_exhausted_total",
		"Relay port allocations that found the realm's range full (the call got 503).", []string{"realm"}, nil)
	mediaDTLSDesc = prometheus.NewDesc("sbc_media_dtls_handshakes_total",
		"DTLS-SRTP handshakes of the legs facing a realm, by result: ok, or why they failed (fingerprint, role, timeout, error).", []string{"realm", "result"}, nil)
	mediaTimeoutsDesc = prometheus.NewDesc("sbc_media_timeouts_total",
		"Calls with a leg on the realm that the SBC ended for their media, by reason: media_timeout (no media either way), consent_lost (an ICE peer of this realm stopped its consent checks).", []string{"realm", "reason"}, nil)
)

// mediaPortStates are the state label values of sbc_media_ports.
var mediaPortStates = []string{"in_use", "quarantined", "free"}

func (mp *mediaPlane) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mediaPacketsDesc, mediaBytesDesc, mediaForwardedDesc, mediaOffloadedDesc, mediaDroppedDesc,
		mediaStreamsDesc, mediaPortsDesc, mediaExhaustedDesc, mediaDTLSDesc, mediaTimeoutsDesc} {
		ch <- d
	}
}

func (mp *mediaPlane) Collect(ch chan<- prometheus.Metric) {
	totals, active, events := mp.snapshot()
	for realm, pool := range mp.pools {
		t := totals[realm]
		if t == nil {
			t = &mediaTotals{}
		}
		ch <- prometheus.MustNewConstMetric(mediaPacketsDesc, prometheus.CounterValue, float64(t.packets), realm)
		ch <- prometheus.MustNewConstMetric(mediaBytesDesc, prometheus.CounterValue, float64(t.bytes), realm)
		ch <- prometheus.MustNewConstMetric(mediaForwardedDesc, prometheus.CounterValue, float64(t.forwarded), realm)
		ch <- prometheus.MustNewConstMetric(mediaOffloadedDesc, prometheus.CounterValue, float64(t.offloaded), realm)
		ps := pool.Stats()
		for r := srtp.DropReason(0); r < srtp.NumDropReasons; r++ {
			n := t.dropped[r]
			if r == srtp.DropIdlePort {
				n += ps.IdleDrops // the pool's, not a call's
			}
			ch <- prometheus.MustNewConstMetric(mediaDroppedDesc, prometheus.CounterValue, float64(n), realm, r.String())
		}
		ch <- prometheus.MustNewConstMetric(mediaStreamsDesc, prometheus.GaugeValue, float64(active[realm]), realm)
		for i, n := range []int{ps.InUse, ps.Quarantined, ps.Free} {
			ch <- prometheus.MustNewConstMetric(mediaPortsDesc, prometheus.GaugeValue, float64(n), realm, mediaPortStates[i])
		}
		ch <- prometheus.MustNewConstMetric(mediaExhaustedDesc, prometheus.CounterValue, float64(ps.Exhausted), realm)
		ev := events[realm]
		for i, r := range dtlsResults {
			ch <- prometheus.MustNewConstMetric(mediaDTLSDesc, prometheus.CounterValue, float64(ev.dtls[i]), realm, r)
		}
		for i, r := range mediaEndings {
			ch <- prometheus.MustNewConstMetric(mediaTimeoutsDesc, prometheus.CounterValue, float64(ev.timeouts[i]), realm, r)
		}
	}
}

// lines is how many m= lines the call's media has (0 without media).
func (cm *callMedia) lines() int {
	if cm == nil {
		return 0
	}
	return len(cm.streams)
}

// dropLines takes back the m= lines after the first n, which a refused
// offer added, and returns their streams to close (after the lock).
func (cm *callMedia) dropLines(n int) map[int]*mstream {
	if cm == nil || len(cm.streams) <= n {
		return nil
	}
	gone := map[int]*mstream{}
	for i, ms := range cm.streams[n:] {
		if ms.st != nil {
			gone[n+i] = ms
		}
	}
	unlock := cm.lockStreams()
	clear(cm.streams[n:])
	cm.streams = cm.streams[:n]
	unlock()
	return gone
}

// lockStreams locks what reads a tracked call's streams outside the
// call's lock (the media plane's metrics collector) before cm.streams
// changes, and returns the unlock.
func (cm *callMedia) lockStreams() func() {
	if cm.plane == nil {
		return func() {}
	}
	cm.plane.mu.Lock()
	return cm.plane.mu.Unlock
}

// takeSpare returns the spare streams and forgets them.
func (cm *callMedia) takeSpare() map[int]*mstream {
	if cm == nil {
		return nil
	}
	s := cm.spare
	cm.spare = nil
	return s
}

// preallocLines binds relay ports for the m= lines that the offer in an
// in-dialog request (re-INVITE, UPDATE) adds to the call: a T.38 line
// next to the audio, video added to a call. It runs before the request's
// transition, outside the call's lock, which it takes only to read how
// many lines the call has and the profiles of its sides: the transition
// touches no socket. The transition (fromLeg) takes the streams by line
// index; what it does not take (the offer was refused, or was not what
// this parse saw) is closed after it. A line whose ports cannot be bound
// is refused with port 0, and the rest of the offer goes on.
func (s *SBC) preallocLines(c *call, from *leg, req *sip.Request) map[int]*mstream {
	cm := c.media
	body := req.Body()
	if cm == nil || s.media == nil || len(body) == 0 || (req.Method != sip.INVITE && req.Method != sip.UPDATE) {
		return nil
	}
	ct := ""
	if h := req.ContentType(); h != nil {
		ct = h.Value()
	}
	if !isSDP(ct, body) {
		return nil
	}
	c.mu.Lock()
	n := len(cm.streams)
	fromA := from == c.a
	// The profile of each side, from the first relayed line: a line
	// added later gets the same.
	var aProf, bProf profile
	aKnown, bKnown, aICE := false, false, false
	for _, ms := range cm.streams {
		if ms.st != nil && (ms.a.known || ms.b.known) {
			aProf, aKnown, bProf, bKnown, aICE = ms.a.prof, ms.a.known, ms.b.prof, ms.b.known, ms.a.ice != nil
			break
		}
	}
	c.mu.Unlock()
	if bytes.Count(body, []byte("\nm=")) <= n {
		return nil // no line added (the common re-INVITE)
	}
	offer, err := srtp.ParseSDP(body)
	if err != nil || len(offer.MediaDescriptions) <= n {
		return nil // the transition answers a bad SDP
	}
	if !aKnown {
		aProf = profileOf(cm.trunk.MediaEncryption)
	}
	if !bKnown {
		bProf = profileOf(cm.poolEnc)
	}
	var spare map[int]*mstream
	for i := n; i < len(offer.MediaDescriptions); i++ {
		md := offer.MediaDescriptions[i]
		var a, b legShape
		switch cm.lineKind(md) {
		case lineRefused:
			continue
		case lineUDPTL:
			a, b = legShape{mux: true}, legShape{mux: true}
		default:
			rm, err := srtp.Remote(offer, i)
			if err != nil {
				continue
			}
			sec, _ := srtp.RemoteSecurity(offer, i)
			offSRTP := sec.DTLS() || savpProto(md.MediaName.Protos)
			if fromA {
				a = legShape{mux: rm.Mux, normalize: offSRTP, noLearn: sec.ICE.Ufrag != ""}
				b = legShape{mux: rm.Mux || bProf == profDTLS, normalize: bProf != profPlain}
			} else {
				b = legShape{mux: rm.Mux, normalize: offSRTP}
				a = legShape{mux: rm.Mux || aProf == profDTLS, normalize: aProf != profPlain, noLearn: aICE}
			}
		}
		ms, err := s.allocStream(cm.aRealm, cm.bRealm, a, b)
		if err != nil {
			c.logger().Warn("no relay for an m= line a re-offer adds; refused with port 0", "line", i, "error", err.Error())
			continue
		}
		if spare == nil {
			spare = map[int]*mstream{}
		}
		spare[i] = ms
	}
	return spare
}
