package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"text/tabwriter"
	"time"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/sbc"
)

const blockUsage = `usage:
  sbc block list [-admin ADDR] [credentials]
  sbc block add  [-admin ADDR] [credentials] [-reason TEXT] [-ttl DURATION] [-force] PREFIX
  sbc block del  [-admin ADDR] [credentials] PREFIX

PREFIX is a CIDR or an address ("192.0.2.7" means /32).
` + adminFlagsUsage

// cmdBlock manages the blocklist of a running SBC through its admin API.
func cmdBlock(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, blockUsage)
		return 2
	}
	verb := args[0]
	fs := newFlags("block "+verb, stderr)
	ac := addAdminFlags(fs)
	reason := fs.String("reason", "manual", "reason recorded with the entry (add)")
	ttl := fs.Duration("ttl", 0, "how long the block lasts (add); 0: until removed")
	force := fs.Bool("force", false, "block a prefix that overlaps the never-block list (a trunk, a pool target, an admin client) (add)")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	switch verb {
	case "list":
		b, err := ac.do(http.MethodGet, "/v1/blocklist", nil)
		if err != nil {
			fmt.Fprintln(stderr, "sbc block:", err)
			return 1
		}
		var list []acl.Entry
		if err := json.Unmarshal(b, &list); err != nil {
			fmt.Fprintln(stderr, "sbc block: bad answer:", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "PREFIX\tREASON\tORIGIN\tEXPIRES")
		for _, e := range list {
			exp := "never"
			if !e.Expires.IsZero() {
				exp = e.Expires.UTC().Format(time.RFC3339) + " (in " + time.Until(e.Expires).Round(time.Second).String() + ")"
			}
			origin := e.Origin.String()
			if e.Forced {
				origin += " (forced)"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", e.Prefix, e.Reason, origin, exp)
		}
		tw.Flush()
		return 0
	case "add", "del":
		if fs.NArg() != 1 {
			fmt.Fprint(stderr, blockUsage)
			return 2
		}
		prefix := fs.Arg(0)
		if _, err := acl.ParsePrefix(prefix); err != nil {
			fmt.Fprintf(stderr, "sbc block: %q: %v\n", prefix, err)
			return 2
		}
		var err error
		if verb == "add" {
			body := sbc.BlockRequest{Prefix: prefix, Reason: *reason, Force: *force}
			if *ttl > 0 {
				body.TTL = ttl.String()
			}
			_, err = ac.do(http.MethodPost, "/v1/blocklist", body)
		} else {
			_, err = ac.do(http.MethodDelete, "/v1/blocklist?prefix="+url.QueryEscape(prefix), nil)
		}
		if err != nil {
			fmt.Fprintln(stderr, "sbc block:", err)
			return 1
		}
		if verb == "add" {
			fmt.Fprintf(stdout, "blocked %s\n", prefix)
		} else {
			fmt.Fprintf(stdout, "unblocked %s\n", prefix)
		}
		return 0
	}
	fmt.Fprint(stderr, blockUsage)
	return 2
}
