package hep

import (
	"bytes"
	"encoding/hex"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestKnownAnswer: a packet laid out by hand from the specification's
// tables, byte by byte, against Append.
func TestKnownAnswer(t *testing.T) {
	p := &Packet{
		Src: netip.MustParseAddrPort("10.0.0.1:5060"), Dst: netip.MustParseAddrPort("10.0.0.2:5080"),
		Proto: ProtoUDP, Time: time.Unix(0x01020304, 5000), ProtoType: TypeSIP, AgentID: 0x0a0b0c0d,
		AuthKey: "pw", CorrelationID: "cid", Payload: []byte("SIP"),
	}
	want := strings.Join([]string{
		"48455033", "0000", // HEP3, total length (patched below)
		"0000 0001 0007 02",       // family IPv4
		"0000 0002 0007 11",       // protocol UDP
		"0000 0003 000a 0a000001", // IPv4 source
		"0000 0004 000a 0a000002", // IPv4 destination
		"0000 0007 0008 13c4",     // source port 5060
		"0000 0008 0008 13d8",     // destination port 5080
		"0000 0009 000a 01020304", // seconds
		"0000 000a 000a 00000005", // microseconds
		"0000 000b 0007 01",       // SIP
		"0000 000c 000a 0a0b0c0d", // capture agent id
		"0000 000e 0008 7077",     // "pw"
		"0000 0011 0009 636964",   // "cid"
		"0000 000f 0009 534950",   // "SIP"
	}, "")
	wb, err := hex.DecodeString(strings.ReplaceAll(want, " ", ""))
	if err != nil {
		t.Fatal(err)
	}
	wb[4], wb[5] = byte(len(wb)>>8), byte(len(wb))
	got, err := Append(nil, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, wb) {
		t.Fatalf("encoded\n%x\nwant\n%x", got, wb)
	}
}

func TestRoundTrip(t *testing.T) {
	now := time.Unix(1764720000, 123456000)
	for _, p := range []*Packet{
		{Src: netip.MustParseAddrPort("127.0.0.1:5060"), Dst: netip.MustParseAddrPort("127.0.0.2:40000"), Proto: ProtoUDP,
			Time: now, ProtoType: TypeSIP, AgentID: 7, CorrelationID: "a-leg@host", Payload: []byte("INVITE sip:x SIP/2.0\r\n\r\n")},
		{Src: netip.MustParseAddrPort("[2001:db8::1]:5061"), Dst: netip.MustParseAddrPort("[2001:db8::2]:5062"), Proto: ProtoTCP,
			Time: now, ProtoType: TypeSIP, AuthKey: "secret", Payload: []byte("SIP/2.0 200 OK\r\n\r\n")},
		{Src: netip.MustParseAddrPort("[::ffff:192.0.2.1]:1"), Dst: netip.MustParseAddrPort("192.0.2.2:2"), Proto: ProtoUDP,
			Time: now, ProtoType: TypeSIP},
	} {
		b, err := Append([]byte("prefix"), p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := Decode(b[len("prefix"):])
		if err != nil {
			t.Fatal(err)
		}
		if q.Src != netip.AddrPortFrom(p.Src.Addr().Unmap(), p.Src.Port()) || q.Dst != p.Dst || q.Proto != p.Proto ||
			!q.Time.Equal(p.Time.Truncate(time.Microsecond)) || q.ProtoType != p.ProtoType || q.AgentID != p.AgentID ||
			q.AuthKey != p.AuthKey || q.CorrelationID != p.CorrelationID || !bytes.Equal(q.Payload, p.Payload) {
			t.Errorf("round trip:\n%+v\n%+v", p, q)
		}
	}
}

func TestAppendRefuses(t *testing.T) {
	p := &Packet{Src: netip.MustParseAddrPort("127.0.0.1:1"), Dst: netip.MustParseAddrPort("[::1]:2")}
	if _, err := Append(nil, p); err == nil {
		t.Fatal("mixed families encoded")
	}
	p.Dst = netip.MustParseAddrPort("127.0.0.1:2")
	p.Payload = make([]byte, MaxPacket)
	b, err := Append([]byte("x"), p)
	if !errors.Is(err, ErrTooLarge) || string(b) != "x" {
		t.Fatalf("oversize: %v, buffer %d bytes", err, len(b))
	}
}

func TestDecodeRefusesJunk(t *testing.T) {
	good, _ := Append(nil, &Packet{Src: netip.MustParseAddrPort("127.0.0.1:1"), Dst: netip.MustParseAddrPort("127.0.0.1:2"), Payload: []byte("x")})
	for name, b := range map[string][]byte{
		"empty":       nil,
		"magic":       []byte("HEP2\x00\x06"),
		"total long":  append([]byte("HEP3\x01\x00"), good[6:]...),
		"chunk long":  append(append([]byte(nil), good[:6]...), 0, 0, 0, 1, 0xff, 0xff),
		"short chunk": append([]byte("HEP3\x00\x0b"), 0, 0, 0, 1, 0),
		"bad fixed":   []byte("HEP3\x00\x0d\x00\x00\x00\x07\x00\x07\x01"),
		"truncated":   good[:len(good)-3], // the total length still says the full size
	} {
		if _, err := Decode(b); err == nil {
			t.Errorf("%s: decoded", name)
		}
	}
}

// TestAppendAllocs: with room in the buffer, encoding allocates nothing
// (the SBC reuses one buffer per packet).
func TestAppendAllocs(t *testing.T) {
	p := &Packet{Src: netip.MustParseAddrPort("127.0.0.1:5060"), Dst: netip.MustParseAddrPort("127.0.0.2:5080"),
		Proto: ProtoUDP, Time: time.Now(), ProtoType: TypeSIP, CorrelationID: "abc", Payload: make([]byte, 800)}
	buf := make([]byte, 0, 2048)
	if n := testing.AllocsPerRun(100, func() { _, _ = Append(buf[:0], p) }); n != 0 {
		t.Fatalf("%v allocations per packet", n)
	}
}

func BenchmarkAppend(b *testing.B) {
	p := &Packet{Src: netip.MustParseAddrPort("127.0.0.1:5060"), Dst: netip.MustParseAddrPort("127.0.0.2:5080"),
		Proto: ProtoUDP, Time: time.Now(), ProtoType: TypeSIP, CorrelationID: "0123456789abcdef01234567", Payload: make([]byte, 800)}
	buf := make([]byte, 0, 2048)
	b.ReportAllocs()
	b.SetBytes(800)
	for b.Loop() {
		buf, _ = Append(buf[:0], p)
	}
}

func FuzzDecode(f *testing.F) {
	good, _ := Append(nil, &Packet{Src: netip.MustParseAddrPort("127.0.0.1:1"), Dst: netip.MustParseAddrPort("127.0.0.1:2"),
		CorrelationID: "c", AuthKey: "k", Payload: []byte("x")})
	f.Add(good)
	f.Add([]byte("HEP3\x00\x06"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := Decode(b)
		if err != nil {
			return
		}
		// What decodes re-encodes (when its addresses are of one family).
		if p.Src.Addr().IsValid() && p.Dst.Addr().IsValid() && p.Src.Addr().Is4() == p.Dst.Addr().Is4() {
			if _, err := Append(nil, p); err != nil && !errors.Is(err, ErrTooLarge) {
				t.Fatalf("re-encode: %v", err)
			}
		}
	})
}
