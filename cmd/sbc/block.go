package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/sbc"
)

const blockUsage = `usage:
  sbc block list [-admin ADDR]
  sbc block add  [-admin ADDR] [-reason TEXT] [-ttl DURATION] [-force] PREFIX
  sbc block del  [-admin ADDR] PREFIX

ADDR is the running SBC's admin listener (default 127.0.0.1:9090).
PREFIX is a CIDR or an address ("192.0.2.7" means /32).
`

// cmdBlock manages the blocklist of a running SBC through its admin
// listener.
func cmdBlock(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, blockUsage)
		return 2
	}
	verb := args[0]
	fs := newFlags("block "+verb, stderr)
	admin := fs.String("admin", "127.0.0.1:9090", "admin listener of the running SBC")
	reason := fs.String("reason", "manual", "reason recorded with the entry (add)")
	ttl := fs.Duration("ttl", 0, "how long the block lasts (add); 0: until removed")
	force := fs.Bool("force", false, "block a prefix that overlaps the never-block list (a trunk, a pool target, an admin client) (add)")
	if code, ok := parseFlags(fs, args[1:]); !ok {
		return code
	}
	base := "http://" + *admin + "/v1/blocklist"
	client := &http.Client{Timeout: 10 * time.Second}
	switch verb {
	case "list":
		res, err := client.Get(base)
		if err != nil {
			fmt.Fprintln(stderr, "sbc block:", err)
			return 1
		}
		defer res.Body.Close()
		if res.StatusCode != http.StatusOK {
			return httpFail(res, stderr)
		}
		var list []acl.Entry
		if err := json.NewDecoder(res.Body).Decode(&list); err != nil {
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
		var req *http.Request
		if verb == "add" {
			body := sbc.BlockRequest{Prefix: prefix, Reason: *reason, Force: *force}
			if *ttl > 0 {
				body.TTL = ttl.String()
			}
			b, _ := json.Marshal(body)
			req, _ = http.NewRequest(http.MethodPost, base, bytes.NewReader(b))
			req.Header.Set("Content-Type", "application/json")
		} else {
			req, _ = http.NewRequest(http.MethodDelete, base+"?prefix="+url.QueryEscape(prefix), nil)
		}
		res, err := client.Do(req)
		if err != nil {
			fmt.Fprintln(stderr, "sbc block:", err)
			return 1
		}
		defer res.Body.Close()
		if res.StatusCode/100 != 2 {
			return httpFail(res, stderr)
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

func httpFail(res *http.Response, stderr io.Writer) int {
	b, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
	fmt.Fprintf(stderr, "sbc block: %s: %s\n", res.Status, strings.TrimSpace(string(b)))
	return 1
}
