package validate

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// Defaults used for the zero fields of Options.
var (
	// DefaultMaxMessageSize bounds a whole message (start line, headers and
	// body). 16 KiB holds a WebRTC offer with many ICE candidates.
	DefaultMaxMessageSize = 16 << 10
	// DefaultMaxHeaders bounds the number of header fields (RFC 4475's
	// longreq.dat has 43; real traffic stays below 40).
	DefaultMaxHeaders = 128
	// DefaultSupportedExtensions are the option tags a Require or
	// Proxy-Require may name without earning a 420.
	DefaultSupportedExtensions = []string{"100rel", "timer", "replaces"}
	// DefaultAllowedSchemes are the Request-URI schemes served; any other
	// earns a 416.
	DefaultAllowedSchemes = []string{"sip", "sips", "tel"}
	// DefaultBodyTypes are the Content-Types accepted in the bodies of
	// INVITE, ACK, PRACK and UPDATE (the session descriptions the media
	// stage reads); any other earns a 415.
	DefaultBodyTypes = []string{"application/sdp", "multipart/mixed"}
)

// Options tune the checks. The zero value uses the defaults above; a nil
// slice means "the default", an empty non-nil slice means "none".
type Options struct {
	// MaxMessageSize bounds the message size in bytes (513 above it).
	MaxMessageSize int
	// MaxHeaders bounds the number of header fields (400 above it): the
	// header lines for Raw, the parsed values for Request and Response
	// (sipgo splits the comma lists of Via, Contact, Route and
	// Record-Route into one value each).
	MaxHeaders int
	// SupportedExtensions are the option tags accepted in Require and
	// Proxy-Require (compared case-insensitively).
	SupportedExtensions []string
	// AllowedSchemes are the Request-URI schemes served (416 otherwise).
	// To and From may also carry sip, sips and tel URIs.
	AllowedSchemes []string
	// BodyTypes are the media types accepted in session-description
	// bodies (INVITE, ACK, PRACK, UPDATE); 415 otherwise.
	BodyTypes []string
}

func (o Options) norm() Options {
	if o.MaxMessageSize <= 0 {
		o.MaxMessageSize = DefaultMaxMessageSize
	}
	if o.MaxHeaders <= 0 {
		o.MaxHeaders = DefaultMaxHeaders
	}
	if o.SupportedExtensions == nil {
		o.SupportedExtensions = DefaultSupportedExtensions
	}
	if o.AllowedSchemes == nil {
		o.AllowedSchemes = DefaultAllowedSchemes
	}
	if o.BodyTypes == nil {
		o.BodyTypes = DefaultBodyTypes
	}
	return o
}

// scan collects what the header loop learns for the checks that follow it.
type scan struct {
	cnt          [numKinds]uint8
	wildcard     bool   // Contact: *
	expires      string // the Expires value
	badExtension bool   // a Require/Proxy-Require tag we do not support
	acceptSeen   bool   // an Accept header with at least one item
	acceptSDP    bool   // an Accept item that covers application/sdp
	generic      bool   // a header sipgo usually parses was left generic
}

// Request checks a parsed request. It returns nil when the request may go
// on, else the verdict: answer with Code (and Header), or drop when Drop
// is set (an invalid ACK is dropped, never answered).
//
// The checks run in the order of RFC 3261 sections 8.2 and 16.3: version
// (505), syntax (400), Request-URI scheme (416), Max-Forwards (483),
// extensions (420), body type (415), Accept (406).
func Request(req *sip.Request, opt Options) *Result {
	if req == nil {
		return rNil.drop
	}
	r, hdr := request(req, opt.norm())
	if r == nil {
		return nil
	}
	res := r.pick(req.Method == sip.ACK)
	if hdr != nil && !res.Drop {
		return &Result{Code: res.Code, Reason: res.Reason, Header: hdr, Why: res.Why}
	}
	return res
}

