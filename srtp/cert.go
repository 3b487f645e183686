package srtp

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/sbc-project/sbc/internal/atomicfile"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Certificate is the SBC's DTLS certificate (RFC 5763 §5: self-signed,
// identified by its fingerprint in the SDP, not by a CA).
type Certificate struct {
	// TLS is the certificate and its key, as DTLS uses them.
	TLS tls.Certificate
	// Leaf is the parsed certificate.
	Leaf *x509.Certificate
	// Fingerprint is the SHA-256 fingerprint written as a=fingerprint.
	Fingerprint Fingerprint
}

// Certificate files written by LoadOrCreateCertificate in its directory.
const (
	CertFileName = "dtls-cert.pem"
	KeyFileName  = "dtls-key.pem"
)

const (
	// certValidity is the lifetime of a generated certificate. Peers check
	// the fingerprint, not the dates (RFC 8827 §6.5), but OpenSSL-based
	// ones may log an expired certificate.
	certValidity = 365 * 24 * time.Hour
	// certRenewBefore: LoadOrCreateCertificate replaces a persisted
	// certificate that expires within this time.
	certRenewBefore = 30 * 24 * time.Hour
)

// GenerateCertificate makes a self-signed ECDSA P-256 certificate valid for
// a year, with a random serial and subject.
func GenerateCertificate() (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("srtp: certificate key: %w", err)
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("srtp: certificate serial: %w", err)
	}
	var cn [8]byte
	_, _ = rand.Read(cn[:])
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "sbc-" + hex.EncodeToString(cn[:])},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(certValidity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("srtp: certificate: %w", err)
	}
	return newCertificate(tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})
}

func newCertificate(tc tls.Certificate) (*Certificate, error) {
	if len(tc.Certificate) == 0 {
		return nil, errors.New("srtp: certificate: no certificate")
	}
	leaf, err := x509.ParseCertificate(tc.Certificate[0])
	if err != nil {
		return nil, fmt.Errorf("srtp: certificate: %w", err)
	}
	tc.Leaf = leaf
	return &Certificate{TLS: tc, Leaf: leaf, Fingerprint: FingerprintOf(tc.Certificate[0], crypto.SHA256)}, nil
}

// LoadCertificate loads a PEM certificate and its key (ECDSA, RSA or
// Ed25519, as crypto/tls reads them).
func LoadCertificate(certFile, keyFile string) (*Certificate, error) {
	tc, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("srtp: DTLS certificate: %w", err)
	}
	return newCertificate(tc)
}

// LoadOrCreateCertificate loads dir/dtls-cert.pem and dir/dtls-key.pem,
// or, when they are missing, unreadable or expire within 30 days,
// generates a certificate and writes them (key mode 0600, written to a
// temporary file then renamed). The fingerprint thus stays the same across
// restarts, which calls in progress on another node or a re-INVITE after
// a restart rely on. It is LoadOrCreateSealedCertificate without a sealer.
func LoadOrCreateCertificate(dir string) (*Certificate, error) {
	return LoadOrCreateSealedCertificate(dir, nil)
}

// KeySealer encrypts the private key at rest (package secrets' Keyring).
type KeySealer interface {
	Seal(plain []byte) (string, error)
	Open(sealed string) ([]byte, error)
}

// SealedKeyFileName is the private key's file when a KeySealer seals it:
// the sealed PKCS #8 DER, one line.
const SealedKeyFileName = "dtls-key.sealed"

// ErrSealedKeyNoSealer: dir holds a sealed private key but no KeySealer
// was given to open it.
var ErrSealedKeyNoSealer = errors.New("srtp: the DTLS private key in the state directory is sealed (" + SealedKeyFileName + "), but no master key is configured to open it")

