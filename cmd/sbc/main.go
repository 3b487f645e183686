// Command sbc is the edge SIP security proxy / session border controller.
//
//	sbc run   [-config FILE]   run the SBC (default: the embedded example policy)
//	sbc check  -config FILE    validate a policy file; exit 1 with FILE:LINE:COL errors
//	sbc demo                   show the SBC carrying calls on loopback, then exit
//	sbc block list|add|del     manage the blocklist of a running SBC
//	sbc version                print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = "dev"

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: sbc <command> [flags]

commands:
  run     [-config FILE]   run the SBC (without -config: the embedded example policy)
  check   -config FILE     validate a policy file (exit 0 valid, 1 invalid)
  demo                     place a few calls through an SBC on loopback and print what happened
  block list|add|del       show or change the blocklist of a running SBC (see "sbc block")
  version                  print the version
`)
}

func runMain(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "run":
		return cmdRun(args[1:], stdout, stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "block":
		return cmdBlock(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "sbc", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	}
	fmt.Fprintf(stderr, "sbc: unknown command %q\n", args[0])
	usage(stderr)
	return 2
}

func newFlags(name string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("sbc "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	return fs
}

func parseFlags(fs *flag.FlagSet, args []string) (int, bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0, false
		}
		return 2, false
	}
	return 0, true
}
