package sbc

import (
	"bytes"
	"encoding/binary"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sbc-project/sbc/hep"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
)

// hepCollector is a HEP collector on loopback: it keeps the datagrams it
// receives (at most 10,000).
type hepCollector struct {
	conn *net.UDPConn
	mu   sync.Mutex
	got  [][]byte
	from netip.AddrPort
}

func newHEPCollector(t *testing.T) *hepCollector {
	t.Helper()
	conn, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	c := &hepCollector{conn: conn}
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			c.mu.Lock()
			if len(c.got) < 10000 {
				c.got = append(c.got, append([]byte(nil), buf[:n]...))
				c.from = from
			}
			c.mu.Unlock()
		}
	}()
	t.Cleanup(func() { conn.Close(); <-done })
	return c
}

func (c *hepCollector) addr() netip.AddrPort { return c.conn.LocalAddr().(*net.UDPAddr).AddrPort() }

func (c *hepCollector) packets(t *testing.T) []*hep.Packet {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*hep.Packet
	for _, b := range c.got {
		p, err := hep.Decode(b)
		if err != nil {
			t.Fatalf("collector got a datagram that is no HEP3: %v", err)
		}
		out = append(out, p)
	}
	return out
}

// writePcap writes the collector's datagrams as IPv4/UDP packets from
// the exporter's address to the collector's (LINKTYPE_RAW).
func (c *hepCollector) writePcap(t *testing.T, name string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	var b bytes.Buffer
	le := binary.LittleEndian
	hdr := make([]byte, 24)
	le.PutUint32(hdr[0:], 0xa1b2c3d4)
	le.PutUint16(hdr[4:], 2)
	le.PutUint16(hdr[6:], 4)
	le.PutUint32(hdr[16:], 65535)
	le.PutUint32(hdr[20:], 101) // LINKTYPE_RAW: an IP packet
	b.Write(hdr)
	src, dst := c.from.Addr().As4(), c.addr().Addr().As4()
	now := time.Now()
	for i, d := range c.got {
		ip := make([]byte, 28, 28+len(d))
		ip[0], ip[8], ip[9] = 0x45, 64, 17
		binary.BigEndian.PutUint16(ip[2:], uint16(28+len(d)))
		copy(ip[12:], src[:])
		copy(ip[16:], dst[:])
		var sum uint32
		for j := 0; j < 20; j += 2 {
			sum += uint32(binary.BigEndian.Uint16(ip[j:]))
		}
		for sum > 0xffff {
			sum = sum>>16 + sum&0xffff
		}
		binary.BigEndian.PutUint16(ip[10:], ^uint16(sum))
		binary.BigEndian.PutUint16(ip[20:], c.from.Port())
		binary.BigEndian.PutUint16(ip[22:], c.addr().Port())
		binary.BigEndian.PutUint16(ip[24:], uint16(8+len(d)))
		ip = append(ip, d...)
		rec := make([]byte, 16)
		ts := now.Add(time.Duration(i) * time.Millisecond)
		le.PutUint32(rec[0:], uint32(ts.Unix()))
		le.PutUint32(rec[4:], uint32(ts.Nanosecond()/1000))
		le.PutUint32(rec[8:], uint32(len(ip)))
		le.PutUint32(rec[12:], uint32(len(ip)))
		b.Write(rec)
		b.Write(ip)
	}
	if err := os.WriteFile(name, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// needTool returns the path of a tool a test needs: it skips without it,
// except in CI, where the tool must be installed (.ci/run).
func needTool(t *testing.T, name, pkg string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("%s not found (install Debian package %s): %v", name, pkg, err)
		}
		t.Skipf("%s not installed (Debian package %s)", name, pkg)
	}
	return p
}

