package kamailio_test

import (
	"bufio"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// ioTimeout bounds every dial, handshake, read and write of the tests.
const ioTimeout = 5 * time.Second

// sipConn is a SIP client on one stream connection (TLS) or one UDP
// socket: it writes hand-written requests and reads messages.
type sipConn struct {
	conn  net.Conn
	r     *bufio.Reader
	local netip.AddrPort
	proto string // Via transport: "TLS" or "UDP"
	cseq  int
}

// dialTLS connects to addr, completes the handshake and returns the
// connection. With TLS 1.3 a refused client certificate is not an error
// yet: it shows on the first read.
func dialTLS(addr netip.AddrPort, cfg *tls.Config) (*sipConn, error) {
	d := &net.Dialer{Timeout: ioTimeout}
	c, err := tls.DialWithDialer(d, "tcp", addr.String(), cfg)
	if err != nil {
		return nil, err
	}
	return &sipConn{
		conn:  c,
		r:     bufio.NewReader(c),
		local: c.LocalAddr().(*net.TCPAddr).AddrPort(),
		proto: "TLS",
	}, nil
}

func dialUDP(t *testing.T, addr netip.AddrPort) *sipConn {
	t.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(addr))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &sipConn{
		conn:  c,
		r:     bufio.NewReader(c), // one datagram per read; messages are small
		local: c.LocalAddr().(*net.UDPAddr).AddrPort(),
		proto: "UDP",
	}
}

func (s *sipConn) Close() error { return s.conn.Close() }

// message is a parsed SIP request or response.
type message struct {
	first   string // start line
	code    int    // responses only
	headers []string
	body    string
}

