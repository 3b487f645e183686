package kamailio

import (
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKamailioCfg(t *testing.T) {
	p := cfgParams{
		modulesDir: "/mods",
		udp:        netip.MustParseAddrPort("127.0.0.1:5"),
		tls:        netip.MustParseAddrPort("[::1]:6"),
		tlsCfg:     "/tmp/x/tls.cfg",
		realm:      "example.test",
	}
	cfg := kamailioCfg(p)
	for _, want := range []string{
		"listen=udp:127.0.0.1:5\n",
		"listen=tls:[::1]:6\n",
		"enable_tls=yes\n",
		"children=2\n",
		"tcp_children=2\n",
		`mpath="/mods"`,
		`modparam("tls", "config", "/tmp/x/tls.cfg")`,
		`modparam("usrloc", "db_mode", 0)`,
		`save("location")`,
		`lookup("location")`,
		"$tls_peer_subject_cn",
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("kamailio.cfg lacks %q", want)
		}
	}
	if i, j := strings.Index(cfg, `loadmodule "tls.so"`), strings.Index(cfg, "loadmodule"); i < 0 || i != j {
		t.Errorf("tls.so is not the first module loaded")
	}
	for _, unwanted := range []string{"auth.so", "route(AUTH)", "pv_auth_check"} {
		if strings.Contains(cfg, unwanted) {
			t.Errorf("kamailio.cfg without Auth has %q", unwanted)
		}
	}

	p.auth = map[string]string{"bob": `p"w\d`, "alice": "x"}
	cfg = kamailioCfg(p)
	for _, want := range []string{
		`loadmodule "auth.so"`,
		"route(AUTH);",
		`if ($au == "alice") {`,
		`$var(pw) = "p\"w\\d";`,
		`pv_auth_check("example.test", "$var(pw)", "0", "1")`,
		`auth_challenge("example.test", "1")`,
	} {
		if !strings.Contains(cfg, want) {
			t.Errorf("kamailio.cfg with Auth lacks %q", want)
		}
	}
	if strings.Index(cfg, `"alice"`) > strings.Index(cfg, `"bob"`) {
		t.Errorf("users are not in a stable (sorted) order")
	}
}

func TestTLSCfg(t *testing.T) {
	for _, tc := range []struct {
		name            string
		p               tlsParams
		verify, require string
	}{
		{"no CA", tlsParams{cert: "c", key: "k"}, "no", "no"},
		{"CA", tlsParams{cert: "c", key: "k", ca: "ca"}, "yes", "no"},
		{"CA and required", tlsParams{cert: "c", key: "k", ca: "ca", requireCert: true}, "yes", "yes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := tlsCfg(tc.p)
			server, client, ok := strings.Cut(cfg, "[client:default]")
			if !ok || !strings.Contains(server, "[server:default]") {
				t.Fatalf("tls.cfg lacks its profiles:\n%s", cfg)
			}
			for _, want := range []string{
				"method = TLSv1.2+\n",
				"certificate = c\n",
				"private_key = k\n",
				"verify_certificate = " + tc.verify + "\n",
				"require_certificate = " + tc.require + "\n",
			} {
				if !strings.Contains(server, want) {
					t.Errorf("server profile lacks %q:\n%s", want, server)
				}
			}
			if got := strings.Contains(server, "ca_list = ca\n"); got != (tc.p.ca != "") {
				t.Errorf("server profile ca_list present %v, want %v", got, tc.p.ca != "")
			}
			if !strings.Contains(client, "verify_certificate = no\n") || !strings.Contains(client, "certificate = c\n") {
				t.Errorf("client profile:\n%s", client)
			}
		})
	}
}

func TestResolveAddr(t *testing.T) {
	got, err := resolveAddr(netip.AddrPort{}, "udp")
	if err != nil || got.Addr() != netip.MustParseAddr("127.0.0.1") || got.Port() == 0 {
		t.Errorf("zero: got %v, %v; want 127.0.0.1 and a free port", got, err)
	}
	got, err = resolveAddr(netip.MustParseAddrPort("127.0.0.2:0"), "tcp")
	if err != nil || got.Addr() != netip.MustParseAddr("127.0.0.2") || got.Port() == 0 {
		t.Errorf("port 0: got %v, %v; want 127.0.0.2 and a free port", got, err)
	}
	fixed := netip.MustParseAddrPort("127.0.0.1:7")
	if got, err = resolveAddr(fixed, "tcp"); err != nil || got != fixed {
		t.Errorf("fixed: got %v, %v; want %v", got, err, fixed)
	}
	for _, bad := range []netip.AddrPort{
		netip.MustParseAddrPort("192.0.2.1:0"),
		netip.MustParseAddrPort("0.0.0.0:0"),
		netip.AddrPortFrom(netip.Addr{}, 5060),
	} {
		if got, err := resolveAddr(bad, "udp"); err == nil {
			t.Errorf("%v: got %v, want an error", bad, got)
		}
	}
	if l, err := net.Listen("tcp", "[::1]:0"); err == nil {
		l.Close()
		got, err = resolveAddr(netip.MustParseAddrPort("[::1]:0"), "tcp")
		if err != nil || got.Addr() != netip.IPv6Loopback() || got.Port() == 0 {
			t.Errorf("::1: got %v, %v", got, err)
		}
	}
}

// A configuration Kamailio rejects is reported with its output, which
// names the offending line.
func TestCheckReportsErrors(t *testing.T) {
	inst, err := lookup()
	if err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("kamailio: %v", err)
		}
		t.Skipf("kamailio: %v", err)
	}
	dir := t.TempDir()
	cfg := filepath.Join(dir, "kamailio.cfg")
	text := "#!KAMAILIO\nchildren=1\nrequest_route {\n\tno_such_function();\n}\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	err = check(inst.bin, cfg, dir)
	if err == nil {
		t.Fatal("check accepted an invalid configuration")
	}
	if !strings.Contains(err.Error(), "no_such_function") {
		t.Errorf("check's error does not name the problem:\n%v", err)
	}
	t.Logf("check: %v", err)
}
