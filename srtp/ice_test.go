package srtp

import (
	"bytes"
	"encoding/binary"
	"net/netip"
	"testing"
	"time"

	"github.com/pion/stun/v4"
)

type rawAttr struct {
	t stun.AttrType
	v []byte
}

func (a rawAttr) AddTo(m *stun.Message) error {
	m.Add(a.t, a.v)
	return nil
}

var (
	priority    = rawAttr{stun.AttrPriority, []byte{0x6e, 0, 0x1e, 0xff}}
	controlling = rawAttr{stun.AttrICEControlling, []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	controlled  = rawAttr{stun.AttrICEControlled, []byte{1, 2, 3, 4, 5, 6, 7, 8}}
	useCand     = rawAttr{stun.AttrUseCandidate, nil}
)

type checkOpts struct {
	user, pwd        string
	noFP, noMI, noPr bool
	extra            []stun.Setter
}

// bindingRequest builds a connectivity check as a full agent sends it.
func bindingRequest(t testing.TB, o checkOpts) *stun.Message {
	t.Helper()
	s := []stun.Setter{stun.TransactionID, stun.BindingRequest}
	if o.user != "" {
		s = append(s, stun.NewUsername(o.user))
	}
	if !o.noPr {
		s = append(s, priority)
	}
	s = append(s, o.extra...)
	if !o.noMI {
		s = append(s, stun.NewShortTermIntegrity(o.pwd))
	}
	if !o.noFP {
		s = append(s, stun.Fingerprint)
	}
	m, err := stun.Build(s...)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

type iceRig struct {
	s        *Stream
	ice      *ICELite
	pa, pb   *phone
	aAddr    netip.AddrPort
	bAddr    netip.AddrPort
	local    ICECredentials
	remoteUf string
}

func newICERig(t *testing.T, cfg ICEConfig) *iceRig {
	pp := newTestPool(t)
	r := &iceRig{pa: newPhone(t), pb: newPhone(t)}
	var err error
	if r.ice, err = NewICELite(cfg); err != nil {
		t.Fatal(err)
	}
	r.local, r.remoteUf = r.ice.Local(), cfg.RemoteUfrag
	r.s = newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, true), Handler: r.ice},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: r.pb.addr()},
	})
	r.aAddr, _ = r.s.LocalAddr(LegA)
	r.bAddr, _ = r.s.LocalAddr(LegB)
	return r
}

// check sends a request from p and returns the response.
func (r *iceRig) check(t *testing.T, p *phone, req *stun.Message) *stun.Message {
	t.Helper()
	p.send(req.Raw, r.aAddr)
	b, from := p.recv()
	if from != r.aAddr {
		t.Fatalf("response from %v", from)
	}
	res := &stun.Message{Raw: bytes.Clone(b)}
	if err := res.Decode(); err != nil {
		t.Fatal(err)
	}
	if res.TransactionID != req.TransactionID {
		t.Fatal("transaction ID not echoed")
	}
	if err := stun.Fingerprint.Check(res); err != nil {
		t.Fatal("response FINGERPRINT:", err)
	}
	return res
}

func (r *iceRig) good(extra ...stun.Setter) checkOpts {
	return checkOpts{user: r.local.Ufrag + ":" + r.remoteUf, pwd: r.local.Pwd, extra: append([]stun.Setter{controlling}, extra...)}
}

func errorCode(t *testing.T, m *stun.Message) stun.ErrorCode {
	t.Helper()
	if m.Type != stun.BindingError {
		t.Fatalf("%v, want an error response", m.Type)
	}
	var ec stun.ErrorCodeAttribute
	if err := ec.GetFrom(m); err != nil {
		t.Fatal(err)
	}
	return ec.Code
}

