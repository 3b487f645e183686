package kamailio_test

import (
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/internal/kamailio"
)

const realm = "example.test"

// pki is the certificates of one test: a CA, Kamailio's server certificate
// (IP SAN 127.0.0.1), the SBC's client certificate (CN "sbc") from the
// same CA, and a client certificate with the same CN from another CA.
type pki struct {
	ca, otherCA *testCA
	server      issued
	client      issued
	foreign     issued
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{ca: newCA(t, "test-ca"), otherCA: newCA(t, "other-ca")}
	p.server = p.ca.issue(t, "kamailio", net.IPv4(127, 0, 0, 1), net.IPv6loopback)
	p.client = p.ca.issue(t, "sbc")
	p.foreign = p.otherCA.issue(t, "sbc")
	return p
}

// clientTLS returns the configuration of a client that verifies
// Kamailio's certificate and presents certs (none, one).
func (p *pki) clientTLS(certs ...tls.Certificate) *tls.Config {
	return &tls.Config{
		RootCAs:      p.ca.pool(),
		ServerName:   "127.0.0.1",
		Certificates: certs,
		MinVersion:   tls.VersionTLS12,
	}
}

func (p *pki) options() kamailio.Options {
	return kamailio.Options{
		CertFile:          p.server.certFile,
		KeyFile:           p.server.keyFile,
		CAFile:            p.ca.file,
		RequireClientCert: true,
		Realm:             realm,
	}
}

// requestLog is the start of the line Kamailio logs for a request.
func requestLog(method, proto string, c *sipConn) string {
	return fmt.Sprintf("%s request method=%s proto=%s src=%s", kamailio.LogPrefix, method, proto, c.local)
}

// (a) A REGISTER over mutual TLS with the SBC's certificate is saved, and
// Kamailio's log shows the certificate's common name.
func TestRegisterMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	k := kamailio.Start(t, p.options())

	c, err := dialTLS(k.Addr("tls"), p.clientTLS(p.client.pair))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	res, err := c.register(register{user: "sbc", domain: realm, callID: token()})
	if err != nil {
		t.Fatalf("REGISTER: %v", err)
	}
	if res.code != 200 {
		t.Fatalf("REGISTER: got %q, want 200\n%s", res.first, res)
	}
	if got := res.header("Contact"); !strings.Contains(got, c.local.String()) {
		t.Errorf("200 Contact %q does not list the binding %v", got, c.local)
	}
	want := requestLog("REGISTER", "tls", c) + ` ruri=sip:` + realm + ` tls_cn="sbc" tls_verified=1`
	if !k.WaitLog(want, ioTimeout) {
		t.Errorf("Kamailio's log lacks %q", want)
	}
}

// refused dials with cfg and sends a REGISTER, expecting the server to
// refuse the client's certificate: the handshake (TLS 1.2) or the first
// read (TLS 1.3, where the client finishes its side of the handshake
// before the server checks its certificate) fails with a TLS alert, and
// no request reaches the routing script.
func refused(t *testing.T, k *kamailio.Kamailio, cfg *tls.Config, alert string) {
	t.Helper()
	c, err := dialTLS(k.Addr("tls"), cfg)
	if err == nil {
		defer c.Close()
		var res *message
		res, err = c.register(register{user: "sbc", domain: realm, callID: token()})
		if err == nil {
			t.Fatalf("REGISTER got %q, want the connection refused", res.first)
		}
	}
	t.Logf("refused: %v", err)
	if !strings.Contains(err.Error(), alert) {
		t.Errorf("error %q does not carry the TLS alert %q", err, alert)
	}
	if strings.Contains(k.Log(), kamailio.LogPrefix+" request") {
		t.Errorf("a request reached Kamailio's routing script:\n%s", k.Log())
	}
}

