package sbc

// Interop tests with baresip, a real SIP user agent with real media:
// baresip caller (the trunk "carrier", 127.0.0.1) → SBC (in-process,
// 127.0.0.3 outside, 127.0.0.4 inside) → baresip callee (the pool's only
// target, auto-answer; on 127.0.0.1 too, on another port: see
// runBaresipCase). Each side sends its own tone for about
// five seconds; each side's decoded audio (baresip's sndfile dump,
// measured by sox) must be the other side's tone, and baresip's RTP
// statistics must show packets received without errors. SDES-SRTP is
// terminated by the SBC per side: trunk and pool media_encryption.
// Topology: nothing either side received names the other side's
// addresses, ports, origin or keys, and each side's media came from the
// SBC's relay on its side.

import (
	"fmt"
	"math"
	"net/netip"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/baresip"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/srtp"
)

// The tones of the two sides: different, so each side's decoded audio can
// only be the other side's.
const (
	callerToneHz = 440
	calleeToneHz = 660
)

// baresipCallTime is how long the caller stays in the call (baresip -t).
const baresipCallTime = 6 * time.Second

type baresipCase struct {
	name                 string
	callerEnc, calleeEnc string // baresip mediaenc ("" plain)
	callerNoMux          bool   // the caller's rtcp_mux no (DTLS: one association per component)
	trunkEnc             string // trunk media_encryption ("" default "any")
	trunkRequired        bool
	poolEnc              string // pool media_encryption ("" default "none")
	// The profile each side's SDP must have: SRTP by SDES, or by DTLS.
	callerSDES, calleeSDES bool
	callerDTLS, calleeDTLS bool
}

var baresipCases = []baresipCase{
	{name: "plain_to_plain"},
	{name: "sdes_to_plain", callerEnc: "srtp-mand", callerSDES: true},
	{name: "plain_to_sdes", calleeEnc: "srtp-mand", poolEnc: "sdes", calleeSDES: true},
	{name: "sdes_to_sdes", callerEnc: "srtp-mand", calleeEnc: "srtp-mand", trunkEnc: "sdes", trunkRequired: true,
		poolEnc: "sdes", callerSDES: true, calleeSDES: true},
	{name: "dtls_to_plain", callerEnc: "dtls_srtp", callerDTLS: true},
	{name: "dtls_nomux_to_plain", callerEnc: "dtls_srtp", callerNoMux: true, callerDTLS: true},
	{name: "sdes_to_dtls", callerEnc: "srtp-mand", calleeEnc: "dtls_srtp", poolEnc: "dtls", callerSDES: true, calleeDTLS: true},
	{name: "dtls_to_sdes", callerEnc: "dtls_srtp", calleeEnc: "srtp-mand", trunkEnc: "dtls", trunkRequired: true,
		poolEnc: "sdes", callerDTLS: true, calleeSDES: true},
}

func (c baresipCase) profiles() (caller, callee string) {
	prof := func(sdes, dtls bool) string {
		switch {
		case sdes:
			return "sdes"
		case dtls:
			return "dtls"
		}
		return "plain"
	}
	return prof(c.callerSDES, c.callerDTLS), prof(c.calleeSDES, c.calleeDTLS)
}

func TestBaresipMedia(t *testing.T) {
	if testing.Short() {
		t.Skip("real calls of several seconds")
	}
	if err := baresip.Available(); err != nil && os.Getenv("CI") != "true" {
		t.Skipf("baresip: %v", err) // in CI, baresip.Start fails the test
	}
	for _, c := range baresipCases {
		t.Run(c.name, func(t *testing.T) { runBaresipCase(t, c) })
	}
}

