// Package kamailio runs a real Kamailio SIP server on loopback for tests:
// a registrar that the SBC (or a test's own client) reaches over mutual
// TLS, and optionally over plain UDP.
//
//	k := kamailio.Start(t, kamailio.Options{
//		CertFile:          serverCert, // PEM; IP SAN 127.0.0.1
//		KeyFile:           serverKey,
//		CAFile:            caCert, // verifies client certificates
//		RequireClientCert: true,
//		Auth:              map[string]string{"alice": "secret"}, // optional
//		Realm:             "example.test",
//	})
//	tlsAddr := k.Addr("tls") // 127.0.0.1:<free port>
//	k.WaitLog(`tls_cn="sbc"`, 5*time.Second)
//
// It uses the Debian packages kamailio and kamailio-tls-modules (5.6):
// /usr/sbin/kamailio (or kamailio on PATH) and the tls.so module in the
// binary's module path. [Available] reports whether both are there; [Start]
// skips the test when they are not, except in CI (CI=true), where their
// absence fails it.
//
// # What the server does
//
// Start writes kamailio.cfg and tls.cfg into t.TempDir (with copies of the
// certificate files), validates them with `kamailio -c`, runs Kamailio in
// the foreground (-DD -E: no daemon, log to stderr, 2 UDP and 2 TCP
// workers), waits until the TLS port accepts connections (10 s at most)
// and stops the whole process group at cleanup. Kamailio's output is kept
// ([Kamailio.Log]) and logged through t when the test failed.
//
// The routing script:
//
//   - logs every request with xlog, as one line containing
//     `kamailio-test: request method=M proto=P src=IP:PORT ruri=URI` and,
//     for TLS, ` tls_cn="CN" tls_verified=0|1` (the client certificate's
//     subject common name, from the tls module's $tls_peer_subject_cn;
//     empty when the client presented none);
//   - answers OPTIONS with 200;
//   - saves REGISTER bindings in memory (usrloc db_mode=0) and answers 200
//     with the bindings; with Options.Auth the REGISTER is digest
//     authenticated first (auth module, pv_auth_check, passwords compiled
//     into the script, no database): a REGISTER without valid credentials
//     for Options.Realm gets 401 with a WWW-Authenticate challenge
//     (qop=auth), also when the password is wrong; the authentication user
//     must equal the To user. Each outcome is logged as
//     `kamailio-test: auth user=U result=N` (N is pv_auth_check's return
//     code: 1 success, -2 wrong password, -3 unknown user, -5 no
//     credentials, ...);
//   - grants at most Options.MaxExpires seconds (registrar max_expires;
//     default 86400) and lists every binding of the AoR in its 200;
//     [Kamailio.Contacts] asks the running server what usrloc holds for an
//     AoR (kamcmd ul.lookup over the ctl module's unix socket);
//   - relays an INVITE (or another out-of-dialog request) whose
//     Request-URI user is registered to the binding's contact with
//     t_relay (record-routed), and answers 404 otherwise; in-dialog
//     requests are loose-routed. A TLS binding whose contact is the
//     address the REGISTER came from is reached over that same
//     connection (Kamailio looks connections up by peer address).
//
// # TLS
//
// The TLS listener accepts TLSv1.2 and later with the server certificate
// from Options.CertFile and Options.KeyFile. With Options.CAFile it asks
// for a client certificate and verifies one that is presented against that
// CA (verify_certificate=yes); with Options.RequireClientCert as well, a
// client without a valid certificate fails the handshake
// (require_certificate=yes). With TLS 1.3 a Go client's Handshake returns
// before the server has checked the client's certificate, so the refusal
// shows as an error on the first read. Kamailio's CertificateRequest lists
// the subjects of the CAs in CAFile, and a Go client configured with
// tls.Config.Certificates sends none of its certificates unless one is
// issued by a listed CA: a client certificate from another CA is then not
// refused as such but simply not sent (use GetClientCertificate to present
// it regardless). Connections Kamailio opens itself
// (relaying to a TLS contact) present the same certificate and do not
// verify the peer.
//
// # Addresses
//
// Options.TLS and Options.UDP must be loopback addresses (127.0.0.0/8 or
// ::1). A zero AddrPort means 127.0.0.1 on a free port; an address with
// port 0 means that address on a free port. Free ports are chosen by
// binding port 0 and closing the socket before Kamailio binds it. The UDP
// listener always exists (Kamailio also sends from it); nothing in this
// package uses fixed ports such as 5060.
package kamailio