// header returns the value of the first header named name (case
// insensitive, full names only).
func (m *message) header(name string) string {
	for _, h := range m.headers {
		k, v, ok := strings.Cut(h, ":")
		if ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (m *message) String() string {
	return m.first + "\r\n" + strings.Join(m.headers, "\r\n") + "\r\n\r\n" + m.body
}

// send writes one message.
func (s *sipConn) send(text string) error {
	_ = s.conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	_, err := io.WriteString(s.conn, text)
	return err
}

// read reads one message.
func (s *sipConn) read() (*message, error) {
	_ = s.conn.SetReadDeadline(time.Now().Add(ioTimeout))
	m := &message{}
	for {
		line, err := s.r.ReadString('\n')
		if err != nil {
			return nil, err
		}
		line = strings.TrimRight(line, "\r\n")
		if m.first == "" {
			if line == "" {
				continue // keepalive CRLFs
			}
			m.first = line
			if rest, ok := strings.CutPrefix(line, "SIP/2.0 "); ok {
				code, _, _ := strings.Cut(rest, " ")
				if m.code, err = strconv.Atoi(code); err != nil {
					return nil, fmt.Errorf("bad status line %q", line)
				}
			}
			continue
		}
		if line == "" {
			break
		}
		m.headers = append(m.headers, line)
	}
	if n, _ := strconv.Atoi(m.header("Content-Length")); n > 0 {
		body := make([]byte, n)
		if _, err := io.ReadFull(s.r, body); err != nil {
			return nil, err
		}
		m.body = string(body)
	}
	return m, nil
}

// final reads until a final response (skipping provisional ones).
func (s *sipConn) final() (*message, error) {
	for {
		m, err := s.read()
		if err != nil {
			return nil, err
		}
		if m.code >= 200 {
			return m, nil
		}
		if m.code == 0 {
			return nil, fmt.Errorf("expected a response, got %q", m.first)
		}
	}
}

// register is one REGISTER of user@domain binding this connection's
// address; authorization, when not empty, is an Authorization header value.
type register struct {
	user, domain  string
	authorization string
	callID        string // the same for every REGISTER of one binding
}

// request writes the REGISTER and returns its final response.
func (s *sipConn) register(r register) (*message, error) {
	s.cseq++
	var b strings.Builder
	fmt.Fprintf(&b, "REGISTER sip:%s SIP/2.0\r\n", r.domain)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;branch=z9hG4bK%s;rport\r\n", s.proto, s.local, token())
	fmt.Fprintf(&b, "Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:%s@%s>;tag=%s\r\n", r.user, r.domain, token())
	fmt.Fprintf(&b, "To: <sip:%s@%s>\r\n", r.user, r.domain)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", r.callID)
	fmt.Fprintf(&b, "CSeq: %d REGISTER\r\n", s.cseq)
	fmt.Fprintf(&b, "Contact: <sip:%s@%s;transport=%s>\r\n", r.user, s.local, strings.ToLower(s.proto))
	fmt.Fprintf(&b, "Expires: 300\r\n")
	if r.authorization != "" {
		fmt.Fprintf(&b, "Authorization: %s\r\n", r.authorization)
	}
	fmt.Fprintf(&b, "Content-Length: 0\r\n\r\n")
	if err := s.send(b.String()); err != nil {
		return nil, err
	}
	return s.final()
}

// simple sends a body-less out-of-dialog request and returns its final
// response.
func (s *sipConn) simple(method, ruri, to string) (*message, error) {
	if err := s.sendSimple(method, ruri, to); err != nil {
		return nil, err
	}
	return s.final()
}

// sendSimple sends a body-less out-of-dialog request.
func (s *sipConn) sendSimple(method, ruri, to string) error {
	s.cseq++
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s SIP/2.0\r\n", method, ruri)
	fmt.Fprintf(&b, "Via: SIP/2.0/%s %s;branch=z9hG4bK%s;rport\r\n", s.proto, s.local, token())
	fmt.Fprintf(&b, "Max-Forwards: 70\r\n")
	fmt.Fprintf(&b, "From: <sip:tester@%s>;tag=%s\r\n", s.local.Addr(), token())
	fmt.Fprintf(&b, "To: <%s>\r\n", to)
	fmt.Fprintf(&b, "Call-ID: %s\r\n", token())
	fmt.Fprintf(&b, "CSeq: %d %s\r\n", s.cseq, method)
	fmt.Fprintf(&b, "Contact: <sip:tester@%s>\r\n", s.local)
	fmt.Fprintf(&b, "Content-Length: 0\r\n\r\n")
	return s.send(b.String())
}

// reply answers request req with code, copying the headers a response
// needs (RFC 3261 8.2.6.2) and adding a To tag.
func (s *sipConn) reply(req *message, code int, reason string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "SIP/2.0 %d %s\r\n", code, reason)
	for _, h := range req.headers {
		k, _, _ := strings.Cut(h, ":")
		switch strings.ToLower(strings.TrimSpace(k)) {
		case "via", "from", "call-id", "cseq", "record-route":
			b.WriteString(h + "\r\n")
		case "to":
			b.WriteString(h + ";tag=" + token() + "\r\n")
		}
	}
	b.WriteString("Content-Length: 0\r\n\r\n")
	return s.send(b.String())
}

// challenge is a parsed Digest WWW-Authenticate header.
type challenge struct {
	realm, nonce, opaque, qop, algorithm string
}

func parseChallenge(h string) (challenge, error) {
	rest, ok := strings.CutPrefix(h, "Digest ")
	if !ok {
		return challenge{}, fmt.Errorf("not a Digest challenge: %q", h)
	}
	var c challenge
	for p := range strings.SplitSeq(rest, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
		v = strings.Trim(v, `"`)
		switch strings.ToLower(k) {
		case "realm":
			c.realm = v
		case "nonce":
			c.nonce = v
		case "opaque":
			c.opaque = v
		case "qop":
			c.qop = v
		case "algorithm":
			c.algorithm = v
		}
	}
	if c.realm == "" || c.nonce == "" {
		return challenge{}, fmt.Errorf("challenge without realm or nonce: %q", h)
	}
	return c, nil
}

// authorization computes the Authorization header value answering c for
// method and uri (RFC 2617, MD5; with qop=auth when offered).
func authorization(c challenge, user, password, method, uri string) string {
	ha1 := md5hex(user + ":" + c.realm + ":" + password)
	ha2 := md5hex(method + ":" + uri)
	h := fmt.Sprintf(`Digest username="%s", realm="%s", nonce="%s", uri="%s", algorithm=MD5`, user, c.realm, c.nonce, uri)
	if c.opaque != "" {
		h += fmt.Sprintf(`, opaque="%s"`, c.opaque)
	}
	offersAuth := false
	for q := range strings.SplitSeq(c.qop, ",") {
		if strings.TrimSpace(q) == "auth" {
			offersAuth = true
		}
	}
	if offersAuth {
		const nc = "00000001"
		cnonce := token()
		resp := md5hex(strings.Join([]string{ha1, c.nonce, nc, cnonce, "auth", ha2}, ":"))
		return h + fmt.Sprintf(`, qop=auth, nc=%s, cnonce="%s", response="%s"`, nc, cnonce, resp)
	}
	return h + fmt.Sprintf(`, response="%s"`, md5hex(ha1+":"+c.nonce+":"+ha2))
}

func md5hex(s string) string {
	sum := md5.Sum([]byte(s))
	return hex.EncodeToString(sum[:])
}

func token() string {
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
