package srtp

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"

	pion "github.com/pion/srtp/v3"
)

// Suite is an SDES crypto-suite (RFC 4568 §6.2, RFC 6188, RFC 7714) that
// this package can run.
type Suite uint8

// The suites pion/srtp v3 implements and SDES can name. F8 and AES-192 are
// refused (pion has no cipher for them).
const (
	SuiteUnknown Suite = iota
	AES_CM_128_HMAC_SHA1_80
	AES_CM_128_HMAC_SHA1_32
	AES_256_CM_HMAC_SHA1_80
	AES_256_CM_HMAC_SHA1_32
	AEAD_AES_128_GCM
	AEAD_AES_256_GCM
)

// DefaultSuites is the preference order used for our own offers: GCM first
// (3× cheaper in pion than AES-CM, see the notes), then the RFC 4568
// mandatory AES_CM_128_HMAC_SHA1_80 that every SIP peer has, then the rest.
var DefaultSuites = []Suite{
	AEAD_AES_128_GCM, AEAD_AES_256_GCM,
	AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32,
	AES_256_CM_HMAC_SHA1_80, AES_256_CM_HMAC_SHA1_32,
}

var suiteNames = [...]string{
	SuiteUnknown:            "UNKNOWN",
	AES_CM_128_HMAC_SHA1_80: "AES_CM_128_HMAC_SHA1_80",
	AES_CM_128_HMAC_SHA1_32: "AES_CM_128_HMAC_SHA1_32",
	AES_256_CM_HMAC_SHA1_80: "AES_256_CM_HMAC_SHA1_80",
	AES_256_CM_HMAC_SHA1_32: "AES_256_CM_HMAC_SHA1_32",
	AEAD_AES_128_GCM:        "AEAD_AES_128_GCM",
	AEAD_AES_256_GCM:        "AEAD_AES_256_GCM",
}

var suiteProfiles = [...]pion.ProtectionProfile{
	AES_CM_128_HMAC_SHA1_80: pion.ProtectionProfileAes128CmHmacSha1_80,
	AES_CM_128_HMAC_SHA1_32: pion.ProtectionProfileAes128CmHmacSha1_32,
	AES_256_CM_HMAC_SHA1_80: pion.ProtectionProfileAes256CmHmacSha1_80,
	AES_256_CM_HMAC_SHA1_32: pion.ProtectionProfileAes256CmHmacSha1_32,
	AEAD_AES_128_GCM:        pion.ProtectionProfileAeadAes128Gcm,
	AEAD_AES_256_GCM:        pion.ProtectionProfileAeadAes256Gcm,
}

// String returns the RFC name of the suite (the RFC 6188 spelling for
// AES-256-CM).
func (s Suite) String() string {
	if int(s) < len(suiteNames) {
		return suiteNames[s]
	}
	return "Suite(" + strconv.Itoa(int(s)) + ")"
}

// Valid reports whether s is one of the defined suites.
func (s Suite) Valid() bool { return s > SuiteUnknown && s <= AEAD_AES_256_GCM }

// Profile returns the pion protection profile of the suite.
func (s Suite) Profile() pion.ProtectionProfile {
	if !s.Valid() {
		return 0
	}
	return suiteProfiles[s]
}

// KeyLen and SaltLen are the master key and salt lengths in bytes.
func (s Suite) KeyLen() int {
	n, _ := s.Profile().KeyLen()
	return n
}

// SaltLen is the master salt length in bytes.
func (s Suite) SaltLen() int {
	n, _ := s.Profile().SaltLen()
	return n
}

// AEAD reports whether the suite is an AES-GCM suite.
func (s Suite) AEAD() bool { return s == AEAD_AES_128_GCM || s == AEAD_AES_256_GCM }

