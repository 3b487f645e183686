package srtp_test

import (
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/sbc-project/sbc/srtp"
)

// A plain RTP relay between two "phones" on loopback: each phone talks to
// the SBC's port on its own side and hears the other through it.
func Example() {
	lo := netip.MustParseAddr("127.0.0.1")
	pool, err := srtp.NewPortPool(srtp.PortPoolConfig{IP: lo, Min: 42000, Max: 42199, Quarantine: 30 * time.Second})
	if err != nil {
		panic(err)
	}
	listen := func() *net.UDPConn {
		c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(lo, 0)))
		if err != nil {
			panic(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		return c
	}
	alice, bob := listen(), listen()
	defer alice.Close()
	defer bob.Close()
	addr := func(c *net.UDPConn) netip.AddrPort { return netip.MustParseAddrPort(c.LocalAddr().String()) }

	// What the legs' SDP said: each phone's address, rtcp-mux on both.
	portsA, err := pool.Allocate(true)
	if err != nil {
		panic(err)
	}
	portsB, err := pool.Allocate(true)
	if err != nil {
		panic(err)
	}
	stream, err := srtp.NewStream(srtp.StreamConfig{
		A: srtp.LegConfig{Ports: portsA, Remote: addr(alice)},
		B: srtp.LegConfig{Ports: portsB, Remote: addr(bob)},
	})
	if err != nil {
		panic(err)
	}
	sbcA, _ := stream.LocalAddr(srtp.LegA) // goes into the SDP sent to Alice
	sbcB, _ := stream.LocalAddr(srtp.LegB) // goes into the SDP sent to Bob

	// Alice sends an RTP packet (version 2, PCMU, seq 1, SSRC 0x0a11ce) to
	// the SBC; Bob receives it from the SBC's port on his side.
	pkt := []byte{0x80, 0, 0, 1, 0, 0, 0, 160, 0, 0x0a, 0x11, 0xce, 0xff, 0xff}
	_, _ = alice.WriteToUDPAddrPort(pkt, sbcA)
	buf := make([]byte, 1500)
	n, from, err := bob.ReadFromUDPAddrPort(buf)
	if err != nil {
		panic(err)
	}
	fmt.Println("bob got", n, "bytes from the SBC:", from == sbcB)

	// Bob answers the same way.
	_, _ = bob.WriteToUDPAddrPort(pkt, sbcB)
	n, from, _ = alice.ReadFromUDPAddrPort(buf)
	fmt.Println("alice got", n, "bytes from the SBC:", from == sbcA)

	latched, ok := stream.Latched(srtp.LegA)
	fmt.Println("leg A latched to alice:", ok && latched == addr(alice))

	// Close releases both slots to the pool, quarantined. (A slot whose
	// bind failed because another process held the port rests in the
	// quarantine too, so count what the close added.)
	before := pool.Stats()
	_ = stream.Close()
	st := pool.Stats()
	fmt.Println("in use:", st.InUse, "quarantined by the close:", st.Quarantined-before.Quarantined)
	// Output:
	// bob got 14 bytes from the SBC: true
	// alice got 14 bytes from the SBC: true
	// leg A latched to alice: true
	// in use: 0 quarantined by the close: 2
}