func request(req *sip.Request, o Options) (*rule, sip.Header) {
	if is20, syntax := versionOK(req.SipVersion); !is20 {
		if syntax {
			return &rVersion, nil
		}
		return &rVersionSyntax, nil
	}
	if !isToken(string(req.Method)) {
		return &rMethod, nil
	}
	if r := checkRURI(&req.Recipient); r != nil {
		return r, nil
	}

	hs := req.Headers()
	if len(hs) > o.MaxHeaders {
		return &rTooManyHeaders, nil
	}
	var st scan
	isInvite := req.Method == sip.INVITE
	for _, h := range hs {
		k, generic := kindOf(h)
		if st.cnt[k] < 255 {
			st.cnt[k]++
		}
		if r := checkHeader(h, k, generic, &st, true, o); r != nil {
			return r, nil
		}
		if isInvite && k == kAccept && generic {
			acceptScan(h.Value(), &st)
		}
	}
	if r := common(&req.MessageData, &st, true, o); r != nil {
		return r, nil
	}
	if isInvite && st.cnt[kContact] > 1 {
		return &rDup[kContact], nil
	}
	if st.wildcard {
		exp, ok := deltaSeconds(st.expires)
		if req.Method != sip.REGISTER || st.cnt[kContact] != 1 || !ok || exp != 0 {
			return &rContactWildcard, nil
		}
	}
	cseq := req.CSeq()
	if !strings.EqualFold(string(cseq.MethodName), string(req.Method)) {
		// Case-insensitive: sipgo upper-cases the request-line method
		// but not the CSeq one.
		return &rCSeqMismatch, nil
	}
	mf := req.MaxForwards()
	if st.cnt[kMaxForwards] > 0 && mf == nil {
		return &rMaxFwdRange, nil
	}
	if mf != nil && *mf > 255 {
		return &rMaxFwdRange, nil
	}

	// Semantic checks, in the order of RFC 3261 16.3 and 8.2.2.
	if !containsFold(o.AllowedSchemes, req.Recipient.Scheme) {
		return &rScheme, nil
	}
	if mf != nil && *mf == 0 {
		return &rMaxFwdZero, nil
	}
	if st.badExtension && req.Method != sip.ACK && req.Method != sip.CANCEL {
		return &rExtension, unsupported(req, o)
	}
	if len(req.Body()) > 0 {
		switch req.Method {
		case sip.INVITE, sip.ACK, sip.PRACK, sip.UPDATE:
			if ct := req.ContentType(); ct == nil || !containsFold(o.BodyTypes, mediaType(string(*ct))) {
				return &rMediaType, sip.NewHeader("Accept", strings.Join(o.BodyTypes, ", "))
			}
		}
	}
	if st.acceptSeen && !st.acceptSDP {
		return &rNotAcceptable, nil
	}
	return nil, nil
}

// Response checks a parsed response. Every verdict on a response has Drop
// set: a broken response is never answered, and never relayed.
func Response(res *sip.Response, opt Options) *Result {
	if res == nil {
		return rNil.drop
	}
	o := opt.norm()
	if is20, syntax := versionOK(res.SipVersion); !is20 {
		if syntax {
			return rVersion.drop
		}
		return rVersionSyntax.drop
	}
	if res.StatusCode < 100 || res.StatusCode > 699 {
		return rStatus.drop
	}
	if !noCTL(res.Reason) {
		return rReasonPhrase.drop
	}
	hs := res.Headers()
	if len(hs) > o.MaxHeaders {
		return rTooManyHeaders.drop
	}
	var st scan
	for _, h := range hs {
		k, generic := kindOf(h)
		if st.cnt[k] < 255 {
			st.cnt[k]++
		}
		if r := checkHeader(h, k, generic, &st, false, o); r != nil {
			return r.drop
		}
	}
	if r := common(&res.MessageData, &st, false, o); r != nil {
		return r.drop
	}
	if st.wildcard {
		return rContactWildcard.drop
	}
	return nil
}