// LoadOrCreateSealedCertificate is LoadOrCreateCertificate with the
// private key sealed by s (when s is not nil) in dir/dtls-key.sealed
// instead of dir/dtls-key.pem. A plain key left from a run without a
// sealer is sealed and its plain file removed. A sealed key that s cannot
// open is an error (the certificate is not replaced: a master key given
// by mistake must not change the SBC's fingerprint). Without s, a sealed
// key in dir is an error too (ErrSealedKeyNoSealer).
func LoadOrCreateSealedCertificate(dir string, s KeySealer) (*Certificate, error) {
	certFile, keyFile := filepath.Join(dir, CertFileName), filepath.Join(dir, KeyFileName)
	sealedFile := filepath.Join(dir, SealedKeyFileName)
	_, serr := os.Stat(sealedFile)
	haveSealed := serr == nil
	if s == nil {
		if haveSealed {
			return nil, ErrSealedKeyNoSealer
		}
		if c, err := LoadCertificate(certFile, keyFile); err == nil && time.Until(c.Leaf.NotAfter) > certRenewBefore {
			return c, nil
		}
		return createCertificate(dir, nil)
	}
	if haveSealed {
		c, err := loadSealed(certFile, sealedFile, s)
		if errors.Is(err, errUnseal) {
			return nil, err
		}
		if err == nil && time.Until(c.Leaf.NotAfter) > certRenewBefore {
			return c, nil
		}
		return createCertificate(dir, s)
	}
	if c, err := LoadCertificate(certFile, keyFile); err == nil && time.Until(c.Leaf.NotAfter) > certRenewBefore {
		// Seal the plain key of an earlier run, then remove it.
		if err := writeKey(dir, c, s); err != nil {
			return nil, err
		}
		if err := os.Remove(keyFile); err != nil {
			return nil, fmt.Errorf("srtp: removing the plain key after sealing it: %w", err)
		}
		return c, nil
	}
	return createCertificate(dir, s)
}

// errUnseal wraps the sealer's error when a sealed key does not open.
var errUnseal = errors.New("srtp: the sealed DTLS key does not open")

func loadSealed(certFile, sealedFile string, s KeySealer) (*Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, fmt.Errorf("srtp: DTLS certificate: %w", err)
	}
	sealed, err := os.ReadFile(sealedFile)
	if err != nil {
		return nil, fmt.Errorf("srtp: DTLS key: %w", err)
	}
	der, err := s.Open(strings.TrimSpace(string(sealed)))
	if err != nil {
		return nil, fmt.Errorf("%w (%s): %w", errUnseal, sealedFile, err)
	}
	tc, err := tls.X509KeyPair(certPEM, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	if err != nil {
		return nil, fmt.Errorf("srtp: DTLS certificate and sealed key: %w", err)
	}
	return newCertificate(tc)
}

func createCertificate(dir string, s KeySealer) (*Certificate, error) {
	c, err := GenerateCertificate()
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("srtp: certificate directory: %w", err)
	}
	if err := writeKey(dir, c, s); err != nil {
		return nil, err
	}
	if err := writeAtomic(filepath.Join(dir, CertFileName), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.TLS.Certificate[0]}), 0o644); err != nil {
		return nil, err
	}
	return c, nil
}

// writeKey writes c's key: sealed when s is not nil, else PEM.
func writeKey(dir string, c *Certificate, s KeySealer) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(c.TLS.PrivateKey)
	if err != nil {
		return fmt.Errorf("srtp: certificate key: %w", err)
	}
	if s == nil {
		return writeAtomic(filepath.Join(dir, KeyFileName), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600)
	}
	sealed, err := s.Seal(keyDER)
	if err != nil {
		return fmt.Errorf("srtp: sealing the DTLS key: %w", err)
	}
	return writeAtomic(filepath.Join(dir, SealedKeyFileName), []byte(sealed+"\n"), 0o600)
}

// Fingerprint is a certificate fingerprint (RFC 8122 a=fingerprint).
type Fingerprint struct {
	// Hash is the lower-case hash function name ("sha-256").
	Hash string
	// Value is the digest.
	Value []byte
}

// ErrBadFingerprint: an a=fingerprint that cannot be parsed, or whose hash
// function is refused (weaker than SHA-256: sha-1, md5, sha-224).
var ErrBadFingerprint = errors.New("srtp: bad or refused fingerprint")

// fingerprintHashes are the hash functions accepted in a peer's
// a=fingerprint: SHA-256 at least (baresip refuses sha-1 too).
var fingerprintHashes = map[string]crypto.Hash{
	"sha-256": crypto.SHA256,
	"sha-384": crypto.SHA384,
	"sha-512": crypto.SHA512,
}

// FingerprintOf hashes a DER certificate with SHA-256, SHA-384 or SHA-512
// (others give the zero Fingerprint).
func FingerprintOf(der []byte, h crypto.Hash) Fingerprint {
	switch h {
	case crypto.SHA256:
		d := sha256.Sum256(der)
		return Fingerprint{Hash: "sha-256", Value: d[:]}
	case crypto.SHA384:
		d := sha512.Sum384(der)
		return Fingerprint{Hash: "sha-384", Value: d[:]}
	case crypto.SHA512:
		d := sha512.Sum512(der)
		return Fingerprint{Hash: "sha-512", Value: d[:]}
	}
	return Fingerprint{}
}

