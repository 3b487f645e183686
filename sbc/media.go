package sbc

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/pion/sdp/v3"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/srtp"
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
// Profiles: a leg is "plain" (RTP/AVP) or "sdes" (RTP/SAVP with a=crypto,
// RFC 4568). The caller's leg takes what the caller offers, within its
// trunk's media_encryption; the backend's leg takes what the pool's
// media_encryption says ("any": the caller's). SRTP is terminated on each
// side with keys of the SBC's own: each side's keys stay on its side.
//
// Not yet: DTLS-SRTP and ICE (WebRTC media), m= lines added by a
// re-INVITE (answered with port 0), non-RTP media (refused with port 0),
// bodies other than application/sdp (488).

// mediaPlane is the relay port pool of each realm, fixed at New (a change
// of a realm's media addresses or ports needs a restart).
type mediaPlane struct {
	pools map[string]*srtp.PortPool

	mu    sync.Mutex
	live  map[*callMedia]bool     // calls whose streams are open
	ended map[string]*mediaTotals // counters of closed streams, by realm
}

func newMediaPlane(p *policy.Policy) (*mediaPlane, error) {
	mp := &mediaPlane{pools: map[string]*srtp.PortPool{}}
	for _, r := range p.Realms {
		if !r.Media.Addr.IsValid() || r.Media.Addr.IsUnspecified() {
			continue // anchoring off and no address to relay on: calls of this realm pass SDP through
		}
		pp, err := srtp.NewPortPool(srtp.PortPoolConfig{IP: r.Media.Addr, Min: r.Media.Min, Max: r.Media.Max,
			Quarantine: p.Media.Quarantine.Duration})
		if err != nil {
			return nil, fmt.Errorf("realm %s media: %w", r.Name, err)
		}
		mp.pools[r.Name] = pp
	}
	return mp, nil
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
	reasonMediaDTLS       reason = "dtls_not_supported" // a DTLS-SRTP (UDP/TLS/RTP/SAVP[F]) offer: not terminated yet: 488
	reasonMediaBind       reason = "relay_unavailable"  // the relay could not open its sockets: 503
)

var mediaReasons = []reason{reasonMediaPorts, reasonMediaBadSDP, reasonMediaEncryption, reasonMediaDTLS, reasonMediaBind}

func mediaErr(code int, phrase string, r reason, err error) *mediaError {
	return &mediaError{code: code, phrase: phrase, r: r, err: err}
}

// side is one leg's media profile and keys, per m= line.
type side struct {
	sdes  bool
	our   *srtp.Crypto // our key in the SDP sent to this leg
	their *srtp.Crypto // the leg's key from its SDP
}

// mstream is one m= line of the call.
type mstream struct {
	st   *srtp.Stream // nil for a refused line
	a, b side
}