// common holds the checks shared by requests and responses, after the
// header loop: mandatory and single-instance headers, the content of the
// typed single headers, and the body framing.
func common(m *sip.MessageData, st *scan, isReq bool, o Options) *rule {
	for _, k := range []kind{kTo, kFrom, kCallID, kCSeq, kVia} {
		if st.cnt[k] == 0 {
			return &rMissing[k]
		}
	}
	for _, k := range singleKinds {
		if st.cnt[k] > 1 {
			return &rDup[k]
		}
	}
	// The loop checked the typed To, From and Call-ID. A parser built
	// with fewer header parsers leaves some generic: check what the
	// accessors parse from them.
	if st.generic {
		to := m.To()
		if to == nil || !nameAddrOK(to.DisplayName, &to.Address, to.Params, isReq, o) {
			return &rTo
		}
		from := m.From()
		if from == nil || !nameAddrOK(from.DisplayName, &from.Address, from.Params, isReq, o) {
			return &rFrom
		}
		if cid := m.CallID(); cid == nil || !callIDOK(string(*cid)) {
			return &rCallID
		}
	}
	cseq := m.CSeq()
	if cseq == nil || !isToken(string(cseq.MethodName)) {
		return &rCSeq
	}
	if cseq.SeqNo > 1<<31-1 {
		return &rCSeqRange
	}
	if r := topVia(m.Via()); r != nil {
		return r
	}
	body := m.Body()
	if len(body) > o.MaxMessageSize {
		return &rTooLarge
	}
	if cl := m.ContentLength(); cl != nil && int64(*cl) != int64(len(body)) {
		return &rCLMismatch
	} else if cl == nil && st.cnt[kContentLength] > 0 {
		return &rContentLength
	}
	if len(body) > 0 && st.cnt[kContentType] == 0 {
		return &rNoContentType
	}
	return nil
}

// checkHeader checks one header field on its own. CSeq, Max-Forwards and
// the top Via are checked after the loop, through the message accessors.
func checkHeader(h sip.Header, k kind, generic bool, st *scan, isReq bool, o Options) *rule {
	if generic {
		if k != kOther {
			st.generic = true
		}
		if !isToken(h.Name()) {
			return &rHeaderName
		}
		v := h.Value()
		if !valueOK(v) {
			return &rBadChar
		}
		return checkGeneric(k, v, st, isReq, o)
	}
	switch h := h.(type) {
	case *sip.ToHeader:
		if !nameAddrOK(h.DisplayName, &h.Address, h.Params, isReq, o) {
			return &rTo
		}
	case *sip.FromHeader:
		if !nameAddrOK(h.DisplayName, &h.Address, h.Params, isReq, o) {
			return &rFrom
		}
	case *sip.CallIDHeader:
		if !callIDOK(string(*h)) {
			return &rCallID
		}
	case *sip.ViaHeader:
		if !noCTL(h.ProtocolName) || !noCTL(h.ProtocolVersion) || !noCTL(h.Transport) ||
			!noCTL(h.Host) || !paramsOK(h.Params) {
			return &rBadChar
		}
		// Every Via says SIP/2.0. The rest is checked on the top Via
		// only: sipgo loses the transport of a valid Via written with
		// LWS around '/' (RFC 4475 wsinv.dat).
		if !strings.EqualFold(strings.Trim(h.ProtocolName, " \t"), "SIP") ||
			strings.Trim(h.ProtocolVersion, " \t") != "2.0" {
			return &rVia
		}
	case *sip.ContactHeader:
		return checkContact(h, st, isReq)
	case *sip.ContentTypeHeader:
		if !noCTL(string(*h)) {
			return &rBadChar
		}
		if mt := mediaType(string(*h)); strings.IndexByte(mt, '/') <= 0 {
			return &rContentType
		}
	case *sip.RouteHeader:
		if !uriText(&h.Address) {
			return &rBadChar
		}
	case *sip.RecordRouteHeader:
		if !uriText(&h.Address) {
			return &rBadChar
		}
	case *sip.ReferToHeader:
		if !uriText(&h.Address) {
			return &rBadChar
		}
	case *sip.ReferredByHeader:
		if !quotedOK(h.DisplayName) || !uriText(&h.Address) || !paramsOK(h.Params) {
			return &rBadChar
		}
	}
	return nil
}

