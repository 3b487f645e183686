package main

import (
	"fmt"
	"io"

	"github.com/sbc-project/sbc/policy"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	cfg := fs.String("config", "", "policy file (TOML) to validate; same as FILE")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: sbc check FILE | -config FILE")
		fs.PrintDefaults()
	}
	if code, ok := parseConfigArgs(fs, args, cfg, stderr); !ok {
		return code
	}
	if *cfg == "" {
		fmt.Fprintln(stderr, "sbc check: a policy file is required")
		fs.Usage()
		return 2
	}
	if _, err := policy.Load(*cfg); err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *cfg)
	return 0
}
