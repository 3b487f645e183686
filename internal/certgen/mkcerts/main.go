// Command mkcerts writes the example test PKI (see internal/certgen.Examples)
// into a directory:
//
//	go run ./internal/certgen/mkcerts -out examples/certs
//
// The files are for tests and demos on loopback only; every run makes a new
// CA and new keys and replaces the files.
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/sbc-project/sbc/internal/certgen"
)

func main() {
	out := flag.String("out", "examples/certs", "directory to write the certificates and keys into")
	flag.Parse()
	if flag.NArg() != 0 {
		fmt.Fprintln(os.Stderr, "mkcerts: unexpected arguments:", flag.Args())
		os.Exit(2)
	}
	if err := certgen.Examples(*out); err != nil {
		fmt.Fprintln(os.Stderr, "mkcerts:", err)
		os.Exit(1)
	}
	fmt.Println("mkcerts: wrote ca, sbc, carrier and backend certificates and keys to", *out)
}
