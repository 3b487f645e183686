package bench

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pcapWriter builds a classic pcap file of Ethernet/IPv4/UDP frames.
type pcapWriter struct {
	buf  bytes.Buffer
	bo   binary.ByteOrder
	nano bool
}

func newPcap(bo binary.ByteOrder, nano bool) *pcapWriter {
	w := &pcapWriter{bo: bo, nano: nano}
	magic := uint32(0xa1b2c3d4)
	if nano {
		magic = 0xa1b23c4d
	}
	var gh [24]byte
	bo.PutUint32(gh[0:4], magic)
	bo.PutUint16(gh[4:6], 2)
	bo.PutUint16(gh[6:8], 4)
	bo.PutUint32(gh[16:20], 65535)
	bo.PutUint32(gh[20:24], linkEthernet)
	w.buf.Write(gh[:])
	return w
}

func (w *pcapWriter) udp(t time.Time, src, dst uint16, payload string) {
	frame := make([]byte, 14+20+8+len(payload))
	binary.BigEndian.PutUint16(frame[12:14], 0x0800)
	ip := frame[14:]
	ip[0] = 0x45
	binary.BigEndian.PutUint16(ip[2:4], uint16(20+8+len(payload)))
	ip[8], ip[9] = 64, 17
	copy(ip[12:16], []byte{127, 0, 0, 1})
	copy(ip[16:20], []byte{127, 0, 0, 1})
	u := ip[20:]
	binary.BigEndian.PutUint16(u[0:2], src)
	binary.BigEndian.PutUint16(u[2:4], dst)
	binary.BigEndian.PutUint16(u[4:6], uint16(8+len(payload)))
	copy(u[8:], payload)
	w.record(t, frame)
}

func (w *pcapWriter) record(t time.Time, frame []byte) {
	var rh [16]byte
	frac := uint32(t.Nanosecond())
	if !w.nano {
		frac /= 1000
	}
	w.bo.PutUint32(rh[0:4], uint32(t.Unix()))
	w.bo.PutUint32(rh[4:8], frac)
	w.bo.PutUint32(rh[8:12], uint32(len(frame)))
	w.bo.PutUint32(rh[12:16], uint32(len(frame)))
	w.buf.Write(rh[:])
	w.buf.Write(frame)
}

func sipMsg(first, callID, cseq string) string {
	return first + "\r\nVia: SIP/2.0/UDP 127.0.0.1:15070;branch=z9hG4bK1\r\ni: " + callID +
		"\r\ncseq: " + cseq + "\r\nContent-Length: 0\r\n\r\n"
}

// TestSetupLatencies: a capture of two calls, written in both byte orders
// and both timestamp precisions, gives the INVITE→100 and INVITE→200 of
// each call from the first INVITE copy and the first response copy, and
// ignores what is not an INVITE's response to the caller.
func TestSetupLatencies(t *testing.T) {
	const caller, server = 15070, 15060
	t0 := time.Unix(1700000000, 123456000)
	ms := func(n float64) time.Time { return t0.Add(time.Duration(n * float64(time.Millisecond))) }
	for _, tc := range []struct {
		bo   binary.ByteOrder
		nano bool
	}{{binary.LittleEndian, false}, {binary.BigEndian, true}} {
		w := newPcap(tc.bo, tc.nano)
		w.udp(ms(0), caller, server, sipMsg("INVITE sip:x@127.0.0.1 SIP/2.0", "a", "1 INVITE"))
		w.udp(ms(0.25), server, caller, sipMsg("SIP/2.0 100 Trying", "a", "1 INVITE"))
		w.udp(ms(1), caller, server, sipMsg("INVITE sip:x@127.0.0.1 SIP/2.0", "b", "1 INVITE"))
		w.udp(ms(2), server, caller, sipMsg("SIP/2.0 180 Ringing", "a", "1 INVITE"))
		w.udp(ms(3), server, caller, sipMsg("SIP/2.0 200 OK", "a", "1 INVITE"))
		w.udp(ms(500), caller, server, sipMsg("INVITE sip:x@127.0.0.1 SIP/2.0", "b", "1 INVITE")) // retransmission
		w.udp(ms(501), server, caller, sipMsg("SIP/2.0 100 Trying", "b", "1 INVITE"))
		w.udp(ms(502), server, caller, sipMsg("SIP/2.0 200 OK", "a", "1 INVITE")) // retransmitted 200
		w.udp(ms(503), server, caller, sipMsg("SIP/2.0 200 OK", "b", "2 BYE"))    // not the INVITE's
		w.udp(ms(504), server, caller, "\r\n\r\n")                                // keep-alive: not SIP
		w.udp(ms(505), 9999, 9998, sipMsg("SIP/2.0 200 OK", "b", "1 INVITE"))     // not the caller's
		b := w.buf.Bytes()
		b = append(b, 1, 2, 3) // a record header cut short: the capture was stopped
		pkts, err := ReadPcap(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		if len(pkts) != 11 {
			t.Fatalf("%d packets, want 11", len(pkts))
		}
		if !pkts[1].Time.Equal(ms(0.25)) && !(!tc.nano && pkts[1].Time.Sub(ms(0.25)).Abs() < time.Microsecond) {
			t.Errorf("timestamp %v, want %v", pkts[1].Time, ms(0.25))
		}
		l := SetupLatencies(pkts, caller)
		want := SetupLatency{
			Invites: 2,
			To100:   []time.Duration{250 * time.Microsecond, 500 * time.Millisecond},
			To200:   []time.Duration{3 * time.Millisecond},
			NoFinal: 1, Unparseable: 1,
		}
		if fmt.Sprint(l) != fmt.Sprint(want) {
			t.Errorf("nano=%v: got %+v, want %+v", tc.nano, l, want)
		}
	}
	if _, err := ReadPcap(strings.NewReader("\x0a\x0d\x0d\x0a" + strings.Repeat("x", 40))); err == nil {
		t.Error("pcapng accepted")
	}
	if _, err := ReadPcap(strings.NewReader("short")); err == nil {
		t.Error("short header accepted")
	}
}

func TestPercentile(t *testing.T) {
	var ds []time.Duration
	for i := 1; i <= 100; i++ {
		ds = append(ds, time.Duration(i))
	}
	for p, want := range map[float64]time.Duration{50: 50, 99: 99, 100: 100, 1: 1, 0.1: 1} {
		if got := Percentile(ds, p); got != want {
			t.Errorf("p%v = %v, want %v", p, got, want)
		}
	}
	if Percentile(nil, 50) != 0 || Percentile(ds[:1], 99) != 1 {
		t.Error("edge cases")
	}
}

func TestParseProcStat(t *testing.T) {
	st, err := parseProcStat([]byte("4242 (a) (b c) S 1 4240 4240 0 -1 4194560 100 0 0 0 150 25 0 0 20 0 3 0 1000 0 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if st.PID != 4242 || st.PGID != 4240 || st.UTime != 150 || st.STime != 25 || st.CPU() != 1750*time.Millisecond {
		t.Errorf("%+v, cpu %v", st, st.CPU())
	}
	for _, bad := range []string{"", "1 (x S 1", "1 (x) S 1 2", "x (y) S 1 2 3 4 5 6 7 8 9 10 11 12 13"} {
		if _, err := parseProcStat([]byte(bad)); err == nil {
			t.Errorf("%q: no error", bad)
		}
	}
}

// TestGroupProcsSelf reads the live /proc: this test process is in its
// own process group's list, with CPU time and memory.
func TestGroupProcsSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/smaps_rollup"); err != nil {
		t.Skip("no /proc/self/smaps_rollup")
	}
	ps, err := GroupProcs(syscall.Getpgrp())
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, p := range ps {
		found = found || p.PID == os.Getpid()
	}
	if !found {
		t.Fatalf("pid %d not in its group's %v", os.Getpid(), ps)
	}
	m, err := GroupMem(syscall.Getpgrp())
	if err != nil || m.RSS == 0 || m.PSS == 0 || m.PSS > m.RSS {
		t.Errorf("mem %+v, %v", m, err)
	}
	if _, err := LoadAvg(); err != nil {
		t.Error(err)
	}
}

