package validate

import "bytes"

// Raw checks the bytes of one whole message before sipgo parses it: a UDP
// datagram, or one WebSocket message. (On TCP and TLS, sipgo's read filter
// sees arbitrary chunks of the stream, not messages: do not call Raw
// there; Request and Response still apply.)
//
// It finds what the parser would choke on, with a reason code instead of a
// parse error (and without sipgo logging the packet), and what parsing
// erases:
//   - a message over MaxMessageSize (513), more than MaxHeaders fields;
//   - a start line that is not exactly "Method SP Request-URI SP
//     SIP-Version" or "SIP-Version SP 3DIGIT SP Reason-Phrase";
//   - a bare CR or LF, a header section without its empty line, a header
//     line without a token name and colon, a continuation line first;
//   - control characters in the header section, except as a quoted-pair
//     inside a quoted string (RFC 3261 25.1): a bare LF inside a header
//     value is one header to sipgo and two to a backend;
//   - a Content-Length that is not 1*DIGIT (negative, overflowing) or
//     larger than the bytes that follow the header section;
//   - a '?' outside <> in Contact, To or From (RFC 3261 20.10: the URI
//     must be enclosed; RFC 4475 regbadct.dat), which sipgo parses exactly
//     like the enclosed form;
//   - a ',' outside quotes and <> in To or From: two values in a header
//     that allows one;
//   - a quoted string left open at the end of To, From or Contact;
//   - a stray separator in To, From, Contact or Via: ';' or ',' followed
//     by another or ending the field (RFC 4475 badinv01.dat);
//   - what sipgo's transaction layer needs before any handler runs, and
//     answers (a stateless 400) or only logs when it is missing: a Via
//     and a CSeq; a top Via branch with the RFC 3261 magic cookie, or
//     (RFC 2543 requests) a From with a tag (RFC 4475 inv2543.dat has
//     neither: dropped here, where sipgo would answer 400); for a
//     response, a branch with the cookie (the SBC's own requests all
//     have one, so any other response is no answer to it).
//
// Everything else, and everything that a parsed message shows as well as
// the bytes do (duplicate headers, the version, CSeq, Max-Forwards, ...),
// is left to Request and Response, so that it can be answered.
//
// A verdict of Raw always has Drop set: the read filter has no parsed
// message to answer. Bytes after the body that Content-Length announces
// are not looked at (RFC 3261 18.3; RFC 4475 dblreq.dat). A CRLF
// keep-alive (up to 4 bytes of CR and LF) passes. Raw does not allocate.
func Raw(data []byte, opt Options) *Result {
	if r := raw(data, opt); r != nil {
		return r.drop
	}
	return nil
}

