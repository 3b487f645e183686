package nft

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
)

// lab is two namespaces joined by a veth pair: "sbc" runs the firewall and
// the receivers, "peers" sends from several addresses.
type lab struct {
	sbc, peers *testNS
}

const (
	labSBC4   = "10.77.0.1"
	labGood4  = "10.77.0.2"
	labBad4   = "10.77.0.3"
	labSBC6   = "fd77::1"
	labGood6  = "fd77::2"
	labBad6   = "fd77::1:3" // inside fd77::1:0/112
	labPacket = 32          // UDP payload bytes
)

func newLab(t *testing.T) *lab {
	l := &lab{sbc: newNS(t), peers: newNS(t)}
	pfx := netip.MustParsePrefix
	netnstest.Veth(t, netns.Veth{
		A: netns.End{NS: l.sbc.name, Name: "sbc0", Addrs: []netip.Prefix{pfx(labSBC4 + "/24"), pfx(labSBC6 + "/64")}},
		B: netns.End{NS: l.peers.name, Name: "peer0", Addrs: []netip.Prefix{
			pfx(labGood4 + "/24"), pfx(labBad4 + "/24"), pfx(labGood6 + "/64"), pfx(labBad6 + "/64")}},
	})
	return l
}

// listen opens a UDP socket in the sbc namespace.
func (l *lab) listen(t *testing.T, addr string, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	must(t, l.sbc.do(func() (err error) {
		c, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(addr), uint16(port))))
		return err
	}))
	t.Cleanup(func() { c.Close() })
	return c
}

// sender opens a UDP socket in the peers namespace, from src to dst.
func (l *lab) sender(t *testing.T, src, dst string, port int) *net.UDPConn {
	t.Helper()
	var c *net.UDPConn
	must(t, l.peers.do(func() (err error) {
		c, err = net.DialUDP("udp",
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(src), 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(netip.MustParseAddr(dst), uint16(port))))
		return err
	}))
	t.Cleanup(func() { c.Close() })
	return c
}

// exchange sends n datagrams from bad, then n from good, to recv. It
// waits (at most 5 s) for all of good's and returns how many of each
// arrived. The veth pair keeps order, so bad's datagrams, sent first,
// would have arrived before good's last one.
func exchange(t *testing.T, recv, bad, good *net.UDPConn, n int) (gotBad, gotGood int) {
	t.Helper()
	payload := func(tag string, i int) []byte {
		return fmt.Appendf(nil, "%s-%0*d", tag, labPacket-len(tag)-1, i)
	}
	for i := range n {
		if _, err := bad.Write(payload("bad", i)); err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		if _, err := good.Write(payload("good", i)); err != nil {
			t.Fatal(err)
		}
	}
	must(t, recv.SetReadDeadline(time.Now().Add(5*time.Second)))
	buf := make([]byte, 2048)
	for gotGood < n {
		m, err := recv.Read(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			break
		}
		must(t, err)
		switch {
		case strings.HasPrefix(string(buf[:m]), "bad-"):
			gotBad++
		case strings.HasPrefix(string(buf[:m]), "good-"):
			gotGood++
		}
	}
	return gotBad, gotGood
}

func counters(t *testing.T, f *Firewall) Counters {
	t.Helper()
	c, err := f.Counters()
	must(t, err)
	return c
}

