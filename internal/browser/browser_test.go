package browser

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/md5"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo"
	"github.com/emiago/sipgo/sip"
)

const (
	testRealm    = "example.test"
	testUser     = "alice"
	testPassword = "secret"
	testNonce    = "8f3c0a1e5b7d9e2f"
)

// wssServer is a SIP-over-WSS registrar and callee built on sipgo, with an
// Origin check in front of the WebSocket upgrade.
type wssServer struct {
	URL string

	// NoContact makes the 200 to REGISTER list no Contact.
	NoContact atomic.Bool

	mu       sync.Mutex
	requests []*sip.Request
	origins  []string
}

func (s *wssServer) record(req *sip.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, req)
}

func (s *wssServer) seen(method sip.RequestMethod) []*sip.Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []*sip.Request
	for _, r := range s.requests {
		if r.Method == method {
			out = append(out, r)
		}
	}
	return out
}

func (s *wssServer) seenOrigins() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.origins)
}

// startWSS starts the server on 127.0.0.1. allowOrigin, when not empty, is
// the only Origin whose WebSocket upgrade is accepted; others get 403.
// REGISTER is challenged for digest (alice/secret) and then answered 200
// with the Contact; an INVITE to 486 is answered 486, others 180 then 200
// with AnswerSDP.
func startWSS(t *testing.T, allowOrigin string) *wssServer {
	t.Helper()
	return startWSSOn(t, "127.0.0.1:0", allowOrigin)
}

// startWSSOn is startWSS on addr (a loopback one).
func startWSSOn(t *testing.T, addr, allowOrigin string) *wssServer {
	t.Helper()
	s := &wssServer{}
	ua, err := sipgo.NewUA(sipgo.WithUserAgent("harness-test"))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := sipgo.NewServer(ua)
	if err != nil {
		t.Fatal(err)
	}
	srv.OnRegister(func(req *sip.Request, tx sip.ServerTransaction) {
		s.record(req)
		respond(t, tx, registerResponse(req, !s.NoContact.Load()))
	})
	srv.OnInvite(func(req *sip.Request, tx sip.ServerTransaction) {
		s.record(req)
		if req.Recipient.User == "486" {
			respond(t, tx, sip.NewResponseFromRequest(req, 486, "Busy Here", nil))
			return
		}
		respond(t, tx, sip.NewResponseFromRequest(req, 180, "Ringing", nil))
		answer, err := AnswerSDP(req.Body())
		if err != nil {
			t.Errorf("offer: %v\n%s", err, req.Body())
			respond(t, tx, sip.NewResponseFromRequest(req, 488, "Not Acceptable Here", nil))
			return
		}
		res := sip.NewResponseFromRequest(req, 200, "OK", answer)
		res.AppendHeader(sip.NewHeader("Content-Type", "application/sdp"))
		res.AppendHeader(sip.NewHeader("Contact", "<sip:callee@127.0.0.1;transport=ws>"))
		respond(t, tx, res)
	})
	srv.OnAck(func(req *sip.Request, tx sip.ServerTransaction) { s.record(req) })
	srv.OnBye(func(req *sip.Request, tx sip.ServerTransaction) {
		s.record(req)
		respond(t, tx, sip.NewResponseFromRequest(req, 200, "OK", nil))
	})

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ol := newOriginListener(tls.NewListener(ln, selfSignedTLS(t)), allowOrigin, func(origin string) {
		s.mu.Lock()
		s.origins = append(s.origins, origin)
		s.mu.Unlock()
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.ServeWSS(ol); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("ServeWSS: %v", err)
		}
	}()
	t.Cleanup(func() {
		ol.Close()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Error("ServeWSS did not return")
		}
		srv.Close()
		ua.Close()
	})
	s.URL = "wss://" + ln.Addr().String()
	return s
}

func respond(t *testing.T, tx sip.ServerTransaction, res *sip.Response) {
	if err := tx.Respond(res); err != nil {
		t.Errorf("respond %d: %v", res.StatusCode, err)
	}
}

