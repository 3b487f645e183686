package validate

import "github.com/emiago/sipgo/sip"

// kind is a header the validator knows, whatever its spelling (long or
// compact form, any case) and whether sipgo parsed it or kept it generic.
type kind uint8

const (
	kOther kind = iota
	kTo
	kFrom
	kCallID
	kCSeq
	kMaxForwards
	kContentLength
	kContentType
	kVia
	kContact
	kExpires
	kMinExpires
	kSessionExpires
	kMinSE
	kRSeq
	kRAck
	kRetryAfter
	kRequire
	kProxyRequire
	kAccept
	kWarning
	numKinds
)

// singleKinds are the headers that may appear at most once (RFC 3261
// section 7.3.1 and the extensions that define them).
var singleKinds = []kind{kTo, kFrom, kCallID, kCSeq, kMaxForwards, kContentLength, kContentType,
	kExpires, kMinExpires, kSessionExpires, kMinSE, kRSeq, kRAck, kRetryAfter}

var kindWhy = [numKinds]string{
	kTo: "to", kFrom: "from", kCallID: "call_id", kCSeq: "cseq", kMaxForwards: "max_forwards",
	kContentLength: "content_length", kContentType: "content_type", kVia: "via", kContact: "contact",
	kExpires: "expires", kMinExpires: "min_expires", kSessionExpires: "session_expires",
	kMinSE: "min_se", kRSeq: "rseq", kRAck: "rack", kRetryAfter: "retry_after",
}

// longNames maps the full header names to kinds; compact forms are in
// compactKind.
var longNames = []struct {
	name string
	k    kind
}{
	{"to", kTo}, {"from", kFrom}, {"call-id", kCallID}, {"cseq", kCSeq},
	{"max-forwards", kMaxForwards}, {"content-length", kContentLength},
	{"content-type", kContentType}, {"via", kVia}, {"contact", kContact},
	{"expires", kExpires}, {"min-expires", kMinExpires},
	{"session-expires", kSessionExpires}, {"min-se", kMinSE}, {"rseq", kRSeq},
	{"rack", kRAck}, {"retry-after", kRetryAfter}, {"require", kRequire},
	{"proxy-require", kProxyRequire}, {"accept", kAccept}, {"warning", kWarning},
}

func compactKind(c byte) kind {
	switch c | 0x20 {
	case 't':
		return kTo
	case 'f':
		return kFrom
	case 'i':
		return kCallID
	case 'l':
		return kContentLength
	case 'c':
		return kContentType
	case 'v':
		return kVia
	case 'm':
		return kContact
	case 'x':
		return kSessionExpires
	}
	return kOther
}

// kindOfName classifies a header name (long or compact form, any case).
func kindOfName[T text](name T) kind {
	if len(name) == 1 {
		return compactKind(name[0])
	}
	if len(name) < 2 {
		return kOther
	}
	if len(name) >= len(longByLen) {
		return kOther
	}
	// Only the names of its length that start like name[0] are
	// compared (a header is classified per field of every message).
	for _, i := range longByLen[len(name)] {
		if ln := longNames[i]; ln.name[0] == name[0]|0x20 && foldEq(name, ln.name) {
			return ln.k
		}
	}
	return kOther
}

// longByLen indexes longNames by the length of the name.
var longByLen = func() (t [16][]uint8) {
	for i, ln := range longNames {
		t[len(ln.name)] = append(t[len(ln.name)], uint8(i))
	}
	return t
}()

// kindOf classifies a header sipgo produced. Typed headers are classified
// by type; generic ones by name, so that a parser built with fewer header
// parsers (sip.WithHeadersParsers) is still checked.
func kindOf(h sip.Header) (k kind, generic bool) {
	switch h.(type) {
	case *sip.ToHeader:
		return kTo, false
	case *sip.FromHeader:
		return kFrom, false
	case *sip.CallIDHeader:
		return kCallID, false
	case *sip.CSeqHeader:
		return kCSeq, false
	case *sip.MaxForwardsHeader:
		return kMaxForwards, false
	case *sip.ContentLengthHeader:
		return kContentLength, false
	case *sip.ContentTypeHeader:
		return kContentType, false
	case *sip.ViaHeader:
		return kVia, false
	case *sip.ContactHeader:
		return kContact, false
	case *sip.RouteHeader, *sip.RecordRouteHeader, *sip.ReferToHeader, *sip.ReferredByHeader:
		return kOther, false
	}
	return kindOfName(h.Name()), true
}
