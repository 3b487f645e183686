package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/sbc-project/sbc/policy"
	"github.com/sbc-project/sbc/sbc"
)

const adminUsage = `usage:
  sbc admin key create -role ROLE[,ROLE...] [-name NAME] [-config FILE | -keys-file PATH] [-print]
  sbc admin key list   [-config FILE | -keys-file PATH]
  sbc admin key revoke [-config FILE | -keys-file PATH] ID
  sbc api [-admin ADDR] [credentials] METHOD PATH [JSON]

Roles: admin (everything), operator (hang up calls, block/unblock, drain;
read included), read (status, calls, trunks, pools, blocklist, policy),
audit (audit log and CDRs).

"key create" makes a random key, prints it once, and stores only its
SHA-256 in the key store: the policy's admin.keys_file, or admin_keys.json
in its state_dir (-config FILE; without it, the embedded example policy's
keys_file, ./sbc-admin-keys.json). The running SBC picks it up within a
second, without a reload. With -print nothing is stored: the api_keys entry
to put in the policy is printed instead.

"sbc api" sends one request to the admin API and prints the JSON answer,
e.g. "sbc api GET /v1/calls", "sbc api POST /v1/drain '{"deadline":"10m"}'"
(docs/openapi.yaml lists the endpoints).
` + adminFlagsUsage

func cmdAdmin(args []string, stdout, stderr io.Writer) int {
	if len(args) < 2 || args[0] != "key" {
		fmt.Fprint(stderr, adminUsage)
		return 2
	}
	verb := args[1]
	fs := newFlags("admin key "+verb, stderr)
	cfg := fs.String("config", "", "policy file whose admin.keys_file (or state_dir) holds the keys")
	keysFile := fs.String("keys-file", "", "the key store file (instead of the policy's)")
	roles := fs.String("role", "", "create: the key's roles, comma separated")
	name := fs.String("name", "", "create: a note on what the key is for")
	printEntry := fs.Bool("print", false, "create: print the policy's api_keys entry instead of storing the key")
	if code, ok := parseFlags(fs, args[2:]); !ok {
		return code
	}
	path := *keysFile
	if path == "" && !(verb == "create" && *printEntry) {
		var p *policy.Policy
		if *cfg == "" {
			p = defaultPolicy()
		} else {
			var err error
			if p, err = policy.Load(*cfg); err != nil {
				fmt.Fprintln(stderr, err)
				return 1
			}
		}
		if path = p.Admin.KeysPath; path == "" {
			fmt.Fprintf(stderr, "sbc admin key: %s has no admin.keys_file and no server.state_dir: give -keys-file, or -print and put the entry in [admin] api_keys\n", p.Source)
			return 1
		}
	}
	switch verb {
	case "create":
		if fs.NArg() != 0 || *roles == "" {
			fmt.Fprint(stderr, adminUsage)
			return 2
		}
		key, sk, err := sbc.NewAPIKey(strings.Split(*roles, ","), *name)
		if err != nil {
			fmt.Fprintln(stderr, "sbc admin key:", err)
			return 2
		}
		if *printEntry {
			fmt.Fprintf(stdout, "key (shown once, keep it secret): %s\n", key)
			q := make([]string, len(sk.Roles))
			for i, r := range sk.Roles {
				q[i] = fmt.Sprintf("%q", r)
			}
			fmt.Fprintf(stdout, "policy [admin] api_keys entry:\n  { id = %q, sha256 = %q, roles = [%s] }\n", sk.ID, sk.SHA256, strings.Join(q, ", "))
			return 0
		}
		if err := sbc.UpdateKeyFile(path, func(ks []sbc.StoredKey) ([]sbc.StoredKey, error) { return append(ks, sk), nil }); err != nil {
			fmt.Fprintln(stderr, "sbc admin key:", err)
			return 1
		}
		fmt.Fprintf(stdout, "key %s (roles %s) stored in %s as a hash.\n", sk.ID, strings.Join(sk.Roles, ","), path)
		fmt.Fprintf(stdout, "The key, shown once (keep it secret; use it as SBC_API_KEY):\n%s\n", key)
		return 0
	case "list":
		keys, err := sbc.ReadKeyFile(path)
		if err != nil {
			fmt.Fprintln(stderr, "sbc admin key:", err)
			return 1
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tROLES\tCREATED\tNAME")
		for _, k := range keys {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", k.ID, strings.Join(k.Roles, ","), k.Created.Format(time.RFC3339), k.Name)
		}
		tw.Flush()
		return 0
	case "revoke":
		if fs.NArg() != 1 {
			fmt.Fprint(stderr, adminUsage)
			return 2
		}
		id := fs.Arg(0)
		err := sbc.UpdateKeyFile(path, func(ks []sbc.StoredKey) ([]sbc.StoredKey, error) {
			n := len(ks)
			ks = slices.DeleteFunc(ks, func(k sbc.StoredKey) bool { return k.ID == id })
			if len(ks) == n {
				return nil, fmt.Errorf("no key %q in %s", id, path)
			}
			return ks, nil
		})
		if err != nil {
			fmt.Fprintln(stderr, "sbc admin key:", err)
			return 1
		}
		fmt.Fprintf(stdout, "key %s revoked\n", id)
		return 0
	}
	fmt.Fprint(stderr, adminUsage)
	return 2
}

// cmdAPI sends one request to the admin API.
func cmdAPI(args []string, stdout, stderr io.Writer) int {
	fs := newFlags("api", stderr)
	ac := addAdminFlags(fs)
	if code, ok := parseFlags(fs, args); !ok {
		return code
	}
	if fs.NArg() < 2 || fs.NArg() > 3 {
		fmt.Fprint(stderr, adminUsage)
		return 2
	}
	method, path := strings.ToUpper(fs.Arg(0)), fs.Arg(1)
	if !strings.HasPrefix(path, "/") {
		fmt.Fprintln(stderr, "sbc api: PATH starts with /, e.g. /v1/status")
		return 2
	}
	var body any
	if fs.NArg() == 3 {
		if !json.Valid([]byte(fs.Arg(2))) {
			fmt.Fprintln(stderr, "sbc api: the body is not JSON")
			return 2
		}
		body = []byte(fs.Arg(2))
	} else if method != http.MethodGet && method != http.MethodDelete {
		body = []byte("{}")
	}
	b, err := ac.do(method, path, body)
	if err != nil {
		fmt.Fprintln(stderr, "sbc api:", err)
		return 1
	}
	var out bytes.Buffer
	if json.Indent(&out, b, "", "  ") != nil {
		out.Reset()
		out.Write(b)
	}
	stdout.Write(bytes.TrimRight(out.Bytes(), "\n"))
	fmt.Fprintln(stdout)
	return 0
}
