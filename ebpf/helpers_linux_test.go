//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"path/filepath"
	"testing"

	"github.com/sbc-project/sbc/internal/netns/netnstest"
	"golang.org/x/sys/unix"
)

// requirePriv skips a test that needs root, or fails it when the CI demands
// privileged tests (SBC_REQUIRE_PRIV=1).
func requirePriv(t testing.TB) {
	t.Helper()
	netnstest.RequirePriv(t)
}

// bpffsDir mounts a private bpf filesystem on a temporary directory and
// returns a pin directory below it; the mount is removed at cleanup.
func bpffsDir(t testing.TB) string {
	t.Helper()
	requirePriv(t)
	mnt := t.TempDir()
	if err := unix.Mount("bpf", mnt, "bpf", 0, "mode=0700"); err != nil {
		t.Fatalf("mount bpffs on %s: %v", mnt, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", mnt, err)
		}
	})
	return filepath.Join(mnt, "sbc")
}

// loadTest loads the program and maps into a private bpffs without
// attaching; everything is removed at cleanup.
func loadTest(t testing.TB, opts Options) *XDP {
	t.Helper()
	if opts.PinDir == "" {
		opts.PinDir = bpffsDir(t)
	}
	x, err := loadObjects(opts)
	if err != nil {
		t.Fatalf("loadObjects: %v", err)
	}
	t.Cleanup(func() { _ = x.Remove() })
	return x
}

// ---- frame builders (no gopacket) ----

var (
	macDst = [6]byte{0x02, 0, 0, 0, 0, 0x01}
	macSrc = [6]byte{0x02, 0, 0, 0, 0, 0x02}
)

const (
	etherIPv4 = 0x0800
	etherIPv6 = 0x86DD
	etherARP  = 0x0806
	ether1Q   = 0x8100
	ether1AD  = 0x88A8
	etherQinQ = 0x9100
	protoUDP  = 17
	protoTCP  = 6
)

// ethHdr returns an Ethernet header with optional VLAN tags (outer first);
// each tag is given as its TPID, the VLAN ID is arbitrary.
func ethHdr(etherType uint16, tpids ...uint16) []byte {
	b := append([]byte{}, macDst[:]...)
	b = append(b, macSrc[:]...)
	for i, tpid := range tpids {
		b = binary.BigEndian.AppendUint16(b, tpid)
		b = binary.BigEndian.AppendUint16(b, uint16(100+i)) // TCI
	}
	return binary.BigEndian.AppendUint16(b, etherType)
}

