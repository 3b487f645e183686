package srtp

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// keyB64 makes a base64 key||salt of n bytes (values 0..n-1).
func keyB64(n int, pad bool) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i)
	}
	if pad {
		return base64.StdEncoding.EncodeToString(b)
	}
	return base64.RawStdEncoding.EncodeToString(b)
}

func TestParseCrypto(t *testing.T) {
	k30 := keyB64(30, true)
	k28p, k28r := keyB64(28, true), keyB64(28, false)
	k44p, k44r := keyB64(44, true), keyB64(44, false)
	k46 := keyB64(46, true)
	tests := []struct {
		name    string
		in      string
		want    error // nil: parses
		check   func(t *testing.T, c Crypto)
		reprint string // expected String() when set
	}{
		{name: "rfc example", in: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
			check: func(t *testing.T, c Crypto) {
				k := c.Keys[0]
				if c.Tag != 1 || c.Suite != AES_CM_128_HMAC_SHA1_80 || len(k.Key) != 16 || len(k.Salt) != 14 ||
					k.Lifetime != 1<<20 || k.LifetimeExp != 20 || k.MKI != 1 || k.MKILen != 4 {
					t.Fatalf("%+v", c)
				}
			},
			reprint: "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4"},
		{name: "a=crypto prefix and spaces", in: "  a=crypto:7 AES_CM_128_HMAC_SHA1_32 inline:" + k30 + "  ",
			check: func(t *testing.T, c Crypto) {
				if c.Tag != 7 || c.Suite != AES_CM_128_HMAC_SHA1_32 {
					t.Fatalf("%+v", c)
				}
			}},
		{name: "decimal lifetime", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|1048576",
			check: func(t *testing.T, c Crypto) {
				if c.Keys[0].Lifetime != 1048576 || c.Keys[0].LifetimeExp != 0 {
					t.Fatalf("%+v", c.Keys[0])
				}
			}},
		{name: "mki only", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|1000:2",
			check: func(t *testing.T, c Crypto) {
				if c.Keys[0].MKI != 1000 || c.Keys[0].MKILen != 2 || c.Keys[0].Lifetime != 0 {
					t.Fatalf("%+v", c.Keys[0])
				}
			}},
		{name: "gcm128 padded", in: "2 AEAD_AES_128_GCM inline:" + k28p, check: func(t *testing.T, c Crypto) {
			if len(c.Keys[0].Key) != 16 || len(c.Keys[0].Salt) != 12 {
				t.Fatal(c.Keys[0])
			}
		}},
		{name: "gcm128 unpadded", in: "2 AEAD_AES_128_GCM inline:" + k28r},
		{name: "gcm256 padded", in: "3 AEAD_AES_256_GCM inline:" + k44p},
		{name: "gcm256 unpadded", in: "3 AEAD_AES_256_GCM inline:" + k44r},
		{name: "aes256 rfc6188 name", in: "4 AES_256_CM_HMAC_SHA1_80 inline:" + k46,
			check: func(t *testing.T, c Crypto) {
				if c.Suite != AES_256_CM_HMAC_SHA1_80 || len(c.Keys[0].Key) != 32 {
					t.Fatal(c)
				}
			}},
		{name: "aes256 variant name", in: "4 AES_CM_256_HMAC_SHA1_32 inline:" + k46,
			check: func(t *testing.T, c Crypto) {
				if c.Suite != AES_256_CM_HMAC_SHA1_32 {
					t.Fatal(c)
				}
			}},
		{name: "two keys with mki", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|2^20|1:1;inline:" + k30 + "|2^20|2:1",
			check: func(t *testing.T, c Crypto) {
				if len(c.Keys) != 2 || c.Keys[1].MKI != 2 {
					t.Fatal(c)
				}
			}},
		{name: "session params", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " UNENCRYPTED_SRTCP UNENCRYPTED_SRTP WSH=128 KDR=0",
			check: func(t *testing.T, c Crypto) {
				if !c.UnencryptedSRTP || !c.UnencryptedSRTCP || c.WSH != 128 {
					t.Fatal(c)
				}
			}},
		{name: "unauthenticated aes-cm", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " UNAUTHENTICATED_SRTP",
			check: func(t *testing.T, c Crypto) {
				if !c.UnauthenticatedSRTP {
					t.Fatal(c)
				}
			}},

		{name: "kdr", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " KDR=1", want: ErrKDRUnsupported},
		{name: "kdr 24", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " KDR=24", want: ErrKDRUnsupported},
		{name: "kdr garbage", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " KDR=x", want: ErrMalformedCrypto},
		{name: "fec order", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " FEC_ORDER=FEC_SRTP", want: ErrUnsupportedSessionParam},
		{name: "unknown param", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + " FOO", want: ErrUnsupportedSessionParam},
		{name: "unauthenticated gcm", in: "1 AEAD_AES_128_GCM inline:" + k28p + " UNAUTHENTICATED_SRTP", want: ErrUnsupportedSessionParam},
		{name: "f8", in: "1 F8_128_HMAC_SHA1_80 inline:" + k30, want: ErrUnsupportedSuite},
		{name: "aes192", in: "1 AES_192_CM_HMAC_SHA1_80 inline:" + keyB64(38, true), want: ErrUnsupportedSuite},
		{name: "short key", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + keyB64(29, true), want: ErrBadKey},
		{name: "gcm key for aes-cm", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k28p, want: ErrBadKey},
		{name: "not base64", in: "1 AES_CM_128_HMAC_SHA1_80 inline:!!!!", want: ErrBadKey},
		{name: "empty key", in: "1 AES_CM_128_HMAC_SHA1_80 inline:", want: ErrBadKey},
		{name: "bad lifetime", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|2^x", want: ErrBadLifetime},
		{name: "lifetime 2^0", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|2^0", want: ErrBadLifetime},
		{name: "mki too long", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|1:9", want: ErrBadMKI},
		{name: "mki does not fit", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|256:1", want: ErrBadMKI},
		{name: "two keys without mki", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + ";inline:" + k30, want: ErrBadMKI},
		{name: "duplicate mki", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|1:1;inline:" + k30 + "|1:1", want: ErrBadMKI},
		{name: "mki lengths differ", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|1:1;inline:" + k30 + "|2:2", want: ErrBadMKI},
		{name: "too many key-info parts", in: "1 AES_CM_128_HMAC_SHA1_80 inline:" + k30 + "|2^20|1:4|x", want: ErrMalformedCrypto},
		{name: "no key", in: "1 AES_CM_128_HMAC_SHA1_80", want: ErrMalformedCrypto},
		{name: "bad tag", in: "x AES_CM_128_HMAC_SHA1_80 inline:" + k30, want: ErrMalformedCrypto},
		{name: "tag too long", in: "1234567890 AES_CM_128_HMAC_SHA1_80 inline:" + k30, want: ErrMalformedCrypto},
		{name: "other key method", in: "1 AES_CM_128_HMAC_SHA1_80 uri:http://x", want: ErrMalformedCrypto},
		{name: "empty", in: "", want: ErrMalformedCrypto},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, err := ParseCrypto(tc.in)
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("err = %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if tc.check != nil {
				tc.check(t, c)
			}
			if tc.reprint != "" && c.String() != tc.reprint {
				t.Fatalf("String() = %q, want %q", c.String(), tc.reprint)
			}
			// Whatever parses prints back to something that parses to the
			// same line, padded or not.
			for _, pad := range []bool{true, false} {
				c2, err := ParseCrypto(c.Format(pad))
				if err != nil {
					t.Fatalf("reparse %q: %v", c.Format(pad), err)
				}
				if c2.Format(true) != c.Format(true) {
					t.Fatalf("round trip %q != %q", c2.Format(true), c.Format(true))
				}
			}
		})
	}
}

func TestSuites(t *testing.T) {
	for _, s := range DefaultSuites {
		got, err := ParseSuite(s.String())
		if err != nil || got != s {
			t.Fatalf("%v: %v %v", s, got, err)
		}
		if s.Profile() == 0 || s.KeyLen() == 0 || s.SaltLen() == 0 {
			t.Fatalf("%v: no profile", s)
		}
	}
	if SuiteUnknown.Valid() || Suite(99).Valid() || Suite(99).String() != "Suite(99)" {
		t.Fatal("invalid suites")
	}
	if got, _ := ParseSuite("aead_aes_128_gcm"); got != AEAD_AES_128_GCM {
		t.Fatal("lower case")
	}
}

func TestGenerateAndAnswer(t *testing.T) {
	offer, err := Offer(DefaultSuites)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for i, c := range offer {
		if c.Tag != uint32(i+1) || c.Suite != DefaultSuites[i] || len(c.Keys[0].Key) != c.Suite.KeyLen() {
			t.Fatalf("%d: %+v", i, c)
		}
		k := string(c.Keys[0].Key)
		if seen[k] || bytes.Equal(c.Keys[0].Key, make([]byte, len(c.Keys[0].Key))) {
			t.Fatal("keys not random")
		}
		seen[k] = true
		if _, err := ParseCrypto(c.String()); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := GenerateCrypto(1, SuiteUnknown); !errors.Is(err, ErrUnsupportedSuite) {
		t.Fatal(err)
	}
	in, _ := ParseCrypto("9 AES_CM_128_HMAC_SHA1_32 inline:" + keyB64(30, true) + " UNENCRYPTED_SRTCP")
	a, err := in.Answer()
	if err != nil {
		t.Fatal(err)
	}
	if a.Tag != 9 || a.Suite != in.Suite || !a.UnencryptedSRTCP || bytes.Equal(a.Keys[0].Key, in.Keys[0].Key) {
		t.Fatalf("%+v", a)
	}
}

func TestNegotiate(t *testing.T) {
	lines := []string{
		"1 AEAD_AES_256_GCM inline:" + keyB64(44, false),
		"2 AES_CM_128_HMAC_SHA1_80 inline:" + keyB64(30, true) + " UNAUTHENTICATED_SRTP",
		"3 AES_CM_128_HMAC_SHA1_80 inline:" + keyB64(30, true),
		"4 AES_CM_128_HMAC_SHA1_32 inline:" + keyB64(30, true),
	}
	offer, refused := ParseCryptos(append(lines, "5 F8_128_HMAC_SHA1_80 inline:"+keyB64(30, true), "junk"))
	if len(offer) != 4 || len(refused) != 2 {
		t.Fatalf("%d parsed, %v refused", len(offer), refused)
	}
	tests := []struct {
		allowed []Suite
		tag     uint32
	}{
		{DefaultSuites, 1},
		{[]Suite{AES_CM_128_HMAC_SHA1_80, AES_CM_128_HMAC_SHA1_32}, 3}, // 2 is unauthenticated
		{[]Suite{AES_CM_128_HMAC_SHA1_32}, 4},
		{[]Suite{AEAD_AES_128_GCM}, 0},
		{nil, 0},
	}
	for _, tc := range tests {
		c, err := Negotiate(offer, tc.allowed)
		if tc.tag == 0 {
			if !errors.Is(err, ErrNoAcceptableCrypto) {
				t.Fatalf("%v: %v", tc.allowed, err)
			}
			if !strings.Contains(err.Error(), "UNAUTHENTICATED") {
				t.Fatalf("reasons missing: %v", err)
			}
			continue
		}
		if err != nil || c.Tag != tc.tag {
			t.Fatalf("%v: tag %d err %v, want %d", tc.allowed, c.Tag, err, tc.tag)
		}
	}
	if _, err := Negotiate(nil, DefaultSuites); !errors.Is(err, ErrNoAcceptableCrypto) {
		t.Fatal(err)
	}
}

func FuzzParseCrypto(f *testing.F) {
	for _, s := range []string{
		"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
		"1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4;inline:QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVoxMjM0|2^20|2:4 KDR=0 WSH=64",
		"2 AEAD_AES_256_GCM inline:" + keyB64(44, false) + " UNENCRYPTED_SRTP",
		"a=crypto:3 AES_CM_256_HMAC_SHA1_32 inline:" + keyB64(46, true) + "|1048576",
		"",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c, err := ParseCrypto(s)
		if err != nil {
			return
		}
		// A parsed line is usable: it prints, reparses, and makes contexts.
		if _, err := ParseCrypto(c.String()); err != nil {
			t.Fatalf("reparse of %q: %v", c.String(), err)
		}
		if _, err := NewSDES(c, c); err != nil {
			t.Fatalf("contexts for %q: %v", s, err)
		}
	})
}
