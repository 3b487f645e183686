package validate

import "strings"

// Character classes of RFC 3261 section 25.1.
var (
	tokenChar  [256]bool // token
	wordChar   [256]bool // word (Call-ID)
	hostChar   [256]bool // hostname, IPv4address (and '_', seen in the wild)
	ipv6Char   [256]bool // inside an IPv6 reference, brackets excluded
	schemeChar [256]bool // scheme after the first ALPHA
)

func init() {
	for c := 'a'; c <= 'z'; c++ {
		for _, t := range []*[256]bool{&tokenChar, &wordChar, &hostChar, &schemeChar} {
			t[c] = true
			t[c-'a'+'A'] = true
		}
	}
	for c := '0'; c <= '9'; c++ {
		tokenChar[c], wordChar[c], hostChar[c], ipv6Char[c], schemeChar[c] = true, true, true, true, true
	}
	for _, c := range "-.!%*_+`'~" {
		tokenChar[c] = true
	}
	for _, c := range "-.!%*_+`'~()<>:\\\"/[]?{}" {
		wordChar[c] = true
	}
	for _, c := range "-._" {
		hostChar[c] = true
	}
	for _, c := range "abcdefABCDEF:." {
		ipv6Char[c] = true
	}
	for _, c := range "+-." {
		schemeChar[c] = true
	}
}

// isCTL reports a control character that may appear in a header only as a
// quoted-pair inside a quoted string (HTAB is LWS and always allowed).
func isCTL(c byte) bool { return (c < 0x20 && c != '\t') || c == 0x7f }

// text is what the byte-level helpers accept: Raw works on []byte
// without converting (no allocation), the parsed checks on strings.
type text interface{ ~string | ~[]byte }

// foldEq compares ASCII case-insensitively.
func foldEq[T text](a T, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(b); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func isToken[T text](s T) bool {
	if len(s) == 0 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !tokenChar[s[i]] {
			return false
		}
	}
	return true
}

// noCTL reports whether s holds no control character at all: the rule for
// URIs, tokens and every field that cannot be a quoted string.
func noCTL(s string) bool {
	for i := 0; i < len(s); i++ {
		if isCTL(s[i]) {
			return false
		}
	}
	return true
}

// quotedOK checks the content of a quoted string (without its quotes):
// control characters only as a quoted-pair, never CR or LF.
func quotedOK(s string) bool {
	esc := false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if esc {
			esc = false
			if c == '\r' || c == '\n' {
				return false
			}
			continue
		}
		if c == '\\' {
			esc = true
			continue
		}
		if isCTL(c) {
			return false
		}
	}
	return true
}

// valueOK checks a raw header value, tracking quoted strings: control
// characters are allowed only as a quoted-pair inside quotes, CR and LF
// never.
func valueOK(s string) bool {
	inQ, esc := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		if esc {
			esc = false
			if c == '\r' || c == '\n' {
				return false
			}
			continue
		}
		switch {
		case c == '\\' && inQ:
			esc = true
		case c == '"':
			inQ = !inQ
		case isCTL(c):
			return false
		}
	}
	return true
}

func isScheme[T text](s T) bool {
	if len(s) == 0 || !(s[0] >= 'a' && s[0] <= 'z' || s[0] >= 'A' && s[0] <= 'Z') {
		return false
	}
	for i := 1; i < len(s); i++ {
		if !schemeChar[s[i]] {
			return false
		}
	}
	return true
}

// hostOK checks a SIP URI host: a hostname or IPv4 address, or an IPv6
// reference in brackets. The RFC 3261 ABNF bug form with three colons
// (RFC 5118 4.10) is tolerated: only the characters are checked. The
// second result tells an IPv6 address written without brackets.
func hostOK(h string) (ok, unbracketedV6 bool) {
	if h == "" {
		return false, false
	}
	if h[0] == '[' {
		if len(h) < 4 || h[len(h)-1] != ']' {
			return false, false
		}
		colon := false
		for i := 1; i < len(h)-1; i++ {
			if !ipv6Char[h[i]] {
				return false, false
			}
			colon = colon || h[i] == ':'
		}
		return colon, false
	}
	for i := 0; i < len(h); i++ {
		c := h[i]
		if c == ':' {
			return false, true
		}
		if !hostChar[c] {
			return false, false
		}
	}
	return true, false
}

// viaHostOK checks a Via sent-by host as sipgo stores it: IPv6 without
// its brackets.
func viaHostOK(h string) bool {
	if h == "" {
		return false
	}
	for i := 0; i < len(h); i++ {
		if c := h[i]; !hostChar[c] && c != ':' && c != '[' && c != ']' {
			return false
		}
	}
	return true
}

// deltaSeconds parses delta-seconds (1*DIGIT, leading and trailing LWS
// allowed) and reports whether it fits in 32 bits, the bound RFC 3261
// gives to Expires and the expires parameter.
func deltaSeconds(s string) (uint64, bool) {
	s = strings.Trim(s, " \t")
	if s == "" || len(s) > 20 {
		return 0, false
	}
	var n uint64
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + uint64(c-'0')
		if n > 1<<32-1 {
			return 0, false
		}
	}
	return n, true
}

// leadingDelta parses the delta-seconds at the start of a value that may go
// on with parameters or a comment (Retry-After, Session-Expires, Min-SE).
func leadingDelta(s string) bool {
	s = strings.TrimLeft(s, " \t")
	end := strings.IndexAny(s, ";( \t")
	if end >= 0 {
		s = s[:end]
	}
	_, ok := deltaSeconds(s)
	return ok
}

// mediaType returns the type/subtype of a Content-Type or Accept item,
// trimmed, without parameters.
func mediaType(s string) string {
	if i := strings.IndexByte(s, ';'); i >= 0 {
		s = s[:i]
	}
	return strings.Trim(s, " \t")
}

// forEachItem calls f with each trimmed item of a comma-separated list.
// f returns false to stop.
func forEachItem(s string, f func(item string) bool) {
	for s != "" {
		item := s
		if i := strings.IndexByte(s, ','); i >= 0 {
			item, s = s[:i], s[i+1:]
		} else {
			s = ""
		}
		if !f(strings.Trim(item, " \t")) {
			return
		}
	}
}

func containsFold(list []string, s string) bool {
	for _, x := range list {
		if strings.EqualFold(x, s) {
			return true
		}
	}
	return false
}

// versionOK tells whether v is SIP/2.0 (case-insensitive), and whether it
// has the SIP-Version syntax at all ("SIP" "/" 1*DIGIT "." 1*DIGIT).
func versionOK[T text](v T) (is20, syntax bool) {
	if foldEq(v, "SIP/2.0") {
		return true, true
	}
	if len(v) < 7 || !foldEq(v[:4], "SIP/") {
		return false, false
	}
	v = v[4:]
	dot := -1
	for i := 0; i < len(v); i++ {
		if v[i] == '.' {
			dot = i
			break
		}
	}
	if dot < 1 || dot == len(v)-1 {
		return false, false
	}
	for i := 0; i < len(v); i++ {
		if i != dot && (v[i] < '0' || v[i] > '9') {
			return false, false
		}
	}
	return false, true
}