func runBaresipCase(t *testing.T, c baresipCase) {
	// The callee is on the caller's address: baresip 1.0.0 binds its RTP
	// sockets to 0.0.0.0, so its packets leave from 127.0.0.1 whatever its
	// SDP says, and the SBC takes media on a backend's leg only from the
	// address the backend's SDP gave.
	callee := baresip.Start(t, baresip.Options{IP: netip.MustParseAddr(callerIP), User: "b",
		MediaEnc: c.calleeEnc, ToneHz: calleeToneHz, Quit: 60 * time.Second})
	e := newEnv(t, envOpts{targets: []string{callee.SIPAddr().String()}, edit: func(p *testpolicy.Policy) {
		tr := p.Trunk("carrier")
		tr.MediaEncryption, tr.MediaRequired = c.trunkEnc, c.trunkRequired
		p.Pool("pbx").MediaEncryption = c.poolEnc
	}})
	caller := baresip.Start(t, baresip.Options{IP: netip.MustParseAddr(callerIP), User: "a",
		MediaEnc: c.callerEnc, ToneHz: callerToneHz, Quit: baresipCallTime, Dial: "sip:b@" + e.ext, NoRTCPMux: c.callerNoMux})

	// The SBC's view of the call: its relay stream, kept for after the call.
	var st *srtp.Stream
	e.eventually("the call's relay stream", func() bool {
		e.sbc.calls.each(func(cl *call) {
			if cl.media != nil && len(cl.media.streams) == 1 && cl.media.streams[0].st != nil {
				st = cl.media.streams[0].st
			}
		})
		return st != nil || caller.Exited()
	})
	if st == nil {
		t.Fatal("the caller ended before the SBC had a call with media")
	}

	// The caller hangs up after baresipCallTime (BYE); the callee prints
	// its statistics when the BYE ends its call.
	if err := caller.Wait(baresipCallTime + 40*time.Second); err != nil {
		t.Fatalf("caller: %v", err)
	}
	if !callee.WaitLog("packets:", 20*time.Second) {
		t.Fatal("the callee's call did not end")
	}
	callee.Stop()
	e.eventually("the call's end", func() bool { return e.sbc.calls.len() == 0 })
	if n := e.calls("answered"); n != 1 {
		t.Errorf("sbc_calls_total{answered} = %v, want 1", n)
	}

	// The SBC's relay: packets both ways. baresip 1.0.0 sends two RTCP
	// packets unprotected on an SRTP stream, an APP "PING" before its SRTP
	// context is up and its RTCP BYE at hangup (it logs the same when it
	// calls baresip directly: "srtp: failed to decrypt RTCP packet with 16
	// bytes"); the SBC must drop them (decrypt_error: too short for
	// SRTCP; srtp_auth). So at most two such drops on an SDES leg and none
	// on a plain one; the RTP is checked end to end below.
	ss := st.Stats()
	for _, l := range []struct {
		name string
		s    srtp.LegStats
		sdes bool
	}{{"caller's leg", ss.A, c.callerSDES || c.callerDTLS}, {"callee's leg", ss.B, c.calleeSDES || c.calleeDTLS}} {
		bad := l.s.Dropped[srtp.DropAuth] + l.s.Dropped[srtp.DropDecrypt] + l.s.Dropped[srtp.DropReplay]
		limit := uint64(0)
		if l.sdes {
			limit = 2
		}
		if l.s.Packets == 0 || l.s.Forwarded == 0 || bad > limit {
			t.Errorf("SBC relay, %s: %s; want packets in and forwarded, at most %d SRTP drops", l.name, legSummary(l.s), limit)
		}
	}
	t.Logf("SBC relay: caller's leg %s; callee's leg %s", legSummary(ss.A), legSummary(ss.B))

	// Decoded audio and RTP statistics on both sides.
	check := func(side string, u *baresip.UA, wantHz float64) baresip.RTPStats {
		t.Helper()
		stats, err := u.RTPStats()
		if err != nil {
			t.Fatalf("%s: %v", side, err)
		}
		if stats.RxPackets < 50 || stats.TxPackets == 0 || stats.RxErrors != 0 || stats.TxErrors != 0 {
			t.Errorf("%s: RTP statistics %+v: want packets both ways (≥ 50 received) and no errors", side, stats)
		}
		rtpFail, rtcpFail := u.DecryptFailures()
		if rtpFail != 0 || rtcpFail != 0 {
			t.Errorf("%s: %d SRTP and %d SRTCP packets failed to decrypt", side, rtpFail, rtcpFail)
		}
		wav, err := u.DecodedWAV()
		if err != nil {
			t.Fatalf("%s: %v", side, err)
		}
		tone := baresip.Measure(t, wav)
		if math.Abs(tone.Frequency-wantHz) > 0.05*wantHz || tone.RMS < 0.1 {
			t.Errorf("%s decoded %.0f Hz, RMS %.3f over %.2f s; want %.0f Hz ± 5%%, RMS ≥ 0.1", side, tone.Frequency, tone.RMS, tone.Seconds, wantHz)
		}
		t.Logf("%s: decoded %.0f Hz (the other side sent %.0f Hz), RMS %.3f, %.2f s; RTP packets tx %d rx %d, errors tx %d rx %d",
			side, tone.Frequency, wantHz, tone.RMS, tone.Seconds, stats.TxPackets, stats.RxPackets, stats.TxErrors, stats.RxErrors)
		return stats
	}
	callerStats := check("caller", caller, calleeToneHz)
	calleeStats := check("callee", callee, callerToneHz)
	// Nearly everything one side sent reached the other (a few of the
	// callee's first packets may beat its 200 OK to the SBC, which takes a
	// backend's media only once its SDP names the source).
	// Towards a DTLS callee the caller's first packets arrive before the
	// SBC's handshake with the callee is done: dropped as not_ready (up
	// to ~1 s of a 6 s call under -race), not lost on an established path.
	callerShare, calleeShare := 9, 9
	if c.calleeDTLS {
		callerShare = 7
	}
	if c.callerDTLS {
		calleeShare = 7
	}
	if 10*calleeStats.RxPackets < callerShare*callerStats.TxPackets || 10*callerStats.RxPackets < calleeShare*calleeStats.TxPackets {
		t.Errorf("packets lost through the SBC: caller sent %d, callee received %d; callee sent %d, caller received %d",
			callerStats.TxPackets, calleeStats.RxPackets, calleeStats.TxPackets, callerStats.RxPackets)
	}

	// SDP as each side sent and received it.
	callerOffer := sdpOf(t, "the caller's INVITE", caller.Sent(), "INVITE ")
	callerAnswer := sdpOf(t, "the caller's 200", caller.Received(), "SIP/2.0 200 ")
	calleeOffer := sdpOf(t, "the callee's INVITE", callee.Received(), "INVITE ")
	calleeAnswer := sdpOf(t, "the callee's 200", callee.Sent(), "SIP/2.0 200 ")
	callerProf, calleeProf := c.profiles()
	checkProfile(t, "the caller's answer", callerAnswer, callerProf)
	checkProfile(t, "the callee's offer", calleeOffer, calleeProf)

	if c.callerNoMux {
		// Without rtcp-mux both ways, and one DTLS association per
		// component: SRTCP from the caller came through its RTCP socket
		// (and baresip decrypted the SBC's, checked above).
		if strings.Contains(callerOffer, "a=rtcp-mux") || strings.Contains(callerAnswer, "a=rtcp-mux") {
			t.Errorf("rtcp-mux in the caller's SDP:\n%s\n%s", callerOffer, callerAnswer)
		}
		if n := gathered(t, e.sbc, "sbc_media_dtls_handshakes_total", "external", "ok"); n != 2 {
			t.Errorf("DTLS handshakes with the caller: %v ok, want 2 (RTP and RTCP components)", n)
		}
		if ss.A.RTCPPackets == 0 {
			t.Errorf("no SRTCP from the caller's RTCP component: %s", legSummary(ss.A))
		}
	}
	relayA, _ := st.LocalAddr(srtp.LegA)
	relayB, _ := st.LocalAddr(srtp.LegB)
	if got := remote(t, []byte(callerAnswer)); got != relayA || got.Addr() != netip.MustParseAddr(sbcExtIP) {
		t.Errorf("the caller's answer names %v for media, want the SBC's relay %v", got, relayA)
	}
	if got := remote(t, []byte(calleeOffer)); got != relayB || got.Addr() != netip.MustParseAddr(sbcIntIP) {
		t.Errorf("the callee's offer names %v for media, want the SBC's relay %v", got, relayB)
	}
	// Where each side's media came from, as baresip logged it.
	if src, ok := caller.RTPSource(); !ok || src != relayA {
		t.Errorf("the caller's RTP came from %v, want the SBC's relay %v", src, relayA)
	}
	if src, ok := callee.RTPSource(); !ok || src != relayB {
		t.Errorf("the callee's RTP came from %v, want the SBC's relay %v", src, relayB)
	}
	// What the SBC's relay latched on: each side's own RTP address.
	if got, ok := st.Latched(srtp.LegA); !ok || got != remote(t, []byte(callerOffer)) {
		t.Errorf("the SBC latched the caller's leg on %v (%v), want the caller's %v", got, ok, remote(t, []byte(callerOffer)))
	}
	if got, ok := st.Latched(srtp.LegB); !ok || got != remote(t, []byte(calleeAnswer)) {
		t.Errorf("the SBC latched the callee's leg on %v (%v), want the callee's %v", got, ok, remote(t, []byte(calleeAnswer)))
	}

	// Topology: nothing a side received names the other side: its SIP
	// address (and so its Contact), its dialog identifiers (Call-ID, tag),
	// its SDP origin or its keys; and no SDP either side received names
	// any address but the SBC's.
	callerInvite := firstMsg(t, "the caller's INVITE", caller.Sent(), "INVITE ")
	calleeOK := firstMsg(t, "the callee's 200", callee.Sent(), "SIP/2.0 200 ")
	callerSecrets := []string{caller.SIPAddr().String(), header(callerInvite, "Call-ID"), tagParam(header(callerInvite, "From")), originOf(callerOffer)}
	calleeSecrets := []string{callee.SIPAddr().String(), header(calleeOK, "Call-ID"), tagParam(header(calleeOK, "To")), originOf(calleeAnswer)}
	callerSecrets = append(callerSecrets, cryptoKeys(callerOffer)...)
	calleeSecrets = append(calleeSecrets, cryptoKeys(calleeAnswer)...)
	hidden(t, "callee", callee.Received(), callerSecrets)
	hidden(t, "caller", caller.Received(), calleeSecrets)
	for _, side := range []struct {
		name string
		msgs []baresip.Message
		sbc  string
	}{{"caller", caller.Received(), sbcExtIP}, {"callee", callee.Received(), sbcIntIP}} {
		for _, m := range side.msgs {
			if b := m.Body(); b != "" && strings.Contains(b, callerIP) {
				t.Errorf("the %s received SDP naming %s (not the SBC's %s):\n%s", side.name, callerIP, side.sbc, b)
			}
		}
	}
	if remote(t, []byte(calleeOffer)).Port() == remote(t, []byte(callerOffer)).Port() ||
		remote(t, []byte(callerAnswer)).Port() == remote(t, []byte(calleeAnswer)).Port() {
		t.Error("an RTP port of one side reached the other side")
	}
	// SDES: each side's keys stay on its side. The keys each side
	// received are the SBC's, and differ.
	ka, kb := cryptoKeys(callerAnswer), cryptoKeys(calleeOffer)
	for _, k := range ka {
		if slices.Contains(slices.Concat(kb, cryptoKeys(calleeAnswer), cryptoKeys(callerOffer)), k) {
			t.Errorf("the caller received the key %s, not one of the SBC's own for its side", k)
		}
	}
	for _, k := range kb {
		if slices.Contains(slices.Concat(cryptoKeys(callerOffer), cryptoKeys(calleeAnswer)), k) {
			t.Errorf("the callee received the key %s, not one of the SBC's own for its side", k)
		}
	}
	if c.callerSDES || c.calleeSDES {
		t.Logf("a=crypto keys: caller sent %v, received %v; callee received %v, sent %v",
			cryptoKeys(callerOffer), ka, kb, cryptoKeys(calleeAnswer))
	}
}

