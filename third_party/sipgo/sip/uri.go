package sip

import (
	"io"
	"strconv"
	"strings"
)

// Uri represents a URI used in a SIP message. SIP and SIPS URIs are split
// into their structured fields. The scheme-specific part of every other URI
// is retained without interpretation and is available through [Uri.Raw].
type Uri struct {
	Scheme string

	// raw is the uninterpreted scheme-specific part of a non-SIP URI. Use
	// Raw to read it. It is kept private so callers cannot put a Uri into a
	// state containing both a raw value and parsed SIP fields.
	raw string

	// If value is star (*)
	Wildcard bool

	// if // is present
	HierarhicalSlashes bool

	// The user part of the URI: the 'joe' in sip:joe@bloggs.com
	User string

	// The password field of the URI. This is represented in the URI as joe:hunter2@bloggs.com.
	// Note that if a URI has a password field, it *must* have a user field as well.
	// Note that RFC 3261 strongly recommends against the use of password fields in SIP URIs,
	// as they are fundamentally insecure.
	Password string

	// The host part of the URI. This can be a domain, or a string representation of an IP address.
	Host string

	// The port part of the URI. This is optional, and can be empty.
	Port int

	// Any parameters associated with the URI.
	// These are used to provide information about requests that may be constructed from the URI.
	// (For more details, see RFC 3261 section 19.1.1).
	// These appear as a semicolon-separated list of key=value pairs following the host[:port] part.
	UriParams HeaderParams

	// Any headers to be included on requests constructed from this URI.
	// These appear as a '&'-separated list at the end of the URI, introduced by '?'.
	Headers HeaderParams
}

// String returns the string representation of the URI.
func (uri *Uri) String() string {
	var buffer strings.Builder
	buffer.Grow(uri.stringLenMax())
	uri.StringWrite(&buffer)

	return buffer.String()
}

// stringLenMax bounds the length StringWrite writes, so that String
// sizes its builder once: growing it from nothing took four to six
// allocations for a URI with a user and params (17 per call in the SBC,
// 6 % of its allocations).
func (uri *Uri) stringLenMax() int {
	n := len(uri.Scheme) + len("sip:")
	if uri.raw != "" {
		return n + len(uri.raw)
	}
	// "//", user ":" password "@", "[" host "]", ":" port.
	n += 2 + len(uri.User) + 1 + len(uri.Password) + 1 + len(uri.Host) + 2 + 1 + 20
	for _, hp := range [2]HeaderParams{uri.UriParams, uri.Headers} {
		n++ // ';' or '?'
		for _, kv := range hp {
			n += len(kv.K) + len(kv.V) + 4 // separator, '=' and quotes
		}
	}
	return n
}

// StringWrite writes uri string to buffer
func (uri *Uri) StringWrite(buffer io.StringWriter) {
	// Normally we expect sip or sips, but it can be tel, urn
	scheme := uri.Scheme
	// For backward compatibility. No scheme defaults to sip
	if uri.Scheme == "" {
		scheme = "sip"
	}

	buffer.WriteString(scheme)
	buffer.WriteString(":")
	if uri.raw != "" {
		buffer.WriteString(uri.raw)
		return
	}

	if uri.HierarhicalSlashes {
		buffer.WriteString("//")
	}

	// Optional userinfo part.
	if uri.User != "" {
		buffer.WriteString(uri.User)
		if uri.Password != "" {
			buffer.WriteString(":")
			buffer.WriteString(uri.Password)
		}
		buffer.WriteString("@")
	}

	// Compulsory hostname.
	writeURIHost(buffer, uri.Host)

	// Optional port number.
	if uri.Port > 0 {
		buffer.WriteString(":")
		writeInt(buffer, uri.Port)
	}

	if (uri.UriParams != nil) && uri.UriParams.Length() > 0 {
		buffer.WriteString(";")
		uri.UriParams.ToStringWrite(';', buffer)
	}

	if (uri.Headers != nil) && uri.Headers.Length() > 0 {
		buffer.WriteString("?")
		uri.Headers.ToStringWrite('&', buffer)
	}
}

