package sbc

import (
	"bytes"
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/pion/rtcp"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/srtp"
)

// rtcpPhone is an RTCP socket of a test phone.
type rtcpPhone struct {
	t    *testing.T
	conn *net.UDPConn
}

func (p *rtcpPhone) addr() netip.AddrPort {
	return netip.MustParseAddrPort(p.conn.LocalAddr().String())
}

// listenRTCP binds an RTCP socket on ip at port (0: any).
func listenRTCP(t *testing.T, ip string, port int) (*rtcpPhone, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.ParseIP(ip), Port: port})
	if err != nil {
		return nil, err
	}
	t.Cleanup(func() { c.Close() })
	return &rtcpPhone{t: t, conn: c}, nil
}

// phonePair is a phone whose RTCP socket is at its RTP port + 1 (what an
// SDP without a=rtcp implies), found by a bounded number of tries.
func phonePair(t *testing.T, ip string) (*phone, *rtcpPhone) {
	t.Helper()
	for range 50 {
		p := newPhone(t, ip)
		if r, err := listenRTCP(t, ip, int(p.addr().Port())+1); err == nil {
			return p, r
		}
		p.conn.Close()
	}
	t.Fatal("no free RTP/RTCP port pair")
	return nil, nil
}

// recv reads datagrams until one passes check (bounded), returning it
// and its source.
func (p *rtcpPhone) recv(check func([]byte) bool) ([]byte, netip.AddrPort, bool) {
	buf := make([]byte, 1500)
	deadline := time.Now().Add(250 * time.Millisecond)
	for {
		_ = p.conn.SetReadDeadline(deadline)
		n, from, err := p.conn.ReadFromUDPAddrPort(buf)
		if err != nil {
			return nil, netip.AddrPort{}, false
		}
		if check(buf[:n]) {
			return bytes.Clone(buf[:n]), netip.AddrPortFrom(from.Addr().Unmap(), from.Port()), true
		}
	}
}

// TestMediaRTCPRelayed: RTCP on separate ports (no rtcp-mux) between an
// SDES caller, whose SDP names its RTCP port with a=rtcp, and a plain
// backend (RTCP at its RTP port + 1): the caller's SRTCP reaches the
// backend as plain RTCP from the SBC's internal RTCP port (RTP + 1), the
// backend's RTCP reaches the caller as SRTCP under the SBC's key from the
// SBC's external RTCP port, each unchanged inside.
func TestMediaRTCPRelayed(t *testing.T) {
	caller := newPhone(t, callerIP)
	callerRTCP, err := listenRTCP(t, callerIP, 0)
	if err != nil {
		t.Fatal(err)
	}
	backend, backendRTCP := phonePair(t, backendIP)
	e := mediaEnv(t, backend, nil)
	ours, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
	if err != nil {
		t.Fatal(err)
	}
	caller.enc = contextOf(t, ours)
	offer := append(caller.sdesSDP(ours), []byte("a=rtcp:"+strconv.Itoa(int(callerRTCP.addr().Port()))+"\r\n")...)
	call, res := e.dial(sipua.DialOptions{SDP: offer})
	if res.StatusCode != 200 {
		t.Fatalf("final %d", res.StatusCode)
	}
	ci, err := e.backends[0].WaitCall(e.ctx, func(c sipua.CallInfo) bool { return c.Acked })
	if err != nil {
		t.Fatal(err)
	}
	sd, _ := srtp.ParseSDP(res.Body())
	rm, err := srtp.Remote(sd, 0)
	if err != nil || len(rm.Cryptos) != 1 || rm.Mux {
		t.Fatalf("answer: %v mux=%v\n%s", err, rm.Mux, res.Body())
	}
	caller.dec = contextOf(t, rm.Cryptos[0])
	toExt, toInt := rm.RTP, remote(t, ci.Invite)
	toExtRTCP := netip.AddrPortFrom(toExt.Addr(), toExt.Port()+1)
	toIntRTCP := netip.AddrPortFrom(toInt.Addr(), toInt.Port()+1)
	exchange(t, caller, backend, toExt, toInt)

	sr, err := (&rtcp.SenderReport{SSRC: caller.ssrc, NTPTime: 0x1122334455667788, RTPTime: 1234, PacketCount: 7, OctetCount: 700}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	rr, err := (&rtcp.ReceiverReport{SSRC: backend.ssrc, Reports: []rtcp.ReceptionReport{{SSRC: 0x99, FractionLost: 3}}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var gotA, gotB bool
	for range 20 {
		if !gotB {
			w, err := caller.enc.EncryptRTCP(nil, sr, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := callerRTCP.conn.WriteToUDPAddrPort(w, toExtRTCP); err != nil {
				t.Fatal(err)
			}
			if _, from, ok := backendRTCP.recv(func(b []byte) bool { return bytes.Equal(b, sr) }); ok {
				gotB = true
				if from != toIntRTCP {
					t.Errorf("the backend's RTCP came from %v, want the SBC's %v", from, toIntRTCP)
				}
			}
		}
		if !gotA {
			if _, err := backendRTCP.conn.WriteToUDPAddrPort(rr, toIntRTCP); err != nil {
				t.Fatal(err)
			}
			if _, from, ok := callerRTCP.recv(func(b []byte) bool {
				plain, err := caller.dec.DecryptRTCP(nil, b, nil)
				return err == nil && bytes.Equal(plain, rr)
			}); ok {
				gotA = true
				if from != toExtRTCP {
					t.Errorf("the caller's SRTCP came from %v, want the SBC's %v", from, toExtRTCP)
				}
			}
		}
		if gotA && gotB {
			break
		}
	}
	if !gotA || !gotB {
		t.Fatalf("RTCP relayed: to the caller %v, to the backend %v", gotA, gotB)
	}
	if n := gathered(t, e.sbc, "sbc_media_dropped_packets_total", "external", "srtp_auth"); n != 0 {
		t.Errorf("SRTCP authentication failures: %v", n)
	}
	if err := call.Bye(e.ctx); err != nil {
		t.Fatal(err)
	}
}