// TestHEPExportDissectedByTshark runs a call with the HEP export on and
// has tshark decode what the collector received (with the HEP3 dissector
// of deploy/wireshark: Debian's tshark has none of its own). Every SIP
// message of both legs is there, each in its direction, and every one
// carries the A leg's Call-ID as its correlation id; the agent id and
// key are the policy's; Wireshark's SIP dissector finds the Call-ID of
// each leg in the payloads.
func TestHEPExportDissectedByTshark(t *testing.T) {
	tshark := needTool(t, "tshark", "tshark")
	col := newHEPCollector(t)
	e := newEnv(t, envOpts{edit: func(p *testpolicy.Policy) {
		p.HEP = &testpolicy.HEP{Enabled: true, Address: col.addr().String(), AgentID: 42, Password: "hep-key"}
	}})
	call, res := e.dial(sipua.DialOptions{})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	b := e.backends[0]
	ci, err := b.WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
	aID, bID := call.CallID(), ci.CallID
	caller := netip.MustParseAddrPort(e.caller.Addr())
	ext := netip.MustParseAddrPort(e.ext)
	backend := netip.MustParseAddrPort(b.Addr())
	// Each leg: INVITE, 100/180/200, ACK, BYE, 200 — the A leg's read
	// and written at ext, the B leg's written and read at the internal
	// face. Wait for the BYE's 200 on both legs.
	byeOK := func(p *hep.Packet) bool {
		return bytes.HasPrefix(p.Payload, []byte("SIP/2.0 200")) && bytes.Contains(p.Payload, []byte(" BYE\r\n"))
	}
	e.eventually("both legs' BYE answered in the export", func() bool {
		n := 0
		for _, p := range col.packets(t) {
			if byeOK(p) {
				n++
			}
		}
		return n >= 2
	})
	pkts := col.packets(t)
	type dir struct{ src, dst netip.AddrPort }
	seen := map[string]map[dir]bool{} // first line → directions
	trying := false                   // the A leg's 100, sent by the reader (trying.go)
	for _, p := range pkts {
		id := sipCallID(p.Payload)
		if id != aID && id != bID {
			continue // OPTIONS health checks
		}
		if id == aID && bytes.HasPrefix(p.Payload, []byte("SIP/2.0 100 ")) && p.Src == ext && p.Dst == caller {
			trying = true
		}
		if p.CorrelationID != aID {
			t.Errorf("%s message of %q: correlation id %q, want the A leg's %q", firstLine(p.Payload), id, p.CorrelationID, aID)
		}
		if p.AgentID != 42 || p.AuthKey != "hep-key" || p.ProtoType != hep.TypeSIP || p.Proto != hep.ProtoUDP {
			t.Errorf("agent %d key %q type %d proto %d", p.AgentID, p.AuthKey, p.ProtoType, p.Proto)
		}
		k := id[:4] + " " + firstWord(p.Payload)
		if seen[k] == nil {
			seen[k] = map[dir]bool{}
		}
		seen[k][dir{p.Src, p.Dst}] = true
	}
	// The A leg's INVITE from the caller to the SBC, the B leg's from the
	// SBC to the backend, and their BYEs.
	sbcInt := func(d dir) bool { return d.src.Addr() == netip.MustParseAddr(sbcIntIP) && d.dst == backend }
	check := func(id, word string, want func(dir) bool, what string) {
		t.Helper()
		for d := range seen[id[:4]+" "+word] {
			if want(d) {
				return
			}
		}
		t.Errorf("no %s %s in the export (%v)", what, word, seen[id[:4]+" "+word])
	}
	fromCaller := func(d dir) bool { return d.src == caller && d.dst == ext }
	toCaller := func(d dir) bool { return d.src == ext && d.dst == caller }
	fromBackend := func(d dir) bool { return d.src == backend && d.dst.Addr() == netip.MustParseAddr(sbcIntIP) }
	if !trying {
		t.Error("the A leg's 100 Trying (sent by the reader) not in the export")
	}
	check(aID, "INVITE", fromCaller, "A leg, read:")
	check(aID, "SIP/2.0", toCaller, "A leg, written:")
	check(aID, "BYE", fromCaller, "A leg, read:")
	check(bID, "INVITE", sbcInt, "B leg, written:")
	check(bID, "SIP/2.0", fromBackend, "B leg, read:")
	check(bID, "BYE", sbcInt, "B leg, written:")
	check(bID, "ACK", sbcInt, "B leg, written:")

	// tshark's view of the same datagrams.
	pcap := filepath.Join(t.TempDir(), "hep.pcap")
	col.writePcap(t, pcap)
	port := col.addr().Port()
	out, err := exec.CommandContext(e.ctx, tshark, "-n", "-X", "lua_script:../deploy/wireshark/hep3.lua",
		"-d", "udp.port=="+itoa(int(port))+",hep3", "-r", pcap, "-T", "fields", "-E", "separator=|",
		"-e", "hep3.correlation_id", "-e", "hep3.agent_id", "-e", "hep3.auth_key", "-e", "hep3.src_ip",
		"-e", "hep3.src_port", "-e", "hep3.dst_ip", "-e", "hep3.dst_port", "-e", "sip.Call-ID", "-e", "sip.Method",
		"-e", "sip.Status-Code").Output()
	if err != nil {
		t.Fatalf("tshark: %v\n%s", err, exitStderr(err))
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != len(pkts) {
		t.Fatalf("tshark decoded %d packets, the collector got %d:\n%s", len(lines), len(pkts), out)
	}
	var legs [2]map[string]bool // methods and status codes tshark found per leg
	legs[0], legs[1] = map[string]bool{}, map[string]bool{}
	for _, l := range lines {
		f := strings.Split(l, "|")
		if len(f) != 10 {
			t.Fatalf("tshark line %q", l)
		}
		corr, agent, key, srcIP, dstIP, callID := f[0], f[1], f[2], f[3], f[5], f[7]
		if agent != "42" || key != "hep-key" || srcIP == "" || dstIP == "" {
			t.Errorf("tshark: agent %q key %q src %q dst %q", agent, key, srcIP, dstIP)
		}
		if callID != aID && callID != bID {
			continue
		}
		if corr != aID {
			t.Errorf("tshark: %s of %s with correlation id %q, want %q", f[8]+f[9], callID, corr, aID)
		}
		leg := 0
		if callID == bID {
			leg = 1
		}
		legs[leg][f[8]+f[9]] = true
	}
	for i, leg := range legs {
		for _, want := range []string{"INVITE", "ACK", "BYE", "200"} {
			if !leg[want] {
				t.Errorf("tshark: leg %d has no %s (%v)", i, want, leg)
			}
		}
	}
	st := e.sbc.ops.Load().stats().hep
	if st.sent < uint64(len(pkts)) || st.dropped != 0 || st.failed != 0 {
		t.Errorf("hep stats %+v, collector got %d", st, len(pkts))
	}
}

// TestHEPQueueFullDropsAndCounts: the exporter's queue is bounded; a
// message that finds it full is dropped and counted, never waited for.
func TestHEPQueueFullDropsAndCounts(t *testing.T) {
	h := &hepExport{q: make(chan hepMsg, 2)}
	a, b := netip.MustParseAddrPort("127.0.0.1:5060"), netip.MustParseAddrPort("127.0.0.2:5060")
	msg := []byte("OPTIONS sip:x SIP/2.0\r\nCall-ID: abc\r\n\r\n")
	for i := 0; i < 5; i++ {
		h.capture(hep.ProtoUDP, a, b, msg)
	}
	h.capture(hep.ProtoUDP, a, b, []byte("\r\n\r\n")) // a keep-alive: not exported at all
	if st := h.stats(); st.dropped != 3 || len(h.q) != 2 {
		t.Fatalf("stats %+v, queued %d: want 3 dropped, 2 queued", st, len(h.q))
	}
}

func TestSIPCallID(t *testing.T) {
	for in, want := range map[string]string{
		"INVITE sip:a SIP/2.0\r\nVia: x\r\nCall-ID: abc@h\r\n\r\nCall-ID: body": "abc@h",
		"SIP/2.0 200 OK\r\ni:  compact \r\nCSeq: 1 BYE\r\n\r\n":                 "compact",
		"SIP/2.0 200 OK\r\ncall-id:lower\r\n":                                   "lower",
		"INVITE sip:a SIP/2.0\r\n\r\nCall-ID: only-in-body":                     "",
		"": "",
	} {
		if got := sipCallID([]byte(in)); got != want {
			t.Errorf("sipCallID(%q) = %q, want %q", in, got, want)
		}
	}
}

func firstLine(b []byte) string {
	l, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(l)
}

func firstWord(b []byte) string {
	w, _, _ := bytes.Cut(b, []byte(" "))
	return string(w)
}

func itoa(n int) string { return strconv.Itoa(n) }

func exitStderr(err error) string {
	if ee, ok := err.(*exec.ExitError); ok {
		return string(ee.Stderr)
	}
	return ""
}

// BenchmarkHEPWriteHook is the cost the export adds to each message sipgo
// writes: sipgo's hook parses the two addresses and queues a copy in a
// pooled buffer (no allocation once warm); encoding and sending happen in
// the exporter's goroutine. The benchmark empties the queue itself,
// returning the buffers as the exporter does (no message is dropped), so
// it measures the queued path.
func BenchmarkHEPWriteHook(b *testing.B) {
	h := &hepExport{q: make(chan hepMsg, 1024), local: map[netip.AddrPort]bool{netip.MustParseAddrPort("127.0.0.3:5060"): true},
		ips: map[netip.Addr]bool{}}
	list := []*hepExport{h}
	old := hepExports.Swap(&list)
	defer hepExports.Store(old)
	msg := bytes.Repeat([]byte("x"), 600)
	b.ReportAllocs()
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		sipTraceHook{}.SIPTraceWrite("UDP", "127.0.0.3:5060", "127.0.0.1:40000", msg)
		if len(h.q) == cap(h.q) {
			for len(h.q) > 0 {
				putHEPBuf((<-h.q).buf)
			}
		}
	}
	if d := h.dropped.Load(); d != 0 {
		b.Fatalf("%d dropped", d)
	}
}