func raw(data []byte, opt Options) *rule {
	maxSize, maxHeaders := opt.MaxMessageSize, opt.MaxHeaders
	if maxSize <= 0 {
		maxSize = DefaultMaxMessageSize
	}
	if maxHeaders <= 0 {
		maxHeaders = DefaultMaxHeaders
	}
	if len(data) > maxSize {
		return &rTooLarge
	}
	if len(data) == 0 {
		return &rStartLine
	}
	if len(data) <= 4 && onlyCRLF(data) {
		return nil
	}

	var (
		i          int  // start of the current line
		inHeader   bool // a header field is open (continuations allowed)
		cur        kind // kind of the open header
		inQ        bool // inside a quoted string in the open header
		inBr       bool // inside <> in the open header
		nHeaders   int
		clCount    int
		clVal      uint64
		clState    int // 0 leading LWS, 1 digits, 2 trailing LWS, 3 bad
		clBad      bool
		pendingSep bool // a ';' or ',' ended the last line of the open field
		response   bool // the start line is a status line
		seen       [numKinds]bool
		// The value of the first Via and From fields, continuation
		// lines included (offsets into data; end 0: absent).
		viaFrom, viaTo, fromFrom, fromTo int
	)
	for first := true; ; first = false {
		// The line: up to a CR that must be followed by LF, with no LF
		// before it.
		rest := data[i:]
		j := bytes.IndexByte(rest, '\r')
		if j < 0 {
			if bytes.IndexByte(rest, '\n') >= 0 {
				return &rLineEnding
			}
			return &rTruncated
		}
		line := rest[:j]
		if bytes.IndexByte(line, '\n') >= 0 {
			return &rLineEnding
		}
		if j+1 >= len(rest) {
			return &rTruncated
		}
		if rest[j+1] != '\n' {
			return &rLineEnding
		}
		lineAt := i
		i += j + 2
		if first {
			if r := startLine(line); r != nil {
				return r
			}
			response = len(line) >= 4 && foldEq(line[:4], "SIP/")
			continue
		}

		// A new field or the end of the header section closes the open
		// field.
		if len(line) == 0 || (line[0] != ' ' && line[0] != '\t') {
			if inHeader {
				if cur == kContentLength && (clState == 0 || clState == 3) {
					clBad = true
				}
				if inQ && (cur == kTo || cur == kFrom || cur == kContact) {
					return &rUnbalancedQuote
				}
			}
			if pendingSep {
				return &rStraySeparator
			}
		}
		if len(line) == 0 {
			break
		}

		var val []byte
		if line[0] == ' ' || line[0] == '\t' {
			if !inHeader {
				return &rHeaderLine
			}
			val = line
			switch {
			case cur == kVia && viaTo == lineAt-2:
				viaTo = lineAt + len(line)
			case cur == kFrom && fromTo == lineAt-2:
				fromTo = lineAt + len(line)
			}
		} else {
			nHeaders++
			if nHeaders > maxHeaders {
				return &rTooManyHeaders
			}
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				return &rHeaderLine
			}
			name := line[:colon]
			for len(name) > 0 && (name[len(name)-1] == ' ' || name[len(name)-1] == '\t') {
				name = name[:len(name)-1]
			}
			if !isToken(name) {
				return &rHeaderName
			}
			cur = kindOfName(name)
			inHeader, inQ, inBr, clState, pendingSep = true, false, false, 0, false
			switch {
			case cur == kVia && !seen[kVia]:
				viaFrom, viaTo = lineAt+colon+1, lineAt+len(line)
			case cur == kFrom && !seen[kFrom]:
				fromFrom, fromTo = lineAt+colon+1, lineAt+len(line)
			}
			seen[cur] = true
			if cur == kContentLength {
				clCount++
				clVal = 0
			}
			val = line[colon+1:]
		}

		if cur == kContentLength {
			for _, c := range val {
				if isCTL(c) {
					return &rBadChar
				}
				clState, clVal = clStep(clState, clVal, c)
			}
			continue
		}
		sepCheck := cur == kTo || cur == kFrom || cur == kContact || cur == kVia
		if pendingSep {
			switch next := firstNonLWS(val, 0); {
			case next < 0: // a blank continuation: still pending
			case val[next] == ';' || val[next] == ',':
				return &rStraySeparator
			default:
				pendingSep = false
			}
		}
		for k := 0; ; k++ {
			if k = nextSpecial(val, k); k == len(val) {
				break
			}
			c := val[k]
			if inQ {
				switch {
				case c == '\\':
					// quoted-pair: the next byte is taken as is, but
					// it must exist (CR and LF cannot be quoted).
					k++
					if k >= len(val) {
						return &rBadChar
					}
				case c == '"':
					inQ = false
				case isCTL(c):
					return &rBadChar
				}
				continue
			}
			switch c {
			case '"':
				inQ = true
			case '<':
				inBr = true
			case '>':
				inBr = false
			case '?':
				if !inBr && (cur == kContact || cur == kTo || cur == kFrom) {
					return &rUnbracketed
				}
			case ',', ';':
				if inBr || !sepCheck {
					break
				}
				if c == ',' && (cur == kTo || cur == kFrom) {
					return &rMultiValue
				}
				// After a separator comes a parameter or a value, not
				// another separator (RFC 4475 badinv01.dat).
				switch next := firstNonLWS(val, k+1); {
				case next < 0:
					pendingSep = true
				case val[next] == ';' || val[next] == ',':
					return &rStraySeparator
				}
			case '\\':
			default: // a control character
				return &rBadChar
			}
		}
	}
	if clBad {
		return &rContentLength
	}
	if clCount == 1 && clVal > uint64(len(data)-i) {
		return &rCLMismatch
	}
	return keyable(response, seen, data[viaFrom:viaTo], data[fromFrom:fromTo])
}

