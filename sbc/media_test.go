package sbc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pion/rtp"
	pionsrtp "github.com/pion/srtp/v3"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/srtp"
)

// phone is one side's media endpoint in a test: a UDP socket whose
// address goes into its SDP, that sends RTP to where the other SDP says
// and reads what comes back.
type phone struct {
	t    *testing.T
	conn *net.UDPConn
	ssrc uint32
	seq  uint16
	// SDES: our key (in our SDP) and the peer's (from its SDP).
	enc, dec *pionsrtp.Context
	// wait bounds a recv (0: 5 s).
	wait time.Duration
}

func newPhone(t *testing.T, ip string) *phone {
	t.Helper()
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &phone{t: t, conn: c, ssrc: uint32(time.Now().UnixNano())}
}

func (p *phone) addr() netip.AddrPort { return netip.MustParseAddrPort(p.conn.LocalAddr().String()) }

// sdp is a plain audio offer or answer at the phone's address.
func (p *phone) sdp() []byte {
	a := p.addr()
	return sipua.SDP(a.Addr().String(), int(a.Port()), 1, "sendrecv")
}

// sdesSDP is an RTP/SAVP SDP with crypto line c.
func (p *phone) sdesSDP(c srtp.Crypto) []byte {
	s := strings.Replace(string(p.sdp()), "RTP/AVP", "RTP/SAVP", 1)
	return []byte(s + "a=crypto:" + c.String() + "\r\n")
}

func contextOf(t *testing.T, c srtp.Crypto) *pionsrtp.Context {
	t.Helper()
	k := c.Keys[0]
	ctx, err := pionsrtp.CreateContext(k.Key, k.Salt, c.Suite.Profile())
	if err != nil {
		t.Fatal(err)
	}
	return ctx
}

// remote is the RTP address an SDP announces (c= and the first m= port).
func remote(t *testing.T, body []byte) netip.AddrPort {
	t.Helper()
	s, err := srtp.ParseSDP(body)
	if err != nil {
		t.Fatalf("SDP %q: %v", body, err)
	}
	rm, err := srtp.Remote(s, 0)
	if err != nil {
		t.Fatal(err)
	}
	return rm.RTP
}

// send sends n RTP packets with payload tag to dst.
func (p *phone) send(dst netip.AddrPort, n int, tag string) {
	p.t.Helper()
	for range n {
		p.seq++
		pkt := rtp.Packet{Header: rtp.Header{Version: 2, PayloadType: 0, SequenceNumber: p.seq, Timestamp: uint32(p.seq) * 160, SSRC: p.ssrc},
			Payload: []byte(tag)}
		b, err := pkt.Marshal()
		if err != nil {
			p.t.Fatal(err)
		}
		if p.enc != nil {
			if b, err = p.enc.EncryptRTP(nil, b, nil); err != nil {
				p.t.Fatal(err)
			}
		}
		if _, err := p.conn.WriteToUDPAddrPort(b, dst); err != nil {
			p.t.Fatal(err)
		}
	}
}

// recv reads RTP until one carries tag (bounded), and returns its source.
func (p *phone) recv(tag string) (netip.AddrPort, error) {
	from, _, err := p.recvPkt(tag)
	return from, err
}

// recvPkt is recv that also returns the packet's header.
func (p *phone) recvPkt(tag string) (netip.AddrPort, rtp.Header, error) {
	buf := make([]byte, 1500)
	wait := p.wait
	if wait == 0 {
		wait = 5 * time.Second
	}
	deadline := time.Now().Add(wait)
	for time.Now().Before(deadline) {
		_ = p.conn.SetReadDeadline(deadline)
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return netip.AddrPort{}, rtp.Header{}, err
		}
		b := buf[:n]
		if p.dec != nil {
			if b, err = p.dec.DecryptRTP(nil, b, nil); err != nil {
				continue // not for us, or not authentic
			}
		}
		var pkt rtp.Packet
		if pkt.Unmarshal(b) == nil && bytes.Equal(pkt.Payload, []byte(tag)) {
			return netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), pkt.Header, nil
		}
	}
	return netip.AddrPort{}, rtp.Header{}, fmt.Errorf("no RTP with %q", tag)
}

// exchange sends RTP both ways until each side received the other's
// (packets may be lost before a leg latches: repeated, bounded).
func exchange(t *testing.T, caller, backend *phone, toSBCExt, toSBCInt netip.AddrPort) {
	t.Helper()
	for round := 0; ; round++ {
		caller.send(toSBCExt, 3, "from-caller")
		backend.send(toSBCInt, 3, "from-backend")
		src1, err1 := backend.recv("from-caller")
		src2, err2 := caller.recv("from-backend")
		if err1 == nil && err2 == nil {
			if src1 != toSBCInt || src2 != toSBCExt {
				t.Errorf("media came from %v (backend side) and %v (caller side), want the SBC's relay %v and %v", src1, src2, toSBCInt, toSBCExt)
			}
			return
		}
		if round == 3 {
			t.Fatalf("media did not flow through the SBC: %v; %v", err1, err2)
		}
	}
}

