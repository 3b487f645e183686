package certgen

import (
	"fmt"
	"net"
	"os"
	"time"
)

// Examples writes the example certificate set into dir (created with mode
// 0755 if missing), replacing files of the same names:
//
//	ca.pem, ca-key.pem            CA "sbc test CA"
//	sbc.pem, sbc-key.pem          CN sbc, server and client usage,
//	                              DNS localhost and sbc.example.test,
//	                              IP 127.0.0.1 and ::1
//	carrier.pem, carrier-key.pem  CN carrier, client usage,
//	                              DNS carrier.example.test
//	backend.pem, backend-key.pem  CN backend, server usage,
//	                              DNS backend.example.test, IP 127.0.0.1
//	admin.pem, admin-key.pem      CN admin, client usage (admin API)
//	monitoring.pem, ...-key.pem   CN monitoring, client usage (admin API)
//
// Each call makes a new CA and new keys.
func Examples(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("certgen: %w", err)
	}
	ca, err := NewCA("sbc test CA", time.Time{}, time.Time{})
	if err != nil {
		return err
	}
	if err := ca.WriteFiles(dir, "ca"); err != nil {
		return err
	}
	for _, e := range exampleLeaves() {
		leaf, err := ca.Issue(e.opts)
		if err != nil {
			return err
		}
		if err := leaf.WriteFiles(dir, e.base); err != nil {
			return err
		}
	}
	return nil
}

type exampleLeaf struct {
	base string
	opts LeafOptions
}

func exampleLeaves() []exampleLeaf {
	return []exampleLeaf{
		{"sbc", LeafOptions{
			CN:          "sbc",
			DNSNames:    []string{"localhost", "sbc.example.test"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			IsServer:    true,
			IsClient:    true,
		}},
		{"carrier", LeafOptions{
			CN:       "carrier",
			DNSNames: []string{"carrier.example.test"},
			IsClient: true,
		}},
		{"backend", LeafOptions{
			CN:          "backend",
			DNSNames:    []string{"backend.example.test"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
			IsServer:    true,
		}},
		{"admin", LeafOptions{CN: "admin", IsClient: true}},
		{"monitoring", LeafOptions{CN: "monitoring", IsClient: true}},
	}
}