func TestICELiteBinding(t *testing.T) {
	r := newICERig(t, ICEConfig{RemoteUfrag: "peerUF"})
	if len(r.local.Ufrag) < 4 || len(r.local.Pwd) < 22 || r.local.Valid() != nil {
		t.Fatalf("%+v", r.local)
	}
	// Media from B has nowhere to go before ICE selects.
	r.pb.send(rtpPacket(1, 1, 0, 8), r.bAddr)
	waitFor(t, "no_destination", func() bool { return r.s.Stats().B.Dropped[DropNoDestination] == 1 })

	// A valid check without USE-CANDIDATE: success, no selection.
	res := r.check(t, r.pa, bindingRequest(t, r.good()))
	if res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	var xor stun.XORMappedAddress
	if err := xor.GetFrom(res); err != nil || xor.String() != r.pa.addr().String() {
		t.Fatalf("XOR-MAPPED-ADDRESS %v, want %v (%v)", xor, r.pa.addr(), err)
	}
	if err := stun.NewShortTermIntegrity(r.local.Pwd).Check(res); err != nil {
		t.Fatal("response MESSAGE-INTEGRITY:", err)
	}
	if _, ok := r.ice.Selected(); ok {
		t.Fatal("selected without USE-CANDIDATE")
	}
	// USE-CANDIDATE: the leg's destination.
	if res := r.check(t, r.pa, bindingRequest(t, r.good(useCand))); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	if sel, ok := r.ice.Selected(); !ok || sel != r.pa.addr() {
		t.Fatal(sel, ok)
	}
	marker := rtpPacket(2, 2, 0, 8)
	r.pb.send(marker, r.bAddr)
	r.pa.expectOnly(t, marker)
	r.pa.send(rtpPacket(3, 3, 0, 8), r.aAddr)
	r.pb.expectOnly(t, rtpPacket(3, 3, 0, 8))

	// Another address that passes a check is validated but media stays
	// on the selection; its media is refused.
	other := newPhone(t)
	if res := r.check(t, other, bindingRequest(t, r.good())); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	if !r.ice.validatedAddr(other.addr()) || !r.ice.validatedAddr(r.pa.addr()) {
		t.Fatal("validated set")
	}
	other.send(rtpPacket(4, 4, 0, 8), r.aAddr)
	waitFor(t, "other refused", func() bool { return r.s.Stats().A.Dropped[DropNotLatchedSource] == 1 })
	// Renomination moves the leg.
	if res := r.check(t, other, bindingRequest(t, r.good(useCand))); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	r.pb.send(marker, r.bAddr)
	other.expectOnly(t, marker)

	st := r.ice.Stats()
	if st.Succeeded != 4 || st.Nominations != 2 || st.BadRequest+st.Unauthorized+st.RoleConflict+st.Discarded != 0 {
		t.Fatalf("%+v", st)
	}
}

func TestICELiteRefusals(t *testing.T) {
	r := newICERig(t, ICEConfig{RemoteUfrag: "peerUF"})
	good := r.good()
	for _, tc := range []struct {
		name string
		o    checkOpts
		code stun.ErrorCode
		mi   bool
	}{
		{"wrong password", checkOpts{user: good.user, pwd: "wrongwrongwrongwrongwrong", extra: good.extra}, stun.CodeUnauthorized, false},
		{"wrong username", checkOpts{user: r.local.Ufrag + ":other", pwd: good.pwd, extra: good.extra}, stun.CodeUnauthorized, false},
		{"other agent's ufrag", checkOpts{user: "nope:" + r.remoteUf, pwd: good.pwd, extra: good.extra}, stun.CodeUnauthorized, false},
		{"no username", checkOpts{pwd: good.pwd, extra: good.extra}, stun.CodeBadRequest, false},
		{"no integrity", checkOpts{user: good.user, noMI: true, extra: good.extra}, stun.CodeBadRequest, false},
		{"no priority", checkOpts{user: good.user, pwd: good.pwd, noPr: true, extra: good.extra}, stun.CodeBadRequest, false},
		{"both controlled", checkOpts{user: good.user, pwd: good.pwd, extra: []stun.Setter{controlled, useCand}}, stun.CodeRoleConflict, true},
	} {
		res := r.check(t, r.pa, bindingRequest(t, tc.o))
		if code := errorCode(t, res); code != tc.code {
			t.Errorf("%s: %d, want %d", tc.name, code, tc.code)
		}
		if hasMI := res.Contains(stun.AttrMessageIntegrity); hasMI != tc.mi {
			t.Errorf("%s: MESSAGE-INTEGRITY %v", tc.name, hasMI)
		} else if hasMI {
			if err := stun.NewShortTermIntegrity(r.local.Pwd).Check(res); err != nil {
				t.Errorf("%s: %v", tc.name, err)
			}
		}
	}
	// Discarded without an answer: no FINGERPRINT, a response, an
	// indication, junk. The next answer is the valid check's.
	noFP := bindingRequest(t, checkOpts{user: good.user, pwd: good.pwd, noFP: true, extra: good.extra})
	resp := stun.MustBuild(stun.TransactionID, stun.BindingSuccess, stun.Fingerprint)
	ind := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodBinding, stun.ClassIndication), stun.Fingerprint)
	for _, b := range [][]byte{noFP.Raw, resp.Raw, ind.Raw, {0, 1, 0, 0}} {
		r.pa.send(b, r.aAddr)
	}
	if res := r.check(t, r.pa, bindingRequest(t, good)); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	if _, ok := r.ice.Selected(); ok {
		t.Fatal("a refused USE-CANDIDATE selected")
	}
	st := r.ice.Stats()
	if st.Unauthorized != 3 || st.BadRequest != 3 || st.RoleConflict != 1 || st.Discarded != 3 || st.Succeeded != 1 {
		t.Fatalf("%+v", st)
	}
}