// mediaEnv is newEnv with a backend whose SDP (answers, re-INVITE
// answers) names a phone's socket.
func mediaEnv(t *testing.T, backend *phone, edit func(*testpolicy.Policy)) *env {
	t.Helper()
	a := backend.addr()
	return newEnv(t, envOpts{
		backends: []sipua.BackendOptions{{MediaIP: a.Addr().String(), MediaPort: int(a.Port())}},
		edit:     edit,
	})
}

// TestMediaAnchoredPlain: RTP flows caller ⇄ SBC ⇄ backend; each side sees
// only the SBC's relay address, in SDP and as the packets' source.
func TestMediaAnchoredPlain(t *testing.T) {
	caller, backend := newPhone(t, callerIP), newPhone(t, backendIP)
	e := mediaEnv(t, backend, nil)
	call, res := e.dial(sipua.DialOptions{SDP: caller.sdp()})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	toExt, toInt := remote(t, res.Body()), remote(t, ci.Invite)
	if toExt.Addr().String() != sbcExtIP || toInt.Addr().String() != sbcIntIP {
		t.Fatalf("anchored SDP addresses %v (to the caller) and %v (to the backend)", toExt, toInt)
	}
	if bytes.Contains(ci.Invite, []byte(caller.addr().String()[:len(callerIP)])) && strings.Contains(string(ci.Invite), fmt.Sprint(caller.addr().Port())) {
		t.Errorf("the backend's INVITE names the caller's media:\n%s", ci.Invite)
	}
	exchange(t, caller, backend, toExt, toInt)

	// A re-INVITE moving the caller's media: the relay follows the signal.
	moved := newPhone(t, callerIP)
	r, err := call.ReInvite(e.ctx, moved.sdp())
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("re-INVITE: %v, %v", r, err)
	}
	if got := remote(t, r.Body()); got != toExt {
		t.Errorf("the relay address towards the caller changed on a re-INVITE: %v → %v", toExt, got)
	}
	exchange(t, moved, backend, toExt, toInt)
	// The old address is no longer the caller's: its packets are dropped.
	caller.send(toExt, 5, "stale")
	moved.send(toExt, 1, "after-stale")
	if _, err := backend.recv("after-stale"); err != nil {
		t.Fatal(err)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}

