package sbc

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// The certificates, keys and CA bundles the policy names are read into a
// cache shared by every listener and pool that names them. The files are
// polled (tlsPollInterval) and re-read on every policy reload: a changed
// file that parses replaces what handshakes use from then on (connections
// already open are not touched); one that does not keeps the previous
// material in service and says why, once per change.

// tlsPollInterval is how often certificate files are checked for changes.
var tlsPollInterval = 5 * time.Second

// expiryWarn: a certificate closer than this to its end is logged at WARN
// (at load, on every change, and once a day).
const expiryWarn = 14 * 24 * time.Hour

type keyPair struct{ cert, key string }

// certEntry is one certificate+key pair in service.
type certEntry struct {
	pair keyPair
	cur  atomic.Pointer[tls.Certificate] // Leaf set
	sum  [32]byte                        // of the files' bytes last tried
	warn time.Time                       // last expiry warning
}

// caEntry is one CA bundle in service.
type caEntry struct {
	path string
	cur  atomic.Pointer[x509.CertPool]
	sum  [32]byte
}

type tlsFiles struct {
	log    *slog.Logger
	expiry *prometheus.GaugeVec // sbc_tls_certificate_expiry_days{file}
	loads  *prometheus.CounterVec

	mu    sync.Mutex
	certs map[keyPair]*certEntry
	cas   map[string]*caEntry
}

func newTLSFiles(log *slog.Logger, m *Metrics) *tlsFiles {
	return &tlsFiles{log: log, expiry: m.TLSExpiry, loads: m.TLSLoads, certs: map[keyPair]*certEntry{}, cas: map[string]*caEntry{}}
}

func readSum(paths ...string) ([][]byte, [32]byte, error) {
	h := sha256.New()
	out := make([][]byte, len(paths))
	for i, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			return nil, [32]byte{}, err
		}
		out[i] = b
		h.Write(b)
		h.Write([]byte{0})
	}
	var s [32]byte
	copy(s[:], h.Sum(nil))
	return out, s, nil
}

func parseKeyPair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	c, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, err
	}
	if c.Leaf == nil {
		if c.Leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

func parseCAs(b []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	n := 0
	for rest := b; ; {
		var blk *pem.Block
		blk, rest = pem.Decode(rest)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", n+1, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, errors.New("no PEM certificate in the file")
	}
	return pool, nil
}

// cert returns the entry of a pair, loading it the first time: an error
// then is the policy's problem (a reload or start is refused).
func (f *tlsFiles) cert(certFile, keyFile string) (*certEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	k := keyPair{certFile, keyFile}
	if e := f.certs[k]; e != nil {
		return e, nil
	}
	files, sum, err := readSum(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	c, err := parseKeyPair(files[0], files[1])
	if err != nil {
		return nil, fmt.Errorf("tls: certificate %s with key %s: %w", certFile, keyFile, err)
	}
	e := &certEntry{pair: k, sum: sum}
	e.cur.Store(c)
	f.certs[k] = e
	f.loaded(e, time.Now())
	return e, nil
}

// ca returns the entry of a CA bundle, loading it the first time.
func (f *tlsFiles) ca(path string) (*caEntry, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e := f.cas[path]; e != nil {
		return e, nil
	}
	files, sum, err := readSum(path)
	if err != nil {
		return nil, fmt.Errorf("tls: %w", err)
	}
	pool, err := parseCAs(files[0])
	if err != nil {
		return nil, fmt.Errorf("tls: CA bundle %s: %w", path, err)
	}
	e := &caEntry{path: path, sum: sum}
	e.cur.Store(pool)
	f.cas[path] = e
	return e, nil
}

// loaded records a certificate taking service: expiry gauge, and a WARN
// when it ends soon. Called with f.mu held.
func (f *tlsFiles) loaded(e *certEntry, now time.Time) {
	leaf := e.cur.Load().Leaf
	left := leaf.NotAfter.Sub(now)
	f.expiry.WithLabelValues(e.pair.cert).Set(left.Hours() / 24)
	if left < expiryWarn {
		e.warn = now
		f.log.Warn("tls: certificate expires soon", "file", e.pair.cert, "subject", leaf.Subject.String(),
			"not_after", leaf.NotAfter.UTC().Format(time.RFC3339), "days_left", int(left.Hours()/24))
	}
}

// refresh re-reads every file in service: changed ones that parse replace
// the material in use; those that do not keep the previous one, logged.
func (f *tlsFiles) refresh(now time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, e := range f.certs {
		files, sum, err := readSum(e.pair.cert, e.pair.key)
		if err == nil && sum == e.sum {
			f.tick(e, now)
			continue
		}
		var c *tls.Certificate
		if err == nil {
			e.sum = sum // a bad file is reported once, not at every poll
			c, err = parseKeyPair(files[0], files[1])
		}
		if err != nil {
			f.loads.WithLabelValues(tlsFileResults[1]).Inc()
			f.log.Warn("tls: keeping the previous certificate", "file", e.pair.cert, "key", e.pair.key, "error", err.Error())
			f.tick(e, now)
			continue
		}
		e.cur.Store(c)
		f.loads.WithLabelValues("ok").Inc()
		f.log.Info("tls: certificate reloaded", "file", e.pair.cert, "subject", c.Leaf.Subject.String(),
			"not_after", c.Leaf.NotAfter.UTC().Format(time.RFC3339))
		f.loaded(e, now)
	}
	for _, e := range f.cas {
		files, sum, err := readSum(e.path)
		if err == nil && sum == e.sum {
			continue
		}
		var pool *x509.CertPool
		if err == nil {
			e.sum = sum
			pool, err = parseCAs(files[0])
		}
		if err != nil {
			f.loads.WithLabelValues("failed").Inc()
			f.log.Warn("tls: keeping the previous CA bundle", "file", e.path, "error", err.Error())
			continue
		}
		e.cur.Store(pool)
		f.loads.WithLabelValues("ok").Inc()
		f.log.Info("tls: CA bundle reloaded", "file", e.path)
	}
}

// tick updates the expiry gauge of an unchanged certificate and repeats
// the expiry warning once a day.
func (f *tlsFiles) tick(e *certEntry, now time.Time) {
	leaf := e.cur.Load().Leaf
	left := leaf.NotAfter.Sub(now)
	f.expiry.WithLabelValues(e.pair.cert).Set(left.Hours() / 24)
	if left < expiryWarn && now.Sub(e.warn) >= 24*time.Hour {
		f.loaded(e, now)
	}
}

// retain forgets the files no listener or pool uses any more.
func (f *tlsFiles) retain(certs map[keyPair]bool, cas map[string]bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k := range f.certs {
		if !certs[k] {
			delete(f.certs, k)
			f.expiry.DeleteLabelValues(k.cert)
		}
	}
	for k := range f.cas {
		if !cas[k] {
			delete(f.cas, k)
		}
	}
}

// spkiSHA256 is the lowercase hex SHA-256 of a certificate's
// SubjectPublicKeyInfo (the pin format of tls_identities and revoked_spki).
func spkiSHA256(c *x509.Certificate) string {
	s := sha256.Sum256(c.RawSubjectPublicKeyInfo)
	const hexdig = "0123456789abcdef"
	var b bytes.Buffer
	for _, x := range s {
		b.WriteByte(hexdig[x>>4])
		b.WriteByte(hexdig[x&15])
	}
	return b.String()
}

// tlsLoop polls the certificate files until ctx ends.
func (s *SBC) tlsLoop(ctx context.Context) {
	t := time.NewTicker(tlsPollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-t.C:
			s.tls.refresh(now)
		}
	}
}
