package sbc

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/internal/testpolicy"
	"github.com/sbc-project/sbc/policy"
)

// wssEnv is an SBC with a WSS listener on the external realm (Origin
// https://app.example.test, path /sip), a trunk for the browsers'
// loopback source, and a UDP backend.
type wssEnv struct {
	pki     *testPKI
	sbc     *SBC
	backend *sipua.Backend
	addr    string
	ctx     context.Context
	from    string // the clients' source address (default callerIP, the trunk)
}

const wssOrigin = "https://app.example.test"

func newWSSEnv(t *testing.T) *wssEnv { t.Helper(); return newWSSEnvWith(t, nil) }

// newWSSEnvWith is newWSSEnv with the policy changed by edit.
func newWSSEnvWith(t *testing.T, edit func(*testpolicy.Policy)) *wssEnv {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	k := newTestPKI(t)
	b, err := sipua.NewBackend(sipua.BackendOptions{UDP: backendIP + ":0", Logger: testLogger()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	pb := testpolicy.New(sbcExtIP, sbcIntIP, b.Addr())
	pb.Server = testpolicy.Server{UserAgent: "TestSBC", LogLevel: "debug"}
	ext := pb.Realm("external")
	ext.Listeners = append(ext.Listeners, testpolicy.Listener{Transport: "wss", Bind: sbcExtIP + ":0",
		Path: "/sip", Origins: []string{wssOrigin},
		TLS: &testpolicy.ListenerTLS{CertFile: k.file("sbc"), KeyFile: k.key("sbc")}})
	tr := pb.Trunk("carrier")
	tr.Sources = []string{callerIP + "/32"}
	tr.AllowRegister = true
	tr.RegisterDomains = []string{"example.test"}
	pb.Routing = &testpolicy.Routing{DefaultPool: "pbx", TargetTimeout: policy.D(2 * time.Second), MaxAttempts: 1}
	if edit != nil {
		edit(pb)
	}
	s := startSBC(t, pb.Parse(t), Options{Logger: testLogger()})
	la, ok := s.ListenAddr("external", "wss")
	if !ok {
		t.Fatal("no wss listener")
	}
	return &wssEnv{pki: k, sbc: s, backend: b, addr: la.String(), ctx: ctx, from: callerIP}
}

// wsClient is a browser-like SIP-over-WebSocket client: Via and Contact
// hosts are *.invalid, one SIP message per text frame.
type wsClient struct {
	conn net.Conn
	host string // its .invalid host
}

func (e *wssEnv) dial(origin, path string) (*wsClient, *http.Response, error) {
	d := ws.Dialer{
		Protocols: []string{"sip"},
		TLSConfig: e.pki.client(""),
		NetDial: func(ctx context.Context, network, addr string) (net.Conn, error) {
			nd := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(e.from)}}
			return nd.DialContext(ctx, network, addr)
		},
		Header: ws.HandshakeHeaderHTTP(http.Header{"Origin": []string{origin}}),
	}
	var resp *http.Response
	d.OnStatusError = func(status int, _ []byte, _ io.Reader) { resp = &http.Response{StatusCode: status} }
	conn, _, _, err := d.Dial(e.ctx, "wss://"+e.addr+path)
	if err != nil {
		return nil, resp, err
	}
	return &wsClient{conn: conn, host: "df7jal23ls0d.invalid"}, nil, nil
}

func (c *wsClient) send(msg string) error {
	_ = c.conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	return wsutil.WriteClientText(c.conn, []byte(msg))
}

// read returns the next SIP message the SBC sends (bounded).
func (c *wsClient) read() (string, error) {
	_ = c.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := wsutil.ReadServerText(c.conn)
	return string(b), err
}

// readUntil reads messages until one starts with prefix.
func (c *wsClient) readUntil(prefix string) (string, error) {
	for range 20 {
		m, err := c.read()
		if err != nil {
			return "", err
		}
		if strings.HasPrefix(m, prefix) {
			return m, nil
		}
	}
	return "", fmt.Errorf("no %q in 20 messages", prefix)
}

func (c *wsClient) request(method, ruri, callID, fromTag string, cseq int, extra, body string) string {
	return fmt.Sprintf("%s %s SIP/2.0\r\n"+
		"Via: SIP/2.0/WSS %s;branch=z9hG4bK%s\r\n"+
		"Max-Forwards: 69\r\n"+
		"To: <%s>\r\n"+
		"From: \"Alice\" <sip:alice@example.test>;tag=%s\r\n"+
		"Call-ID: %s\r\n"+
		"CSeq: %d %s\r\n"+
		"Contact: <sip:alice@%s;transport=ws;ob>\r\n"+
		"User-Agent: JsSIP 3.10.1\r\n"+
		"%s"+
		"Content-Length: %d\r\n\r\n%s",
		method, ruri, c.host, newID(), ruri, fromTag, callID, cseq, method, c.host, extra, len(body), body)
}