// callMedia is a call's media: its streams and the offer/answer state.
// Its methods run under the call's lock (close excepted).
type callMedia struct {
	trunk        *policy.Trunk
	poolEnc      string
	aAddr, bAddr netip.Addr // what each side's SDP gets as c=
	aOrig, bOrig *srtp.Origin
	streams      []*mstream
	held         bool // the last exchange put the media on hold (inactive, or c=0.0.0.0)
	timeout      time.Duration
	delayed      bool // the caller's INVITE had no SDP: the backend offers

	plane          *mediaPlane // for the metrics (track, untrack)
	aRealm, bRealm string
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
	cm := &callMedia{trunk: trunk, poolEnc: pool.MediaEncryption, aAddr: ra.Media.AdvertiseAddr, bAddr: rb.Media.AdvertiseAddr,
		aOrig: srtp.NewOrigin("sbc", ra.Media.AdvertiseAddr), bOrig: srtp.NewOrigin("sbc", rb.Media.AdvertiseAddr),
		timeout: st.pol.Media.Timeout.Duration}
	if len(body) == 0 {
		// Delayed offer: the backend offers in its 2xx. One stream.
		ms, err := s.allocStream(aRealm, bRealm, false, false)
		if err != nil {
			return nil, nil, err
		}
		cm.streams = []*mstream{ms}
		cm.delayed = true
		s.media.track(cm, aRealm, bRealm)
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
		if md.MediaName.Port.Value == 0 || !rtpProto(md.MediaName.Protos) {
			cm.streams = append(cm.streams, &mstream{})
			continue
		}
		rm, err := srtp.Remote(offer, i)
		if err != nil {
			cm.close()
			return nil, nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
		}
		ms, err := s.allocStream(aRealm, bRealm, rm.Mux, rm.Mux)
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
	s.media.track(cm, aRealm, bRealm)
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
	p := strings.ToUpper(strings.Join(protos, "/"))
	return strings.Contains(p, "RTP/")
}

func dtlsProto(protos []string) bool {
	return strings.Contains(strings.ToUpper(strings.Join(protos, "/")), "TLS/")
}

func savpProto(protos []string) bool {
	return strings.Contains(strings.ToUpper(strings.Join(protos, "/")), "SAVP")
}

// allocStream opens a stream's relay sockets on both sides.
func (s *SBC) allocStream(aRealm, bRealm string, aMux, bMux bool) (*mstream, error) {
	ap, err := s.media.pools[aRealm].Allocate(aMux)
	if err != nil {
		return nil, allocErr(err)
	}
	bp, err := s.media.pools[bRealm].Allocate(bMux)
	if err != nil {
		ap.Close()
		return nil, allocErr(err)
	}
	st, err := srtp.NewStream(srtp.StreamConfig{
		// The caller's leg learns its source from the first packet (NAT);
		// the backend's accepts only the address its SDP gives.
		A: srtp.LegConfig{Ports: ap, Learn: true},
		B: srtp.LegConfig{Ports: bp},
	})
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
	held := false
	for i, md := range in.MediaDescriptions {
		var ms *mstream
		if i < len(cm.streams) {
			ms = cm.streams[i]
		}
		if ms == nil || ms.st == nil || md.MediaName.Port.Value == 0 || !rtpProto(md.MediaName.Protos) {
			// Refused, not RTP, or beyond the lines the call has relay
			// ports for: port 0 towards the other side.
			anchor.Media = append(anchor.Media, srtp.MediaAnchor{Port: 0})
			continue
		}
		if dtlsProto(md.MediaName.Protos) {
			return nil, mediaErr(488, "Not Acceptable Here", reasonMediaDTLS, errors.New("DTLS-SRTP offered"))
		}
		rm, err := srtp.Remote(in, i)
		if err != nil {
			return nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
		}
		if rm.Hold || hasDirection(md, "inactive") {
			held = true
		}
		src, dst := &ms.a, &ms.b
		srcLeg, dstLeg := srtp.LegA, srtp.LegB
		if from == "b" {
			src, dst, srcLeg, dstLeg = &ms.b, &ms.a, srtp.LegB, srtp.LegA
		}
		if !rm.Hold {
			ms.st.Expect(srcLeg, rm.RTP, rm.RTCP)
		}
		if err := cm.keysFrom(from, isOffer, src, savpProto(md.MediaName.Protos), rm); err != nil {
			return nil, err
		}
		if err := setKeys(ms.st, srcLeg, src); err != nil {
			return nil, err
		}
		// The other side's profile: decided by its policy when we offer,
		// kept when we answer.
		if isOffer {
			dst.sdes = cm.wantSDES(to, src.sdes)
			if dst.sdes && dst.our == nil {
				c, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
				if err != nil {
					return nil, err
				}
				dst.our = &c
			}
		}
		lrtp, lrtcp := ms.st.LocalAddr(dstLeg)
		ma := srtp.MediaAnchor{Port: int(lrtp.Port()), Proto: "RTP/AVP"}
		if lrtcp == lrtp {
			ma.RTCPPort = ma.Port // rtcp-mux
		}
		if dst.sdes {
			ma.Proto = "RTP/SAVP"
			ma.Attributes = []sdp.Attribute{{Key: "crypto", Value: dst.our.String()}}
			if !isOffer && dst.their != nil {
				// Our answer echoes the tag of the line we chose.
				c := *dst.our
				c.Tag = dst.their.Tag
				ma.Attributes[0].Value = c.String()
			}
		}
		if keepFeedbackProfile(md.MediaName.Protos) {
			ma.Proto += "F"
		}
		anchor.Media = append(anchor.Media, ma)
	}
	cm.held = held
	out, err := srtp.Rewrite(in, anchor)
	if err != nil {
		return nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
	}
	b, err := out.Marshal()
	if err != nil {
		return nil, mediaErr(488, "Not Acceptable Here", reasonMediaBadSDP, err)
	}
	return b, nil
}

// setKeys gives a leg the transform its profile and keys call for. An
// SRTP leg that already has one is rekeyed in place: contexts whose keys
// did not change are kept, and the rollover counter of the current source
// carries over a new key (RFC 3711 3.3.1), so a re-INVITE (hold, a
// refresh) does not reset the index the peer is at (notes, pitfall 6).
func setKeys(st *srtp.Stream, id srtp.LegID, sd *side) error {
	if !sd.sdes {
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

// keepFeedbackProfile: an AVPF line stays AVPF (RTCP feedback) on the
// other side.
func keepFeedbackProfile(protos []string) bool {
	return strings.HasSuffix(strings.ToUpper(strings.Join(protos, "/")), "AVPF")
}

func hasDirection(md *sdp.MediaDescription, dirs ...string) bool {
	for _, a := range md.Attributes {
		for _, d := range dirs {
			if strings.EqualFold(a.Key, d) {
				return true
			}
		}
	}
	return false
}

// wantSDES is the profile the SBC offers leg to, given the profile of
// the leg that offered.
func (cm *callMedia) wantSDES(to string, otherSDES bool) bool {
	if to == "b" {
		switch cm.poolEnc {
		case "sdes":
			return true
		case "any":
			return otherSDES
		}
		return false
	}
	// Towards the caller (a backend's re-offer, a delayed offer): keep the
	// caller's profile once known, else what its trunk prefers.
	return otherSDES && cm.trunk.MediaEncryption != "none" || cm.trunk.MediaEncryption == "sdes"
}

// keysFrom reads a leg's SDES keys from its SDP, within its policy.
func (cm *callMedia) keysFrom(from string, isOffer bool, sd *side, savp bool, rm srtp.RemoteMedia) error {
	enc := "any"
	required := false
	if from == "a" {
		enc, required = cm.trunk.MediaEncryption, cm.trunk.MediaRequired
	}
	if !savp {
		if required || (!isOffer && sd.sdes) {
			return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, errors.New("plain RTP where SRTP is required"))
		}
		sd.sdes, sd.their = false, nil
		return nil
	}
	if enc == "none" {
		return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, errors.New("SRTP offered, the trunk takes plain RTP only"))
	}
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
		sd.sdes, sd.their = true, &c
		return nil
	}
	// An answer to our offer: the line with our tag.
	if sd.our == nil {
		return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, errors.New("SRTP answer to a plain offer"))
	}
	for _, c := range rm.Cryptos {
		if c.Tag == sd.our.Tag && c.Suite == sd.our.Suite {
			sd.sdes, sd.their = true, &c
			return nil
		}
	}
	return mediaErr(488, "Not Acceptable Here", reasonMediaEncryption, errors.New("the answer has no a=crypto for the offered tag and suite"))
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

