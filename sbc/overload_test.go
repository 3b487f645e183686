package sbc

import (
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// TestQueueDelaySheds: a request that waited in the socket's receive
// queue longer than limits.queue_delay is dropped before the parser
// (filter/overload), uncharged; responses, ACK, BYE and CANCEL are never
// shed however long they waited, and a request younger than the limit
// (here 10 s) passes. The queue is made stale by not reading the socket
// for longer than the limit: the test waits at least that long, so load
// can only make the datagrams older, never younger.
func TestQueueDelaySheds(t *testing.T) {
	if !enableRxStamps(mustUDP(t)) {
		t.Skip("no SO_TIMESTAMPNS on this platform")
	}
	e := newEnv(t, envOpts{limits: &testpolicy.Limits{QueueDelay: policy.D(50 * time.Millisecond)}})
	u := e.sbc.realms["external"].peers

	g, send := stampedGen(t, u, make(chan struct{}))
	pc := g.PacketConn
	rd := g.PacketReader() // one read loop's reader, as sipgo asks for it
	defer rd.(io.Closer).Close()
	read := func() string {
		t.Helper()
		_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
		b := make([]byte, 2048)
		n, _, err := rd.ReadFrom(b)
		if err != nil {
			t.Fatalf("read: %v", err)
		}
		return string(b[:n])
	}
	const (
		invite  = "INVITE sip:a@b SIP/2.0\r\n\r\n"
		options = "OPTIONS sip:a@b SIP/2.0\r\n\r\n"
		resp    = "SIP/2.0 200 OK\r\n\r\n"
		ack     = "ACK sip:a@b SIP/2.0\r\n\r\n"
		bye     = "BYE sip:a@b SIP/2.0\r\n\r\n"
		cancel  = "CANCEL sip:a@b SIP/2.0\r\n\r\n"
		marker  = "SIP/2.0 180 Ringing\r\n\r\n"
	)
	before := e.dropped("filter", "overload")
	send(invite, resp, options, ack, bye, cancel, invite, marker)
	time.Sleep(200 * time.Millisecond) // > queue_delay: all of them are stale
	var got []string
	for {
		m := read()
		got = append(got, strings.Fields(m)[0]+" "+strings.Fields(m)[1])
		if m == marker {
			break
		}
	}
	want := []string{"SIP/2.0 200", "ACK sip:a@b", "BYE sip:a@b", "CANCEL sip:a@b", "SIP/2.0 180"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("read %q, want %q (stale INVITEs and OPTIONS shed)", got, want)
	}
	if d := e.dropped("filter", "overload") - before; d != 3 {
		t.Fatalf("filter/overload drops %v, want 3", d)
	}
	if st, ok := e.sbc.def.tracker.State(acl.SourceKey(netip.MustParseAddr("127.0.0.1")), time.Now()); ok && st.Failures > 0 {
		t.Fatalf("the sender has %d failures: an overload drop must not be charged", st.Failures)
	}

	// A blocked source's stale request is left to the read filter (which
	// counts it as blocked).
	blocked := mustUDPOn(t, "127.0.0.77:0")
	if err := e.sbc.def.blocklist.Add(acl.Entry{Prefix: netip.MustParsePrefix("127.0.0.77/32"), Reason: "test", Origin: acl.OriginManual}); err != nil {
		t.Fatal(err)
	}
	if _, err := blocked.WriteTo([]byte(invite), pc.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if m := read(); m != invite {
		t.Fatalf("a blocked source's stale INVITE: read %q, want it passed on to the read filter", m)
	}

	// A request younger than the limit passes; "0s" disables shedding.
	for _, d := range []time.Duration{10 * time.Second, 0} {
		pb := e.pb.Clone()
		pb.Limits.QueueDelay = policy.D(d)
		if err := e.sbc.Reload(pb.Parse(t)); err != nil {
			t.Fatal(err)
		}
		send(invite)
		time.Sleep(200 * time.Millisecond)
		if m := read(); m != invite {
			t.Fatalf("queue_delay %s: read %q, want the INVITE", d, m)
		}
	}
	if d := e.dropped("filter", "overload") - before; d != 3 {
		t.Fatalf("filter/overload drops %v after the reloads, want still 3", d)
	}
}

// stampedGen returns a read-loop generation of u on a new stamped UDP
// socket with its raw read path (ended when quit closes), and a func
// sending datagrams to that socket from another.
func stampedGen(t *testing.T, u *udpPeers, quit <-chan struct{}) (*udpGen, func(...string)) {
	t.Helper()
	pc := mustUDP(t)
	if !enableRxStamps(pc) {
		t.Fatal("SO_TIMESTAMPNS refused")
	}
	g := newUDPGen(u, pc, newRawUDP(pc, nil), quit)
	if g.raw == nil {
		t.Fatal("no raw read path for a UDP socket")
	}
	snd := mustUDP(t)
	return g, func(msgs ...string) {
		t.Helper()
		for _, m := range msgs {
			if _, err := snd.WriteTo([]byte(m), pc.LocalAddr()); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func mustUDP(t *testing.T) net.PacketConn { t.Helper(); return mustUDPOn(t, "127.0.0.1:0") }

func mustUDPOn(t *testing.T, addr string) net.PacketConn {
	t.Helper()
	pc, err := net.ListenPacket("udp4", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	return pc
}

// TestSheddable: requests that start work are shed, those that end it
// and responses are not.
func TestSheddable(t *testing.T) {
	for m, want := range map[string]bool{
		"INVITE sip:a@b SIP/2.0\r\n": true, "REGISTER sip:b SIP/2.0\r\n": true, "OPTIONS sip:b SIP/2.0\r\n": true,
		"SIP/2.0 503 Busy\r\n": false, "ACK sip:a@b SIP/2.0\r\n": false, "BYE sip:a@b SIP/2.0\r\n": false,
		"CANCEL sip:a@b SIP/2.0\r\n": false, "\r\n\r\n": false, "": false, "NOSPACEATALLINTHISDATAGRAM": false,
	} {
		if got := sheddable([]byte(m)); got != want {
			t.Errorf("sheddable(%q) = %v, want %v", m, got, want)
		}
	}
}

// BenchmarkShedCheck is the per-datagram cost of the overload check on a
// stamped read: the control message parse and the request test (the
// clock read and the policy load aside). 0 allocs.
func BenchmarkShedCheck(b *testing.B) {
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer pc.Close()
	if !enableRxStamps(pc) {
		b.Skip("no SO_TIMESTAMPNS")
	}
	if _, err := pc.WriteTo([]byte("INVITE sip:a@b SIP/2.0\r\n\r\n"), pc.LocalAddr()); err != nil {
		b.Fatal(err)
	}
	buf, oob := make([]byte, 2048), make([]byte, stampOOB)
	n, oobn, _, _, err := pc.(*net.UDPConn).ReadMsgUDP(buf, oob)
	if err != nil || parseRxStamp(oob[:oobn]).IsZero() {
		b.Fatalf("no stamp read (%v)", err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if parseRxStamp(oob[:oobn]).IsZero() || !sheddable(buf[:n]) {
			b.Fatal("check failed")
		}
	}
}