// registerResponse challenges a REGISTER without Authorization, refuses a
// wrong one with 403 and answers a right one 200 with its Contact bound.
func registerResponse(req *sip.Request, withContact bool) *sip.Response {
	auth := req.GetHeader("Authorization")
	if auth == nil {
		res := sip.NewResponseFromRequest(req, 401, "Unauthorized", nil)
		res.AppendHeader(sip.NewHeader("WWW-Authenticate",
			fmt.Sprintf(`Digest realm="%s", nonce="%s", qop="auth", algorithm=MD5`, testRealm, testNonce)))
		return res
	}
	if !digestOK(auth.Value(), "REGISTER", testPassword) {
		return sip.NewResponseFromRequest(req, 403, "Forbidden", nil)
	}
	res := sip.NewResponseFromRequest(req, 200, "OK", nil)
	// JsSIP takes a 2xx only when it lists its own Contact.
	if c := req.Contact(); c != nil && withContact {
		res.AppendHeader(sip.NewHeader("Contact", c.Value()+";expires=600"))
	}
	res.AppendHeader(sip.NewHeader("Expires", "600"))
	return res
}

// digestOK checks an RFC 2617 digest response with MD5 and qop=auth.
func digestOK(header, method, password string) bool {
	p := map[string]string{}
	for _, kv := range strings.Split(strings.TrimPrefix(header, "Digest "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		p[k] = strings.Trim(v, `"`)
	}
	h := func(s string) string { sum := md5.Sum([]byte(s)); return hex.EncodeToString(sum[:]) }
	if p["username"] != testUser || p["realm"] != testRealm || p["nonce"] != testNonce || p["qop"] != "auth" {
		return false
	}
	ha1 := h(p["username"] + ":" + p["realm"] + ":" + password)
	ha2 := h(method + ":" + p["uri"])
	return p["response"] == h(ha1+":"+p["nonce"]+":"+p["nc"]+":"+p["cnonce"]+":"+p["qop"]+":"+ha2)
}

func selfSignedTLS(t *testing.T) *tls.Config {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}

// originListener reads the HTTP head of each accepted connection (after
// TLS) and refuses the upgrade with 403 when its Origin is not allowed;
// allowed connections are handed on with the head to be read again.
type originListener struct {
	net.Listener
	allow  string
	onSeen func(origin string)
	conns  chan net.Conn
	done   chan struct{}
	once   sync.Once
}

func newOriginListener(inner net.Listener, allow string, onSeen func(string)) *originListener {
	l := &originListener{Listener: inner, allow: allow, onSeen: onSeen, conns: make(chan net.Conn), done: make(chan struct{})}
	go func() {
		for {
			c, err := inner.Accept()
			if err != nil {
				l.Close()
				return
			}
			go l.check(c)
		}
	}()
	return l
}

func (l *originListener) check(c net.Conn) {
	if err := c.SetDeadline(time.Now().Add(10 * time.Second)); err != nil {
		c.Close()
		return
	}
	br := bufio.NewReader(c)
	var head bytes.Buffer
	for {
		line, err := br.ReadSlice('\n')
		head.Write(line)
		if err != nil || head.Len() > 16<<10 {
			c.Close()
			return
		}
		if len(bytes.TrimRight(line, "\r\n")) == 0 {
			break
		}
	}
	req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(head.Bytes())))
	if err != nil {
		c.Close()
		return
	}
	origin := req.Header.Get("Origin")
	l.onSeen(origin)
	if l.allow != "" && origin != l.allow {
		_, _ = io.WriteString(c, "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		c.Close()
		return
	}
	_ = c.SetDeadline(time.Time{})
	pc := &prefixConn{Conn: c, r: io.MultiReader(bytes.NewReader(head.Bytes()), br)}
	select {
	case l.conns <- pc:
	case <-l.done:
		c.Close()
	}
}

func (l *originListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *originListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return l.Listener.Close()
}

type prefixConn struct {
	net.Conn
	r io.Reader
}