// (b) With RequireClientCert a client without a certificate is refused.
func TestRequireClientCertRefusesNoCert(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	k := kamailio.Start(t, p.options())
	for _, tc := range []struct {
		version uint16
		alert   string
	}{
		{tls.VersionTLS12, "remote error: tls: handshake failure"},
		{tls.VersionTLS13, "remote error: tls: certificate required"},
	} {
		t.Run(tls.VersionName(tc.version), func(t *testing.T) {
			cfg := p.clientTLS()
			cfg.MinVersion, cfg.MaxVersion = tc.version, tc.version
			refused(t, k, cfg, tc.alert)
		})
	}
}

// (c) A client certificate from another CA is refused.
func TestForeignClientCertRefused(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	k := kamailio.Start(t, p.options())
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			cfg := p.clientTLS()
			cfg.MinVersion, cfg.MaxVersion = v, v
			// Not Certificates: Go's client sends no certificate when
			// none is issued by a CA the server's CertificateRequest
			// lists (Kamailio lists its ca_list), which would test (b)
			// again. Present the foreign one regardless.
			sent := false
			cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				sent = true
				return &p.foreign.pair, nil
			}
			refused(t, k, cfg, "remote error: tls: unknown certificate authority")
			if !sent {
				t.Error("the server asked for no client certificate")
			}
		})
	}
}

// (d) With Auth a REGISTER is challenged, the digest-computed retry is
// accepted, and a wrong password is challenged again.
func TestRegisterDigestAuth(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	o := p.options()
	o.Auth = map[string]string{"sbc": "s3cret", "other": "x", "quoted": `a"b\c`}
	k := kamailio.Start(t, o)

	c, err := dialTLS(k.Addr("tls"), p.clientTLS(p.client.pair))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	reg := register{user: "sbc", domain: realm, callID: token()}
	uri := "sip:" + realm

	// challenged gets a 401 for reg and returns its challenge.
	challenged := func(step string) challenge {
		t.Helper()
		res, err := c.register(reg)
		if err != nil {
			t.Fatalf("%s: %v", step, err)
		}
		if res.code != 401 {
			t.Fatalf("%s: got %q, want 401\n%s", step, res.first, res)
		}
		ch, err := parseChallenge(res.header("WWW-Authenticate"))
		if err != nil {
			t.Fatalf("%s: %v\n%s", step, err, res)
		}
		if ch.realm != realm {
			t.Errorf("%s: challenge realm %q, want %q", step, ch.realm, realm)
		}
		return ch
	}

	ch := challenged("REGISTER without credentials")
	if !k.WaitLog(kamailio.LogPrefix+" auth user=<null> result=-5\n", ioTimeout) {
		t.Errorf("Kamailio's log lacks the missing credentials (-5)")
	}

	reg.authorization = authorization(ch, "sbc", "wrong", "REGISTER", uri)
	ch = challenged("REGISTER with a wrong password")
	if !k.WaitLog(kamailio.LogPrefix+" auth user=sbc result=-2\n", ioTimeout) {
		t.Errorf("Kamailio's log lacks the wrong password (-2)")
	}

	// Another user's valid credentials for this To user.
	reg.authorization = authorization(ch, "other", "x", "REGISTER", uri)
	ch = challenged("REGISTER with another user's credentials")
	if !k.WaitLog(kamailio.LogPrefix+" auth user=other result=-8\n", ioTimeout) {
		t.Errorf("Kamailio's log lacks the user mismatch (-8)")
	}

	reg.authorization = authorization(ch, "nobody", "x", "REGISTER", uri)
	ch = challenged("REGISTER of an unknown user")
	if !k.WaitLog(kamailio.LogPrefix+" auth user=nobody result=-3\n", ioTimeout) {
		t.Errorf("Kamailio's log lacks the unknown user (-3)")
	}

	reg.authorization = authorization(ch, "sbc", "s3cret", "REGISTER", uri)
	res, err := c.register(reg)
	if err != nil {
		t.Fatalf("REGISTER with credentials: %v", err)
	}
	if res.code != 200 {
		t.Fatalf("REGISTER with credentials: got %q, want 200\n%s", res.first, res)
	}
	if !k.WaitLog(kamailio.LogPrefix+" auth user=sbc result=1\n", ioTimeout) {
		t.Errorf("Kamailio's log lacks the success (1)")
	}

	// A password with the characters the configuration has to escape.
	q := register{user: "quoted", domain: realm, callID: token()}
	res, err = c.register(q)
	if err != nil || res.code != 401 {
		t.Fatalf("REGISTER quoted: %v %v", res, err)
	}
	if ch, err = parseChallenge(res.header("WWW-Authenticate")); err != nil {
		t.Fatal(err)
	}
	q.authorization = authorization(ch, "quoted", `a"b\c`, "REGISTER", uri)
	if res, err = c.register(q); err != nil || res.code != 200 {
		t.Fatalf("REGISTER quoted with credentials: got %v, %v; want 200", res, err)
	}
}