// checkGeneric checks the headers sipgo keeps as text.
func checkGeneric(k kind, v string, st *scan, isReq bool, o Options) *rule {
	switch k {
	case kExpires:
		st.expires = v
		if _, ok := deltaSeconds(v); !ok {
			return &rExpires
		}
	case kMinExpires:
		if _, ok := deltaSeconds(v); !ok {
			return &rMinExpires
		}
	case kSessionExpires:
		if !leadingDelta(v) {
			return &rSessionExpires
		}
	case kMinSE:
		if !leadingDelta(v) {
			return &rMinSE
		}
	case kRetryAfter:
		if !leadingDelta(v) {
			return &rRetryAfter
		}
	case kRSeq:
		if n, ok := deltaSeconds(v); !ok || n == 0 || n > 1<<31-1 {
			return &rRSeq
		}
	case kRAck:
		if !rackOK(v) {
			return &rRAck
		}
	case kWarning:
		if !warningOK(v) {
			return &rWarning
		}
	case kRequire, kProxyRequire:
		if !isReq {
			return nil
		}
		var bad *rule
		forEachItem(v, func(tag string) bool {
			if tag == "" {
				return true
			}
			if !isToken(tag) {
				bad = &rOptionTag
				return false
			}
			if !containsFold(o.SupportedExtensions, tag) {
				st.badExtension = true
			}
			return true
		})
		return bad
	}
	return nil
}

// acceptScan notes whether an Accept header of an INVITE lets us answer
// with SDP (RFC 3261 21.4.7: otherwise 406).
func acceptScan(v string, st *scan) {
	forEachItem(v, func(item string) bool {
		if item == "" {
			return true
		}
		st.acceptSeen = true
		switch mt := mediaType(item); {
		case strings.EqualFold(mt, "application/sdp"), strings.EqualFold(mt, "application/*"), mt == "*/*":
			st.acceptSDP = true
			return false
		}
		return true
	})
}

// unsupported builds the Unsupported header of a 420: every option tag of
// Require and Proxy-Require we do not support, in order, once each.
func unsupported(req *sip.Request, o Options) sip.Header {
	var tags []string
	for _, h := range req.Headers() {
		k, generic := kindOf(h)
		if !generic || (k != kRequire && k != kProxyRequire) {
			continue
		}
		forEachItem(h.Value(), func(tag string) bool {
			if tag != "" && !containsFold(o.SupportedExtensions, tag) && !containsFold(tags, tag) {
				tags = append(tags, tag)
			}
			return true
		})
	}
	return sip.NewHeader("Unsupported", strings.Join(tags, ", "))
}

func checkRURI(u *sip.Uri) *rule {
	if u.Wildcard || !isScheme(u.Scheme) || !uriText(u) {
		return &rRURI
	}
	if !isSIP(u.Scheme) {
		if u.Raw() == "" || strings.ContainsAny(u.Raw(), " \t") {
			return &rRURI
		}
		return nil
	}
	ok, v6 := hostOK(u.Host)
	if v6 {
		return &rIPv6Unbracketed
	}
	if !ok || u.Port < 0 || u.Port > 65535 || strings.ContainsAny(u.User, " \t") {
		return &rRURI
	}
	if len(u.Headers) > 0 {
		return &rRURIHeaders
	}
	return nil
}

func isSIP(scheme string) bool {
	return strings.EqualFold(scheme, "sip") || strings.EqualFold(scheme, "sips")
}

// nameAddrOK checks To and From: no control characters, and in a request
// a sip, sips or tel URI (or one of AllowedSchemes) with a host for SIP.
// The host is not checked further: sipgo keeps the LWS of valid
// messages such as RFC 4475 wsinv.dat in it.
func nameAddrOK(display string, u *sip.Uri, params sip.HeaderParams, isReq bool, o Options) bool {
	if !quotedOK(display) || !uriText(u) || !paramsOK(params) || u.Wildcard {
		return false
	}
	if !isReq {
		return true
	}
	switch {
	case isSIP(u.Scheme):
		return strings.Trim(u.Host, " \t") != ""
	case strings.EqualFold(u.Scheme, "tel"), containsFold(o.AllowedSchemes, u.Scheme):
		return u.Raw() != ""
	}
	return false
}

