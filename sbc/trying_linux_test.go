package sbc

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/sipua"
)

// udpExchange is a raw UDP peer of the SBC's external realm.
type udpExchange struct {
	t    *testing.T
	conn *net.UDPConn
	to   *net.UDPAddr
}

func newUDPExchange(t *testing.T, e *env, ip string) *udpExchange {
	t.Helper()
	c, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ip)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &udpExchange{t: t, conn: c, to: net.UDPAddrFromAddrPort(e.extAddr())}
}

func (x *udpExchange) port() int { return x.conn.LocalAddr().(*net.UDPAddr).Port }

func (x *udpExchange) send(msg string) {
	x.t.Helper()
	if _, err := x.conn.WriteToUDP([]byte(msg), x.to); err != nil {
		x.t.Fatal(err)
	}
}

// until reads messages until one for which last is true; it returns all
// of them, that one last.
func (x *udpExchange) until(last func(string) bool) []string {
	x.t.Helper()
	var got []string
	b := make([]byte, 65536)
	for {
		_ = x.conn.SetReadDeadline(time.Now().Add(10 * time.Second))
		n, _, err := x.conn.ReadFromUDP(b)
		if err != nil {
			x.t.Fatalf("after %q: %v", got, err)
		}
		m := string(b[:n])
		got = append(got, m)
		if last(m) {
			return got
		}
	}
}

// earlyInvite is an INVITE from x's socket with rport, a From with the
// spacing sipgo does not keep (a 100 that has it was built from the
// INVITE's bytes, by the reader) and the User-Agent ua.
func earlyInvite(x *udpExchange, callID, ua string) string {
	body := "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"
	p := strconv.Itoa(x.port())
	return "INVITE sip:15551234567@" + x.to.String() + " SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP " + x.conn.LocalAddr().String() + ";rport;branch=z9hG4bK-" + callID + "\r\n" +
		"From:    <sip:caller@127.0.0.1:" + p + ">;tag=t-" + callID + "\r\n" +
		"To: <sip:15551234567@" + x.to.String() + ">\r\n" +
		"Call-ID: " + callID + "\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n" +
		"Contact: <sip:caller@127.0.0.1:" + p + ">\r\nUser-Agent: " + ua + "\r\n" +
		"Content-Type: application/sdp\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n" + body
}

func statusOf(m string) int {
	if !strings.HasPrefix(m, "SIP/2.0 ") || len(m) < 11 {
		return 0
	}
	n, _ := strconv.Atoi(m[8:11])
	return n
}

func isFinalFor(callID string) func(string) bool {
	return func(m string) bool { return statusOf(m) >= 200 && strings.Contains(m, "Call-ID: "+callID+"\r\n") }
}