func TestParseSmapsRollup(t *testing.T) {
	in := "55d0-7ffd ---p 00000000 00:00 0  [rollup]\nRss:               12000 kB\nPss:                9000 kB\nPss_Anon:           8000 kB\n"
	m, err := parseSmapsRollup([]byte(in))
	if err != nil || m.RSS != 12000*1024 || m.PSS != 9000*1024 {
		t.Errorf("%+v, %v", m, err)
	}
	if _, err := parseSmapsRollup([]byte("Rss: 1 kB\n")); err == nil {
		t.Error("no Pss: no error")
	}
}

// TestLegLatencies: a B2BUA's legs (new Call-IDs on the callee's side)
// are paired by order, a proxy's by Call-ID; each call's INVITE→200
// splits into the server's INVITE passage, the callee's answer and the
// server's 200 passage; retransmissions, provisional responses, other
// methods' 200s and a call without the callee's 200 are left out.
func TestLegLatencies(t *testing.T) {
	const caller, server, server2, callee = 15070, 15060, 15062, 15080
	t0 := time.Unix(1700000000, 0)
	us := func(n int) time.Time { return t0.Add(time.Duration(n) * time.Microsecond) }
	inv := func(id string) string { return sipMsg("INVITE sip:x@127.0.0.1 SIP/2.0", id, "1 INVITE") }
	ok := func(id string) string { return sipMsg("SIP/2.0 200 OK", id, "1 INVITE") }
	for _, tc := range []struct {
		name   string
		b1, b2 string // the callee's side Call-IDs of calls a1, a2
	}{{"b2bua", "x1", "x2"}, {"proxy", "a1", "a2"}} {
		w := newPcap(binary.LittleEndian, true)
		w.udp(us(0), caller, server, inv("a1"))
		w.udp(us(50), caller, server, inv("a2"))
		w.udp(us(100), server, caller, sipMsg("SIP/2.0 100 Trying", "a1", "1 INVITE"))
		w.udp(us(300), server2, callee, inv(tc.b1))
		w.udp(us(450), server2, callee, inv(tc.b2))
		w.udp(us(500), callee, server2, sipMsg("SIP/2.0 180 Ringing", tc.b1, "1 INVITE"))
		w.udp(us(600), callee, server2, ok(tc.b1))
		w.udp(us(700), server, caller, ok("a1"))
		w.udp(us(800), caller, server, inv("a1"))  // retransmission
		w.udp(us(900), callee, server2, ok(tc.b1)) // retransmission
		w.udp(us(950), callee, server2, sipMsg("SIP/2.0 200 OK", tc.b2, "2 BYE"))
		w.udp(us(1000), caller, server, inv("a3")) // never reaches the callee
		pkts, err := ReadPcap(bytes.NewReader(w.buf.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		l := LegLatencies(pkts, caller, callee)
		want := LegLatency{Through: []time.Duration{300 * time.Microsecond},
			Callee: []time.Duration{300 * time.Microsecond}, Back: []time.Duration{100 * time.Microsecond}}
		if fmt.Sprint(l) != fmt.Sprint(want) {
			t.Errorf("%s: got %+v, want %+v", tc.name, l, want)
		}
	}
}