// ParseSuite maps a crypto-suite name to a Suite. Besides the RFC names it
// accepts the AES_CM_256_HMAC_SHA1_80/32 spelling some phones use (Zoiper,
// rtpengine#703). Names are case-sensitive per RFC 4568 but a lower-case
// name is accepted too.
func ParseSuite(name string) (Suite, error) {
	switch strings.ToUpper(name) {
	case "AES_CM_128_HMAC_SHA1_80":
		return AES_CM_128_HMAC_SHA1_80, nil
	case "AES_CM_128_HMAC_SHA1_32":
		return AES_CM_128_HMAC_SHA1_32, nil
	case "AES_256_CM_HMAC_SHA1_80", "AES_CM_256_HMAC_SHA1_80":
		return AES_256_CM_HMAC_SHA1_80, nil
	case "AES_256_CM_HMAC_SHA1_32", "AES_CM_256_HMAC_SHA1_32":
		return AES_256_CM_HMAC_SHA1_32, nil
	case "AEAD_AES_128_GCM":
		return AEAD_AES_128_GCM, nil
	case "AEAD_AES_256_GCM":
		return AEAD_AES_256_GCM, nil
	}
	return SuiteUnknown, fmt.Errorf("%w: %q", ErrUnsupportedSuite, name)
}

// Errors of SDES parsing and negotiation. Every refusal wraps one of them,
// so callers match with errors.Is.
var (
	// ErrMalformedCrypto: the line does not follow the RFC 4568 grammar.
	ErrMalformedCrypto = errors.New("srtp: malformed a=crypto")
	// ErrUnsupportedSuite: a suite pion cannot run (F8, AES-192, NULL...).
	ErrUnsupportedSuite = errors.New("srtp: unsupported crypto-suite")
	// ErrBadKey: the inline key||salt is not base64 or has the wrong length.
	ErrBadKey = errors.New("srtp: bad SDES key")
	// ErrBadLifetime: a |lifetime that is neither 2^N nor a decimal number.
	ErrBadLifetime = errors.New("srtp: bad SDES key lifetime")
	// ErrBadMKI: a |MKI:len with a value that does not fit, or a length
	// outside 1..8, or MKI lengths that differ between keys, or several
	// keys without MKI.
	ErrBadMKI = errors.New("srtp: bad SDES MKI")
	// ErrKDRUnsupported: a KDR session parameter other than 0; pion/srtp
	// derives keys once only.
	ErrKDRUnsupported = errors.New("srtp: key derivation rate (KDR) not supported")
	// ErrUnsupportedSessionParam: a session parameter this package does not
	// implement (FEC_ORDER, FEC_KEY, unknown ones), or
	// UNAUTHENTICATED_SRTP with an AEAD suite.
	ErrUnsupportedSessionParam = errors.New("srtp: unsupported SDES session parameter")
	// ErrUnauthenticatedRefused: Negotiate does not accept
	// UNAUTHENTICATED_SRTP: without authentication anyone can inject media
	// and latch the relay.
	ErrUnauthenticatedRefused = errors.New("srtp: UNAUTHENTICATED_SRTP refused")
	// ErrNoAcceptableCrypto: no offered line is both valid and allowed.
	ErrNoAcceptableCrypto = errors.New("srtp: no acceptable a=crypto")
)

// maxMKILen bounds the MKI length: the value in SDP is a decimal number, so
// 8 bytes holds any value it can carry.
const maxMKILen = 8

// Key is one RFC 4568 key-param: inline:<key||salt>[|lifetime][|MKI:len].
type Key struct {
	Key, Salt []byte
	// Lifetime is the number of packets the key may protect; 0 when not
	// given. It is parsed and printed but not enforced (pion does not).
	Lifetime uint64
	// LifetimeExp is N when the lifetime was written as 2^N (printed back
	// that way); 0 when decimal.
	LifetimeExp uint8
	// MKI and MKILen: the master key identifier carried in each packet;
	// MKILen 0 means none.
	MKI    uint64
	MKILen int
}

// Crypto is one a=crypto line.
type Crypto struct {
	Tag   uint32
	Suite Suite
	Keys  []Key
	// Session parameters (RFC 4568 §6.3). UnencryptedSRTP/SRTCP map to
	// pion's SRTPNoEncryption/SRTCPNoEncryption, UnauthenticatedSRTP to a
	// zero-length tag (AES-CM only). WSH is the window-size hint, kept for
	// printing; our replay window is at least 64 anyway.
	UnencryptedSRTP     bool
	UnencryptedSRTCP    bool
	UnauthenticatedSRTP bool
	WSH                 int
}

