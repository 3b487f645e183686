package sslscan

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Binary is the name of the sslscan executable looked up in PATH.
const Binary = "sslscan"

// DefaultTimeout bounds a Scan whose context has no deadline. A scan of a
// loopback listener takes well under a second.
const DefaultTimeout = 2 * time.Minute

// Protocol version names, as sslscan writes them.
const (
	SSLv2  = "SSLv2"
	SSLv3  = "SSLv3"
	TLSv10 = "TLSv1.0"
	TLSv11 = "TLSv1.1"
	TLSv12 = "TLSv1.2"
	TLSv13 = "TLSv1.3"
)

// Result is what one scan found.
type Result struct {
	// SSLScanVersion is the version of sslscan that wrote the XML.
	SSLScanVersion string
	// Host, SNIName and Port are the target as sslscan reports it.
	Host, SNIName string
	Port          int
	// Protocols lists each protocol version sslscan tested, in its order
	// (SSLv2 to TLSv1.3 unless extra arguments narrowed the scan).
	Protocols []Protocol
	// Ciphers lists each accepted cipher suite, by protocol version from
	// the newest, in the order sslscan found them.
	Ciphers []Cipher
	// Groups lists the key exchange groups accepted, by protocol version.
	Groups []Group
	// Renegotiation is nil when sslscan did not report it (TLS 1.3 only).
	Renegotiation *Renegotiation
	// Compression is nil when sslscan did not test it (Debian's sslscan
	// cannot: its OpenSSL is built without zlib).
	Compression *bool
	// Heartbleed lists the protocol versions tested for Heartbleed.
	Heartbleed []Heartbleed
	// Errors holds sslscan's error messages.
	Errors []string
	// XML is sslscan's whole output.
	XML []byte
}

// Protocol is one protocol version and whether the target accepted it.
type Protocol struct {
	Name    string // SSLv2 ... TLSv1.3
	Enabled bool
}

// Cipher is one accepted cipher suite.
type Cipher struct {
	// Name is OpenSSL's name of the suite (ECDHE-ECDSA-AES128-GCM-SHA256,
	// TLS_AES_128_GCM_SHA256 for TLS 1.3), or the IANA name
	// (TLS_RSA_WITH_RC4_128_SHA) of a suite OpenSSL does not implement.
	Name string
	// Protocol is the version the suite was accepted with.
	Protocol string
	// Bits is the symmetric key strength, -1 when unknown.
	Bits int
	// ID is the suite's IANA code point.
	ID uint16
	// Preferred is set on the suite the server chose when offered all of
	// them (one per protocol version).
	Preferred bool
	// Strength is sslscan's rating: null, anonymous, weak, medium,
	// acceptable or strong. Weakness does not use it.
	Strength string
	// Curve is the key exchange group of the handshake (25519, P-256,
	// ...), empty for suites without ephemeral ECDH or probed raw.
	Curve string
}

// Group is one key exchange group accepted with a protocol version.
type Group struct {
	Name     string // e.g. "x25519", "secp256r1 (NIST P-256)"
	Protocol string
	Bits     int
	ID       uint16
}

// Renegotiation is what sslscan found about TLS renegotiation.
type Renegotiation struct {
	Supported, Secure bool
}

// Heartbleed is the Heartbleed test of one protocol version.
type Heartbleed struct {
	Protocol   string
	Vulnerable bool
}

// Available reports whether the sslscan binary is in PATH.
func Available() error {
	_, err := exec.LookPath(Binary)
	if err != nil {
		return fmt.Errorf("sslscan not found (install Debian package sslscan): %w", err)
	}
	return nil
}

// Require skips the test when sslscan is not installed, except in CI
// (CI=true), where it fails the test.
func Require(t testing.TB) {
	t.Helper()
	if err := Available(); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatal(err)
		}
		t.Skip(err)
	}
}

// Scan runs sslscan against addr ("host:port"; an IPv6 host may be
// bracketed or not) and parses its XML. extraArgs go before the target,
// e.g. "--tls13" or "--sni-name=sbc.example.test". The scan is bounded by
// ctx, or by DefaultTimeout when ctx has no deadline. When sslscan
// reported errors, Scan returns the parsed Result and an error naming
// them.
func Scan(ctx context.Context, addr string, extraArgs ...string) (*Result, error) {
	target, err := formatTarget(addr)
	if err != nil {
		return nil, err
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, DefaultTimeout)
		defer cancel()
	}
	args := append([]string{"--xml=-", "--no-colour"}, extraArgs...)
	args = append(args, target)
	cmd := exec.CommandContext(ctx, Binary, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%v)", ctxErr, err)
		}
		return nil, fmt.Errorf("sslscan %s: %w\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, stdout.Bytes(), stderr.Bytes())
	}
	r, err := Parse(stdout.Bytes())
	if err != nil {
		return r, fmt.Errorf("sslscan %s: %w\nstderr: %s", target, err, stderr.Bytes())
	}
	if len(r.Errors) > 0 {
		return r, fmt.Errorf("sslscan %s: %s", target, strings.Join(r.Errors, "; "))
	}
	return r, nil
}