func headerOf(msg, name string) string {
	for _, l := range strings.Split(msg, "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok && strings.EqualFold(strings.TrimSpace(k), name) {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

// TestWSSCallFromBrowser: a browser-style client calls over WSS; the
// INVITE reaches the UDP backend; the 200 comes back over the WebSocket;
// the backend's BYE reaches the browser over its connection (its Contact
// is a *.invalid name, RFC 7118 5.2).
func TestWSSCallFromBrowser(t *testing.T) {
	e := newWSSEnv(t)
	c, _, err := e.dial(wssOrigin, "/sip")
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	callID, tag := newID(), newID()
	ruri := "sip:100@example.test"
	if err := c.send(c.request("INVITE", ruri, callID, tag, 1, "Content-Type: application/sdp\r\n", string(sipua.SDP("192.0.2.10", 40000, 1, "")))); err != nil {
		t.Fatal(err)
	}
	ok, err := c.readUntil("SIP/2.0 200")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(headerOf(ok, "Contact"), "transport=wss") {
		t.Errorf("Contact of the 200 is %q, want transport=wss", headerOf(ok, "Contact"))
	}
	toTag := headerOf(ok, "To")
	ack := c.request("ACK", ruri, callID, tag, 1, "", "")
	ack = strings.Replace(ack, "To: <"+ruri+">", "To: "+toTag, 1)
	if err := c.send(ack); err != nil {
		t.Fatal(err)
	}
	info, err := e.backend.WaitCall(e.ctx, func(ci sipua.CallInfo) bool { return ci.Acked })
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = e.backend.Bye(e.ctx, info.CallID) }()
	bye, err := c.readUntil("BYE ")
	if err != nil {
		t.Fatal(err)
	}
	// Answer the BYE like a browser: same Via, tags, Call-ID, CSeq.
	resp := "SIP/2.0 200 OK\r\n"
	for _, h := range []string{"Via", "From", "To", "Call-ID", "CSeq"} {
		resp += h + ": " + headerOf(bye, h) + "\r\n"
	}
	resp += "Content-Length: 0\r\n\r\n"
	if err := c.send(resp); err != nil {
		t.Fatal(err)
	}
	if _, err := e.backend.WaitCall(e.ctx, func(ci sipua.CallInfo) bool { return ci.State == sipua.StateEnded }); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(e.sbc.metrics.TLSHandshakes.WithLabelValues("external", "wss", "server", tlsOK)); n != 1 {
		t.Errorf("wss handshakes ok = %v, want 1", n)
	}
	waitCount(e.ctx, t, "connections open", func() float64 {
		return testutil.ToFloat64(e.sbc.metrics.ConnsOpen.WithLabelValues("external", "wss"))
	}, 1)
}

// TestWSSOriginAndPath: a page of another origin, or another path, is
// refused at the upgrade with an HTTP error and counted; the allowed one
// passes and REGISTER is relayed.
func TestWSSOriginAndPath(t *testing.T) {
	e := newWSSEnv(t)
	for _, tc := range []struct {
		origin, path string
		status       int
		reason       reason
	}{
		{"https://evil.example.test", "/sip", 403, reasonWSOrigin},
		{"", "/sip", 403, reasonWSOrigin},
		{wssOrigin, "/other", 404, reasonWSPath},
	} {
		c, resp, err := e.dial(tc.origin, tc.path)
		if err == nil {
			c.conn.Close()
			t.Fatalf("origin %q path %q: upgraded", tc.origin, tc.path)
		}
		if resp == nil || resp.StatusCode != tc.status {
			t.Errorf("origin %q path %q: %v (%v), want HTTP %d", tc.origin, tc.path, resp, err, tc.status)
		}
		waitCount(e.ctx, t, "handshakes "+string(tc.reason), func() float64 {
			return testutil.ToFloat64(e.sbc.metrics.TLSHandshakes.WithLabelValues("external", "wss", "server", string(tc.reason)))
		}, map[reason]float64{reasonWSOrigin: 1, reasonWSPath: 1}[tc.reason]+map[bool]float64{true: 1}[tc.origin == ""])
	}
	c, _, err := e.dial(wssOrigin, "/sip")
	if err != nil {
		t.Fatal(err)
	}
	defer c.conn.Close()
	reg := c.request("REGISTER", "sip:example.test", newID(), newID(), 1, "Expires: 600\r\n", "")
	reg = strings.Replace(reg, "To: <sip:example.test>", "To: <sip:alice@example.test>", 1)
	if err := c.send(reg); err != nil {
		t.Fatal(err)
	}
	// The backend (sipua) does not register: its answer, whatever it is,
	// comes back over the WebSocket.
	res, err := c.read()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(res, "SIP/2.0 ") || strings.HasPrefix(res, "SIP/2.0 403") {
		t.Fatalf("REGISTER answered %q", res)
	}
	if _, err := e.backend.WaitFor(e.ctx, func(m sipua.Msg) bool { return m.Method == "REGISTER" }); err != nil {
		t.Fatalf("REGISTER not relayed: %v", err)
	}
}
