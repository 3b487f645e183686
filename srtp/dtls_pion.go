package srtp

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"

	"github.com/pion/dtls/v3"
	"github.com/pion/logging"
	pion "github.com/pion/srtp/v3"
)

// dtlsEngine is what a DTLS session needs from a DTLS implementation. It
// is the one place that names pion/dtls v3: dtls/v4 (its DetachedConn fits
// a relay loop) can replace it behind this interface.
type dtlsEngine interface {
	// Handshake runs the handshake until it completes, fails or ctx ends.
	Handshake(ctx context.Context) error
	// SRTP returns the negotiated profile and the keying material exporter
	// of a completed handshake.
	SRTP() (Suite, pion.KeyingMaterialExporter, error)
	// Read reads application data (none expected) and, as a side effect,
	// answers handshake retransmissions and alerts; it returns an error
	// when the peer closes or Close was called.
	Read(b []byte) (int, error)
	// Close sends close_notify and releases the engine.
	Close() error
}

// dtlsEngineConfig is an engine's configuration.
type dtlsEngineConfig struct {
	cert   *Certificate
	client bool
	suites []Suite
	// verify checks the peer's leaf certificate (DER); the engine refuses
	// a peer without a certificate.
	verify func(leaf []byte) error
}

// newDTLSEngine builds the engine over conn towards peer.
var newDTLSEngine = newPionDTLS3

type pionDTLS3 struct{ c *dtls.Conn }

var dtlsProfiles = map[Suite]dtls.SRTPProtectionProfile{
	AES_CM_128_HMAC_SHA1_80: dtls.SRTP_AES128_CM_HMAC_SHA1_80,
	AES_CM_128_HMAC_SHA1_32: dtls.SRTP_AES128_CM_HMAC_SHA1_32,
	AEAD_AES_128_GCM:        dtls.SRTP_AEAD_AES_128_GCM,
	AEAD_AES_256_GCM:        dtls.SRTP_AEAD_AES_256_GCM,
}

// quietLogs keeps pion's own logging off (errors reach the owner through
// DTLSResult).
var quietLogs = func() logging.LoggerFactory {
	f := logging.NewDefaultLoggerFactory()
	f.DefaultLogLevel = logging.LogLevelDisabled
	return f
}()

func newPionDTLS3(conn net.PacketConn, peer net.Addr, cfg dtlsEngineConfig) (dtlsEngine, error) {
	profiles := make([]dtls.SRTPProtectionProfile, 0, len(cfg.suites))
	for _, s := range cfg.suites {
		if p, ok := dtlsProfiles[s]; ok {
			profiles = append(profiles, p)
		}
	}
	if len(profiles) == 0 {
		return nil, errors.New("srtp: no DTLS-SRTP profile")
	}
	verify := func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return ErrFingerprintMismatch
		}
		return cfg.verify(raw[0])
	}
	common := []dtls.Option{
		dtls.WithCertificates(cfg.cert.TLS),
		dtls.WithSRTPProtectionProfiles(profiles...),
		dtls.WithExtendedMasterSecret(dtls.RequireExtendedMasterSecret),
		// The chain is not checked (self-signed by design); the SDP
		// fingerprint is, in VerifyPeerCertificate.
		dtls.WithInsecureSkipVerify(true),
		dtls.WithVerifyPeerCertificate(verify),
		dtls.WithLoggerFactory(quietLogs),
	}
	var (
		c   *dtls.Conn
		err error
	)
	if cfg.client {
		opts := make([]dtls.ClientOption, 0, len(common))
		for _, o := range common {
			opts = append(opts, o)
		}
		c, err = dtls.ClientWithOptions(conn, peer, opts...)
	} else {
		opts := make([]dtls.ServerOption, 0, len(common)+1)
		for _, o := range common {
			opts = append(opts, o)
		}
		opts = append(opts, dtls.WithClientAuth(dtls.RequireAnyClientCert))
		c, err = dtls.ServerWithOptions(conn, peer, opts...)
	}
	if err != nil {
		return nil, fmt.Errorf("srtp: DTLS: %w", err)
	}
	return &pionDTLS3{c: c}, nil
}

func (e *pionDTLS3) Handshake(ctx context.Context) error { return e.c.HandshakeContext(ctx) }

func (e *pionDTLS3) SRTP() (Suite, pion.KeyingMaterialExporter, error) {
	p, ok := e.c.SelectedSRTPProtectionProfile()
	if !ok {
		return SuiteUnknown, nil, errors.New("srtp: DTLS: no SRTP profile negotiated")
	}
	suite := SuiteUnknown
	for s, dp := range dtlsProfiles {
		if dp == p {
			suite = s
		}
	}
	if suite == SuiteUnknown {
		return SuiteUnknown, nil, fmt.Errorf("srtp: DTLS: unexpected SRTP profile %#04x", uint16(p))
	}
	st, ok := e.c.ConnectionState()
	if !ok {
		return SuiteUnknown, nil, errors.New("srtp: DTLS: no connection state")
	}
	return suite, &st, nil
}

func (e *pionDTLS3) Read(b []byte) (int, error) { return e.c.Read(b) }

func (e *pionDTLS3) Close() error { return e.c.Close() }