// formatTarget writes addr as sslscan reads a target: host:port, with an
// IPv6 host in brackets.
func formatTarget(addr string) (string, error) {
	host, port, err := splitHostPort(addr)
	if err != nil {
		return "", fmt.Errorf("sslscan: target %q: %w", addr, err)
	}
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	return host + ":" + port, nil
}

// splitHostPort is net.SplitHostPort that also takes an unbracketed IPv6
// address (the port is after the last colon).
func splitHostPort(addr string) (host, port string, err error) {
	if strings.HasPrefix(addr, "[") {
		end := strings.Index(addr, "]:")
		if end < 0 {
			return "", "", errors.New("want [host]:port")
		}
		host, port = addr[1:end], addr[end+2:]
	} else {
		i := strings.LastIndex(addr, ":")
		if i < 0 {
			return "", "", errors.New("no port")
		}
		host, port = addr[:i], addr[i+1:]
	}
	if host == "" {
		return "", "", errors.New("no host")
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return "", "", fmt.Errorf("bad port %q", port)
	}
	return host, port, nil
}

// The XML sslscan 2.0.7 writes (only what Parse reads).
type xmlDocument struct {
	XMLName xml.Name  `xml:"document"`
	Version string    `xml:"version,attr"`
	Errors  []string  `xml:"error"`
	Tests   []xmlTest `xml:"ssltest"`
}

type xmlTest struct {
	Host      string `xml:"host,attr"`
	SNIName   string `xml:"sniname,attr"`
	Port      int    `xml:"port,attr"`
	Protocols []struct {
		Type    string `xml:"type,attr"`
		Version string `xml:"version,attr"`
		Enabled int    `xml:"enabled,attr"`
	} `xml:"protocol"`
	Renegotiation *struct {
		Supported int `xml:"supported,attr"`
		Secure    int `xml:"secure,attr"`
	} `xml:"renegotiation"`
	Compression *struct {
		Supported int `xml:"supported,attr"`
	} `xml:"compression"`
	Heartbleed []struct {
		SSLVersion string `xml:"sslversion,attr"`
		Vulnerable int    `xml:"vulnerable,attr"`
	} `xml:"heartbleed"`
	Ciphers []struct {
		Status     string `xml:"status,attr"`
		SSLVersion string `xml:"sslversion,attr"`
		Bits       int    `xml:"bits,attr"`
		Cipher     string `xml:"cipher,attr"`
		ID         string `xml:"id,attr"`
		Strength   string `xml:"strength,attr"`
		Curve      string `xml:"curve,attr"`
	} `xml:"cipher"`
	Groups []struct {
		SSLVersion string `xml:"sslversion,attr"`
		Bits       int    `xml:"bits,attr"`
		Name       string `xml:"name,attr"`
		ID         string `xml:"id,attr"`
	} `xml:"group"`
	Errors []string `xml:"error"`
}