// TestICELiteBeforeAnswer: checks that come before the peer's ufrag is
// known are accepted on our part (RFC 8445 §7.3); once known, the whole
// USERNAME counts.
func TestICELiteBeforeAnswer(t *testing.T) {
	r := newICERig(t, ICEConfig{})
	early := checkOpts{user: r.local.Ufrag + ":whatever", pwd: r.local.Pwd, extra: []stun.Setter{controlling}}
	if res := r.check(t, r.pa, bindingRequest(t, early)); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	bare := checkOpts{user: r.local.Ufrag + ":", pwd: r.local.Pwd, extra: []stun.Setter{controlling}}
	if code := errorCode(t, r.check(t, r.pa, bindingRequest(t, bare))); code != stun.CodeUnauthorized {
		t.Fatal(code)
	}
	r.ice.SetRemoteUfrag("real")
	if code := errorCode(t, r.check(t, r.pa, bindingRequest(t, early))); code != stun.CodeUnauthorized {
		t.Fatal(code)
	}
	ok := checkOpts{user: r.local.Ufrag + ":real", pwd: r.local.Pwd, extra: []stun.Setter{controlling}}
	if res := r.check(t, r.pa, bindingRequest(t, ok)); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	// ICE restart: old credentials fail, new ones pass.
	next := NewICECredentials()
	if err := r.ice.Restart(next, "real2"); err != nil {
		t.Fatal(err)
	}
	if code := errorCode(t, r.check(t, r.pa, bindingRequest(t, ok))); code != stun.CodeUnauthorized {
		t.Fatal(code)
	}
	ok2 := checkOpts{user: next.Ufrag + ":real2", pwd: next.Pwd, extra: []stun.Setter{controlling}}
	if res := r.check(t, r.pa, bindingRequest(t, ok2)); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	if err := r.ice.Restart(ICECredentials{Ufrag: "ab", Pwd: "short"}, ""); err == nil {
		t.Fatal("short credentials accepted")
	}
}

// TestICELiteConsent: no check from the selected address for the consent
// timeout stops media to the leg and tells the owner; a new check
// resumes it.
func TestICELiteConsent(t *testing.T) {
	lost := make(chan LegID, 2)
	r := newICERig(t, ICEConfig{RemoteUfrag: "peerUF", ConsentTimeout: 100 * time.Millisecond,
		OnConsentLost: func(id LegID) { lost <- id }})
	if res := r.check(t, r.pa, bindingRequest(t, r.good(useCand))); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	marker := rtpPacket(2, 2, 0, 8)
	r.pb.send(marker, r.bAddr)
	r.pa.expectOnly(t, marker)
	select {
	case id := <-lost:
		if id != LegA {
			t.Fatal(id)
		}
	case <-time.After(waitLimit):
		t.Fatal("consent never expired")
	}
	if _, ok := r.ice.Selected(); ok {
		t.Fatal("still selected")
	}
	before := r.s.Stats().B.Dropped[DropNoDestination]
	r.pb.send(marker, r.bAddr)
	waitFor(t, "media stopped", func() bool { return r.s.Stats().B.Dropped[DropNoDestination] == before+1 })
	// The peer checks again (same pair, without USE-CANDIDATE): media resumes.
	if res := r.check(t, r.pa, bindingRequest(t, r.good())); res.Type != stun.BindingSuccess {
		t.Fatal(res.Type)
	}
	r.pb.send(marker, r.bAddr)
	r.pa.expectOnly(t, marker)
	if st := r.ice.Stats(); st.ConsentLost != 1 {
		t.Fatalf("%+v", st)
	}
}

