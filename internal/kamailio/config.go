package kamailio

import (
	"fmt"
	"net/netip"
	"sort"
	"strings"
)

// DefaultRealm is the digest realm when Options.Realm is empty.
const DefaultRealm = "example.test"

// LogPrefix starts every line the routing script logs with xlog.
const LogPrefix = "kamailio-test:"

// modules are loaded by every configuration, in this order; auth.so is
// added when Options.Auth is set.
var modules = []string{
	"tls.so", // first: it must be loaded before anything that uses TCP
	"tm.so",  // before sl and registrar, which bind to it
	"sl.so",
	"rr.so",
	"pv.so",
	"maxfwd.so",
	"textops.so",
	"siputils.so",
	"xlog.so",
	"usrloc.so",
	"registrar.so",
	"ctl.so", // kamcmd's socket (Kamailio.Contacts)
}

// cfgParams are the resolved inputs of the two configuration files.
type cfgParams struct {
	modulesDir string
	udp, tls   netip.AddrPort
	tlsCfg     string // path of tls.cfg
	realm      string
	auth       map[string]string
	maxExpires int    // registrar max_expires
	ctl        string // path of the ctl module's unix socket
}

// tlsParams are the resolved inputs of tls.cfg.
type tlsParams struct {
	cert, key, ca string // paths
	requireCert   bool
}

// kamailioCfg returns the text of kamailio.cfg.
func kamailioCfg(p cfgParams) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("#!KAMAILIO\n")
	w("# Written by internal/kamailio for a test; see its package doc.\n\n")
	w("debug=2\n")
	w("log_stderror=yes\n")
	w("log_facility=LOG_LOCAL0\n")
	w("fork=yes\n")
	w("children=2\n")
	w("tcp_children=2\n")
	w("disable_sctp=yes\n")
	w("auto_aliases=no\n")
	w("dns=no\n")
	w("rev_dns=no\n")
	w("use_dns_cache=off\n")
	w("dns_try_ipv6=no\n")
	w("enable_tls=yes\n")
	w("tcp_connection_lifetime=3605\n")
	w("listen=udp:%s\n", p.udp)
	w("listen=tls:%s\n", p.tls)
	w("alias=%s\n", cfgString(p.realm))
	w("\nmpath=%s\n", cfgString(p.modulesDir))
	for _, m := range modules {
		w("loadmodule %s\n", cfgString(m))
	}
	if len(p.auth) > 0 {
		w("loadmodule \"auth.so\"\n")
	}
	w("\nmodparam(\"tls\", \"config\", %s)\n", cfgString(p.tlsCfg))
	w("modparam(\"usrloc\", \"db_mode\", 0)\n")
	w("modparam(\"registrar\", \"default_expires\", 3600)\n")
	w("modparam(\"registrar\", \"min_expires\", 0)\n")
	w("modparam(\"registrar\", \"max_expires\", %d)\n", p.maxExpires)
	w("modparam(\"ctl\", \"binrpc\", %s)\n", cfgString("unix:"+p.ctl))
	w("modparam(\"rr\", \"enable_full_lr\", 1)\n")

	w(`
request_route {
	if ($pr == "tls") {
		# Only a verified peer has a certificate here (the server asks
		# for one only when it verifies it); reading the CN of none logs
		# an error.
		$var(cn) = "";
		if ($tls_peer_verified == 1) {
			$var(cn) = $tls_peer_subject_cn;
		}
		xlog("L_NOTICE", "%[1]s request method=$rm proto=$pr src=$si:$sp ruri=$ru tls_cn=\"$var(cn)\" tls_verified=$tls_peer_verified\n");
	} else {
		xlog("L_NOTICE", "%[1]s request method=$rm proto=$pr src=$si:$sp ruri=$ru\n");
	}

	if (!mf_process_maxfwd_header("10")) {
		sl_send_reply("483", "Too Many Hops");
		exit;
	}

	if (is_method("OPTIONS")) {
		sl_send_reply("200", "OK");
		exit;
	}

	if (is_method("CANCEL")) {
		if (t_check_trans()) {
			t_relay();
		}
		exit;
	}

	if (has_totag()) {
		if (loose_route()) {
			if (!t_relay()) {
				sl_reply_error();
			}
			exit;
		}
		if (is_method("ACK")) {
			if (t_check_trans()) {
				t_relay();
			}
			exit;
		}
		sl_send_reply("404", "Not Here");
		exit;
	}

	t_check_trans();

	if (is_method("REGISTER")) {
`, LogPrefix)
	if len(p.auth) > 0 {
		w("\t\troute(AUTH);\n")
	}
	w(`		if (!save("location")) {
			sl_reply_error();
		}
		exit;
	}

	if (is_method("ACK")) {
		exit;
	}

	if (!lookup("location")) {
		sl_send_reply("404", "Not Found");
		exit;
	}
	record_route();
	if (!t_relay()) {
		sl_reply_error();
	}
	exit;
}
`)
	if len(p.auth) > 0 {
		writeAuthRoute(&b, p.realm, p.auth)
	}
	return b.String()
}