// Raw returns the uninterpreted scheme-specific part of a non-SIP URI. It
// excludes the scheme and its separating colon. The value is empty for SIP
// and SIPS URIs.
func (uri *Uri) Raw() string {
	return uri.raw
}

// Clone
func (uri *Uri) Clone() *Uri {
	c := *uri
	if uri.UriParams != nil {
		c.UriParams = uri.UriParams.clone()
	}
	if uri.Headers != nil {
		c.Headers = uri.Headers.clone()
	}
	return &c
}

// IsEncrypted returns true if uri is SIPS uri
func (uri *Uri) IsEncrypted() bool {
	return uri.Scheme == "sips"
}

// Endpoint is uri user identifier. user@host[:port]
func (uri *Uri) Endpoint() string {
	addr := uri.User + "@" + uri.Host
	if uri.Port > 0 {
		addr += ":" + strconv.Itoa(uri.Port)
	}
	return addr
}

// Addr is uri part without headers and params. sip[s]:user@host[:port]
func (uri *Uri) Addr() string {
	scheme := uri.Scheme
	// For backward compatibility. No scheme defaults to sip
	if uri.Scheme == "" {
		scheme = "sip"
	}

	addr := uri.Host
	if uri.User != "" {
		addr = uri.User + "@" + addr
	}
	if uri.Port > 0 {
		addr += ":" + strconv.Itoa(uri.Port)
	}

	if uri.IsEncrypted() {
		return "sips:" + addr
	}
	return scheme + ":" + addr
}

// HostPort represents host:port part
func (uri *Uri) HostPort() string {
	p := strconv.Itoa(uri.Port)
	return uri.Host + ":" + p
}

// CloneStrings is Clone with strings of its own: the values of a parsed
// message are substrings of one copy of its header section (fork change
// 9), so a Clone kept after the message keeps that whole section alive.
// A URI kept for long (a dialog's remote target and route set) is copied
// with CloneStrings: its strings then share one new allocation.
func (uri *Uri) CloneStrings() *Uri {
	n := len(uri.Scheme) + len(uri.raw) + len(uri.User) + len(uri.Password) + len(uri.Host)
	for _, kv := range uri.UriParams {
		n += len(kv.K) + len(kv.V)
	}
	for _, kv := range uri.Headers {
		n += len(kv.K) + len(kv.V)
	}
	c := *uri
	c.UriParams, c.Headers = nil, nil
	if uri.UriParams != nil {
		c.UriParams = make(HeaderParams, len(uri.UriParams))
	}
	if uri.Headers != nil {
		c.Headers = make(HeaderParams, len(uri.Headers))
	}
	if n == 0 {
		copy(c.UriParams, uri.UriParams)
		copy(c.Headers, uri.Headers)
		return &c
	}
	var b strings.Builder
	b.Grow(n)
	// Each string is replaced by its offsets in b, then by b's substring.
	type span struct{ from, to int }
	put := func(s string) span {
		f := b.Len()
		b.WriteString(s)
		return span{f, b.Len()}
	}
	scheme, raw, user, pass, host := put(uri.Scheme), put(uri.raw), put(uri.User), put(uri.Password), put(uri.Host)
	spans := make([]span, 0, 2*(len(uri.UriParams)+len(uri.Headers)))
	for _, kv := range uri.UriParams {
		spans = append(spans, put(kv.K), put(kv.V))
	}
	for _, kv := range uri.Headers {
		spans = append(spans, put(kv.K), put(kv.V))
	}
	all := b.String()
	sub := func(s span) string { return all[s.from:s.to] }
	c.Scheme, c.raw, c.User, c.Password, c.Host = sub(scheme), sub(raw), sub(user), sub(pass), sub(host)
	i := 0
	for j := range uri.UriParams {
		c.UriParams[j] = HeaderKV{K: sub(spans[i]), V: sub(spans[i+1])}
		i += 2
	}
	for j := range uri.Headers {
		c.Headers[j] = HeaderKV{K: sub(spans[i]), V: sub(spans[i+1])}
		i += 2
	}
	return &c
}