// ParseCrypto parses the value of an a=crypto attribute: "1
// AES_CM_128_HMAC_SHA1_80 inline:KEY|2^20|1:4 [session-params]". A leading
// "a=crypto:" or "crypto:" is tolerated, as is surrounding white space.
// Keys may be base64 with or without padding. Any refusal wraps one of the
// errors above; a refused line must be ignored (RFC 4568 §7.1.2) and the
// next offered line tried.
func ParseCrypto(s string) (Crypto, error) {
	s = strings.TrimSpace(s)
	s = strings.TrimPrefix(s, "a=")
	s = strings.TrimPrefix(s, "crypto:")
	f := strings.Fields(s)
	if len(f) < 3 {
		return Crypto{}, fmt.Errorf("%w: want tag, suite and key-params", ErrMalformedCrypto)
	}
	var c Crypto
	tag, err := strconv.ParseUint(f[0], 10, 32)
	if err != nil || len(f[0]) > 9 {
		return Crypto{}, fmt.Errorf("%w: tag %q", ErrMalformedCrypto, f[0])
	}
	c.Tag = uint32(tag)
	if c.Suite, err = ParseSuite(f[1]); err != nil {
		return Crypto{}, err
	}
	for kp := range strings.SplitSeq(f[2], ";") {
		k, err := parseKeyParam(kp, c.Suite)
		if err != nil {
			return Crypto{}, err
		}
		if len(c.Keys) >= 16 {
			return Crypto{}, fmt.Errorf("%w: too many keys", ErrMalformedCrypto)
		}
		c.Keys = append(c.Keys, k)
	}
	if len(c.Keys) > 1 {
		for _, k := range c.Keys {
			if k.MKILen == 0 || k.MKILen != c.Keys[0].MKILen {
				return Crypto{}, fmt.Errorf("%w: several keys need MKIs of one length", ErrBadMKI)
			}
		}
		for i := range c.Keys {
			for j := range i {
				if c.Keys[i].MKI == c.Keys[j].MKI {
					return Crypto{}, fmt.Errorf("%w: duplicate MKI %d", ErrBadMKI, c.Keys[i].MKI)
				}
			}
		}
	}
	for _, p := range f[3:] {
		if err := c.parseSessionParam(p); err != nil {
			return Crypto{}, err
		}
	}
	return c, nil
}

func parseKeyParam(kp string, suite Suite) (Key, error) {
	method, info, ok := strings.Cut(kp, ":")
	if !ok || !strings.EqualFold(method, "inline") {
		return Key{}, fmt.Errorf("%w: key method %q", ErrMalformedCrypto, method)
	}
	parts := strings.Split(info, "|")
	if len(parts) > 3 {
		return Key{}, fmt.Errorf("%w: key-info %q", ErrMalformedCrypto, info)
	}
	raw, err := decodeBase64(parts[0])
	if err != nil {
		return Key{}, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	kl, sl := suite.KeyLen(), suite.SaltLen()
	if len(raw) != kl+sl {
		return Key{}, fmt.Errorf("%w: %d bytes, %s needs %d", ErrBadKey, len(raw), suite, kl+sl)
	}
	k := Key{Key: raw[:kl:kl], Salt: raw[kl:]}
	rest := parts[1:]
	// The lifetime comes first when both are present; a lone part with a
	// colon is the MKI.
	if len(rest) > 0 && !strings.Contains(rest[0], ":") {
		if k.Lifetime, k.LifetimeExp, err = parseLifetime(rest[0]); err != nil {
			return Key{}, err
		}
		rest = rest[1:]
	}
	if len(rest) > 0 {
		if k.MKI, k.MKILen, err = parseMKI(rest[0]); err != nil {
			return Key{}, err
		}
		rest = rest[1:]
	}
	if len(rest) > 0 {
		return Key{}, fmt.Errorf("%w: key-info %q", ErrMalformedCrypto, info)
	}
	return k, nil
}

// decodeBase64 accepts padded and unpadded standard base64 (both are seen:
// rtpengine#1197).
func decodeBase64(s string) ([]byte, error) {
	if s == "" {
		return nil, errors.New("empty key")
	}
	return base64.RawStdEncoding.DecodeString(strings.TrimRight(s, "="))
}

func parseLifetime(s string) (uint64, uint8, error) {
	if exp, ok := strings.CutPrefix(s, "2^"); ok {
		n, err := strconv.ParseUint(exp, 10, 8)
		if err != nil || n == 0 || n > 48 {
			return 0, 0, fmt.Errorf("%w: %q", ErrBadLifetime, s)
		}
		return 1 << n, uint8(n), nil
	}
	n, err := strconv.ParseUint(s, 10, 64)
	if err != nil || n == 0 {
		return 0, 0, fmt.Errorf("%w: %q", ErrBadLifetime, s)
	}
	return n, 0, nil
}

func parseMKI(s string) (uint64, int, error) {
	v, l, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, fmt.Errorf("%w: %q", ErrBadMKI, s)
	}
	val, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: value %q", ErrBadMKI, v)
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > maxMKILen {
		return 0, 0, fmt.Errorf("%w: length %q (1..%d)", ErrBadMKI, l, maxMKILen)
	}
	if n < 8 && val>>(8*n) != 0 {
		return 0, 0, fmt.Errorf("%w: %d does not fit in %d bytes", ErrBadMKI, val, n)
	}
	return val, n, nil
}

