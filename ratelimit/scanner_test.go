package ratelimit

import (
	"strings"
	"testing"
)

func TestScannerMatcherDefaults(t *testing.T) {
	m, err := NewScannerMatcher(DefaultScannerPatterns)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ua, want string
	}{
		// scanners
		{"friendly-scanner", "friendly-scanner"},
		{"Friendly-Scanner", "friendly-scanner"},
		{"sipvicious 0.3.4", "sipvicious"},
		{"SIPVicious", "sipvicious"},
		{"sipcli/v1.8", "sipcli"},
		{"VaxSIPUserAgent/3.1", "vaxsipuseragent"},
		{"pplsip", "pplsip"},
		{"sundayddr", "sundayddr"},
		{"iWar", "iwar"},
		{"sip-scan", "sip-scan"},
		{"Linphone 5.0 sipcli/v1.8", "sipcli"},
		{strings.Repeat("x", 5000) + "FRIENDLY-SCANNER", "friendly-scanner"},
		// legitimate or borderline user agents: no match
		{"Asterisk PBX 20.5.2", ""},
		{"FreeSWITCH-mod_sofia/1.10.11-release", ""},
		{"Cisco-SIPGateway/IOS-12.x", ""},
		{"PortSIP VoIP SDK 11.2.1", ""},
		{"sipsak 0.9.8", ""},
		{"Zoiper rv2.10.19.7", ""},
		{"Linphone/5.2.0 (belle-sip/5.2.0)", ""},
		{"JsSIP 3.10.1", ""},
		{"friendly-scanne", ""},
		{"", ""},
	} {
		got, ok := m.Match(tc.ua)
		if ok != (tc.want != "") || got != tc.want {
			t.Errorf("Match(%.40q) = %q, %v; want %q", tc.ua, got, ok, tc.want)
		}
		gotB, okB := m.MatchBytes([]byte(tc.ua))
		if gotB != got || okB != ok {
			t.Errorf("MatchBytes(%.40q) = %q, %v; Match gave %q, %v", tc.ua, gotB, okB, got, ok)
		}
	}
}

func TestScannerMatcherConfig(t *testing.T) {
	m, err := NewScannerMatcher(append(append([]string{}, DefaultScannerPatterns...), OptionalScannerPatterns...))
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m.Match("PortSIP VoIP SDK 11.2.1"); !ok || p != "portsip voip sdk" {
		t.Fatalf("optional pattern: %q %v", p, ok)
	}
	// Trimmed, lower-cased, de-duplicated.
	m, err = NewScannerMatcher([]string{" BadBot ", "badbot", "bad"})
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Patterns(); len(got) != 2 || got[0] != "badbot" || got[1] != "bad" {
		t.Fatalf("patterns %q", got)
	}
	// Overlapping candidates with the same first byte: the shorter one
	// later in the list still matches.
	if p, ok := m.Match("xxbadxx"); !ok || p != "bad" {
		t.Fatalf("overlap: %q %v", p, ok)
	}
	for _, bad := range [][]string{{""}, {"  "}, {"ok", "tab\there"}, {"ünicode"}} {
		if _, err := NewScannerMatcher(bad); err == nil {
			t.Errorf("NewScannerMatcher(%q) accepted", bad)
		}
	}
	if _, err := NewScannerMatcher(make([]string, maxScannerPatterns+1)); err == nil {
		t.Error("too many patterns accepted")
	}
	// nil and empty matchers match nothing.
	var nilM *ScannerMatcher
	if _, ok := nilM.Match("friendly-scanner"); ok || nilM.Patterns() != nil {
		t.Error("nil matcher matched")
	}
	empty, err := NewScannerMatcher(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := empty.Match("friendly-scanner"); ok {
		t.Error("empty matcher matched")
	}
}

func TestScannerMatchDoesNotAllocate(t *testing.T) {
	m, _ := NewScannerMatcher(DefaultScannerPatterns)
	ua := "Linphone/5.2.0 (belle-sip/5.2.0) sipcli/v1.8"
	ub := []byte(ua)
	if n := testing.AllocsPerRun(1000, func() { m.Match(ua) }); n != 0 {
		t.Errorf("Match allocates %v", n)
	}
	if n := testing.AllocsPerRun(1000, func() { m.MatchBytes(ub) }); n != 0 {
		t.Errorf("MatchBytes allocates %v", n)
	}
}

// asciiLower is the reference: ASCII-only lower-casing, byte for byte.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		b[i] = lower(c)
	}
	return string(b)
}

func FuzzScannerMatch(f *testing.F) {
	f.Add("friendly-scanner", "Friendly-Scanner 1.0")
	f.Add("abc", "xxABABCxx")
	f.Add("aa", "a")
	f.Fuzz(func(t *testing.T, pat, ua string) {
		m, err := NewScannerMatcher([]string{pat, "sipcli"})
		if err != nil {
			return
		}
		got, ok := m.Match(ua)
		lua := asciiLower(ua)
		want := false
		for _, p := range m.Patterns() {
			if strings.Contains(lua, p) {
				want = true
			}
		}
		if ok != want {
			t.Fatalf("Match(%q) with %q = %v, reference %v", ua, m.Patterns(), ok, want)
		}
		if ok && !strings.Contains(lua, got) {
			t.Fatalf("Match(%q) returned %q, not in the input", ua, got)
		}
	})
}
