package media

import (
	"context"
	"crypto/x509"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"time"

	"github.com/pion/dtls/v3"
	pion "github.com/pion/srtp/v3"
	"github.com/pion/transport/v5/deadline"

	"github.com/sbc-project/sbc/srtp"
)

// feedConn is the net.PacketConn a phone's pion/dtls client runs on: the
// phone's receiver feeds it the DTLS datagrams of its socket (RFC 7983
// demultiplexing), and it writes to the relay's leg. The same shape as
// the relay's own in package srtp.
type feedConn struct {
	in    chan []byte
	w     *net.UDPConn
	peer  netip.AddrPort
	done  chan struct{}
	once  sync.Once
	rdead *deadline.Deadline
}

func newFeedConn(w *net.UDPConn, peer netip.AddrPort) *feedConn {
	return &feedConn{in: make(chan []byte, 32), w: w, peer: peer, done: make(chan struct{}), rdead: deadline.New()}
}

func (c *feedConn) feed(pkt []byte) {
	select {
	case c.in <- append([]byte(nil), pkt...):
	case <-c.done:
	default: // a full queue drops, as the network would
	}
}

func (c *feedConn) ReadFrom(p []byte) (int, net.Addr, error) {
	select {
	case <-c.done:
		return 0, nil, net.ErrClosed
	case <-c.rdead.Done():
		return 0, nil, os.ErrDeadlineExceeded
	case d := <-c.in:
		return copy(p, d), net.UDPAddrFromAddrPort(c.peer), nil
	}
}

func (c *feedConn) WriteTo(p []byte, _ net.Addr) (int, error) {
	select {
	case <-c.done:
		return 0, net.ErrClosed
	default:
	}
	return c.w.WriteToUDPAddrPort(p, c.peer)
}

func (c *feedConn) Close() error {
	c.once.Do(func() { close(c.done) })
	return nil
}

func (c *feedConn) LocalAddr() net.Addr { return c.w.LocalAddr() }

func (c *feedConn) SetDeadline(t time.Time) error { c.rdead.Set(t); return nil }

func (c *feedConn) SetReadDeadline(t time.Time) error { c.rdead.Set(t); return nil }

func (c *feedConn) SetWriteDeadline(time.Time) error { return nil }

// dtlsHandshake runs a pion/dtls client (setup:active) from the phone's
// socket to the relay's leg, checks the relay's certificate against its
// fingerprint, and returns the phone's SRTP contexts (enc: what it sends,
// dec: what it receives). The caller's receiver must feed fc.
func dtlsHandshake(ctx context.Context, fc *feedConn, cert *srtp.Certificate, relayFP srtp.Fingerprint) (enc, dec *pion.Context, conn *dtls.Conn, err error) {
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 || !relayFP.Matches(raw[0]) {
			return errors.New("relay fingerprint mismatch")
		}
		return nil
	}
	c, err := dtls.ClientWithOptions(fc, net.UDPAddrFromAddrPort(fc.peer),
		dtls.WithCertificates(cert.TLS), dtls.WithSRTPProtectionProfiles(dtls.SRTP_AES128_CM_HMAC_SHA1_80),
		dtls.WithInsecureSkipVerify(true), dtls.WithVerifyPeerCertificate(verify))
	if err != nil {
		return nil, nil, nil, err
	}
	if err := c.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, nil, nil, err
	}
	prof, _ := c.SelectedSRTPProtectionProfile()
	st, _ := c.ConnectionState()
	local, remote, err := srtp.KeysFromDTLS(&st, pion.ProtectionProfile(prof), true)
	if err != nil {
		_ = c.Close()
		return nil, nil, nil, err
	}
	if enc, err = pion.CreateContext(local.Key, local.Salt, local.Profile); err == nil {
		dec, err = pion.CreateContext(remote.Key, remote.Salt, remote.Profile)
	}
	if err != nil {
		_ = c.Close()
		return nil, nil, nil, err
	}
	return enc, dec, c, nil
}