func (c *Crypto) parseSessionParam(p string) error {
	name, val, _ := strings.Cut(p, "=")
	switch strings.ToUpper(name) {
	case "UNENCRYPTED_SRTP":
		c.UnencryptedSRTP = true
	case "UNENCRYPTED_SRTCP":
		c.UnencryptedSRTCP = true
	case "UNAUTHENTICATED_SRTP":
		if c.Suite.AEAD() {
			return fmt.Errorf("%w: UNAUTHENTICATED_SRTP with %s", ErrUnsupportedSessionParam, c.Suite)
		}
		c.UnauthenticatedSRTP = true
	case "KDR":
		// RFC 4568 §6.3.1: 1..24 (2^n); the default, 0, derives once.
		n, err := strconv.Atoi(val)
		if err != nil || n < 0 || n > 24 {
			return fmt.Errorf("%w: %q", ErrMalformedCrypto, p)
		}
		if n != 0 {
			return fmt.Errorf("%w: KDR=%d", ErrKDRUnsupported, n)
		}
	case "WSH":
		n, err := strconv.Atoi(val)
		if err != nil || n < 64 || n > 1<<15 {
			return fmt.Errorf("%w: %q", ErrMalformedCrypto, p)
		}
		c.WSH = n
	default:
		// FEC_ORDER, FEC_KEY and anything unknown: RFC 4568 says to
		// refuse the line rather than ignore a parameter we do not
		// understand.
		return fmt.Errorf("%w: %q", ErrUnsupportedSessionParam, p)
	}
	return nil
}

// String formats the attribute value (without "a=crypto:"), base64 with
// padding as RFC 4568 (via RFC 3548) has it.
func (c Crypto) String() string { return c.Format(true) }

// Format formats the attribute value; pad chooses base64 padding (some
// peers want one, some the other: rtpengine#1197).
func (c Crypto) Format(pad bool) string {
	enc := base64.StdEncoding
	if !pad {
		enc = base64.RawStdEncoding
	}
	var b strings.Builder
	b.WriteString(strconv.FormatUint(uint64(c.Tag), 10))
	b.WriteByte(' ')
	b.WriteString(c.Suite.String())
	b.WriteByte(' ')
	for i, k := range c.Keys {
		if i > 0 {
			b.WriteByte(';')
		}
		b.WriteString("inline:")
		ks := make([]byte, 0, len(k.Key)+len(k.Salt))
		ks = append(append(ks, k.Key...), k.Salt...)
		b.WriteString(enc.EncodeToString(ks))
		if k.Lifetime != 0 {
			b.WriteByte('|')
			if k.LifetimeExp != 0 {
				b.WriteString("2^" + strconv.Itoa(int(k.LifetimeExp)))
			} else {
				b.WriteString(strconv.FormatUint(k.Lifetime, 10))
			}
		}
		if k.MKILen != 0 {
			b.WriteString("|" + strconv.FormatUint(k.MKI, 10) + ":" + strconv.Itoa(k.MKILen))
		}
	}
	if c.UnencryptedSRTP {
		b.WriteString(" UNENCRYPTED_SRTP")
	}
	if c.UnencryptedSRTCP {
		b.WriteString(" UNENCRYPTED_SRTCP")
	}
	if c.UnauthenticatedSRTP {
		b.WriteString(" UNAUTHENTICATED_SRTP")
	}
	if c.WSH != 0 {
		b.WriteString(" WSH=" + strconv.Itoa(c.WSH))
	}
	return b.String()
}