// TestEarlyTrying: a trunk's INVITE over UDP is answered 100 by the
// reader that read it (the 100 keeps the INVITE's bytes, with rport and
// received filled in), once: the call then goes on as before (the
// backend's 486 reaches the caller). A scanner's INVITE from the trunk
// gets nothing, not even that 100; a stranger (unknown sources answered
// 403) gets its 403 with no 100 before it.
func TestEarlyTrying(t *testing.T) {
	e := newEnv(t, envOpts{udpReaders: 1, headers: rejectUnknown,
		backends: []sipua.BackendOptions{{Answer: sipua.Always(sipua.Plan{Final: 486})}}})
	x := newUDPExchange(t, e, callerIP)

	x.send(earlyInvite(x, "early-1", "CarrierSwitch"))
	got := x.until(isFinalFor("early-1"))
	if statusOf(got[0]) != 100 {
		t.Fatalf("first answer %q, want 100", got[0])
	}
	for _, m := range got[1 : len(got)-1] {
		if statusOf(m) == 100 {
			t.Fatalf("a second 100:\n%s", m)
		}
	}
	if !strings.Contains(got[0], "From:    <sip:caller@") {
		t.Errorf("the 100 was not built from the INVITE's bytes (by the reader):\n%s", got[0])
	}
	wantVia := ";rport=" + strconv.Itoa(x.port()) + ";branch=z9hG4bK-early-1;received=127.0.0.1\r\n"
	if !strings.Contains(got[0], wantVia) {
		t.Errorf("100's Via lacks %q:\n%s", wantVia, got[0])
	}
	if statusOf(got[len(got)-1]) != 486 {
		t.Errorf("final %q, want the backend's 486", got[len(got)-1])
	}

	// A burst (read in batches, mostly): each INVITE one 100, from the
	// reader, and its final.
	const burst = 6
	for i := 0; i < burst; i++ {
		x.send(earlyInvite(x, "early-b"+strconv.Itoa(i), "CarrierSwitch"))
	}
	tries, finals := map[string]int{}, 0
	x.until(func(m string) bool {
		cid := m[strings.Index(m, "Call-ID: ")+9:]
		cid = cid[:strings.Index(cid, "\r\n")]
		switch statusOf(m) {
		case 100:
			tries[cid]++
			if !strings.Contains(m, "From:    <sip:caller@") {
				t.Errorf("a 100 of the burst not built by the reader:\n%s", m)
			}
		case 486:
			finals++
		}
		return finals == burst
	})
	for i := 0; i < burst; i++ {
		if n := tries["early-b"+strconv.Itoa(i)]; n != 1 {
			t.Errorf("INVITE %d of the burst: %d 100s", i, n)
		}
	}

	// A scanner from the trunk's address: dropped unanswered. The
	// OPTIONS after it is read after it (one reader), so any answer to
	// the INVITE would come before the OPTIONS' 200.
	x.send(earlyInvite(x, "early-scan", "friendly-scanner"))
	x.send("OPTIONS sip:" + x.to.String() + " SIP/2.0\r\nVia: SIP/2.0/UDP " + x.conn.LocalAddr().String() +
		";branch=z9hG4bK-opt\r\nFrom: <sip:caller@127.0.0.1>;tag=o\r\nTo: <sip:" + x.to.String() +
		">\r\nCall-ID: early-opt\r\nCSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n")
	for _, m := range x.until(isFinalFor("early-opt")) {
		if strings.Contains(m, "Call-ID: early-scan\r\n") {
			t.Fatalf("the scanner was answered:\n%s", m)
		}
	}

	s := newUDPExchange(t, e, strangerIP)
	s.send(earlyInvite(s, "early-stranger", "CarrierSwitch"))
	got = s.until(isFinalFor("early-stranger"))
	if len(got) != 1 || statusOf(got[0]) != 403 {
		t.Fatalf("stranger's answers %q, want one 403", got)
	}
}

// TestEarlyTryingWhen: which INVITEs the reader answers (earlyTrying), by
// source and policy.
func TestEarlyTryingWhen(t *testing.T) {
	e := newEnv(t, envOpts{})
	ep := e.sbc.realms["external"]
	x := newUDPExchange(t, e, callerIP)
	inv := []byte(earlyInvite(x, "w", "CarrierSwitch"))
	trunk := netip.MustParseAddrPort(callerIP + ":5070")
	if _, _, ok := e.sbc.earlyTrying(ep, nil, inv, trunk); !ok {
		t.Fatal("a trunk's INVITE not answered at once")
	}
	if _, _, ok := e.sbc.earlyTrying(ep, nil, inv, netip.MustParseAddrPort(strangerIP+":5070")); ok {
		t.Error("a stranger's INVITE answered at once")
	}
	if _, _, ok := e.sbc.earlyTrying(e.sbc.realms["internal"], nil, inv, trunk); ok {
		t.Error("a trunk's INVITE answered at once on a realm not the trunk's")
	}
	be := netip.MustParseAddrPort(e.backends[0].Addr())
	if _, _, ok := e.sbc.earlyTrying(e.sbc.realms["internal"], nil, inv, be); !ok {
		t.Error("a backend's INVITE not answered at once on its realm")
	}

	d := newEnv(t, envOpts{policy: "[limits]\nover_limit_action = \"drop\""})
	if _, _, ok := d.sbc.earlyTrying(d.sbc.realms["external"], nil, inv, trunk); ok {
		t.Error("answered at once with over_limit_action = drop (a call over a limit is dropped silently)")
	}
}
