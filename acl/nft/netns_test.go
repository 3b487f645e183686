package nft

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/sbc-project/sbc/internal/netns"
	"github.com/sbc-project/sbc/internal/netns/netnstest"
)

// requirePriv skips a test that needs root, or fails it when CI demands
// privileged tests (SBC_REQUIRE_PRIV=1).
func requirePriv(t testing.TB) {
	t.Helper()
	netnstest.RequirePriv(t, "ip", "nft")
}

// testNS is a network namespace made for one test and removed after it.
type testNS struct {
	name string
	fd   int
}

func newNS(t testing.TB) *testNS {
	t.Helper()
	requirePriv(t)
	name := netnstest.New(t, "sbcnft") // loopback up
	f, err := os.Open(netns.Path(name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return &testNS{name: name, fd: int(f.Fd())}
}

// sh runs a command and fails the test when it fails.
func sh(t testing.TB, args ...string) string {
	t.Helper()
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// sh runs a command inside the namespace.
func (ns *testNS) sh(t testing.TB, args ...string) string {
	t.Helper()
	return sh(t, append([]string{"ip", "netns", "exec", ns.name}, args...)...)
}

// do runs fn on an OS thread switched into the namespace; sockets created
// by fn belong to it.
func (ns *testNS) do(fn func() error) error {
	return netns.Do(ns.name, fn)
}

// nftJSON is `nft -j list table inet NAME` decoded.
type nftJSON struct {
	Sets     map[string]jsonSet
	Chains   map[string]jsonChain
	Counters map[string]jsonCounter
	Rules    []jsonRule
}

type jsonSet struct {
	Name  string            `json:"name"`
	Type  string            `json:"type"`
	Flags []string          `json:"flags"`
	Size  int               `json:"size"`
	Elem  []json.RawMessage `json:"elem"`
}

type jsonChain struct {
	Name   string `json:"name"`
	Type   string `json:"type"`
	Hook   string `json:"hook"`
	Prio   int    `json:"prio"`
	Policy string `json:"policy"`
}

type jsonCounter struct {
	Name    string `json:"name"`
	Packets uint64 `json:"packets"`
	Bytes   uint64 `json:"bytes"`
}

type jsonRule struct {
	Chain   string            `json:"chain"`
	Comment string            `json:"comment"`
	Expr    []json.RawMessage `json:"expr"`
}

// elem is one set element as nft shows it: the value ("10.0.0.1",
// "10.0.0.0/24", "10.0.0.0-10.0.2.255", "5060", "10000-20000") and its
// timeout and time left in seconds (0 when it has none).
type elem struct {
	Val              string
	Timeout, Expires int
}

func (s jsonSet) elems(t testing.TB) []elem {
	t.Helper()
	var out []elem
	for _, raw := range s.Elem {
		var wrapped struct {
			Elem *struct {
				Val     json.RawMessage `json:"val"`
				Timeout int             `json:"timeout"`
				Expires int             `json:"expires"`
			} `json:"elem"`
		}
		e := elem{}
		v := raw
		if json.Unmarshal(raw, &wrapped) == nil && wrapped.Elem != nil {
			v, e.Timeout, e.Expires = wrapped.Elem.Val, wrapped.Elem.Timeout, wrapped.Elem.Expires
		}
		e.Val = jsonValue(t, v)
		out = append(out, e)
	}
	return out
}

func jsonValue(t testing.TB, v json.RawMessage) string {
	t.Helper()
	var s string
	if json.Unmarshal(v, &s) == nil {
		return s
	}
	var n json.Number
	if json.Unmarshal(v, &n) == nil {
		return n.String()
	}
	var p struct {
		Prefix *struct {
			Addr string `json:"addr"`
			Len  int    `json:"len"`
		} `json:"prefix"`
		Range []json.RawMessage `json:"range"`
	}
	if err := json.Unmarshal(v, &p); err != nil {
		t.Fatalf("element value %s: %v", v, err)
	}
	switch {
	case p.Prefix != nil:
		return fmt.Sprintf("%s/%d", p.Prefix.Addr, p.Prefix.Len)
	case len(p.Range) == 2:
		return jsonValue(t, p.Range[0]) + "-" + jsonValue(t, p.Range[1])
	}
	t.Fatalf("unknown element value %s", v)
	return ""
}

// list runs nft -j list table inet table inside the namespace.
func (ns *testNS) list(t testing.TB, table string) nftJSON {
	t.Helper()
	out := ns.sh(t, "nft", "-j", "list", "table", "inet", table)
	var doc struct {
		Nftables []map[string]json.RawMessage `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		t.Fatalf("nft -j: %v\n%s", err, out)
	}
	r := nftJSON{Sets: map[string]jsonSet{}, Chains: map[string]jsonChain{}, Counters: map[string]jsonCounter{}}
	for _, obj := range doc.Nftables {
		for kind, raw := range obj {
			var err error
			switch kind {
			case "set":
				var s jsonSet
				err = json.Unmarshal(raw, &s)
				r.Sets[s.Name] = s
			case "chain":
				var c jsonChain
				err = json.Unmarshal(raw, &c)
				r.Chains[c.Name] = c
			case "counter":
				var c jsonCounter
				err = json.Unmarshal(raw, &c)
				r.Counters[c.Name] = c
			case "rule":
				var ru jsonRule
				err = json.Unmarshal(raw, &ru)
				r.Rules = append(r.Rules, ru)
			}
			if err != nil {
				t.Fatalf("nft -j %s: %v: %s", kind, err, raw)
			}
		}
	}
	return r
}

// tableExists reports whether inet table exists in the namespace.
func (ns *testNS) tableExists(t testing.TB, table string) bool {
	t.Helper()
	out := ns.sh(t, "nft", "list", "tables", "inet")
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimSpace(l) == "table inet "+table {
			return true
		}
	}
	return false
}