// TestHEPWriteOwnership: sipgo's write hook is process-wide; a message
// goes to the exporter of the SBC it left from: a listener socket, or,
// over TCP, a connection from one of its IPs (any IP when a listener is
// bound to the unspecified address). Other user agents' writes are not
// exported.
func TestHEPWriteOwnership(t *testing.T) {
	ap := netip.MustParseAddrPort
	mine := &hepExport{q: make(chan hepMsg, 16), local: map[netip.AddrPort]bool{ap("127.0.0.3:5060"): true, ap("127.0.0.4:5062"): true},
		ips: map[netip.Addr]bool{netip.MustParseAddr("127.0.0.3"): true, netip.MustParseAddr("127.0.0.4"): true}}
	wild := &hepExport{q: make(chan hepMsg, 16), local: map[netip.AddrPort]bool{ap("0.0.0.0:5070"): true},
		ips: map[netip.Addr]bool{netip.IPv4Unspecified(): true}, anyIP: true}
	list := []*hepExport{mine, wild}
	old := hepExports.Swap(&list)
	defer hepExports.Store(old)
	msg := []byte("OPTIONS sip:x SIP/2.0\r\nCall-ID: o\r\n\r\n")
	for _, tc := range []struct {
		transport, laddr string
		want             *hepExport
	}{
		{"UDP", "127.0.0.3:5060", mine},
		{"TCP", "127.0.0.4:41234", mine}, // a connection the SBC opened
		{"UDP", "127.0.0.4:41234", nil},  // no UDP socket of the SBC
		{"UDP", "127.0.0.1:40000", nil},  // a test's user agent
		{"UDP", "0.0.0.0:5070", wild},
		{"TCP", "127.0.0.9:50000", wild}, // the wildcard SBC's connection (after mine declined it)
	} {
		sipTraceHook{}.SIPTraceWrite(tc.transport, tc.laddr, "127.0.0.2:5080", msg)
		for _, h := range list {
			n := len(h.q)
			for len(h.q) > 0 {
				<-h.q
			}
			if want := h == tc.want; want != (n == 1) || n > 1 {
				t.Errorf("%s from %s: exporter %p got %d, want it at %p", tc.transport, tc.laddr, h, n, tc.want)
			}
		}
	}
}