// TestICELiteNoMux: two components, each nominated on its own socket.
func TestICELiteNoMux(t *testing.T) {
	pp := newTestPool(t)
	pa, paRTCP, pb := newPhone(t), newPhone(t), newPhone(t)
	ice, err := NewICELite(ICEConfig{RemoteUfrag: "peerUF"})
	if err != nil {
		t.Fatal(err)
	}
	s := newTestStream(t, StreamConfig{
		A: LegConfig{Ports: allocate(t, pp, false), Handler: ice},
		B: LegConfig{Ports: allocate(t, pp, true), Remote: pb.addr()},
	})
	aRTP, aRTCP := s.LocalAddr(LegA)
	bAddr, _ := s.LocalAddr(LegB)
	l := ice.Local()
	o := checkOpts{user: l.Ufrag + ":peerUF", pwd: l.Pwd, extra: []stun.Setter{controlling, useCand}}
	for _, c := range []struct {
		p  *phone
		to netip.AddrPort
	}{{pa, aRTP}, {paRTCP, aRTCP}} {
		c.p.send(bindingRequest(t, o).Raw, c.to)
		if _, from := c.p.recv(); from != c.to {
			t.Fatal("answer from the wrong socket")
		}
	}
	rtcp := rtcpRR(77)
	pb.send(rtcp, bAddr)
	paRTCP.expectOnly(t, rtcp)
	rtp := rtpPacket(1, 1, 0, 8)
	pb.send(rtp, bAddr)
	pa.expectOnly(t, rtp)
}

type nopWriter struct{}

func (nopWriter) WriteToUDPAddrPort(b []byte, _ netip.AddrPort) (int, error) { return len(b), nil }

// BenchmarkICECheck: one valid Binding request checked and answered
// (decode, FINGERPRINT, USERNAME, MESSAGE-INTEGRITY, response with
// XOR-MAPPED-ADDRESS, MESSAGE-INTEGRITY, FINGERPRINT).
func BenchmarkICECheck(b *testing.B) {
	a, err := NewICELite(ICEConfig{RemoteUfrag: "peerUF"})
	if err != nil {
		b.Fatal(err)
	}
	l := a.Local()
	req := bindingRequest(b, checkOpts{user: l.Ufrag + ":peerUF", pwd: l.Pwd, extra: []stun.Setter{controlling}})
	from := netip.MustParseAddrPort("192.0.2.7:50000")
	a.HandleDatagram(LegA, KindSTUN, req.Raw, from, nopWriter{})
	if a.Stats().Succeeded != 1 {
		b.Fatal("check refused")
	}
	b.ReportAllocs()
	for b.Loop() {
		a.HandleDatagram(LegA, KindSTUN, req.Raw, from, nopWriter{})
	}
	if a.Stats().Succeeded != uint64(b.N)+1 {
		b.Fatal("checks refused")
	}
}

func TestICECredentials(t *testing.T) {
	a, b := NewICECredentials(), NewICECredentials()
	if a == b || a.Valid() != nil || len(a.Ufrag) != 8 || len(a.Pwd) != 24 {
		t.Fatalf("%+v %+v", a, b)
	}
	for _, c := range []ICECredentials{{"abc", "0123456789012345678901"}, {"abcd", "012345678901234567890"}, {"ab:d", "0123456789012345678901"}} {
		if c.Valid() == nil {
			t.Errorf("%+v accepted", c)
		}
	}
	if hostPriority(1) != 2130706431 || binary.BigEndian.Uint32(priority.v) == 0 {
		t.Fatal(hostPriority(1))
	}
}