func TestEndToEnd(t *testing.T) {
	l := newLab(t)
	const sip, media, relay, other, n = 5060, 20050, 30010, 6000, 20
	f := newFW(t, l.sbc, Options{SIPPorts: []uint16{sip}, MediaPorts: [2]uint16{20000, 20099},
		UDPMediaPorts: [][2]uint16{{30000, 30099}}})
	must(t, f.Block(pfx(labBad4+"/32"), time.Hour))
	must(t, f.Block(pfx("fd77::1:0/112"), time.Hour))

	expect := func(name string, recv, bad, good *net.UDPConn, wantBad int) {
		t.Helper()
		gotBad, gotGood := exchange(t, recv, bad, good, n)
		if gotBad != wantBad || gotGood != n {
			t.Errorf("%s: %d of %d datagrams from the blocked source arrived (want %d), %d of %d from the other (want all)",
				name, gotBad, n, wantBad, gotGood, n)
		}
	}
	udp4 := uint64(20 + 8 + labPacket)
	udp6 := uint64(40 + 8 + labPacket)

	// SIP over UDP, IPv4: the blocked address is dropped and counted.
	sip4 := l.listen(t, labSBC4, sip)
	bad4, good4 := l.sender(t, labBad4, labSBC4, sip), l.sender(t, labGood4, labSBC4, sip)
	expect("udp4 sip", sip4, bad4, good4, 0)
	if c := counters(t, f); c.BlockedPackets != n || c.BlockedBytes != n*udp4 {
		t.Errorf("after udp4: counters %+v, want %d packets, %d bytes", c, n, n*udp4)
	}
	// SIP over UDP, IPv6, blocked by a prefix.
	sip6 := l.listen(t, labSBC6, sip)
	expect("udp6 sip", sip6, l.sender(t, labBad6, labSBC6, sip), l.sender(t, labGood6, labSBC6, sip), 0)
	if c := counters(t, f); c.BlockedPackets != 2*n || c.BlockedBytes != n*(udp4+udp6) {
		t.Errorf("after udp6: counters %+v, want %d packets, %d bytes", c, 2*n, n*(udp4+udp6))
	}
	// The media range is guarded too; other ports are not the SBC's.
	expect("udp4 media", l.listen(t, labSBC4, media), l.sender(t, labBad4, labSBC4, media), l.sender(t, labGood4, labSBC4, media), 0)
	expect("udp4 other port", l.listen(t, labSBC4, other), l.sender(t, labBad4, labSBC4, other), l.sender(t, labGood4, labSBC4, other), n)
	if c := counters(t, f); c.BlockedPackets != 3*n || c.NotTrunkPackets != 0 {
		t.Errorf("after media: counters %+v, want %d blocked packets", c, 3*n)
	}
	// A UDP media range (UDPMediaPorts) is guarded for UDP.
	expect("udp4 relay range", l.listen(t, labSBC4, relay), l.sender(t, labBad4, labSBC4, relay), l.sender(t, labGood4, labSBC4, relay), 0)
	if c := counters(t, f); c.BlockedPackets != 4*n {
		t.Errorf("after the relay range: counters %+v, want %d blocked packets", c, 4*n)
	}

	// SIP over TCP: the handshake from the blocked address never
	// completes.
	var ln net.Listener
	must(t, l.sbc.do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(labSBC4, fmt.Sprint(sip)))
		return err
	}))
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	dial := func(src string, timeout time.Duration) error {
		return l.peers.do(func() error {
			d := net.Dialer{Timeout: timeout, LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
			c, err := d.Dial("tcp", net.JoinHostPort(labSBC4, fmt.Sprint(sip)))
			if err == nil {
				c.Close()
			}
			return err
		})
	}
	before := counters(t, f)
	if err := dial(labBad4, 500*time.Millisecond); err == nil {
		t.Error("tcp from the blocked address connected")
	}
	if err := dial(labGood4, 5*time.Second); err != nil {
		t.Errorf("tcp from an unblocked address: %v", err)
	}
	if c := counters(t, f); c.BlockedPackets <= before.BlockedPackets {
		t.Errorf("tcp SYNs not counted: before %+v after %+v", before, c)
	}

	// Unblocked again, the address gets through.
	must(t, f.Unblock(pfx(labBad4+"/32")))
	expect("udp4 sip after unblock", sip4, bad4, good4, n)

	// Restart with TrunksOnly: the counters survive, and SIP from a
	// source that is not a trunk is dropped (media is not affected).
	was := counters(t, f)
	must(t, f.Close())
	g := newFW(t, l.sbc, Options{SIPPorts: []uint16{sip}, MediaPorts: [2]uint16{20000, 20099}, TrunksOnly: true})
	if c := counters(t, g); c != was {
		t.Errorf("counters after restart %+v, want %+v", c, was)
	}
	must(t, g.SetTrunks([]netip.Prefix{pfx(labGood4 + "/32"), pfx(labGood6 + "/128")}))
	expect("udp4 sip trunks only", sip4, bad4, good4, 0)
	expect("udp4 media trunks only", l.listen(t, labSBC4, media+1), l.sender(t, labBad4, labSBC4, media+1), l.sender(t, labGood4, labSBC4, media+1), n)
	if c := counters(t, g); c.NotTrunkPackets != n || c.NotTrunkBytes != n*udp4 || c.BlockedPackets != was.BlockedPackets {
		t.Errorf("trunks only: counters %+v, want %d not_trunk packets and blocked unchanged (%d)", c, n, was.BlockedPackets)
	}
	// The IPv6 prefix block was kept across the restart.
	expect("udp6 sip after restart", sip6, l.sender(t, labBad6, labSBC6, sip), l.sender(t, labGood6, labSBC6, sip), 0)
}