// Parse reads the XML sslscan writes with --xml. It expects one target
// (one <ssltest> element); errors sslscan reported are in Result.Errors,
// not an error of Parse.
func Parse(data []byte) (*Result, error) {
	var doc xmlDocument
	if err := xml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("sslscan XML: %w", err)
	}
	r := &Result{SSLScanVersion: doc.Version, XML: data}
	r.Errors = append(r.Errors, trimAll(doc.Errors)...)
	switch len(doc.Tests) {
	case 0:
		if len(r.Errors) == 0 {
			return r, errors.New("sslscan XML: no <ssltest> and no <error>")
		}
		return r, nil
	case 1:
	default:
		return r, fmt.Errorf("sslscan XML: %d <ssltest> elements, want one", len(doc.Tests))
	}
	t := doc.Tests[0]
	r.Host, r.SNIName, r.Port = t.Host, t.SNIName, t.Port
	r.Errors = append(r.Errors, trimAll(t.Errors)...)
	for _, p := range t.Protocols {
		name, err := protocolName(p.Type, p.Version)
		if err != nil {
			return r, err
		}
		r.Protocols = append(r.Protocols, Protocol{Name: name, Enabled: p.Enabled == 1})
	}
	if t.Renegotiation != nil {
		r.Renegotiation = &Renegotiation{Supported: t.Renegotiation.Supported == 1, Secure: t.Renegotiation.Secure == 1}
	}
	if t.Compression != nil {
		c := t.Compression.Supported == 1
		r.Compression = &c
	}
	for _, h := range t.Heartbleed {
		r.Heartbleed = append(r.Heartbleed, Heartbleed{Protocol: h.SSLVersion, Vulnerable: h.Vulnerable == 1})
	}
	for _, c := range t.Ciphers {
		id, err := parseID(c.ID)
		if err != nil {
			return r, fmt.Errorf("sslscan XML: cipher %s: %w", c.Cipher, err)
		}
		r.Ciphers = append(r.Ciphers, Cipher{
			Name:      c.Cipher,
			Protocol:  c.SSLVersion,
			Bits:      c.Bits,
			ID:        id,
			Preferred: c.Status == "preferred",
			Strength:  c.Strength,
			Curve:     c.Curve,
		})
	}
	for _, g := range t.Groups {
		id, err := parseID(g.ID)
		if err != nil {
			return r, fmt.Errorf("sslscan XML: group %s: %w", g.Name, err)
		}
		r.Groups = append(r.Groups, Group{Name: g.Name, Protocol: g.SSLVersion, Bits: g.Bits, ID: id})
	}
	return r, nil
}

func trimAll(s []string) []string {
	var out []string
	for _, e := range s {
		out = append(out, strings.TrimSpace(e))
	}
	return out
}

func protocolName(typ, version string) (string, error) {
	switch typ + " " + version {
	case "ssl 2":
		return SSLv2, nil
	case "ssl 3":
		return SSLv3, nil
	case "tls 1.0":
		return TLSv10, nil
	case "tls 1.1":
		return TLSv11, nil
	case "tls 1.2":
		return TLSv12, nil
	case "tls 1.3":
		return TLSv13, nil
	}
	return "", fmt.Errorf("sslscan XML: unknown protocol type %q version %q", typ, version)
}

// parseID reads "0xC02B".
func parseID(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimPrefix(strings.TrimPrefix(s, "0x"), "0X"), 16, 16)
	if err != nil {
		return 0, fmt.Errorf("id %q: %w", s, err)
	}
	return uint16(n), nil
}

// Enabled reports whether the protocol version (SSLv2 ... TLSv1.3) was
// tested and accepted.
func (r *Result) Enabled(protocol string) bool {
	for _, p := range r.Protocols {
		if p.Name == protocol {
			return p.Enabled
		}
	}
	return false
}

// EnabledProtocols lists the accepted protocol versions, oldest first.
func (r *Result) EnabledProtocols() []string {
	var out []string
	for _, p := range r.Protocols {
		if p.Enabled {
			out = append(out, p.Name)
		}
	}
	return out
}

// CiphersFor lists the suites accepted with one protocol version.
func (r *Result) CiphersFor(protocol string) []Cipher {
	var out []Cipher
	for _, c := range r.Ciphers {
		if c.Protocol == protocol {
			out = append(out, c)
		}
	}
	return out
}

// Weak lists, one finding a line, what the scan found weak: every
// accepted protocol version below TLS 1.2, every accepted cipher suite
// whose Weakness is not empty, a Heartbleed-vulnerable protocol version,
// insecure (pre-RFC 5746) renegotiation, and TLS compression (CRIME).
// Nil means nothing weak.
func (r *Result) Weak() []string {
	var out []string
	for _, p := range r.Protocols {
		if p.Enabled && (p.Name == SSLv2 || p.Name == SSLv3 || p.Name == TLSv10 || p.Name == TLSv11) {
			out = append(out, "protocol "+p.Name+" enabled")
		}
	}
	for _, c := range r.Ciphers {
		if w := c.Weakness(); w != "" {
			out = append(out, fmt.Sprintf("cipher %s %s (%d bits): %s", c.Protocol, c.Name, c.Bits, w))
		}
	}
	for _, h := range r.Heartbleed {
		if h.Vulnerable {
			out = append(out, "heartbleed: "+h.Protocol+" vulnerable")
		}
	}
	if r.Renegotiation != nil && r.Renegotiation.Supported && !r.Renegotiation.Secure {
		out = append(out, "insecure renegotiation supported")
	}
	if r.Compression != nil && *r.Compression {
		out = append(out, "TLS compression supported")
	}
	return out
}