// udpHdr returns a UDP header followed by payload (checksum 0).
func udpHdr(sport, dport uint16, payload []byte) []byte {
	b := binary.BigEndian.AppendUint16(nil, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = binary.BigEndian.AppendUint16(b, uint16(8+len(payload)))
	b = binary.BigEndian.AppendUint16(b, 0)
	return append(b, payload...)
}

// tcpHdr returns a 20-byte TCP header (SYN, no options, checksum 0).
func tcpHdr(sport, dport uint16) []byte {
	b := binary.BigEndian.AppendUint16(nil, sport)
	b = binary.BigEndian.AppendUint16(b, dport)
	b = append(b, 0, 0, 0, 1, 0, 0, 0, 0) // seq, ack
	b = append(b, 5<<4, 0x02)             // data offset 5, SYN
	b = binary.BigEndian.AppendUint16(b, 65535)
	return append(b, 0, 0, 0, 0) // checksum, urgent pointer
}

type v4opts struct {
	ihl      int    // header length in 32-bit words, 5 when 0
	fragOff  uint16 // fragment offset in 8-byte units
	more     bool   // MF flag
	version  int    // 4 when 0
	protocol uint8
}

// ipv4Hdr returns an IPv4 header (with options padding up to ihl) and payload.
func ipv4Hdr(src, dst netip.Addr, o v4opts, payload []byte) []byte {
	ihl := o.ihl
	if ihl == 0 {
		ihl = 5
	}
	ver := o.version
	if ver == 0 {
		ver = 4
	}
	hl := ihl * 4
	if hl < 20 {
		hl = 20
	}
	b := make([]byte, hl)
	b[0] = byte(ver<<4 | ihl&0x0F)
	binary.BigEndian.PutUint16(b[2:], uint16(hl+len(payload)))
	binary.BigEndian.PutUint16(b[4:], 0x1234)
	frag := o.fragOff & 0x1FFF
	if o.more {
		frag |= 0x2000
	}
	binary.BigEndian.PutUint16(b[6:], frag)
	b[8] = 64
	b[9] = o.protocol
	s, d := src.As4(), dst.As4()
	copy(b[12:], s[:])
	copy(b[16:], d[:])
	for i := 20; i < hl; i++ {
		b[i] = 1 // NOP options
	}
	var sum uint32
	for i := 0; i < hl; i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	for sum > 0xFFFF {
		sum = sum&0xFFFF + sum>>16
	}
	binary.BigEndian.PutUint16(b[10:], ^uint16(sum))
	return append(b, payload...)
}

// ipv6Hdr returns a fixed IPv6 header and payload; next is the next header.
func ipv6Hdr(src, dst netip.Addr, next uint8, payload []byte) []byte {
	b := make([]byte, 40)
	b[0] = 6 << 4
	binary.BigEndian.PutUint16(b[4:], uint16(len(payload)))
	b[6] = next
	b[7] = 64
	s, d := src.As16(), dst.As16()
	copy(b[8:], s[:])
	copy(b[24:], d[:])
	return append(b, payload...)
}

// ipv6Frag returns an IPv6 fragment header and payload.
func ipv6Frag(next uint8, offset uint16, more bool, payload []byte) []byte {
	b := make([]byte, 8)
	b[0] = next
	fo := offset << 3
	if more {
		fo |= 1
	}
	binary.BigEndian.PutUint16(b[2:], fo)
	binary.BigEndian.PutUint32(b[4:], 0xabcdef)
	return append(b, payload...)
}

// ipv6Opts returns a hop-by-hop/destination-options style extension header
// of (len8+1)*8 bytes (PadN filled) and payload.
func ipv6Opts(next uint8, len8 uint8, payload []byte) []byte {
	n := (int(len8) + 1) * 8
	b := make([]byte, n)
	b[0] = next
	b[1] = len8
	b[2] = 1 // PadN
	b[3] = byte(n - 4)
	return append(b, payload...)
}

// arpFrame returns an ARP request.
func arpFrame() []byte {
	b := ethHdr(etherARP)
	b = append(b, 0, 1, 8, 0, 6, 4, 0, 1)
	b = append(b, macSrc[:]...)
	b = append(b, 192, 0, 2, 9)
	b = append(b, 0, 0, 0, 0, 0, 0)
	return append(b, 192, 0, 2, 1)
}

func udp4(src string, dport uint16, tpids ...uint16) []byte {
	return append(ethHdr(etherIPv4, tpids...),
		ipv4Hdr(netip.MustParseAddr(src), netip.MustParseAddr("198.18.0.1"), v4opts{protocol: protoUDP},
			udpHdr(40000, dport, []byte("INVITE sip:x SIP/2.0\r\n")))...)
}

func udp6(src string, dport uint16, tpids ...uint16) []byte {
	return append(ethHdr(etherIPv6, tpids...),
		ipv6Hdr(netip.MustParseAddr(src), netip.MustParseAddr("2001:db8:ffff::1"), protoUDP,
			udpHdr(40000, dport, []byte("INVITE sip:x SIP/2.0\r\n")))...)
}

func mustPrefixes(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func (c Counters) String() string {
	return fmt.Sprintf("passed=%d deny=%d rl=%d malformed=%d nonip=%d frag=%d allowed=%d spared=%d",
		c.Passed, c.DroppedDeny, c.DroppedRateLimit, c.Malformed, c.NonIP, c.Fragments, c.Allowed, c.Spared)
}

func (c Counters) sub(o Counters) Counters {
	return Counters{
		Passed:           c.Passed - o.Passed,
		DroppedDeny:      c.DroppedDeny - o.DroppedDeny,
		DroppedRateLimit: c.DroppedRateLimit - o.DroppedRateLimit,
		Malformed:        c.Malformed - o.Malformed,
		NonIP:            c.NonIP - o.NonIP,
		Fragments:        c.Fragments - o.Fragments,
		Allowed:          c.Allowed - o.Allowed,
		Spared:           c.Spared - o.Spared,
	}
}
