package validate

import "github.com/emiago/sipgo/sip"

// Result is the verdict on an invalid message. A nil *Result means the
// message passed.
//
// Results without a Header are shared, read-only values: do not modify a
// Result you are given. Only the 420 and 415 verdicts, which carry a
// response header, are allocated per call.
type Result struct {
	// Code is the status code to answer with (400, 416, 420, 483, 505, ...).
	// When Drop is set no answer may be sent and Code only tells what a
	// full parse would have earned (for the audit log); it is 0 for
	// responses.
	Code int
	// Reason is the reason phrase for the answer.
	Reason string
	// Header is an extra header the answer must carry (Unsupported for
	// 420, Accept for 415), or nil. Append it to the response as is.
	Header sip.Header
	// Drop means: send nothing, drop the message and count it. It is set
	// for every verdict on a response, on an ACK (which is never
	// answered), and on every verdict of Raw (the read filter has no
	// parsed message to answer).
	Drop bool
	// Why is a stable reason code, usable as a metric label: one of Whys().
	Why string
}

// rule holds the two shapes of one verdict: the answer, and the drop used
// where no answer can be sent.
type rule struct{ ans, drop *Result }

// pick returns the drop shape when the message cannot be answered.
func (r rule) pick(drop bool) *Result {
	if drop {
		return r.drop
	}
	return r.ans
}

var allWhys []string

func def(code int, reason, why string) rule {
	allWhys = append(allWhys, why)
	return rule{
		ans:  &Result{Code: code, Reason: reason, Why: why},
		drop: &Result{Code: code, Reason: reason, Why: why, Drop: true},
	}
}

func bad(why string) rule { return def(400, "Bad Request", why) }

// Whys returns every reason code a Result may carry, in a stable order: a
// bounded label set, for pre-registering counters.
func Whys() []string {
	out := make([]string, len(allWhys))
	copy(out, allWhys)
	return out
}

// Verdicts. The names of the variables follow their Why.
var (
	// Raw-bytes verdicts (also reachable from a parsed message where noted).
	rTooLarge        = def(513, "Message Too Large", "too_large")
	rTooManyHeaders  = bad("too_many_headers")
	rStartLine       = bad("bad_start_line")
	rLineEnding      = bad("bad_line_ending")
	rHeaderLine      = bad("bad_header_line")
	rHeaderName      = bad("bad_header_name")
	rTruncated       = bad("truncated")
	rContentLength   = bad("bad_content_length")
	rCLMismatch      = bad("content_length_mismatch")
	rUnbracketed     = bad("unbracketed_uri")
	rMultiValue      = bad("multiple_values")
	rUnbalancedQuote = bad("unbalanced_quote")
	rStraySeparator  = bad("stray_separator")
	rBadChar         = bad("bad_char")
	rFromTag         = bad("missing_from_tag")
	rNil             = bad("nil_message")
	rVersion         = def(505, "Version Not Supported", "bad_version")
	rVersionSyntax   = bad("bad_version_syntax")
	rMethod          = bad("bad_method")
	rStatus          = bad("bad_status")
	rReasonPhrase    = bad("bad_reason_phrase")
	rScheme          = def(416, "Unsupported URI Scheme", "unsupported_scheme")
	rRURI            = bad("bad_request_uri")
	rRURIHeaders     = bad("request_uri_headers")
	rIPv6Unbracketed = bad("ipv6_unbracketed")
	rCallID          = bad("bad_call_id")
	rCSeq            = bad("bad_cseq")
	rCSeqRange       = bad("cseq_range")
	rCSeqMismatch    = bad("cseq_method_mismatch")
	rMaxFwdZero      = def(483, "Too Many Hops", "max_forwards_zero")
	rMaxFwdRange     = bad("max_forwards_range")
	rTo              = bad("bad_to")
	rFrom            = bad("bad_from")
	rVia             = bad("bad_via")
	rViaBareCookie   = bad("via_branch_bare_cookie")
	rContact         = bad("bad_contact")
	rContactScheme   = bad("contact_scheme")
	rContactWildcard = bad("contact_wildcard")
	rContactExpires  = bad("contact_expires")
	rExpires         = bad("bad_expires")
	rMinExpires      = bad("bad_min_expires")
	rSessionExpires  = bad("bad_session_expires")
	rMinSE           = bad("bad_min_se")
	rRSeq            = bad("bad_rseq")
	rRAck            = bad("bad_rack")
	rRetryAfter      = bad("bad_retry_after")
	rWarning         = bad("bad_warning")
	rOptionTag       = bad("bad_option_tag")
	rNoContentType   = bad("missing_content_type")
	rContentType     = bad("bad_content_type")
	rExtension       = def(420, "Bad Extension", "bad_extension")
	rMediaType       = def(415, "Unsupported Media Type", "unsupported_media_type")
	rNotAcceptable   = def(406, "Not Acceptable", "not_acceptable")
)

// Per-header verdicts, indexed by kind.
var (
	rMissing [numKinds]rule
	rDup     [numKinds]rule
)

func init() {
	for _, k := range []kind{kTo, kFrom, kCallID, kCSeq, kVia, kContentLength} {
		rMissing[k] = bad("missing_header_" + kindWhy[k])
	}
	for _, k := range singleKinds {
		rDup[k] = bad("dup_header_" + kindWhy[k])
	}
	rDup[kContact] = bad("dup_header_contact")
}