// writeAuthRoute writes route[AUTH]: the password of the authentication
// user ($au) is looked up in an if-chain generated from auth (no database),
// then checked with pv_auth_check; any failure is answered with a fresh 401
// challenge.
func writeAuthRoute(b *strings.Builder, realm string, auth map[string]string) {
	users := make([]string, 0, len(auth))
	for u := range auth {
		users = append(users, u)
	}
	sort.Strings(users)
	fmt.Fprintf(b, "\nroute[AUTH] {\n\t$var(pw) = \"\";\n")
	for _, u := range users {
		fmt.Fprintf(b, "\tif ($au == %s) {\n\t\t$var(pw) = %s;\n\t}\n", cfgString(u), cfgString(auth[u]))
	}
	// Codes as pv_auth_check's: -5 no credentials, -3 unknown user (an
	// empty password is an error for pv_auth_check). Its flags 0: $var(pw)
	// is the plain password; checks 1: for REGISTER the authentication
	// user must be the To user.
	fmt.Fprintf(b, `	if (!has_credentials(%[1]s)) {
		$var(rc) = -5;
	} else if ($var(pw) == "") {
		$var(rc) = -3;
	} else {
		pv_auth_check(%[1]s, "$var(pw)", "0", "1");
		$var(rc) = $rc;
	}
	xlog("L_NOTICE", "%[2]s auth user=$au result=$var(rc)\n");
	if ($var(rc) < 0) {
		auth_challenge(%[1]s, "1");
		exit;
	}
	consume_credentials();
}

`, cfgString(realm), LogPrefix)
}

// tlsCfg returns the text of tls.cfg: one server profile for every TLS
// listener and one client profile for connections Kamailio opens.
func tlsCfg(p tlsParams) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	yes := func(v bool) string {
		if v {
			return "yes"
		}
		return "no"
	}
	w("# Written by internal/kamailio for a test.\n")
	w("[server:default]\n")
	w("method = TLSv1.2+\n")
	w("certificate = %s\n", p.cert)
	w("private_key = %s\n", p.key)
	if p.ca != "" {
		w("ca_list = %s\n", p.ca)
	}
	w("verify_certificate = %s\n", yes(p.ca != ""))
	w("require_certificate = %s\n", yes(p.ca != "" && p.requireCert))
	w("\n[client:default]\n")
	w("method = TLSv1.2+\n")
	w("certificate = %s\n", p.cert)
	w("private_key = %s\n", p.key)
	w("verify_certificate = no\n")
	w("require_certificate = no\n")
	return b.String()
}

// cfgString quotes s as a string literal of Kamailio's configuration
// language, whose lexer understands the backslash escapes \\ and \".
func cfgString(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`)
	return `"` + r.Replace(s) + `"`
}
