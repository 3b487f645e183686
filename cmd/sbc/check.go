package main

import (
	"fmt"
	"io"

	"github.com/sbc-project/sbc/policy"
)

func cmdCheck(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("check", stderr)
	cfg := fs.String("config", "", "policy file (TOML) to validate")
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if *cfg == "" {
		fmt.Fprintln(stderr, "sbc check: -config FILE is required")
		return 2
	}
	if _, err := policy.Load(*cfg); err != nil {
		fmt.Fprintln(stdout, err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: ok\n", *cfg)
	return 0
}