func (c *prefixConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func testContext(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func init() {
	// sipgo logs every refused upgrade at error level; keep test output to
	// what fails.
	slog.SetDefault(slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func TestRegisterDigest(t *testing.T) {
	Require(t)
	s := startWSS(t, "")
	res, err := Register(testContext(t), t, RegisterOptions{
		WSSURL:   s.URL,
		URI:      "sip:alice@example.test",
		Password: testPassword,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || !res.Registered || res.Error != "" {
		t.Fatalf("result: status %d %q, registered %v, error %q, cause %q", res.Status, res.Reason, res.Registered, res.Error, res.Cause)
	}
	regs := s.seen(sip.REGISTER)
	if len(regs) != 2 {
		t.Fatalf("server saw %d REGISTERs, want 2 (challenged, then authorized)", len(regs))
	}
	if regs[0].GetHeader("Authorization") != nil || regs[1].GetHeader("Authorization") == nil {
		t.Errorf("Authorization on the REGISTERs: first %v, second %v", regs[0].GetHeader("Authorization"), regs[1].GetHeader("Authorization"))
	}
	for i, r := range regs {
		via, contact := r.Via(), r.Contact()
		if via == nil || contact == nil {
			t.Fatalf("REGISTER %d lacks Via or Contact:\n%s", i, r)
		}
		if via.Transport != "WSS" || !strings.HasSuffix(via.Host, ".invalid") {
			t.Errorf("REGISTER %d Via %s, want SIP/2.0/WSS <random>.invalid", i, via.Value())
		}
		if !strings.HasSuffix(contact.Address.Host, ".invalid") {
			t.Errorf("REGISTER %d Contact %s, want a host in .invalid", i, contact.Value())
		}
	}
	if got := s.seenOrigins(); len(got) != 1 || got[0] != res.Origin || !strings.HasPrefix(res.Origin, "https://127.0.0.1:") {
		t.Errorf("Origins of the upgrades %q, page origin %q", got, res.Origin)
	}
	var sent, received int
	for _, m := range res.Messages {
		switch m.Dir {
		case "sent":
			sent++
		case "received":
			received++
		}
	}
	if sent != 2 || received != 2 {
		t.Errorf("page saw %d sent and %d received SIP messages, want 2 and 2", sent, received)
	}
}

func TestRegisterWrongPassword(t *testing.T) {
	Require(t)
	s := startWSS(t, "")
	res, err := Register(testContext(t), t, RegisterOptions{
		WSSURL:   s.URL,
		URI:      "sip:alice@example.test",
		Password: "wrong",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 403 {
		t.Fatalf("result: status %d %q, error %q, cause %q; want 403", res.Status, res.Reason, res.Error, res.Cause)
	}
}

func TestRegisterNoContactInOK(t *testing.T) {
	Require(t)
	s := startWSS(t, "")
	s.NoContact.Store(true)
	res, err := Register(testContext(t), t, RegisterOptions{
		WSSURL:   s.URL,
		URI:      "sip:alice@example.test",
		Password: testPassword,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.Registered || !strings.Contains(res.Cause, "Contact") {
		t.Fatalf("result: status %d, registered %v, cause %q; want 200 not taken for want of a Contact", res.Status, res.Registered, res.Cause)
	}
}

func TestRegisterOrigin(t *testing.T) {
	Require(t)
	const allowed = "https://app.example.test:8443"
	s := startWSS(t, allowed)
	for _, tc := range []struct {
		origin     string
		wantStatus int
		wantError  string
	}{
		{allowed, 200, ""},
		{"https://evil.example.test", 0, ErrConnectionFailed},
		{"", 0, ErrConnectionFailed},
	} {
		t.Run(cmp.Or(tc.origin, "default"), func(t *testing.T) {
			res, err := Register(testContext(t), t, RegisterOptions{
				WSSURL:   s.URL,
				URI:      "sip:alice@example.test",
				Password: testPassword,
				Origin:   tc.origin,
			})
			if err != nil {
				t.Fatal(err)
			}
			if tc.origin != "" && res.Origin != tc.origin {
				t.Errorf("page origin %q, want %q", res.Origin, tc.origin)
			}
			if res.Status != tc.wantStatus || res.Error != tc.wantError {
				t.Errorf("result: status %d, error %q (close code %d); want %d, %q", res.Status, res.Error, res.WSCloseCode, tc.wantStatus, tc.wantError)
			}
			if got := s.seenOrigins(); len(got) == 0 || got[len(got)-1] != res.Origin {
				t.Errorf("last Origin seen by the server %q, page origin %q", got, res.Origin)
			}
		})
	}
}

func TestCall(t *testing.T) {
	Require(t)
	s := startWSS(t, "")
	res, err := Call(testContext(t), t, CallOptions{
		WSSURL:   s.URL,
		URI:      "sip:alice@example.test",
		Password: testPassword,
		Target:   "sip:100@example.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.Error != "" || res.Cause != "" {
		t.Fatalf("result: status %d %q, error %q, cause %q", res.Status, res.Reason, res.Error, res.Cause)
	}
	if !slices.Contains(res.Provisional, 180) {
		t.Errorf("provisional responses %v, want a 180", res.Provisional)
	}
	if res.ByeStatus != 200 {
		t.Errorf("BYE status %d, want 200", res.ByeStatus)
	}
	invites := s.seen(sip.INVITE)
	if len(invites) != 1 {
		t.Fatalf("server saw %d INVITEs, want 1", len(invites))
	}
	if body := string(invites[0].Body()); !strings.Contains(body, "m=audio") {
		t.Errorf("INVITE offer has no audio stream:\n%s", body)
	}
	if n := len(s.seen(sip.ACK)); n != 1 {
		t.Errorf("server saw %d ACKs, want 1", n)
	}
	if n := len(s.seen(sip.BYE)); n != 1 {
		t.Errorf("server saw %d BYEs, want 1", n)
	}
}

func TestCallBusy(t *testing.T) {
	Require(t)
	s := startWSS(t, "")
	res, err := Call(testContext(t), t, CallOptions{
		WSSURL:   s.URL,
		URI:      "sip:alice@example.test",
		Password: testPassword,
		Target:   "sip:486@example.test",
		Register: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 486 || res.Cause != "Busy" {
		t.Fatalf("result: status %d %q, error %q, cause %q; want 486 Busy", res.Status, res.Reason, res.Error, res.Cause)
	}
	if n := len(s.seen(sip.REGISTER)); n != 2 {
		t.Errorf("server saw %d REGISTERs before the call, want 2", n)
	}
}

func TestPageOrigin(t *testing.T) {
	for _, tc := range []struct {
		in, origin, mapFrom string
		bad                 bool
	}{
		{"", "https://127.0.0.1:4321", "", false},
		{"https://app.example.test", "https://app.example.test", "app.example.test:443", false},
		{"https://app.example.test:8443/", "https://app.example.test:8443", "app.example.test:8443", false},
		{"https://[::1]:8443", "https://[::1]:8443", "[::1]:8443", false},
		{"http://app.example.test", "", "", true},
		{"https://app.example.test/path", "", "", true},
		{"app.example.test", "", "", true},
	} {
		origin, mapFrom, err := pageOrigin(tc.in, 4321)
		if (err != nil) != tc.bad || origin != tc.origin || mapFrom != tc.mapFrom {
			t.Errorf("pageOrigin(%q) = %q, %q, %v; want %q, %q, error %v", tc.in, origin, mapFrom, err, tc.origin, tc.mapFrom, tc.bad)
		}
	}
}

func TestAnswerSDP(t *testing.T) {
	offer := "v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\na=group:BUNDLE 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111 0\r\na=mid:0\r\na=rtpmap:111 opus/48000/2\r\na=rtpmap:0 PCMU/8000\r\n"
	ans, err := AnswerSDP([]byte(offer))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"a=mid:0\r\n", "m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "a=rtpmap:111 opus/48000/2\r\n", "a=setup:active\r\n"} {
		if !strings.Contains(string(ans), want) {
			t.Errorf("answer lacks %q:\n%s", want, ans)
		}
	}
	if _, err := AnswerSDP([]byte("v=0\r\nm=video 9 RTP/AVP 96\r\n")); err == nil {
		t.Error("AnswerSDP accepted an offer without audio")
	}
}

func TestRegisterNoServer(t *testing.T) {
	Require(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "wss://" + ln.Addr().String()
	ln.Close()
	res, err := Register(testContext(t), t, RegisterOptions{WSSURL: url, URI: "sip:alice@example.test"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Error != ErrConnectionFailed || res.Status != 0 {
		t.Fatalf("result: status %d, error %q; want %q", res.Status, res.Error, ErrConnectionFailed)
	}
}

func TestMissingChromium(t *testing.T) {
	t.Setenv("CHROMIUM", "/nonexistent/chromium")
	if _, _, err := locate(); err == nil || !strings.Contains(err.Error(), "CHROMIUM") {
		t.Fatalf("locate with a missing $CHROMIUM: %v", err)
	}
}

func TestRegisterIPv6(t *testing.T) {
	Require(t)
	if ln, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		ln.Close()
	}
	const origin = "https://[::1]:8443"
	s := startWSSOn(t, "[::1]:0", origin)
	res, err := Register(testContext(t), t, RegisterOptions{
		WSSURL:   s.URL,
		URI:      "sip:alice@example.test",
		Password: testPassword,
		Origin:   origin,
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != 200 || res.Origin != origin {
		t.Fatalf("result: status %d, error %q, origin %q; want 200 from %s", res.Status, res.Error, res.Origin, origin)
	}
}
