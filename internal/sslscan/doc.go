// Package sslscan runs Debian's sslscan (2.0.x) against a TLS listener and
// parses what it accepted, so tests can assert a listener's protocol
// versions and cipher suites the way an outside auditor would see them.
//
// [Scan] runs `sslscan --xml=- ADDR` and [Parse]s the XML into a [Result]:
// each protocol version tested (SSLv2, SSLv3, TLSv1.0 to TLSv1.3) with
// whether it was enabled, each accepted cipher suite (name, protocol,
// bits, sslscan's strength rating, key exchange group), the key exchange
// groups, renegotiation, compression and Heartbleed findings.
// [Result.Weak] lists what the project considers weak (the rule is
// written at [Cipher.Weakness]).
//
// What sslscan 2.0.7 on Debian 12 does, and this package relies on:
//
//   - It exits 0 even when it could not scan (connection refused, no TLS
//     on the port); failures are <error> elements in the XML. Scan returns
//     an error when there is any <error> element, because a scan that hit
//     one may have missed accepted suites; the partial Result is returned
//     with it.
//   - SSLv2 and SSLv3 are probed with raw ClientHellos, so they are
//     reported even though Debian's OpenSSL 3 cannot speak them.
//   - Cipher suites OpenSSL does not implement (RC4, 3DES, ...) are also
//     probed with raw ClientHellos and reported under their IANA names
//     (TLS_RSA_WITH_RC4_128_SHA) with no group; suites OpenSSL implements
//     carry OpenSSL names (ECDHE-ECDSA-AES128-GCM-SHA256). Bits is -1 when
//     sslscan has no guess.
//   - An IPv6 target must be bracketed ([::1]:5061); "::1:5061" is
//     refused as an invalid target. Scan formats the address itself.
//   - The SNI it sends is the target host, even an IP literal
//     (--sni-name=NAME changes it).
//   - Against a listener that requires a client certificate it still
//     reports TLS 1.2 enabled but lists no TLS 1.2 suite (those handshakes
//     fail); TLS 1.3 suites are listed. Pass "--certs=CERT.pem" and
//     "--pk=KEY.pem" (PKCS#8 keys are fine) as extra arguments to scan an
//     mTLS listener fully.
//
// Tests call [Require] first: without the sslscan binary it skips the
// test, except in CI (CI=true), where a missing external peer is a
// failure.
package sslscan