// Weakness returns why the suite is weak, or "" when it is not.
//
// The rule: a suite is weak when
//   - its key strength is known and below 128 bits (3DES, DES, export and
//     NULL suites), or unknown (sslscan had no guess: an exotic suite
//     OpenSSL does not implement is not trusted blindly);
//   - it uses RC4, DES or 3DES, NULL encryption, or is an EXPORT suite,
//     judged by name, whatever the bits say;
//   - its key exchange is anonymous (ADH, AECDH, *_anon_*): no
//     authentication of the server;
//   - it is CBC with HMAC-SHA1 and a key exchange without forward secrecy
//     (static RSA, PSK, SRP...; not ECDHE or DHE), such as AES128-SHA or
//     TLS_RSA_WITH_AES_128_CBC_SHA. ECDHE-ECDSA-AES128-SHA, which Go
//     offers by default with TLS 1.2, has forward secrecy and is not weak
//     by this rule.
//
// Both naming schemes sslscan uses are understood: OpenSSL's
// (ECDHE-RSA-AES128-SHA, DES-CBC3-SHA, EXP-RC4-MD5, ADH-AES128-SHA) and
// IANA's (TLS_RSA_WITH_3DES_EDE_CBC_SHA, TLS_DH_anon_WITH_AES_128_CBC_SHA).
// TLS 1.3 suites are never weak by this rule.
func (c Cipher) Weakness() string {
	var reasons []string
	switch {
	case c.Bits < 0:
		reasons = append(reasons, "key strength unknown")
	case c.Bits < 128:
		reasons = append(reasons, "key strength below 128 bits")
	}
	n := parseName(c.Name)
	if n.has("RC4") {
		reasons = append(reasons, "RC4")
	}
	if n.has("3DES") || n.has("DES") || n.has("DES40") || n.has("CBC3") {
		reasons = append(reasons, "DES or 3DES")
	}
	if n.has("NULL") {
		reasons = append(reasons, "NULL encryption")
	}
	if n.hasPrefix("EXP") {
		reasons = append(reasons, "EXPORT")
	}
	if n.anonymous() {
		reasons = append(reasons, "anonymous key exchange")
	}
	if c.Protocol != TLSv13 && n.cbcSHA1() && !n.forwardSecret() {
		reasons = append(reasons, "CBC with SHA-1 and no forward secrecy")
	}
	return strings.Join(reasons, ", ")
}

// suiteName is a cipher suite name split into tokens.
type suiteName struct {
	iana   bool     // TLS_..._WITH_... (TLS 1.2 and older IANA name)
	kex    []string // IANA: the tokens before WITH; OpenSSL: the first token
	tokens []string
}

func parseName(name string) suiteName {
	if rest, ok := strings.CutPrefix(name, "TLS_"); ok {
		if kex, _, ok := strings.Cut(rest, "_WITH_"); ok {
			return suiteName{iana: true, kex: strings.Split(kex, "_"), tokens: strings.Split(rest, "_")}
		}
		// A TLS 1.3 suite (TLS_AES_128_GCM_SHA256): no key exchange in
		// the name.
		return suiteName{tokens: strings.Split(rest, "_")}
	}
	tokens := strings.Split(name, "-")
	return suiteName{kex: tokens[:1], tokens: tokens}
}

func (n suiteName) has(tok string) bool {
	for _, t := range n.tokens {
		if strings.EqualFold(t, tok) {
			return true
		}
	}
	return false
}

func (n suiteName) hasPrefix(p string) bool {
	for _, t := range n.tokens {
		if strings.HasPrefix(strings.ToUpper(t), p) {
			return true
		}
	}
	return false
}

func (n suiteName) anonymous() bool {
	return n.has("anon") || n.has("ADH") || n.has("AECDH")
}

// cbcSHA1 reports a suite whose MAC is HMAC-SHA1 with a block cipher in
// CBC mode. OpenSSL names end in "-SHA" for HMAC-SHA1 (the AEAD and
// SHA-2 suites end otherwise), with CBC implied unless the cipher is RC4
// or NULL; IANA names end in "_CBC_SHA".
func (n suiteName) cbcSHA1() bool {
	last := n.tokens[len(n.tokens)-1]
	if n.iana {
		return last == "SHA" && len(n.tokens) >= 2 && n.tokens[len(n.tokens)-2] == "CBC"
	}
	return last == "SHA" && !n.has("RC4") && !n.has("NULL")
}

// forwardSecret reports an ephemeral (EC)DH key exchange.
func (n suiteName) forwardSecret() bool {
	if len(n.kex) == 0 {
		return false
	}
	switch strings.ToUpper(n.kex[0]) {
	case "ECDHE", "DHE", "EDH":
		return true
	}
	return false
}