// Without RequireClientCert a client certificate is optional but still
// verified, the UDP listener answers OPTIONS, and requests over UDP are
// logged without TLS fields.
func TestOptionalClientCertAndUDP(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	o := p.options()
	o.RequireClientCert = false
	k := kamailio.Start(t, o)

	for _, tc := range []struct {
		name  string
		certs []tls.Certificate
		log   string
	}{
		{"no certificate", nil, ` tls_cn="" tls_verified=0`},
		{"certificate", []tls.Certificate{p.client.pair}, ` tls_cn="sbc" tls_verified=1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := dialTLS(k.Addr("tls"), p.clientTLS(tc.certs...))
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer c.Close()
			res, err := c.register(register{user: "sbc", domain: realm, callID: token()})
			if err != nil {
				t.Fatalf("REGISTER: %v", err)
			}
			if res.code != 200 {
				t.Fatalf("REGISTER: got %q, want 200\n%s", res.first, res)
			}
			want := requestLog("REGISTER", "tls", c) + " ruri=sip:" + realm + tc.log + "\n"
			if !k.WaitLog(want, ioTimeout) {
				t.Errorf("Kamailio's log lacks %q", want)
			}
		})
	}
	t.Run("foreign certificate", func(t *testing.T) {
		cfg := p.clientTLS()
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return &p.foreign.pair, nil
		}
		c, err := dialTLS(k.Addr("tls"), cfg)
		if err == nil {
			defer c.Close()
			_, err = c.register(register{user: "sbc", domain: realm, callID: token()})
		}
		if err == nil || !strings.Contains(err.Error(), "unknown certificate authority") {
			t.Errorf("got %v, want the unknown certificate authority alert", err)
		}
	})

	u := dialUDP(t, k.Addr("udp"))
	res, err := u.simple("OPTIONS", "sip:"+k.Addr("udp").String(), "sip:"+k.Addr("udp").String())
	if err != nil {
		t.Fatalf("OPTIONS over UDP: %v", err)
	}
	if res.code != 200 {
		t.Fatalf("OPTIONS over UDP: got %q, want 200", res.first)
	}
	want := requestLog("OPTIONS", "udp", u) + " ruri=sip:" + k.Addr("udp").String() + "\n"
	if !k.WaitLog(want, ioTimeout) {
		t.Errorf("Kamailio's log lacks %q", want)
	}
}

// An INVITE to a registered AoR is relayed to its binding (over the TLS
// connection the REGISTER came on); one to an unknown AoR gets 404.
func TestInviteRelayedToBinding(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	k := kamailio.Start(t, p.options())

	c, err := dialTLS(k.Addr("tls"), p.clientTLS(p.client.pair))
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	res, err := c.register(register{user: "sbc", domain: realm, callID: token()})
	if err != nil || res.code != 200 {
		t.Fatalf("REGISTER: %v %v", res, err)
	}

	u := dialUDP(t, k.Addr("udp"))
	res, err = u.simple("INVITE", "sip:nobody@"+realm, "sip:nobody@"+realm)
	if err != nil {
		t.Fatalf("INVITE to an unknown AoR: %v", err)
	}
	if res.code != 404 {
		t.Errorf("INVITE to an unknown AoR: got %q, want 404", res.first)
	}

	if err := u.sendSimple("INVITE", "sip:sbc@"+realm, "sip:sbc@"+realm); err != nil {
		t.Fatal(err)
	}
	inv, err := c.read()
	if err != nil {
		t.Fatalf("reading the relayed INVITE on the binding's connection: %v", err)
	}
	wantRURI := "INVITE sip:sbc@" + c.local.String() + ";transport=tls SIP/2.0"
	if inv.first != wantRURI {
		t.Errorf("relayed request line %q, want %q", inv.first, wantRURI)
	}
	if rr := inv.header("Record-Route"); rr == "" {
		t.Errorf("relayed INVITE is not record-routed:\n%s", inv)
	}
	if err := c.reply(inv, 486, "Busy Here"); err != nil {
		t.Fatal(err)
	}
	res, err = u.final()
	if err != nil {
		t.Fatalf("INVITE to the registered AoR: %v", err)
	}
	if res.code != 486 {
		t.Errorf("INVITE to the registered AoR: got %q, want the callee's 486", res.first)
	}
}

// The listeners can be on ::1.
func TestIPv6Loopback(t *testing.T) {
	t.Parallel()
	if l, err := net.Listen("tcp", "[::1]:0"); err != nil {
		t.Skipf("no IPv6 loopback: %v", err)
	} else {
		l.Close()
	}
	p := newPKI(t)
	o := p.options()
	o.TLS = netip.MustParseAddrPort("[::1]:0")
	o.UDP = netip.MustParseAddrPort("[::1]:0")
	k := kamailio.Start(t, o)
	if a := k.Addr("tls"); a.Addr() != netip.IPv6Loopback() || a.Port() == 0 {
		t.Fatalf("Addr(tls) = %v", a)
	}
	cfg := p.clientTLS(p.client.pair)
	cfg.ServerName = "::1"
	c, err := dialTLS(k.Addr("tls"), cfg)
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	defer c.Close()
	res, err := c.register(register{user: "sbc", domain: realm, callID: token()})
	if err != nil || res.code != 200 {
		t.Fatalf("REGISTER over [::1]: got %v, %v; want 200", res, err)
	}
	u := dialUDP(t, k.Addr("udp"))
	if res, err := u.simple("OPTIONS", "sip:"+k.Addr("udp").String(), "sip:"+k.Addr("udp").String()); err != nil || res.code != 200 {
		t.Fatalf("OPTIONS over [::1] UDP: got %v, %v; want 200", res, err)
	}
}

// Options.MaxExpires caps the expiry Kamailio grants (the REGISTER asks
// 300), and Contacts lists what usrloc holds: two bindings of one AoR
// from two sockets, with the granted expiry; none for an AoR never
// registered.
func TestMaxExpiresAndContacts(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	o := p.options()
	o.RequireClientCert = false
	o.MaxExpires = 120
	k := kamailio.Start(t, o)

	var addrs []string
	for range 2 {
		u := dialUDP(t, k.Addr("udp"))
		res, err := u.register(register{user: "carol", domain: realm, callID: token()})
		if err != nil {
			t.Fatalf("REGISTER: %v", err)
		}
		if res.code != 200 {
			t.Fatalf("REGISTER: got %q, want 200\n%s", res.first, res)
		}
		if c := res.header("Contact"); !strings.Contains(c, "expires=120") {
			t.Fatalf("200 Contact %q: want expires=120", c)
		}
		addrs = append(addrs, "sip:carol@"+u.local.String()+";transport=udp")
	}
	cs, err := k.Contacts("carol")
	if err != nil {
		t.Fatal(err)
	}
	if len(cs) != 2 {
		t.Fatalf("usrloc holds %+v, want 2 contacts", cs)
	}
	for _, c := range cs {
		if !slices.Contains(addrs, c.Address) || c.Expires <= 0 || c.Expires > 120 {
			t.Errorf("contact %+v: want one of %v expiring within 120 s", c, addrs)
		}
	}
	if cs, err := k.Contacts("nobody"); err != nil || len(cs) != 0 {
		t.Fatalf("an AoR never registered: %+v, %v", cs, err)
	}
}