// keyable checks what sipgo's transaction layer needs of a message
// before any handler sees it, and answers or logs itself when it is
// missing: a request without a top Via or CSeq, or one whose top Via
// has no RFC 3261 branch (an RFC 2543 request) and whose From has no tag,
// gets a stateless 400 from sipgo (it cannot make a server transaction
// key); a response without them, or whose branch lacks the magic cookie,
// matches no client transaction of the SBC (whose branches all have it)
// and is only logged. Such a message is dropped and counted here, like
// every other malformed message, instead.
func keyable(response bool, seen [numKinds]bool, via, from []byte) *rule {
	switch {
	case !seen[kVia]:
		return &rMissing[kVia]
	case !seen[kCSeq]:
		return &rMissing[kCSeq]
	case cookieBranch(via):
		return nil
	case response:
		return &rVia
	case !seen[kFrom]:
		return &rMissing[kFrom]
	}
	if _, ok := param(from, "tag"); !ok {
		return &rFromTag
	}
	return nil
}

// cookieBranch reports whether the first value of a Via field has a
// branch parameter that starts with the RFC 3261 magic cookie and has
// more after it.
func cookieBranch(via []byte) bool {
	if k := bytes.IndexByte(via, ','); k >= 0 {
		via = via[:k]
	}
	b, ok := param(via, "branch")
	return ok && len(b) > len(magicCookie) && string(b[:len(magicCookie)]) == magicCookie
}

const magicCookie = "z9hG4bK"

// HeaderParam finds the header parameter name in a header field's value
// as param does (for the SBC's readers, which answer some requests from
// their bytes).
func HeaderParam(v []byte, name string) ([]byte, bool) { return param(v, name) }

// param finds the header parameter name (case-sensitive, as sipgo's
// lookups are) in a field value: after a ';' outside quotes and <>, up
// to the next ';' or ','. It returns the value (LWS trimmed; nil when
// the parameter has none) and whether the parameter is there.
func param(v []byte, name string) ([]byte, bool) {
	inQ, inBr := false, false
	for k := 0; k < len(v); k++ {
		c := v[k]
		switch {
		case inQ:
			if c == '\\' {
				k++
			} else if c == '"' {
				inQ = false
			}
			continue
		case c == '"':
			inQ = true
			continue
		case c == '<':
			inBr = true
			continue
		case c == '>':
			inBr = false
			continue
		case c != ';' || inBr:
			continue
		}
		e := k + 1
		for e < len(v) && v[e] != '=' && v[e] != ';' && v[e] != ',' {
			e++
		}
		if string(trimLWS(v[k+1:e])) != name {
			continue
		}
		if e == len(v) || v[e] != '=' {
			return nil, true
		}
		f := e + 1
		for f < len(v) && v[f] != ';' && v[f] != ',' {
			f++
		}
		return trimLWS(v[e+1 : f]), true
	}
	return nil, false
}

// trimLWS trims SP, HTAB, CR and LF (a folded value keeps its line
// breaks) from both ends of b.
func trimLWS(b []byte) []byte {
	lws := func(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }
	for len(b) > 0 && lws(b[0]) {
		b = b[1:]
	}
	for len(b) > 0 && lws(b[len(b)-1]) {
		b = b[:len(b)-1]
	}
	return b
}

// special marks (1) the bytes the header scan of Raw must look at:
// control characters and the delimiters it tracks.
var special = func() (t [256]byte) {
	for c := 0; c < 256; c++ {
		if isCTL(byte(c)) {
			t[c] = 1
		}
	}
	for _, c := range "\"<>?,;\\" {
		t[c] = 1
	}
	return t
}()

// nextSpecial returns the index of the first special byte of b at or
// after k, or len(b). Most of a header's bytes are plain: it looks at
// eight at a time, their table entries ORed, with one branch for the
// eight rather than one per byte (Raw 36 % faster on a 1 KB INVITE,
// BenchmarkRaw).
func nextSpecial(b []byte, k int) int {
	for ; k+8 <= len(b); k += 8 {
		w := b[k : k+8 : k+8]
		if special[w[0]]|special[w[1]]|special[w[2]]|special[w[3]]|
			special[w[4]]|special[w[5]]|special[w[6]]|special[w[7]] != 0 {
			break
		}
	}
	for ; k < len(b) && special[b[k]] == 0; k++ {
	}
	return k
}

