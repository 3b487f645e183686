package certgen

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"github.com/sbc-project/sbc/internal/atomicfile"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Default validity of a leaf whose LeafOptions leave NotBefore or NotAfter
// zero: from an hour ago (clock skew between test peers) to 825 days from
// now (the longest lifetime browsers and many TLS stacks accept for a
// server certificate).
const (
	DefaultBackdate = time.Hour
	DefaultLifetime = 825 * 24 * time.Hour
)

// Default validity of a CA made with zero times: from an hour ago to ten
// years from now.
const defaultCALifetime = 10 * 365 * 24 * time.Hour

// CA is a certificate authority: a self-signed certificate and its key.
type CA struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// Leaf is a certificate issued by a CA, with its private key.
type Leaf struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
	// CA is the issuer.
	CA *CA
}

// LeafOptions describes a leaf certificate for [CA.Issue].
type LeafOptions struct {
	// CN is the subject common name.
	CN string
	// Subject alternative names.
	DNSNames    []string
	IPAddresses []net.IP
	URIs        []*url.URL
	// Validity. A zero NotBefore means now minus DefaultBackdate, a zero
	// NotAfter means now plus DefaultLifetime.
	NotBefore, NotAfter time.Time
	// IsServer and IsClient add the extended key usages ServerAuth and
	// ClientAuth; both may be set. With neither, the certificate has no
	// extended key usage extension, which crypto/x509 and OpenSSL accept
	// for any purpose.
	IsServer, IsClient bool
}

// NewCA makes a self-signed CA certificate with subject CN cn, valid from
// notBefore to notAfter. Zero times mean an hour ago and ten years from
// now.
func NewCA(cn string, notBefore, notAfter time.Time) (*CA, error) {
	now := time.Now()
	if notBefore.IsZero() {
		notBefore = now.Add(-DefaultBackdate)
	}
	if notAfter.IsZero() {
		notAfter = now.Add(defaultCALifetime)
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("certgen: CA %q: NotAfter %s is not after NotBefore %s", cn, notAfter, notBefore)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certgen: CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true, // signs leaves only
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("certgen: CA %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certgen: CA %q: %w", cn, err)
	}
	return &CA{Cert: cert, Key: key}, nil
}

// Issue signs a leaf certificate described by opts with a fresh P-256 key.
func (ca *CA) Issue(opts LeafOptions) (*Leaf, error) {
	now := time.Now()
	notBefore, notAfter := opts.NotBefore, opts.NotAfter
	if notBefore.IsZero() {
		notBefore = now.Add(-DefaultBackdate)
	}
	if notAfter.IsZero() {
		notAfter = now.Add(DefaultLifetime)
	}
	if !notAfter.After(notBefore) {
		return nil, fmt.Errorf("certgen: leaf %q: NotAfter %s is not after NotBefore %s", opts.CN, notAfter, notBefore)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("certgen: leaf key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: opts.CN},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		DNSNames:              opts.DNSNames,
		IPAddresses:           opts.IPAddresses,
		URIs:                  opts.URIs,
	}
	if opts.IsServer {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if opts.IsClient {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Cert, &key.PublicKey, ca.Key)
	if err != nil {
		return nil, fmt.Errorf("certgen: leaf %q: %w", opts.CN, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("certgen: leaf %q: %w", opts.CN, err)
	}
	return &Leaf{Cert: cert, Key: key, CA: ca}, nil
}

// newSerial returns a random positive 128-bit serial number.
func newSerial() (*big.Int, error) {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certgen: serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// CertPEM returns the CA certificate as a PEM "CERTIFICATE" block.
func (ca *CA) CertPEM() []byte { return certPEM(ca.Cert) }

// KeyPEM returns the CA key as a PEM PKCS#8 "PRIVATE KEY" block.
func (ca *CA) KeyPEM() []byte { return keyPEM(ca.Key) }

// Pool returns a certificate pool holding only the CA certificate, for
// tls.Config RootCAs or ClientCAs.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Cert)
	return p
}

// WriteFiles writes dir/base.pem (certificate, mode 0644) and
// dir/base-key.pem (key, mode 0600), replacing existing files.
func (ca *CA) WriteFiles(dir, base string) error {
	return writePair(dir, base, ca.CertPEM(), ca.KeyPEM())
}

// CertPEM returns the leaf certificate as a PEM "CERTIFICATE" block (the
// leaf alone, not the CA).
func (l *Leaf) CertPEM() []byte { return certPEM(l.Cert) }

// KeyPEM returns the leaf key as a PEM PKCS#8 "PRIVATE KEY" block.
func (l *Leaf) KeyPEM() []byte { return keyPEM(l.Key) }

// TLSCertificate returns the leaf and its key as a tls.Certificate, for
// tls.Config Certificates. The chain holds the leaf only: peers are
// expected to trust the CA directly.
func (l *Leaf) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{l.Cert.Raw},
		PrivateKey:  l.Key,
		Leaf:        l.Cert,
	}
}

// SPKISHA256 returns the lowercase hex SHA-256 of the certificate's DER
// SubjectPublicKeyInfo (the value public-key pinning compares).
func (l *Leaf) SPKISHA256() string {
	sum := sha256.Sum256(l.Cert.RawSubjectPublicKeyInfo)
	return hex.EncodeToString(sum[:])
}

// WriteFiles writes dir/base.pem (certificate, mode 0644) and
// dir/base-key.pem (key, mode 0600), replacing existing files.
func (l *Leaf) WriteFiles(dir, base string) error {
	return writePair(dir, base, l.CertPEM(), l.KeyPEM())
}

func certPEM(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

func keyPEM(k *ecdsa.PrivateKey) []byte {
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		// Only unsupported key types fail; a P-256 key never does.
		panic("certgen: PKCS#8: " + err.Error())
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

func writePair(dir, base string, cert, key []byte) error {
	if base == "" {
		return errors.New("certgen: empty file base name")
	}
	if err := writeFile(filepath.Join(dir, base+".pem"), cert, 0o644); err != nil {
		return err
	}
	return writeFile(filepath.Join(dir, base+"-key.pem"), key, 0o600)
}

// writeFile replaces name with data at mode perm (internal/atomicfile: a
// key is never readable by others, even for a moment).
func writeFile(name string, data []byte, perm os.FileMode) error {
	if err := atomicfile.Write(name, data, perm); err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	return nil
}
