// Command sbc is the edge SIP security proxy / session border controller.
//
//	sbc run   [-config] [FILE] run the SBC (default: the embedded example policy)
//	sbc check [-config] FILE   validate a policy file; exit 1 with FILE:LINE:COL errors
//	sbc demo                   show the SBC carrying calls on loopback, then exit
//	sbc block list|add|del     manage the blocklist of a running SBC
//	sbc audit verify FILE...   check the hash chain of audit log files
//	sbc secrets genkey|seal|rotate  master keys and sealed secrets
//	sbc admin key create|list|revoke  API keys of the admin API
//	sbc api METHOD PATH [JSON] one request to the admin API
//	sbc version                print the version
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
)

func main() {
	os.Exit(runMain(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprint(w, `usage: sbc <command> [flags]

commands:
  run     [[-config] FILE] run the SBC on a policy file (without one: the embedded example policy)
  check   [-config] FILE   validate a policy file (exit 0 valid, 1 invalid)
  demo                     place a few calls through an SBC on loopback and print what happened
  block list|add|del       show or change the blocklist of a running SBC (see "sbc block")
  audit verify FILE...     check the hash chain of audit log files (exit 1 at the first broken record)
  secrets genkey|seal|rotate  make a master key, seal a value, re-seal files under a new key (see "sbc secrets")
  admin key create|list|revoke  API keys of the admin API (see "sbc admin")
  api METHOD PATH [JSON]   send one request to the admin API of a running SBC
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
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "demo":
		return cmdDemo(args[1:], stdout, stderr)
	case "block":
		return cmdBlock(args[1:], stdout, stderr)
	case "audit":
		return cmdAudit(args[1:], stdout, stderr)
	case "secrets":
		return cmdSecrets(args[1:], stdout, stderr)
	case "admin":
		return cmdAdmin(args[1:], stdout, stderr)
	case "api":
		return cmdAPI(args[1:], stdout, stderr)
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "sbc", versionString())
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

// parseConfigArgs parses the flags of a command that takes one policy
// file, given as -config FILE or as a single positional FILE (after the
// flags). Anything else left over is an error: a file name that was
// silently ignored would run the wrong policy. It returns the exit code
// and false when the command must stop.
func parseConfigArgs(fs *flag.FlagSet, args []string, cfg *string, stderr io.Writer) (int, bool) {
	if code, ok := parseFlags(fs, args); !ok {
		return code, false
	}
	rest := fs.Args()
	switch {
	case len(rest) == 0:
		return 0, true
	case len(rest) == 1 && *cfg == "":
		*cfg = rest[0]
		return 0, true
	case len(rest) == 1 && *cfg == rest[0]:
		return 0, true
	case len(rest) == 1:
		fmt.Fprintf(stderr, "%s: two policy files given (-config %s and %s)\n", fs.Name(), *cfg, rest[0])
	default:
		stray := rest[1:]
		if *cfg != "" {
			stray = rest
		}
		hint := ""
		if strings.HasPrefix(stray[0], "-") {
			hint = " (flags go before FILE)"
		}
		fmt.Fprintf(stderr, "%s: unexpected argument %q%s\n", fs.Name(), stray[0], hint)
	}
	fs.Usage()
	return 2, false
}