// GenerateCrypto makes a line with a fresh master key and salt from
// crypto/rand: our side of an offer or an answer.
func GenerateCrypto(tag uint32, suite Suite) (Crypto, error) {
	if !suite.Valid() {
		return Crypto{}, fmt.Errorf("%w: %v", ErrUnsupportedSuite, suite)
	}
	kl, sl := suite.KeyLen(), suite.SaltLen()
	raw := make([]byte, kl+sl)
	if _, err := rand.Read(raw); err != nil {
		return Crypto{}, err
	}
	return Crypto{Tag: tag, Suite: suite, Keys: []Key{{Key: raw[:kl:kl], Salt: raw[kl:]}}}, nil
}

// Offer makes one line per suite, tags 1..n, each with its own fresh key.
func Offer(suites []Suite) ([]Crypto, error) {
	out := make([]Crypto, 0, len(suites))
	for i, s := range suites {
		c, err := GenerateCrypto(uint32(i+1), s)
		if err != nil {
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

// Answer makes our answer to the chosen offered line: same tag, suite and
// session parameters (RFC 4568 §7.1.3 requires the declarative ones to
// match), a fresh key, no lifetime and no MKI.
func (c Crypto) Answer() (Crypto, error) {
	a, err := GenerateCrypto(c.Tag, c.Suite)
	if err != nil {
		return Crypto{}, err
	}
	a.UnencryptedSRTP = c.UnencryptedSRTP
	a.UnencryptedSRTCP = c.UnencryptedSRTCP
	a.UnauthenticatedSRTP = c.UnauthenticatedSRTP
	return a, nil
}

// Negotiate picks, in the offerer's order, the first offered line whose
// suite is in allowed, and returns it unchanged (its tag is the one the
// answer must echo; its keys are the ones the offerer sends with). Lines
// with UNAUTHENTICATED_SRTP are skipped. The error, when nothing fits,
// wraps ErrNoAcceptableCrypto and names the reasons.
func Negotiate(offer []Crypto, allowed []Suite) (Crypto, error) {
	var reasons []string
	for _, c := range offer {
		switch {
		case !c.Suite.Valid() || len(c.Keys) == 0:
			reasons = append(reasons, fmt.Sprintf("tag %d: invalid", c.Tag))
		case c.UnauthenticatedSRTP:
			reasons = append(reasons, fmt.Sprintf("tag %d: %v", c.Tag, ErrUnauthenticatedRefused))
		case !suiteIn(c.Suite, allowed):
			reasons = append(reasons, fmt.Sprintf("tag %d: %s not allowed", c.Tag, c.Suite))
		default:
			return c, nil
		}
	}
	if len(reasons) == 0 {
		return Crypto{}, fmt.Errorf("%w: no a=crypto offered", ErrNoAcceptableCrypto)
	}
	return Crypto{}, fmt.Errorf("%w: %s", ErrNoAcceptableCrypto, strings.Join(reasons, "; "))
}

// ParseCryptos parses the values of several a=crypto attributes, keeping
// the valid lines in order and returning one error per refused line (to
// log), so a single odd line does not spoil the offer.
func ParseCryptos(values []string) ([]Crypto, []error) {
	var ok []Crypto
	var refused []error
	for _, v := range values {
		c, err := ParseCrypto(v)
		if err != nil {
			refused = append(refused, err)
			continue
		}
		ok = append(ok, c)
	}
	return ok, refused
}

func suiteIn(s Suite, list []Suite) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// mkiBytes is the MKI as it appears in packets: big-endian in MKILen bytes.
func (k Key) mkiBytes() []byte {
	if k.MKILen == 0 {
		return nil
	}
	b := make([]byte, k.MKILen)
	v := k.MKI
	for i := k.MKILen - 1; i >= 0; i-- {
		b[i] = byte(v)
		v >>= 8
	}
	return b
}