// TestMediaSDESToPlain: a carrier offering SDES-SRTP and a backend on
// plain RTP: the SBC answers with keys of its own, decrypts the carrier's
// SRTP for the backend and encrypts the backend's RTP for the carrier.
func TestMediaSDESToPlain(t *testing.T) {
	for _, suite := range []srtp.Suite{srtp.AES_CM_128_HMAC_SHA1_80, srtp.AEAD_AES_128_GCM} {
		t.Run(suite.String(), func(t *testing.T) {
			caller, backend := newPhone(t, callerIP), newPhone(t, backendIP)
			e := mediaEnv(t, backend, nil)
			ours, err := srtp.GenerateCrypto(1, suite)
			if err != nil {
				t.Fatal(err)
			}
			caller.enc = contextOf(t, ours)
			call, res := e.dial(sipua.DialOptions{SDP: caller.sdesSDP(ours)})
			if res.StatusCode != 200 {
				t.Fatalf("final %d", res.StatusCode)
			}
			ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(ci.Invite, []byte("a=crypto")) || !bytes.Contains(ci.Invite, []byte("RTP/AVP")) {
				t.Fatalf("the backend got an SRTP offer:\n%s", ci.Invite)
			}
			sd, _ := srtp.ParseSDP(res.Body())
			rm, err := srtp.Remote(sd, 0)
			if err != nil || len(rm.Cryptos) != 1 || rm.Cryptos[0].Tag != 1 || rm.Cryptos[0].Suite != suite {
				t.Fatalf("the answer's crypto: %+v, %v\n%s", rm.Cryptos, err, res.Body())
			}
			if bytes.Equal(rm.Cryptos[0].Keys[0].Key, ours.Keys[0].Key) {
				t.Fatal("the SBC answered with the caller's own key")
			}
			caller.dec = contextOf(t, rm.Cryptos[0])
			exchange(t, caller, backend, rm.RTP, remote(t, ci.Invite))
			// Forged SRTP (wrong key) towards the relay is dropped, counted
			// as an authentication failure, and does not reach the backend.
			forger := newPhone(t, callerIP)
			forger.conn = caller.conn // from the latched source itself
			bad, _ := srtp.GenerateCrypto(1, suite)
			forger.enc, forger.ssrc, forger.seq = contextOf(t, bad), caller.ssrc, caller.seq+100
			forger.send(rm.RTP, 3, "forged")
			caller.send(rm.RTP, 1, "genuine")
			if _, err := backend.recv("genuine"); err != nil {
				t.Fatal(err)
			}
			if n := gathered(t, e.sbc, "sbc_media_dropped_packets_total", "external", "srtp_auth"); n < 3 {
				t.Errorf("SRTP authentication failures counted: %v, want the 3 forged packets", n)
			}
			if n := gathered(t, e.sbc, "sbc_media_streams_active", "internal"); n != 1 {
				t.Errorf("active streams on the internal realm: %v, want 1", n)
			}
			if err := call.Bye(e.ctx); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestMediaRefusals: what the SBC refuses before a call is set up, each
// with its SIP answer and its reason.
func TestMediaRefusals(t *testing.T) {
	t.Run("encryption_required", func(t *testing.T) {
		e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
			p.Trunk("carrier").Extra = "media_encryption = \"sdes\"\nmedia_required = true\n"
		}})
		_, res := e.dial(sipua.DialOptions{SDP: sipua.SDP("192.0.2.10", 40000, 1, "sendrecv")})
		if res.StatusCode != 488 {
			t.Fatalf("plain offer to a trunk requiring SDES: %d, want 488", res.StatusCode)
		}
		if n := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(string(stageMedia), string(reasonMediaEncryption))); n != 1 {
			t.Errorf("dropped{media,encryption_refused} = %v", n)
		}
	})
	t.Run("plain_only_trunk", func(t *testing.T) {
		e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) { p.Trunk("carrier").Extra = "media_encryption = \"none\"\n" }})
		c, _ := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
		_, res := e.dial(sipua.DialOptions{SDP: newPhone(t, callerIP).sdesSDP(c)})
		if res.StatusCode != 488 {
			t.Fatalf("SRTP offer to a plain-only trunk: %d, want 488", res.StatusCode)
		}
	})
	t.Run("ports_exhausted", func(t *testing.T) {
		e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
			p.Realm("external").Media = &testpolicy.RealmMedia{Ports: []int{31000, 31001}} // one pair
		}})
		first, res := e.dial(sipua.DialOptions{SDP: newPhone(t, callerIP).sdp()})
		if res.StatusCode != 200 {
			t.Fatalf("first call: %d", res.StatusCode)
		}
		_, res = e.dial(sipua.DialOptions{SDP: newPhone(t, callerIP).sdp()})
		if res.StatusCode != 503 {
			t.Fatalf("second call with no relay port left: %d, want 503", res.StatusCode)
		}
		if n := testutil.ToFloat64(e.sbc.metrics.Dropped.WithLabelValues(string(stageMedia), string(reasonMediaPorts))); n != 1 {
			t.Errorf("dropped{media,ports_exhausted} = %v", n)
		}
		if err := first.Bye(e.ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestMediaTimeout: an answered call whose media never flows is ended
// after media.timeout, BYE to both sides, counted.
func TestMediaTimeout(t *testing.T) {
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
		p.Media = &testpolicy.Media{Timeout: policy.D(300 * time.Millisecond)}
	}})
	call, res := e.dial(sipua.DialOptions{SDP: newPhone(t, callerIP).sdp()})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	select {
	case <-call.Ended():
	case <-e.ctx.Done():
		t.Fatal("the SBC never hung up a call without media")
	}
	if _, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.State == sipua.StateEnded }); err != nil {
		t.Fatal(err)
	}
	e.eventually("no active calls", func() bool { return e.sbc.calls.len() == 0 })
	for _, realm := range []string{"external", "internal"} {
		if n := gathered(t, e.sbc, "sbc_media_timeouts_total", realm, "media_timeout"); n != 1 {
			t.Errorf("sbc_media_timeouts_total{%s,media_timeout} = %v, want 1", realm, n)
		}
	}
}

// gathered is the value of the series of family name whose label values
// are values (in label order), from the SBC's registry.
func gathered(t *testing.T, s *SBC, name string, values ...string) float64 {
	t.Helper()
	fams, err := s.metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() != name {
			continue
		}
	next:
		for _, m := range f.GetMetric() {
			for i, l := range m.GetLabel() {
				if i >= len(values) || l.GetValue() != values[i] {
					continue next
				}
			}
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue()
			}
		}
	}
	return -1
}

