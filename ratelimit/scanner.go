package ratelimit

import (
	"fmt"
	"strings"
)

// DefaultScannerPatterns are User-Agent substrings of SIP scanning and
// toll-fraud tools, matched case-insensitively. Sources: the User-Agent
// filters shipped in Kamailio/OpenSIPS example configurations, fail2ban
// and iptables recipes for Asterisk, and the Emerging Threats "SIPVicious
// User-Agent" signatures.
//
//   - "friendly-scanner": SIPVicious svmap/svwar default User-Agent
//   - "sipvicious": SIPVicious (newer versions, and To/From display names)
//   - "sipcli": sipcli, a command-line dialer used for toll fraud
//   - "sip-scan": sip-scan tool
//   - "sundayddr": SundayDDR worm/scanner
//   - "iwar": iWar war dialer
//   - "vaxsipuseragent": VaxSIP SDK default UA, seen almost only in scans
//   - "pplsip": pplsip scanner
//
// Legitimate products are deliberately absent even though scanners spoof
// them (Cisco-SIPGateway, Asterisk PBX, Zoiper, …): blocking on them would
// block real peers. See OptionalScannerPatterns for borderline ones.
var DefaultScannerPatterns = []string{
	"friendly-scanner",
	"sipvicious",
	"sipcli",
	"sip-scan",
	"sundayddr",
	"iwar",
	"vaxsipuseragent",
	"pplsip",
}

// OptionalScannerPatterns are User-Agents that are frequently abused but
// also used legitimately; an operator may add them to the list:
//
//   - "portsip voip sdk": a commercial SDK, common in fraud traffic
//   - "sipsak": a diagnostics tool, also used by monitoring scripts
var OptionalScannerPatterns = []string{
	"portsip voip sdk",
	"sipsak",
}

// ScannerMatcher finds known scanner User-Agents: a case-insensitive (ASCII)
// substring search for a configurable list of patterns. Match does not
// allocate. A ScannerMatcher is immutable and safe for concurrent use; the
// zero value and nil match nothing.
type ScannerMatcher struct {
	pats    []string      // lower-cased patterns
	byFirst [256][]uint16 // pattern indices by lower-cased first byte
}

// maxScannerPatterns bounds the list (an index fits in uint16).
const maxScannerPatterns = 4096

// NewScannerMatcher builds a matcher for patterns (nil or empty: none).
// Patterns are trimmed; an empty pattern is an error (it would match every
// User-Agent), as is a pattern with bytes outside printable ASCII.
func NewScannerMatcher(patterns []string) (*ScannerMatcher, error) {
	if len(patterns) > maxScannerPatterns {
		return nil, fmt.Errorf("ratelimit: %d scanner patterns, at most %d", len(patterns), maxScannerPatterns)
	}
	m := &ScannerMatcher{}
	seen := make(map[string]bool, len(patterns))
	for _, p := range patterns {
		p = strings.ToLower(strings.TrimSpace(p))
		if p == "" {
			return nil, fmt.Errorf("ratelimit: empty scanner pattern")
		}
		for i := 0; i < len(p); i++ {
			if p[i] < 0x20 || p[i] > 0x7e {
				return nil, fmt.Errorf("ratelimit: scanner pattern %q: byte 0x%02x outside printable ASCII", p, p[i])
			}
		}
		if seen[p] {
			continue
		}
		seen[p] = true
		m.byFirst[p[0]] = append(m.byFirst[p[0]], uint16(len(m.pats)))
		m.pats = append(m.pats, p)
	}
	return m, nil
}

// Patterns returns the (lower-cased, de-duplicated) patterns.
func (m *ScannerMatcher) Patterns() []string {
	if m == nil {
		return nil
	}
	return append([]string(nil), m.pats...)
}

// Match reports whether ua contains one of the patterns, ignoring ASCII
// case, and which (as given, lower-cased): use it in the audit log; the
// failure reason is ReasonScannerUA.
func (m *ScannerMatcher) Match(ua string) (pattern string, ok bool) {
	return match(m, ua)
}

// MatchBytes is Match on a byte slice (a header value in a raw packet).
func (m *ScannerMatcher) MatchBytes(ua []byte) (pattern string, ok bool) {
	return match(m, ua)
}

func match[T string | []byte](m *ScannerMatcher, ua T) (string, bool) {
	if m == nil || len(m.pats) == 0 {
		return "", false
	}
	for i := 0; i < len(ua); i++ {
		cands := m.byFirst[lower(ua[i])]
		for _, pi := range cands {
			p := m.pats[pi]
			if len(ua)-i < len(p) {
				continue
			}
			j := 1
			for j < len(p) && lower(ua[i+j]) == p[j] {
				j++
			}
			if j == len(p) {
				return p, true
			}
		}
	}
	return "", false
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}