// sdpOf returns the body of the first message with SDP whose start line
// begins with prefix.
func sdpOf(t *testing.T, what string, msgs []baresip.Message, prefix string) string {
	t.Helper()
	for _, m := range msgs {
		if strings.HasPrefix(m.StartLine(), prefix) && strings.Contains(m.Body(), "m=audio") {
			return m.Body()
		}
	}
	t.Fatalf("no SDP in %s", what)
	return ""
}

// firstMsg returns the text of the first message whose start line begins
// with prefix.
func firstMsg(t *testing.T, what string, msgs []baresip.Message, prefix string) string {
	t.Helper()
	for _, m := range msgs {
		if strings.HasPrefix(m.StartLine(), prefix) {
			return m.Text
		}
	}
	t.Fatalf("no %s", what)
	return ""
}

// header is the value of a message's first header called name.
func header(msg, name string) string {
	for line := range strings.SplitSeq(msg, "\r\n") {
		if line == "" {
			break
		}
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// tagParam is the tag parameter of a From or To value.
func tagParam(v string) string {
	_, tag, ok := strings.Cut(v, ";tag=")
	if !ok {
		return ""
	}
	tag, _, _ = strings.Cut(tag, ";")
	return "tag=" + tag
}

// checkProfile: RTP/SAVP with one a=crypto for an SDES side, RTP/AVP
// without a=crypto for a plain one.
func checkProfile(t *testing.T, what, body, prof string) {
	t.Helper()
	s, err := srtp.ParseSDP([]byte(body))
	if err != nil {
		t.Fatalf("%s: %v\n%s", what, err, body)
	}
	proto := strings.Join(s.MediaDescriptions[0].MediaName.Protos, "/")
	n, fp := strings.Count(body, "a=crypto:"), strings.Count(body, "a=fingerprint:")
	ok := false
	switch prof {
	case "sdes":
		ok = proto == "RTP/SAVP" && n == 1 && fp == 0
	case "dtls":
		ok = proto == "UDP/TLS/RTP/SAVP" && n == 0 && fp == 1
	default:
		ok = proto == "RTP/AVP" && n == 0 && fp == 0
	}
	if !ok {
		t.Errorf("%s: %s with %d a=crypto, %d a=fingerprint, want %s:\n%s", what, proto, n, fp, prof, body)
	}
}

var (
	originLine = regexp.MustCompile(`(?m)^o=(.*?)\r?$`)
	cryptoKey  = regexp.MustCompile(`a=crypto:\S+ \S+ inline:([A-Za-z0-9+/=]+)`)
)

// originOf is an SDP's o= line, less the address (the SBC's o= may name
// the same address family).
func originOf(body string) string {
	m := originLine.FindStringSubmatch(body)
	if m == nil {
		return ""
	}
	f := strings.Fields(m[1])
	if len(f) < 3 {
		return m[1]
	}
	return "o=" + strings.Join(f[:3], " ")
}

// cryptoKeys are the inline key‖salt values of an SDP's a=crypto lines.
func cryptoKeys(body string) []string {
	var keys []string
	for _, m := range cryptoKey.FindAllStringSubmatch(body, -1) {
		keys = append(keys, m[1])
	}
	return keys
}

// hidden checks that no message a side received contains any secret.
func hidden(t *testing.T, side string, msgs []baresip.Message, secrets []string) {
	t.Helper()
	if len(msgs) == 0 {
		t.Fatalf("the %s received no SIP message", side)
	}
	for _, m := range msgs {
		for _, s := range secrets {
			if s != "" && strings.Contains(m.Text, s) {
				t.Errorf("the %s received %q in:\n%s", side, s, m.Text)
			}
		}
	}
}

// legSummary is a relay leg's counters, drops by reason.
func legSummary(s srtp.LegStats) string {
	out := fmt.Sprintf("%d packets in (%d RTCP), %d forwarded", s.Packets, s.RTCPPackets, s.Forwarded)
	for r, n := range s.Dropped {
		if n != 0 {
			out += fmt.Sprintf(", %d dropped %s", n, srtp.DropReason(r))
		}
	}
	return out
}