// TestDTLSResultLabelsKnown: every result srtp reports is a label value
// of sbc_media_dtls_handshakes_total (the collector would count an
// unknown one as "error").
func TestDTLSResultLabelsKnown(t *testing.T) {
	for _, err := range []error{nil, srtp.ErrFingerprintMismatch, srtp.ErrDTLSRole, srtp.ErrDTLSTimeout, fmt.Errorf("x")} {
		r := srtp.DTLSResult{Err: err}
		if !slices.Contains(dtlsResults[:], r.Reason()) {
			t.Errorf("DTLSResult{%v}.Reason() = %q, not in dtlsResults %v", err, r.Reason(), dtlsResults)
		}
	}
}

// TestMediaStatsInCallEndedLog: the "call ended" line carries each side's
// encryption profile and its packets per direction (callMedia.Stats, the
// CDR's source): what the caller's SRTP leg received and was sent, what
// the backend's plain leg received and was sent, equal to the realm
// counters of that one call.
func TestMediaStatsInCallEndedLog(t *testing.T) {
	var buf syncBuffer
	caller, backend := newPhone(t, callerIP), newPhone(t, backendIP)
	a := backend.addr()
	e := newEnv(t, envOpts{
		backends: []sipua.BackendOptions{{MediaIP: a.Addr().String(), MediaPort: int(a.Port())}},
		log:      slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})),
	})
	ours, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
	if err != nil {
		t.Fatal(err)
	}
	caller.enc = contextOf(t, ours)
	call, res := e.dial(sipua.DialOptions{SDP: caller.sdesSDP(ours)})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	sd, _ := srtp.ParseSDP(res.Body())
	rm, err := srtp.Remote(sd, 0)
	if err != nil || len(rm.Cryptos) != 1 {
		t.Fatalf("answer: %v", err)
	}
	caller.dec = contextOf(t, rm.Cryptos[0])
	exchange(t, caller, backend, rm.RTP, remote(t, ci.Invite))
	// Packets the backend sends after the caller stopped: counted on the
	// backend's side only.
	backend.send(remote(t, ci.Invite), 4, "extra")
	if _, err := caller.recv("extra"); err != nil {
		t.Fatal(err)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	var ended map[string]any
	e.eventually("the call ended line", func() bool {
		for _, l := range strings.Split(buf.String(), "\n") {
			if strings.Contains(l, `"msg":"call ended"`) {
				ended = map[string]any{}
				return json.Unmarshal([]byte(l), &ended) == nil
			}
		}
		return false
	})
	if ended["media_a"] != "sdes" || ended["media_b"] != "none" {
		t.Errorf("profiles in the call ended line: a=%v b=%v, want sdes and none", ended["media_a"], ended["media_b"])
	}
	num := func(k string) float64 { v, _ := ended[k].(float64); return v }
	for _, c := range []struct {
		key    string
		metric string
		realm  string
	}{
		{"media_from_a", "sbc_media_packets_total", "external"},
		{"media_to_b", "sbc_media_forwarded_packets_total", "external"},
		{"media_from_b", "sbc_media_packets_total", "internal"},
		{"media_to_a", "sbc_media_forwarded_packets_total", "internal"},
	} {
		if got, want := num(c.key), gathered(t, e.sbc, c.metric, c.realm); got != want || got == 0 {
			t.Errorf("%s = %v in the call ended line, want %v (%s{%s}) and not 0", c.key, got, want, c.metric, c.realm)
		}
	}
	if num("media_to_a") < 4 || num("media_from_b") < 4 {
		t.Errorf("the backend's extra packets are not in its counts: %v", ended)
	}
}

// protosHave is strings.Contains(strings.ToUpper(strings.Join(protos,
// "/")), sub) without the strings.
func TestProtosHave(t *testing.T) {
	for _, protos := range [][]string{
		{"RTP", "AVP"}, {"rtp", "savp"}, {"UDP", "TLS", "RTP", "SAVPF"}, {"udp"}, {"TCP", "MSRP"},
		{"xrtp", "avp"}, {"RTP"}, {}, {"rtp/avp"}, {"ärtp", "avp"}, {strings.Repeat("a", 70), "RTP", "AVP"},
	} {
		for _, sub := range []string{"RTP/", "SAVP"} {
			want := strings.Contains(strings.ToUpper(strings.Join(protos, "/")), sub)
			if got := protosHave(protos, sub); got != want {
				t.Errorf("protosHave(%q, %q) = %v, want %v", protos, sub, got, want)
			}
		}
	}
	p := []string{"UDP", "TLS", "RTP", "SAVP"}
	if a := testing.AllocsPerRun(100, func() { _ = rtpProto(p) && savpProto(p) }); a != 0 {
		t.Fatalf("%v allocations", a)
	}
}