func checkContact(c *sip.ContactHeader, st *scan, isReq bool) *rule {
	if c.Address.Wildcard {
		st.wildcard = true
		return nil
	}
	if !quotedOK(c.DisplayName) || !uriText(&c.Address) || !paramsOK(c.Params) {
		return &rBadChar
	}
	if isReq {
		// A Contact of a request is where we send requests later: it must
		// be a SIP or SIPS URI (RFC 3261 8.1.1.8).
		if !isSIP(c.Address.Scheme) {
			return &rContactScheme
		}
		if ok, _ := hostOK(strings.Trim(c.Address.Host, " \t")); !ok {
			return &rContact
		}
	}
	for _, p := range c.Params {
		if strings.EqualFold(strings.Trim(p.K, " \t"), "expires") {
			if _, ok := deltaSeconds(p.V); !ok {
				return &rContactExpires
			}
		}
	}
	return nil
}

// topVia checks the Via the answer goes to: SIP/2.0, a transport token, a
// host. A missing branch or one without the magic cookie is tolerated
// (RFC 2543 peers, RFC 4475 inv2543.dat); a branch that is the bare
// cookie is not (RFC 4475 3.2.1): it would merge every such request into
// one transaction.
func topVia(v *sip.ViaHeader) *rule {
	if v == nil {
		return &rVia
	}
	if !strings.EqualFold(strings.Trim(v.ProtocolName, " \t"), "SIP") ||
		strings.Trim(v.ProtocolVersion, " \t") != "2.0" ||
		!isToken(strings.Trim(v.Transport, " \t")) ||
		!viaHostOK(v.Host) || v.Port < 0 || v.Port > 65535 {
		return &rVia
	}
	if b, ok := v.Params.Get("branch"); ok && strings.EqualFold(strings.Trim(b, " \t"), "z9hG4bK") {
		return &rViaBareCookie
	}
	return nil
}

func uriText(u *sip.Uri) bool {
	return noCTL(u.Scheme) && noCTL(u.User) && noCTL(u.Password) && noCTL(u.Host) &&
		noCTL(u.Raw()) && paramsOK(u.UriParams) && paramsOK(u.Headers)
}

// paramsOK: no control characters in parameters, even as a quoted-pair:
// sipgo keeps a quoted value without its quotes and writes it back
// unquoted unless it holds LWS.
func paramsOK(p sip.HeaderParams) bool {
	for _, kv := range p {
		if !noCTL(kv.K) || !noCTL(kv.V) {
			return false
		}
	}
	return true
}

// callIDOK: callid = word [ "@" word ].
func callIDOK(s string) bool {
	if s == "" {
		return false
	}
	at := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '@' {
			at++
			if at > 1 || i == 0 || i == len(s)-1 {
				return false
			}
			continue
		}
		if !wordChar[c] {
			return false
		}
	}
	return true
}

// rackOK: RAck = response-num LWS CSeq-num LWS Method (RFC 3262).
func rackOK(v string) bool {
	f := strings.Fields(v)
	if len(f) != 3 || !isToken(f[2]) {
		return false
	}
	a, ok1 := deltaSeconds(f[0])
	b, ok2 := deltaSeconds(f[1])
	return ok1 && ok2 && a > 0 && a <= 1<<31-1 && b <= 1<<31-1
}

// warningOK: warning-value *(COMMA warning-value), warning-value =
// 3DIGIT SP warn-agent SP warn-text (a quoted string).
func warningOK(v string) bool {
	s := strings.Trim(v, " \t")
	for {
		if len(s) < 4 || s[3] != ' ' {
			return false
		}
		for i := 0; i < 3; i++ {
			if s[i] < '0' || s[i] > '9' {
				return false
			}
		}
		s = s[4:]
		sp := strings.IndexByte(s, ' ')
		if sp <= 0 {
			return false
		}
		s = strings.TrimLeft(s[sp+1:], " \t")
		if s == "" || s[0] != '"' {
			return false
		}
		end, esc := -1, false
		for i := 1; i < len(s); i++ {
			switch {
			case esc:
				esc = false
			case s[i] == '\\':
				esc = true
			case s[i] == '"':
				end = i
			}
			if end >= 0 {
				break
			}
		}
		if end < 0 {
			return false
		}
		s = strings.TrimLeft(s[end+1:], " \t")
		if s == "" {
			return true
		}
		if s[0] != ',' {
			return false
		}
		s = strings.TrimLeft(s[1:], " \t")
	}
}
