package sbc

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emiago/sipgo/sip"
	"github.com/gobwas/ws"
	"github.com/gobwas/ws/wsutil"
	"github.com/sbc-project/sbc/internal/certgen"
	"github.com/sbc-project/sbc/internal/sipua"
	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/srtp"
)

// TestExamplesRun loads every policy of examples/ as shipped, with the
// certificates `make example-certs` makes (here in a temporary copy of
// the directory), starts it on its own ports (those of sbc.example.toml)
// and checks what its header promises.
func TestExamplesRun(t *testing.T) {
	files, err := filepath.Glob("../examples/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples: %v", err)
	}
	dir := t.TempDir()
	if err := certgen.Examples(filepath.Join(dir, "certs")); err != nil {
		t.Fatal(err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, "certs", "ca.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AppendCertsFromPEM(caPEM)
	checks := map[string]func(t *testing.T, ctx context.Context){
		"tls-carrier.toml": func(t *testing.T, ctx context.Context) {
			carrier, err := tls.LoadX509KeyPair(filepath.Join(dir, "certs", "carrier.pem"), filepath.Join(dir, "certs", "carrier-key.pem"))
			if err != nil {
				t.Fatal(err)
			}
			res, err := tlsOptions(ctx, "127.0.0.1:5061", &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{carrier}})
			if err != nil || !strings.HasPrefix(res, "SIP/2.0 200") {
				t.Errorf("OPTIONS with the carrier certificate: %q, %v", res, err)
			}
			if res, err := tlsOptions(ctx, "127.0.0.1:5061", &tls.Config{RootCAs: roots}); err == nil {
				t.Errorf("OPTIONS without a client certificate answered: %q", res)
			}
		},
		"srtp-carrier.toml": func(t *testing.T, ctx context.Context) {
			c, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.1:0", Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			call, err := c.Dial(ctx, "127.0.0.1:5060", sipua.DialOptions{SDP: sipua.SDP("127.0.0.1", 40000, 1, "sendrecv")})
			if err != nil {
				t.Fatal(err)
			}
			if res, err := call.WaitFinal(ctx); err != nil || res.StatusCode != 488 {
				t.Errorf("a plain RTP offer: %v, %v; want 488", res, err)
			}
			key, err := srtp.GenerateCrypto(1, srtp.AES_CM_128_HMAC_SHA1_80)
			if err != nil {
				t.Fatal(err)
			}
			sdes := strings.Replace(string(sipua.SDP("127.0.0.1", 40002, 1, "sendrecv")), "RTP/AVP", "RTP/SAVP", 1) + "a=crypto:" + key.String() + "\r\n"
			call, err = c.Dial(ctx, "127.0.0.1:5060", sipua.DialOptions{SDP: []byte(sdes)})
			if err != nil {
				t.Fatal(err)
			}
			// No PBX listens at 127.0.0.1:5080 here: the call is taken,
			// then fails on its target, not on its media.
			if res, err := call.WaitFinal(ctx); err != nil || res.StatusCode == 488 {
				t.Errorf("an SDES offer: %v, %v; want it routed to the PBX", res, err)
			}
		},
		"hardened.toml": func(t *testing.T, ctx context.Context) {
			// The admin API over mutual TLS only: the admin certificate
			// may do everything, monitoring reads, nothing else gets in.
			get := func(cert, method, path string) (int, error) {
				cfg := &tls.Config{RootCAs: roots}
				if cert != "" {
					c, err := tls.LoadX509KeyPair(filepath.Join(dir, "certs", cert+".pem"), filepath.Join(dir, "certs", cert+"-key.pem"))
					if err != nil {
						t.Fatal(err)
					}
					cfg.Certificates = []tls.Certificate{c}
				}
				cl := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}}
				var body io.Reader
				if method != http.MethodGet {
					body = strings.NewReader("{}")
				}
				r, _ := http.NewRequestWithContext(ctx, method, "https://127.0.0.1:9090"+path, body)
				if body != nil {
					r.Header.Set("Content-Type", "application/json")
				}
				res, err := cl.Do(r)
				if err != nil {
					return 0, err
				}
				res.Body.Close()
				return res.StatusCode, nil
			}
			if code, err := get("admin", http.MethodGet, "/v1/status"); err != nil || code != 200 {
				t.Errorf("status with the admin certificate: %d %v", code, err)
			}
			if code, err := get("monitoring", http.MethodGet, "/metrics"); err != nil || code != 200 {
				t.Errorf("metrics with the monitoring certificate: %d %v", code, err)
			}
			// The operator outputs are on: the audit file and the CDR file
			// are served to the admin (audit role included).
			for _, path := range []string{"/v1/audit?event=config_changed", "/v1/cdrs"} {
				if code, err := get("admin", http.MethodGet, path); err != nil || code != 200 {
					t.Errorf("%s with the admin certificate: %d %v", path, code, err)
				}
			}
			if code, err := get("monitoring", http.MethodPost, "/v1/drain"); err != nil || code != http.StatusForbidden {
				t.Errorf("drain with the monitoring certificate: %d %v, want 403", code, err)
			}
			if code, err := get("", http.MethodGet, "/healthz"); err == nil {
				t.Errorf("served without a client certificate: %d", code)
			}
			if code, err := get("carrier", http.MethodGet, "/v1/status"); err != nil || code != http.StatusUnauthorized {
				t.Errorf("a certificate without a role: %d %v, want 401", code, err)
			}
			if res, err := http.Get("http://127.0.0.1:9090/v1/status"); err == nil {
				res.Body.Close()
				if res.StatusCode == 200 {
					t.Error("served over plain HTTP")
				}
			}
		},
		"pbx-with-carriers.toml": func(t *testing.T, ctx context.Context) {
			// Carrier A answers until told to refuse (503); carrier B
			// answers; the test is the PBX at 127.0.0.1:5080.
			var refuse atomic.Bool
			a, err := sipua.NewBackend(sipua.BackendOptions{UDP: "127.0.0.1:5070", Logger: testLogger(), Answer: func(*sip.Request) sipua.Plan {
				if refuse.Load() {
					return sipua.Plan{Final: 503}
				}
				return sipua.Plan{}
			}})
			if err != nil {
				t.Fatal(err)
			}
			defer a.Close()
			b, err := sipua.NewBackend(sipua.BackendOptions{UDP: "127.0.0.1:5072", Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer b.Close()
			pbx, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.1:5080", User: "1001", Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer pbx.Close()
			dial := func(number string) *sip.Response {
				call, err := pbx.Dial(ctx, "127.0.0.1:5062", sipua.DialOptions{User: number})
				if err != nil {
					t.Fatal(err)
				}
				res, err := call.WaitFinal(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if res.IsSuccess() {
					_ = call.Bye(ctx)
				}
				return res
			}
			if res := dial("+442079460000"); res.StatusCode != 200 || len(a.Calls()) != 1 || len(b.Calls()) != 0 {
				t.Errorf("E.164 call: %d, carrier A %d calls, B %d; want 200 through A", res.StatusCode, len(a.Calls()), len(b.Calls()))
			}
			refuse.Store(true)
			if res := dial("02079460001"); res.StatusCode != 200 || len(a.Calls()) != 2 || len(b.Calls()) != 1 {
				t.Errorf("national call with A refusing: %d, carrier A %d calls, B %d; want 200 through B", res.StatusCode, len(a.Calls()), len(b.Calls()))
			}
			if ci := b.Calls(); len(ci) == 1 {
				m, _ := b.WaitFor(ctx, func(m sipua.Msg) bool { return m.Method == "INVITE" })
				if !strings.HasPrefix(m.StartLine, "INVITE sip:+442079460001@") || !strings.Contains(m.Header("From"), "+442079460000@") {
					t.Errorf("normalised INVITE to carrier B: %s, From %s", m.StartLine, m.Header("From"))
				}
			}
			if res := dial("+88212345"); res.StatusCode != 403 {
				t.Errorf("a satellite number: %d, want 403", res.StatusCode)
			}
			// Inbound: a carrier's call reaches the PBX.
			c, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.1:0", Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Dial(ctx, "127.0.0.1:5060", sipua.DialOptions{User: "1001"}); err != nil {
				t.Fatal(err)
			}
			if _, err := pbx.WaitFor(ctx, func(m sipua.Msg) bool { return m.Method == "INVITE" }); err != nil {
				t.Errorf("the carrier's call never reached the PBX: %v", err)
			}
		},
		"remote-users.toml": func(t *testing.T, ctx context.Context) {
			// The test is the registrar/PBX at 127.0.0.1:5080 (granting
			// 120 s) and a phone that registers over UDP and answers.
			var mu sync.Mutex
			var contacts []string
			pbx, err := sipua.NewCaller(sipua.CallerOptions{Addr: "127.0.0.1:5080", User: "2000", Logger: testLogger(),
				OnRegister: func(req *sip.Request) *sip.Response {
					res := sip.NewResponseFromRequest(req, 200, "OK", nil)
					for _, h := range req.GetHeaders("Contact") {
						if ct, ok := h.(*sip.ContactHeader); ok && !ct.Address.Wildcard {
							mu.Lock()
							contacts = append(contacts, ct.Address.String())
							mu.Unlock()
							res.AppendHeader(&sip.ContactHeader{Address: *ct.Address.Clone(), Params: sip.HeaderParams{{K: "expires", V: "120"}}})
						}
					}
					return res
				}})
			if err != nil {
				t.Fatal(err)
			}
			defer pbx.Close()
			phone, err := sipua.NewBackend(sipua.BackendOptions{UDP: "127.0.0.1:0", User: "1001", Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			defer phone.Close()
			res, err := phone.Register(ctx, sipua.RegisterOptions{Registrar: "127.0.0.1:5060", User: "1001", Domain: "pbx.example.com", Expires: 3600})
			if err != nil || res.StatusCode != 200 {
				t.Fatalf("REGISTER: %v %v", res, err)
			}
			if ct := res.GetHeader("Contact"); ct == nil || !strings.Contains(ct.Value(), "sip:1001@"+phone.Addr()) || !strings.Contains(ct.Value(), "expires=120") {
				t.Errorf("the phone's 200 Contact %v: want its own, expires=120", ct)
			}
			mu.Lock()
			got := slices.Clone(contacts)
			mu.Unlock()
			var u sip.Uri
			if len(got) != 1 || sip.ParseUri(got[0], &u) != nil || !isToken(u.User) || u.Host != "127.0.0.1" || u.Port != 5062 {
				t.Fatalf("the registrar got Contacts %v, want one sip:<token>@127.0.0.1:5062", got)
			}
			if res, err := phone.Register(ctx, sipua.RegisterOptions{Registrar: "127.0.0.1:5060", User: "1001", Domain: "evil.example.com", Expires: 60}); err != nil || res.StatusCode != 403 {
				t.Errorf("REGISTER for another domain: %v %v, want 403", res, err)
			}
			call, err := pbx.Dial(ctx, "127.0.0.1:5062", sipua.DialOptions{User: u.User})
			if err != nil {
				t.Fatal(err)
			}
			if res, err := call.WaitFinal(ctx); err != nil || res.StatusCode != 200 {
				t.Fatalf("the PBX's call to the phone: %v %v", res, err)
			}
			_ = call.Bye(ctx)
			if _, err := phone.WaitCall(ctx, func(ci sipua.CallInfo) bool { return ci.Acked && ci.Source == "127.0.0.1:5060" }); err != nil {
				t.Errorf("the phone's call did not come through the SBC: %v (%+v)", err, phone.Calls())
			}
			call, err = pbx.Dial(ctx, "127.0.0.1:5062", sipua.DialOptions{User: tokenPrefix + strings.Repeat("z", tokenLen-2)})
			if err != nil {
				t.Fatal(err)
			}
			if res, err := call.WaitFinal(ctx); err != nil || res.StatusCode != 404 {
				t.Errorf("a call to an unknown token: %v %v, want 404", res, err)
			}
		},
		"webrtc-bridge.toml": func(t *testing.T, ctx context.Context) {
			res, err := exampleWS(ctx, roots, "https://127.0.0.1")
			if err != nil || !strings.HasPrefix(res, "SIP/2.0 200") {
				t.Errorf("OPTIONS over wss from https://127.0.0.1: %q, %v", res, err)
			}
		},
		"webrtc-wss.toml": func(t *testing.T, ctx context.Context) {
			if _, err := exampleWS(ctx, roots, "https://evil.example.test"); err == nil {
				t.Errorf("a page of another origin was upgraded")
			}
			res, err := exampleWS(ctx, roots, "https://127.0.0.1")
			if err != nil || !strings.HasPrefix(res, "SIP/2.0 200") {
				t.Errorf("OPTIONS over wss from https://127.0.0.1: %q, %v", res, err)
			}
		},
	}
	for _, f := range files {
		name := filepath.Base(f)
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			copyPath := filepath.Join(dir, name)
			if err := os.WriteFile(copyPath, data, 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := policy.Load(copyPath)
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range p.Realms {
				for _, l := range r.Listeners {
					if a := l.BindAddr.Addr(); !a.IsLoopback() || !examplePorts[l.BindAddr.Port()] {
						t.Errorf("listener %s %s: not on a loopback port of sbc.example.toml", l.Transport, l.BindAddr)
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s, err := New(p, Options{Logger: testLogger()})
			if err != nil {
				t.Fatal(err)
			}
			if err := s.Start(ctx); err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			if check := checks[name]; check != nil {
				check(t, ctx)
			} else {
				t.Errorf("%s has no check in TestExamplesRun: add what its header promises", name)
			}
		})
	}
}

// examplePorts are the ports of sbc.example.toml (DESIGN.md, Examples).
var examplePorts = map[uint16]bool{5060: true, 5061: true, 5062: true, 8443: true, 9090: true}

// exampleWS sends an OPTIONS over wss://127.0.0.1:8443/ from a page of
// origin and returns the status line of the answer.
func exampleWS(ctx context.Context, roots *x509.CertPool, origin string) (string, error) {
	d := ws.Dialer{
		Protocols:     []string{"sip"},
		TLSConfig:     &tls.Config{RootCAs: roots},
		Header:        ws.HandshakeHeaderHTTP(http.Header{"Origin": []string{origin}}),
		OnStatusError: func(int, []byte, io.Reader) {},
	}
	conn, _, _, err := d.Dial(ctx, "wss://127.0.0.1:8443/")
	if err != nil {
		return "", err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(5 * time.Second))
	host := "x" + newID()[:8] + ".invalid"
	msg := "OPTIONS sip:127.0.0.1:8443;transport=ws SIP/2.0\r\n" +
		"Via: SIP/2.0/WSS " + host + ";branch=z9hG4bK" + newID() + "\r\n" +
		"Max-Forwards: 70\r\nFrom: <sip:probe@example.test>;tag=" + newID() + "\r\n" +
		"To: <sip:127.0.0.1:8443>\r\nCall-ID: " + newID() + "\r\nCSeq: 1 OPTIONS\r\n" +
		"Contact: <sip:probe@" + host + ";transport=ws>\r\nContent-Length: 0\r\n\r\n"
	if err := wsutil.WriteClientText(conn, []byte(msg)); err != nil {
		return "", err
	}
	b, err := wsutil.ReadServerText(conn)
	if err != nil {
		return "", err
	}
	line, _, _ := strings.Cut(string(b), "\r\n")
	return line, nil
}
