package topology

import (
	"strings"

	"github.com/emiago/sipgo/sip"
)

// compact maps RFC 3261 / RFC 3265 / RFC 3515 compact header names to their
// long form, so an allow-list written in long form also matches compact ones.
var compact = map[string]string{
	"a": "accept-contact", "b": "referred-by", "c": "content-type",
	"d": "request-disposition", "e": "content-encoding", "f": "from",
	"i": "call-id", "j": "reject-contact", "k": "supported", "l": "content-length",
	"m": "contact", "n": "identity-info", "o": "event", "r": "refer-to",
	"s": "subject", "t": "to", "u": "allow-events", "v": "via", "x": "session-expires",
	"y": "identity",
}

// never are headers the B2BUA always generates itself: they describe the
// path or the dialog of one leg and must not cross to the other.
var never = map[string]bool{
	"via": true, "route": true, "record-route": true, "contact": true,
	"from": true, "to": true, "call-id": true, "cseq": true,
	"max-forwards": true, "content-length": true,
	"user-agent": true, "server": true,
	"path": true, "service-route": true, "history-info": true, "diversion": true,
	"p-charging-vector": true, "p-visited-network-id": true,
}

// CanonicalName returns the lower-case long form of a header name.
func CanonicalName(name string) string {
	n := strings.ToLower(strings.TrimSpace(name))
	if long, ok := compact[n]; ok {
		return long
	}
	return n
}

// canonicalBytes appends CanonicalName(name) to dst: the same name, without
// allocating a string for it (Copy runs for every relayed message).
func canonicalBytes(dst []byte, name string) []byte {
	name = strings.TrimSpace(name)
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 0x80 { // not a token: lower it as CanonicalName does
			return append(dst[:0], CanonicalName(name)...)
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	if long, ok := compact[string(dst)]; ok {
		return append(dst[:0], long...)
	}
	return dst
}

// HeaderFilter decides which headers cross from one leg to the other.
// It is immutable and safe for concurrent use.
type HeaderFilter struct {
	allow map[string]bool
}

// NewHeaderFilter builds a filter from an allow-list of header names (any
// case, long or compact form). Names in the never-copied set are ignored.
func NewHeaderFilter(allow []string) *HeaderFilter {
	f := &HeaderFilter{allow: make(map[string]bool, len(allow))}
	for _, a := range allow {
		n := CanonicalName(a)
		if n == "" || never[n] {
			continue
		}
		f.allow[n] = true
	}
	return f
}

// Allowed reports whether a header of this name may be copied between legs.
func (f *HeaderFilter) Allowed(name string) bool {
	n := CanonicalName(name)
	return !never[n] && f.allow[n]
}

// Message is the part of a sipgo request or response the filter needs;
// *sip.Request and *sip.Response satisfy it.
type Message interface {
	Headers() []sip.Header
	GetHeader(name string) sip.Header
	AppendHeader(h sip.Header)
}

// Copy appends to dst a clone of every header of src that the filter allows,
// in src's order. skip names headers (lower-case long form) the caller sets
// itself on dst and that must not be copied even if allowed.
func (f *HeaderFilter) Copy(dst, src Message, skip ...string) {
	var buf [64]byte
	for _, h := range src.Headers() {
		n := canonicalBytes(buf[:0], h.Name())
		if never[string(n)] || !f.allow[string(n)] || contains(skip, n) {
			continue
		}
		if string(n) == "content-type" {
			// Content-Type is a typed header: set once, never duplicated.
			if dst.GetHeader("Content-Type") != nil {
				continue
			}
		}
		dst.AppendHeader(sip.HeaderClone(h))
	}
}

func contains(list []string, s []byte) bool {
	for _, v := range list {
		if v == string(s) {
			return true
		}
	}
	return false
}
