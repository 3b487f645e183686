// Package stunnel runs Debian's stunnel (package stunnel4, binary stunnel)
// as a TLS shim on loopback for tests. Debian's SIPp (package sip-tester)
// is built without OpenSSL and cannot speak TLS itself; a shim lets such a
// plain-TCP peer talk to a TLS listener, or lets a TLS peer reach a
// plain-TCP one:
//
//	plain peer -> [Client shim: accept plain, connect TLS] -> TLS server
//	TLS peer   -> [Server shim: accept TLS, connect plain] -> plain server
//
// [Client] and [Server] each start one stunnel process in the foreground
// with a configuration written into t.TempDir(), accepting on a free
// 127.0.0.1 TCP port, and return that address once stunnel reports the
// port bound (so a connection to it is never refused). Both use TLS 1.2 as
// the minimum protocol version (sslVersionMin) and otherwise stunnel's and
// OpenSSL's defaults (security level 2, ciphers HIGH:!aNULL:!SSLv2:!DH).
// The process is stopped at cleanup (SIGTERM, then SIGKILL); a shim that
// exited by itself before then fails the test. stunnel's log, at debug
// level, is written with t.Log when the test failed.
//
// Readiness is read from stunnel's log ("Service [...] bound to ADDR"),
// not probed with a connection: for a Client shim a probe would make
// stunnel open a TLS connection to the server under test, which the test
// would then see (and count). Every wait is bounded.
//
// Tests call [Available] or let Client and Server decide: without the
// stunnel binary they skip the test, except in CI (CI=true), where a
// missing external peer is a failure.
package stunnel
