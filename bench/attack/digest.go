package attack

import (
	"crypto/md5"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"strings"
)

// DigestParams are the inputs of an HTTP digest response as SIP uses it
// (RFC 2617, RFC 7616, RFC 8760).
type DigestParams struct {
	// Algorithm is "MD5" (also when empty), "MD5-sess", "SHA-256" or
	// "SHA-256-sess", case-insensitive.
	Algorithm string
	Username  string
	Realm     string
	Password  string
	Method    string // the request method, e.g. "REGISTER"
	URI       string // the digest-uri, e.g. "sip:example.com"
	Nonce     string
	// QOP is "" (RFC 2069 compatibility), "auth" or "auth-int".
	QOP string
	// NC is the nonce count, 8 hex digits ("00000001"); used with QOP.
	NC string
	// CNonce is the client nonce; used with QOP and the -sess algorithms.
	CNonce string
	// Body is the message body; used with auth-int.
	Body []byte
}

// DigestResponse computes the digest "response" value for p, in lower
// case hex.
func DigestResponse(p DigestParams) (string, error) {
	newHash, sess, err := digestAlgorithm(p.Algorithm)
	if err != nil {
		return "", err
	}
	h := func(parts ...string) string {
		d := newHash()
		for i, s := range parts {
			if i > 0 {
				d.Write([]byte{':'})
			}
			d.Write([]byte(s))
		}
		return hex.EncodeToString(d.Sum(nil))
	}
	ha1 := h(p.Username, p.Realm, p.Password)
	if sess {
		ha1 = h(ha1, p.Nonce, p.CNonce)
	}
	var ha2 string
	switch strings.ToLower(p.QOP) {
	case "", "auth":
		ha2 = h(p.Method, p.URI)
	case "auth-int":
		d := newHash()
		d.Write(p.Body)
		ha2 = h(p.Method, p.URI, hex.EncodeToString(d.Sum(nil)))
	default:
		return "", fmt.Errorf("attack: unsupported digest qop %q", p.QOP)
	}
	if p.QOP == "" {
		return h(ha1, p.Nonce, ha2), nil
	}
	return h(ha1, p.Nonce, p.NC, p.CNonce, strings.ToLower(p.QOP), ha2), nil
}

func digestAlgorithm(alg string) (newHash func() hash.Hash, sess bool, err error) {
	switch strings.ToUpper(alg) {
	case "", "MD5":
		return md5.New, false, nil
	case "MD5-SESS":
		return md5.New, true, nil
	case "SHA-256":
		return sha256.New, false, nil
	case "SHA-256-SESS":
		return sha256.New, true, nil
	}
	return nil, false, fmt.Errorf("attack: unsupported digest algorithm %q", alg)
}

// challenge is a parsed Digest WWW-Authenticate / Proxy-Authenticate.
type challenge struct {
	realm, nonce, opaque, algorithm string
	qop                             []string
	stale                           bool
}

// maxChallenge bounds the header value parseChallenge looks at.
const maxChallenge = 4096

// parseChallenge parses a Digest challenge header value.
func parseChallenge(v string) (challenge, error) {
	var c challenge
	if len(v) > maxChallenge {
		return c, errors.New("attack: challenge too long")
	}
	v = strings.TrimLeft(v, " \t")
	scheme, rest, _ := strings.Cut(v, " ")
	if !strings.EqualFold(scheme, "Digest") {
		return c, fmt.Errorf("attack: challenge scheme %q is not Digest", scheme)
	}
	params, err := parseAuthParams(rest)
	if err != nil {
		return c, err
	}
	for _, kv := range params {
		switch strings.ToLower(kv[0]) {
		case "realm":
			c.realm = kv[1]
		case "nonce":
			c.nonce = kv[1]
		case "opaque":
			c.opaque = kv[1]
		case "algorithm":
			c.algorithm = kv[1]
		case "stale":
			c.stale = strings.EqualFold(kv[1], "true")
		case "qop":
			for q := range strings.SplitSeq(kv[1], ",") {
				if q = strings.TrimSpace(q); q != "" {
					c.qop = append(c.qop, strings.ToLower(q))
				}
			}
		}
	}
	if c.nonce == "" {
		return c, errors.New("attack: challenge without nonce")
	}
	if _, _, err := digestAlgorithm(c.algorithm); err != nil {
		return c, err
	}
	return c, nil
}

// parseAuthParams splits `a=b, c="d, e"` into name/value pairs.
func parseAuthParams(s string) ([][2]string, error) {
	var out [][2]string
	i := 0
	skip := func() {
		for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == ',' || s[i] == '\r' || s[i] == '\n') {
			i++
		}
	}
	for {
		skip()
		if i >= len(s) {
			return out, nil
		}
		j := i
		for i < len(s) && s[i] != '=' && s[i] != ',' && s[i] != ' ' && s[i] != '\t' {
			i++
		}
		name := s[j:i]
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		if i >= len(s) || s[i] != '=' {
			return nil, fmt.Errorf("attack: auth param %q without value", name)
		}
		i++
		for i < len(s) && (s[i] == ' ' || s[i] == '\t') {
			i++
		}
		var val strings.Builder
		if i < len(s) && s[i] == '"' {
			i++
			closed := false
			for i < len(s) {
				ch := s[i]
				i++
				if ch == '\\' && i < len(s) {
					val.WriteByte(s[i])
					i++
					continue
				}
				if ch == '"' {
					closed = true
					break
				}
				val.WriteByte(ch)
			}
			if !closed {
				return nil, fmt.Errorf("attack: auth param %q: unterminated quoted string", name)
			}
		} else {
			j := i
			for i < len(s) && s[i] != ',' && s[i] != ' ' && s[i] != '\t' {
				i++
			}
			val.WriteString(s[j:i])
		}
		if name == "" {
			return nil, errors.New("attack: auth param without name")
		}
		out = append(out, [2]string{name, val.String()})
		if len(out) > 64 {
			return nil, errors.New("attack: too many auth params")
		}
	}
}

// quote makes a quoted-string.
func quote(s string) string {
	return `"` + strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(s) + `"`
}

// authorization builds the Authorization / Proxy-Authorization value
// answering c.
func (c challenge) authorization(username, password, method, uri, cnonce string, nc uint32) (string, error) {
	qop := ""
	for _, q := range c.qop {
		if q == "auth" {
			qop = "auth"
			break
		}
		if q == "auth-int" {
			qop = "auth-int"
		}
	}
	p := DigestParams{
		Algorithm: c.algorithm, Username: username, Realm: c.realm, Password: password,
		Method: method, URI: uri, Nonce: c.nonce, QOP: qop, NC: fmt.Sprintf("%08x", nc), CNonce: cnonce,
	}
	resp, err := DigestResponse(p)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "Digest username=%s, realm=%s, nonce=%s, uri=%s, response=%s",
		quote(username), quote(c.realm), quote(c.nonce), quote(uri), quote(resp))
	if c.algorithm != "" {
		fmt.Fprintf(&b, ", algorithm=%s", c.algorithm)
	}
	if qop != "" {
		fmt.Fprintf(&b, ", cnonce=%s, qop=%s, nc=%s", quote(cnonce), qop, p.NC)
	} else if strings.HasSuffix(strings.ToUpper(c.algorithm), "-SESS") {
		fmt.Fprintf(&b, ", cnonce=%s", quote(cnonce))
	}
	if c.opaque != "" {
		fmt.Fprintf(&b, ", opaque=%s", quote(c.opaque))
	}
	return b.String(), nil
}
