package attack

import (
	"strings"
	"testing"
)

func TestDigestResponseVectors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    DigestParams
		want string
	}{
		{ // RFC 2617 section 3.5
			"rfc2617", DigestParams{Username: "Mufasa", Realm: "testrealm@host.com", Password: "Circle Of Life",
				Method: "GET", URI: "/dir/index.html", Nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
				QOP: "auth", NC: "00000001", CNonce: "0a4f113b"},
			"6629fae49393a05397450978507c4ef1",
		},
		{ // RFC 7616 section 3.9.1, MD5
			"rfc7616 md5", DigestParams{Algorithm: "MD5", Username: "Mufasa", Realm: "http-auth@example.org", Password: "Circle of Life",
				Method: "GET", URI: "/dir/index.html", Nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
				QOP: "auth", NC: "00000001", CNonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"},
			"8ca523f5e9506fed4657c9700eebdbec",
		},
		{ // RFC 7616 section 3.9.1, SHA-256
			"rfc7616 sha-256", DigestParams{Algorithm: "SHA-256", Username: "Mufasa", Realm: "http-auth@example.org", Password: "Circle of Life",
				Method: "GET", URI: "/dir/index.html", Nonce: "7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
				QOP: "auth", NC: "00000001", CNonce: "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ"},
			"753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1",
		},
	} {
		got, err := DigestResponse(tc.p)
		if err != nil || got != tc.want {
			t.Errorf("%s: %q, %v; want %q", tc.name, got, err, tc.want)
		}
	}
	if _, err := DigestResponse(DigestParams{Algorithm: "SHA-512-256"}); err == nil {
		t.Error("unknown algorithm accepted")
	}
	if _, err := DigestResponse(DigestParams{QOP: "auth-conf"}); err == nil {
		t.Error("unknown qop accepted")
	}
	// auth-int hashes the body: a different body, a different response.
	p := DigestParams{Username: "u", Realm: "r", Password: "p", Method: "INVITE", URI: "sip:a@b", Nonce: "n", QOP: "auth-int", NC: "00000001", CNonce: "c"}
	a, _ := DigestResponse(p)
	p.Body = []byte("v=0\r\n")
	b, _ := DigestResponse(p)
	if a == b || len(a) != 32 {
		t.Errorf("auth-int: %q %q", a, b)
	}
}

func TestParseChallenge(t *testing.T) {
	c, err := parseChallenge(`Digest realm="sip, \"test\"",nonce=abc ,  qop="auth,auth-int", algorithm=MD5-sess, opaque="", stale=TRUE, x-unknown=1`)
	if err != nil {
		t.Fatal(err)
	}
	if c.realm != `sip, "test"` || c.nonce != "abc" || c.algorithm != "MD5-sess" || !c.stale ||
		len(c.qop) != 2 || c.qop[0] != "auth" || c.qop[1] != "auth-int" || c.opaque != "" {
		t.Errorf("%+v", c)
	}
	for _, bad := range []string{
		``, `Basic realm="x"`, `Digest realm="x"`, `Digest nonce="abc`, `Digest nonce`, `Digest =x, nonce=1`,
		`Digest nonce=1, algorithm=SHA-512`, `Digest nonce=` + strings.Repeat("a", maxChallenge),
	} {
		if _, err := parseChallenge(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestAuthorizationHeader(t *testing.T) {
	c := challenge{realm: "r", nonce: "n", opaque: "o", algorithm: "MD5", qop: []string{"auth-int", "auth"}}
	v, err := c.authorization(`a"b`, "pw", "REGISTER", "sip:d", "cn", 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`Digest username="a\"b"`, `realm="r"`, `nonce="n"`, `uri="sip:d"`, `qop=auth,`, `nc=00000002`, `cnonce="cn"`, `opaque="o"`, `algorithm=MD5`} {
		if !strings.Contains(v, want) {
			t.Errorf("%s lacks %s", v, want)
		}
	}
	resp, _ := DigestResponse(DigestParams{Algorithm: "MD5", Username: `a"b`, Realm: "r", Password: "pw", Method: "REGISTER", URI: "sip:d", Nonce: "n", QOP: "auth", NC: "00000002", CNonce: "cn"})
	if !strings.Contains(v, `response="`+resp+`"`) {
		t.Errorf("%s lacks response %s", v, resp)
	}
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Digest realm="a", nonce="b", qop="auth"`)
	f.Add(`Digest nonce="\"`)
	f.Add(`digest a=b,,,c="d\\"`)
	f.Fuzz(func(t *testing.T, s string) {
		c, err := parseChallenge(s)
		if err != nil {
			return
		}
		if c.nonce == "" {
			t.Fatal("accepted a challenge without nonce")
		}
		if _, err := c.authorization("u", "p", "REGISTER", "sip:x", "c", 1); err != nil {
			t.Fatalf("accepted challenge %q cannot be answered: %v", s, err)
		}
	})
}

func TestStatusCode(t *testing.T) {
	for in, want := range map[string]int{
		"SIP/2.0 200 OK\r\n": 200, "SIP/2.0 100 \r\n": 100, "SIP/2.0 699": 699, "SIP/2.0 404\r\n": 404,
		"SIP/2.0 099 x": -1, "SIP/2.0 2000 OK": -1, "SIP/2.0 20 OK": -1, "INVITE sip:a SIP/2.0": -1,
		"SIP/3.0 200 OK": -1, "": -1, "SIP/2.0 2x0 OK": -1,
	} {
		got, ok := statusCode([]byte(in))
		if !ok {
			got = -1
		}
		if got != want {
			t.Errorf("statusCode(%q) = %d, want %d", in, got, want)
		}
	}
}

func FuzzStatusCode(f *testing.F) {
	f.Add([]byte("SIP/2.0 200 OK\r\n"))
	f.Add([]byte("SIP/2.0 9999"))
	f.Fuzz(func(t *testing.T, b []byte) {
		code, ok := statusCode(b)
		if ok && (code < 100 || code > 999) {
			t.Fatalf("code %d from %q", code, b)
		}
	})
}
