// Package certgen owns the project's test PKI: a certificate authority and
// the leaf certificates it issues, made with crypto/x509 and ECDSA P-256
// keys, for the TLS and WSS tests (Go peers, stunnel shims, sslscan) and for
// the example certificates shipped with `make example-certs`.
//
// [NewCA] makes a self-signed CA; [CA.Issue] signs a [Leaf] described by
// [LeafOptions] (subject CN, DNS, IP and URI SANs, validity, server and/or
// client extended key usage). Both write PEM: certificates as
// "CERTIFICATE", private keys as PKCS#8 "PRIVATE KEY", and WriteFiles puts
// them in NAME.pem and NAME-key.pem (keys mode 0600). [Leaf.TLSCertificate]
// gives a ready tls.Certificate, [Leaf.SPKISHA256] the SHA-256 pin of the
// public key (hex of the DER SubjectPublicKeyInfo).
//
// [Examples] writes the example set into a directory:
//
//	ca.pem, ca-key.pem            the CA ("sbc test CA")
//	sbc.pem, sbc-key.pem          server and client: CN sbc, DNS localhost and
//	                              sbc.example.test, IP 127.0.0.1 and ::1
//	carrier.pem, carrier-key.pem  client: CN carrier, DNS carrier.example.test
//	backend.pem, backend-key.pem  server: CN backend, DNS backend.example.test,
//	                              IP 127.0.0.1
//	admin.pem, admin-key.pem      client: CN admin (the admin API's operator)
//	monitoring.pem, monitoring-key.pem  client: CN monitoring (a scraper)
//
// Nothing here is meant for production: keys are made fresh on each call,
// never stored outside the files a caller asks for, and the CA has no
// revocation.
package certgen