// firstNonLWS returns the index of the first byte of b[from:] that is not
// SP or HTAB, or -1.
func firstNonLWS(b []byte, from int) int {
	for k := from; k < len(b); k++ {
		if b[k] != ' ' && b[k] != '\t' {
			return k
		}
	}
	return -1
}

// clStep advances the Content-Length value parser (1*DIGIT within LWS).
func clStep(state int, val uint64, c byte) (int, uint64) {
	switch {
	case c == ' ' || c == '\t':
		if state == 1 {
			return 2, val
		}
		return state, val
	case c >= '0' && c <= '9' && state <= 1:
		val = val*10 + uint64(c-'0')
		if val > 1<<32 {
			return 3, val
		}
		return 1, val
	}
	return 3, val
}

func onlyCRLF(b []byte) bool {
	for _, c := range b {
		if c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

// startLine checks Request-Line = Method SP Request-URI SP SIP-Version
// and Status-Line = SIP-Version SP Status-Code SP Reason-Phrase, single
// spaces, no trailing space after the version (RFC 4475 3.1.2.8-10), and
// tells an IPv6 Request-URI host without brackets (RFC 5118 4.2).
func startLine(line []byte) *rule {
	if !startLineOK(line) {
		return &rStartLine
	}
	if len(line) >= 4 && foldEq(line[:4], "SIP/") {
		return nil
	}
	// The Request-URI: is it sip: or sips:, and is its host IPv6 without
	// brackets? Host starts after the last '@', or after the scheme.
	// startLineOK made sure of exactly two single spaces.
	uri := line
	for k, c := range uri {
		if c == ' ' {
			uri = uri[k+1:]
			break
		}
	}
	for k, c := range uri {
		if c == ' ' {
			uri = uri[:k]
			break
		}
	}
	var host []byte
	switch {
	case len(uri) > 4 && foldEq(uri[:4], "sip:"):
		host = uri[4:]
	case len(uri) > 5 && foldEq(uri[:5], "sips:"):
		host = uri[5:]
	default:
		return nil
	}
	for k, c := range host {
		if c == ';' || c == '?' {
			host = host[:k]
			break
		}
	}
	for k := len(host) - 1; k >= 0; k-- {
		if host[k] == '@' {
			host = host[k+1:]
			break
		}
	}
	colons := 0
	for _, c := range host {
		if c == ':' {
			colons++
		}
	}
	if len(host) > 0 && host[0] != '[' && colons > 1 {
		return &rIPv6Unbracketed
	}
	return nil
}

func startLineOK(line []byte) bool {
	sp := -1
	for k, c := range line {
		if c == ' ' {
			sp = k
			break
		}
	}
	if sp <= 0 {
		return false
	}
	first, rest := line[:sp], line[sp+1:]
	if len(first) >= 4 && foldEq(first[:4], "SIP/") {
		// Status line: the reason phrase may hold SP, HTAB and UTF-8.
		if _, syntax := versionOK(first); !syntax || len(rest) < 4 || rest[3] != ' ' {
			return false
		}
		for k := 0; k < 3; k++ {
			if rest[k] < '0' || rest[k] > '9' {
				return false
			}
		}
		for _, c := range rest[4:] {
			if isCTL(c) {
				return false
			}
		}
		return true
	}
	if !isToken(first) {
		return false
	}
	sp = -1
	for k, c := range rest {
		if c == ' ' {
			sp = k
			break
		}
	}
	if sp <= 0 {
		return false
	}
	uri, version := rest[:sp], rest[sp+1:]
	colon := -1
	for k, c := range uri {
		if isCTL(c) || c == '\t' {
			return false
		}
		if c == ':' && colon < 0 {
			colon = k
		}
	}
	if colon <= 0 || !isScheme(uri[:colon]) {
		return false
	}
	_, syntax := versionOK(version)
	return syntax
}
