package sbc

import (
	"crypto/tls"
	"strings"
	"testing"
)

// TestTLSResumedSessionKeepsIdentity: a carrier whose TLS stack resumes
// sessions (OpenSSL, hence stunnel and most SIP stacks, does by default)
// reconnects. The reconnection must still be the carrier's trunk, and a
// certificate revoked in the meantime must be refused, as on the first
// connection: the client certificate is verified on every connection.
// Found by the stunnel interop test (a second SIPp run through the same
// shim was dropped as unknown_source): crypto/tls calls
// VerifyPeerCertificate on full handshakes only, so on a resumed one the
// SBC neither learnt the identity nor checked the certificate.
func TestTLSResumedSessionKeepsIdentity(t *testing.T) {
	for _, v := range []struct {
		name string
		max  uint16
	}{{"tls12", tls.VersionTLS12}, {"tls13", tls.VersionTLS13}} {
		t.Run(v.name, func(t *testing.T) {
			e := newTLSEnv(t, nil)
			cfg := e.pki.client("carrier")
			cfg.MaxVersion = v.max
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			for i := range 2 {
				if res, err := tlsOptions(e.ctx, e.tlsAddr, cfg); err != nil || !strings.HasPrefix(res, "SIP/2.0 200") {
					t.Fatalf("OPTIONS on connection %d: %q, %v", i+1, res, err)
				}
			}
			waitCount(e.ctx, t, "handshakes ok", func() float64 { return e.handshakes(tlsOK) }, 2)

			// Revoke the carrier's key: the next connection, resumed or
			// not, is refused.
			pb := e.pb.Clone()
			pb.Realm("external").Listeners[2].TLS.RevokedSPKI = []string{e.pki.leaves["carrier"].SPKISHA256()}
			if err := e.sbc.Reload(pb.Parse(t)); err != nil {
				t.Fatal(err)
			}
			if res, err := tlsOptions(e.ctx, e.tlsAddr, cfg); err == nil {
				t.Fatalf("OPTIONS answered with a revoked certificate: %q", res)
			}
			waitCount(e.ctx, t, "handshakes cert_revoked", func() float64 { return e.handshakes(string(reasonCertRevoked)) }, 1)
		})
	}
}