// ParseFingerprint parses an a=fingerprint value ("sha-256 AB:CD:...").
// Hash functions weaker than SHA-256 are refused (ErrBadFingerprint).
func ParseFingerprint(v string) (Fingerprint, error) {
	f := strings.Fields(v)
	if len(f) != 2 {
		return Fingerprint{}, fmt.Errorf("%w: %.80q", ErrBadFingerprint, v)
	}
	name := strings.ToLower(f[0])
	h, ok := fingerprintHashes[name]
	if !ok {
		return Fingerprint{}, fmt.Errorf("%w: hash %q", ErrBadFingerprint, f[0])
	}
	hexs := strings.ReplaceAll(f[1], ":", "")
	if len(hexs) != 2*h.Size() || len(f[1]) != 3*h.Size()-1 {
		return Fingerprint{}, fmt.Errorf("%w: %d-byte %s value", ErrBadFingerprint, len(hexs)/2, name)
	}
	b, err := hex.DecodeString(hexs)
	if err != nil {
		return Fingerprint{}, fmt.Errorf("%w: %v", ErrBadFingerprint, err)
	}
	return Fingerprint{Hash: name, Value: b}, nil
}

// String formats the a=fingerprint value: the hash name and the digest in
// upper-case hex pairs separated by colons (RFC 8122 §5).
func (f Fingerprint) String() string {
	const digits = "0123456789ABCDEF"
	var b strings.Builder
	b.Grow(len(f.Hash) + 1 + 3*len(f.Value))
	b.WriteString(f.Hash)
	b.WriteByte(' ')
	for i, c := range f.Value {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteByte(digits[c>>4])
		b.WriteByte(digits[c&15])
	}
	return b.String()
}

// Matches reports whether der (a peer's leaf certificate) has this
// fingerprint, comparing digests in constant time.
func (f Fingerprint) Matches(der []byte) bool {
	h, ok := fingerprintHashes[f.Hash]
	if !ok || len(f.Value) != h.Size() {
		return false
	}
	got := FingerprintOf(der, h)
	return subtle.ConstantTimeCompare(got.Value, f.Value) == 1
}

// Setup is an a=setup role (RFC 4145 §4, RFC 5763 §5).
type Setup uint8

// Setup roles. SetupActive is the DTLS client, SetupPassive the server;
// SetupActpass (offers only) lets the answerer choose.
const (
	SetupNone Setup = iota
	SetupActive
	SetupPassive
	SetupActpass
	SetupHoldconn
)

var setupNames = [...]string{"", "active", "passive", "actpass", "holdconn"}

func (s Setup) String() string {
	if int(s) < len(setupNames) {
		return setupNames[s]
	}
	return fmt.Sprintf("Setup(%d)", uint8(s))
}

// ParseSetup parses an a=setup value (case-insensitive).
func ParseSetup(v string) (Setup, error) {
	v = strings.ToLower(strings.TrimSpace(v))
	for i, n := range setupNames {
		if i > 0 && v == n {
			return Setup(i), nil
		}
	}
	return SetupNone, fmt.Errorf("srtp: a=setup:%.20q", v)
}

// AnswerSetup is the a=setup of an answer to an offer's (RFC 5763 §5):
// active answers passive and passive answers active; an actpass offer
// gets prefer (SetupActive or SetupPassive; passive when prefer is
// neither). A missing a=setup in an offer means active (RFC 4145 §4).
// holdconn cannot be answered with a DTLS association.
func AnswerSetup(offer, prefer Setup) (Setup, error) {
	switch offer {
	case SetupActive, SetupNone:
		return SetupPassive, nil
	case SetupPassive:
		return SetupActive, nil
	case SetupActpass:
		if prefer == SetupActive {
			return SetupActive, nil
		}
		return SetupPassive, nil
	}
	return SetupNone, fmt.Errorf("srtp: cannot answer a=setup:%v", offer)
}

// writeAtomic replaces name with data (internal/atomicfile).
func writeAtomic(name string, data []byte, mode os.FileMode) error {
	if err := atomicfile.Write(name, data, mode); err != nil {
		return fmt.Errorf("srtp: certificate: %w", err)
	}
	return nil
}