// idle is how long no media arrived from either side of any stream.
func (cm *callMedia) idle(now time.Time) time.Duration {
	var least time.Duration = -1
	for _, ms := range cm.streams {
		if ms.st == nil {
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
	if cm.plane != nil {
		cm.plane.untrack(cm)
	}
}

// Metrics of the media plane: per realm, what the relay received from
// the peers on that realm (ingress of the legs facing it), summed over the
// calls in progress and those that ended, and the state of its ports.

// mediaTotals are a realm's counters of ended streams.
type mediaTotals struct {
	packets, bytes, forwarded uint64
	dropped                   [srtp.NumDropReasons]uint64
}

func (t *mediaTotals) add(s srtp.LegStats) {
	t.packets += s.Packets
	t.bytes += s.Bytes
	t.forwarded += s.Forwarded
	for i, n := range s.Dropped {
		t.dropped[i] += n
	}
}

// track registers a call's media for the metrics until it is closed.
func (mp *mediaPlane) track(cm *callMedia, aRealm, bRealm string) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	if mp.live == nil {
		mp.live = map[*callMedia]bool{}
		mp.ended = map[string]*mediaTotals{}
	}
	cm.plane, cm.aRealm, cm.bRealm = mp, aRealm, bRealm
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

// snapshot sums ended and live streams by realm, and counts live streams.
func (mp *mediaPlane) snapshot() (map[string]*mediaTotals, map[string]int) {
	mp.mu.Lock()
	defer mp.mu.Unlock()
	out := map[string]*mediaTotals{}
	active := map[string]int{}
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
	return out, active
}

var (
	mediaPacketsDesc = prometheus.NewDesc("sbc_media_packets_total",
		"RTP and RTCP packets the relay received from the peers of a realm and accepted (valid, from the latched source).", []string{"realm"}, nil)
	mediaBytesDesc = prometheus.NewDesc("sbc_media_bytes_total",
		"Bytes of the packets counted in sbc_media_packets_total.", []string{"realm"}, nil)
	mediaForwardedDesc = prometheus.NewDesc("sbc_media_forwarded_packets_total",
		"Packets received from the peers of a realm and sent on to the other side of their call.", []string{"realm"}, nil)
	mediaDroppedDesc = prometheus.NewDesc("sbc_media_dropped_packets_total",
		"Packets received from a realm's side and not relayed, by reason (srtp_auth: SRTP authentication failures).", []string{"realm", "reason"}, nil)
	mediaStreamsDesc = prometheus.NewDesc("sbc_media_streams_active",
		"Media streams (m= lines of calls in progress) with a leg on the realm.", []string{"realm"}, nil)
	mediaPortsDesc = prometheus.NewDesc("sbc_media_ports",
		"Relay port pairs of a realm's range by state: in_use, quarantined (released, resting before reuse), free.", []string{"realm", "state"}, nil)
	mediaExhaustedDesc = prometheus.NewDesc("sbc_media_ports_exhausted_total",
		"Relay port allocations that found the realm's range full (the call got 503).", []string{"realm"}, nil)
)

// mediaPortStates are the state label values of sbc_media_ports.
var mediaPortStates = []string{"in_use", "quarantined", "free"}

func (mp *mediaPlane) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{mediaPacketsDesc, mediaBytesDesc, mediaForwardedDesc, mediaDroppedDesc,
		mediaStreamsDesc, mediaPortsDesc, mediaExhaustedDesc} {
		ch <- d
	}
}

func (mp *mediaPlane) Collect(ch chan<- prometheus.Metric) {
	totals, active := mp.snapshot()
	for realm, pool := range mp.pools {
		t := totals[realm]
		if t == nil {
			t = &mediaTotals{}
		}
		ch <- prometheus.MustNewConstMetric(mediaPacketsDesc, prometheus.CounterValue, float64(t.packets), realm)
		ch <- prometheus.MustNewConstMetric(mediaBytesDesc, prometheus.CounterValue, float64(t.bytes), realm)
		ch <- prometheus.MustNewConstMetric(mediaForwardedDesc, prometheus.CounterValue, float64(t.forwarded), realm)
		for r := srtp.DropReason(0); r < srtp.NumDropReasons; r++ {
			ch <- prometheus.MustNewConstMetric(mediaDroppedDesc, prometheus.CounterValue, float64(t.dropped[r]), realm, r.String())
		}
		ch <- prometheus.MustNewConstMetric(mediaStreamsDesc, prometheus.GaugeValue, float64(active[realm]), realm)
		ps := pool.Stats()
		for i, n := range []int{ps.InUse, ps.Quarantined, ps.Free} {
			ch <- prometheus.MustNewConstMetric(mediaPortsDesc, prometheus.GaugeValue, float64(n), realm, mediaPortStates[i])
		}
		ch <- prometheus.MustNewConstMetric(mediaExhaustedDesc, prometheus.CounterValue, float64(ps.Exhausted), realm)
	}
}
