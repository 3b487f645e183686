package nft

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// These tests need root: each runs in a network namespace of its own and
// checks what an operator would see with `nft -j list table inet sbc`.

func newFW(t *testing.T, ns *testNS, opts Options) *Firewall {
	t.Helper()
	opts.NetNS = ns.fd
	if opts.SIPPorts == nil {
		opts.SIPPorts = []uint16{5060, 5061}
	}
	f, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func pfx(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// render turns a rule's JSON expressions into a short text such as
// "ip saddr == @blocked4; counter blocked; drop".
func render(t testing.TB, r jsonRule) string {
	t.Helper()
	var parts []string
	for _, raw := range r.Expr {
		var m map[string]json.RawMessage
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatalf("rule expr %s: %v", raw, err)
		}
		for k, v := range m {
			switch k {
			case "match":
				var mt struct {
					Op   string `json:"op"`
					Left struct {
						Payload struct{ Protocol, Field string } `json:"payload"`
					} `json:"left"`
					Right json.RawMessage `json:"right"`
				}
				if err := json.Unmarshal(v, &mt); err != nil {
					t.Fatal(err)
				}
				parts = append(parts, fmt.Sprintf("%s %s %s %s", mt.Left.Payload.Protocol, mt.Left.Payload.Field, mt.Op, jsonValue(t, mt.Right)))
			case "counter":
				var name string
				if err := json.Unmarshal(v, &name); err != nil {
					t.Fatalf("anonymous counter %s", v)
				}
				parts = append(parts, "counter "+name)
			case "jump":
				var j struct{ Target string }
				must(t, json.Unmarshal(v, &j))
				parts = append(parts, "jump "+j.Target)
			default:
				parts = append(parts, k)
			}
		}
	}
	return strings.Join(parts, "; ")
}

func rulesOf(t testing.TB, doc nftJSON, chain string) []string {
	var out []string
	for _, r := range doc.Rules {
		if r.Chain == chain {
			out = append(out, render(t, r))
		}
	}
	return out
}

// vals returns the element values of a set, sorted.
func vals(t testing.TB, doc nftJSON, set string) []string {
	t.Helper()
	s, ok := doc.Sets[set]
	if !ok {
		t.Fatalf("no set %s", set)
	}
	var out []string
	for _, e := range s.elems(t) {
		out = append(out, e.Val)
	}
	slices.Sort(out)
	return out
}

// elemOf returns the element of set whose value is v.
func elemOf(t testing.TB, doc nftJSON, set, v string) elem {
	t.Helper()
	for _, e := range doc.Sets[set].elems(t) {
		if e.Val == v {
			return e
		}
	}
	t.Fatalf("set %s has no element %s (has %v)", set, v, vals(t, doc, set))
	return elem{}
}

func TestLayout(t *testing.T) {
	for _, trunksOnly := range []bool{false, true} {
		t.Run(fmt.Sprint("TrunksOnly=", trunksOnly), func(t *testing.T) {
			ns := newNS(t)
			newFW(t, ns, Options{SIPPorts: []uint16{5061, 5060, 5060}, MediaPorts: [2]uint16{10000, 20000}, TrunksOnly: trunksOnly, MaxEntries: 1000,
				UDPMediaPorts: [][2]uint16{{30000, 30999}, {31000, 31999}, {40000, 40009}}})
			doc := ns.list(t, "sbc")

			wantSets := map[string]struct {
				typ   string
				flags []string
				size  int
			}{
				SetBlocked4:    {"ipv4_addr", []string{"timeout"}, 1000},
				SetBlocked6:    {"ipv6_addr", []string{"timeout"}, 1000},
				SetBlocked4Net: {"ipv4_addr", []string{"interval", "timeout"}, 0},
				SetBlocked6Net: {"ipv6_addr", []string{"interval", "timeout"}, 0},
				SetTrunks4:     {"ipv4_addr", []string{"interval"}, 0},
				SetTrunks6:     {"ipv6_addr", []string{"interval"}, 0},
				SetPorts:       {"inet_service", []string{"interval"}, 0},
				SetSIPPorts:    {"inet_service", nil, 0},
				SetMediaUDP:    {"inet_service", []string{"interval"}, 0},
			}
			if len(doc.Sets) != len(wantSets) {
				t.Errorf("sets: got %d, want %d", len(doc.Sets), len(wantSets))
			}
			for name, w := range wantSets {
				s, ok := doc.Sets[name]
				if !ok {
					t.Errorf("set %s missing", name)
					continue
				}
				if s.Type != w.typ || !slices.Equal(s.Flags, w.flags) || s.Size != w.size {
					t.Errorf("set %s: type %s flags %v size %d; want %s %v %d", name, s.Type, s.Flags, s.Size, w.typ, w.flags, w.size)
				}
			}
			if got := vals(t, doc, SetPorts); !slices.Equal(got, []string{"10000-20000", "5060-5061"}) {
				t.Errorf("ports = %v", got)
			}
			if got := vals(t, doc, SetSIPPorts); !slices.Equal(got, []string{"5060", "5061"}) {
				t.Errorf("sip_ports = %v", got)
			}
			if got := vals(t, doc, SetMediaUDP); !slices.Equal(got, []string{"30000-31999", "40000-40009"}) {
				t.Errorf("media_udp = %v", got)
			}
			for _, c := range []string{CounterBlocked, CounterNotTrunk} {
				if _, ok := doc.Counters[c]; !ok {
					t.Errorf("counter %s missing", c)
				}
			}
			hook := doc.Chains[ChainHook]
			if hook.Type != "filter" || hook.Hook != "prerouting" || hook.Prio != Priority || hook.Policy != "accept" {
				t.Errorf("chain %s = %+v", ChainHook, hook)
			}
			if g, ok := doc.Chains[ChainGuard]; !ok || g.Hook != "" {
				t.Errorf("chain %s = %+v, %v; want a regular chain", ChainGuard, g, ok)
			}
			wantHook := []string{
				"udp dport == @ports; jump guard",
				"tcp dport == @ports; jump guard",
				"udp dport == @media_udp; jump guard",
			}
			wantGuard := []string{
				"ip saddr == @blocked4; counter blocked; drop",
				"ip saddr == @blocked4_net; counter blocked; drop",
				"ip6 saddr == @blocked6; counter blocked; drop",
				"ip6 saddr == @blocked6_net; counter blocked; drop",
			}
			if trunksOnly {
				wantGuard = append(wantGuard,
					"th dport == @sip_ports; ip saddr != @trunks4; counter not_trunk; drop",
					"th dport == @sip_ports; ip6 saddr != @trunks6; counter not_trunk; drop")
			}
			if got := rulesOf(t, doc, ChainHook); !slices.Equal(got, wantHook) {
				t.Errorf("chain %s rules:\n got %q\nwant %q", ChainHook, got, wantHook)
			}
			if got := rulesOf(t, doc, ChainGuard); !slices.Equal(got, wantGuard) {
				t.Errorf("chain %s rules:\n got %q\nwant %q", ChainGuard, got, wantGuard)
			}
		})
	}
}

func TestBlockTimeouts(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{})
	cases := []struct {
		set, val string
		p        netip.Prefix
	}{
		{SetBlocked4, "192.0.2.7", pfx("192.0.2.7/32")},
		{SetBlocked6, "2001:db8::7", pfx("2001:db8::7/128")},
		{SetBlocked4Net, "198.51.100.0/24", pfx("198.51.100.0/24")},
		{SetBlocked6Net, "2001:db8:1::/48", pfx("2001:db8:1::/48")},
	}
	// Each step blocks again with another TTL: the element must carry the
	// new timeout, longer or shorter, and have (almost) all of it left.
	for _, ttl := range []time.Duration{time.Hour, 2 * time.Hour, 30 * time.Minute, 0, 3 * time.Hour} {
		for _, c := range cases {
			must(t, f.Block(c.p, ttl))
		}
		doc := ns.list(t, "sbc")
		for _, c := range cases {
			e := elemOf(t, doc, c.set, c.val)
			want := int(ttl / time.Second)
			if e.Timeout != want || (want > 0 && e.Expires < want-5) {
				t.Errorf("ttl %v: %s %s: timeout %ds expires %ds, want timeout %ds", ttl, c.set, c.val, e.Timeout, e.Expires, want)
			}
			if n := len(doc.Sets[c.set].Elem); n != 1 {
				t.Errorf("ttl %v: set %s has %d elements, want 1", ttl, c.set, n)
			}
		}
	}
}

func TestIntervalMerge(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{})
	check := func(step string, want4, want6 []string) {
		t.Helper()
		doc := ns.list(t, "sbc")
		if got := vals(t, doc, SetBlocked4Net); !slices.Equal(got, want4) {
			t.Errorf("%s: blocked4_net = %q, want %q", step, got, want4)
		}
		if got := vals(t, doc, SetBlocked6Net); !slices.Equal(got, want6) {
			t.Errorf("%s: blocked6_net = %q, want %q", step, got, want6)
		}
	}
	// A /32 inside a blocked net lives in the address set: no conflict.
	must(t, f.Block(pfx("10.1.2.3/32"), 0))
	must(t, f.Block(pfx("10.1.2.0/24"), 0))
	must(t, f.Block(pfx("10.1.0.0/16"), 0)) // contains the /24
	check("contained", []string{"10.1.0.0/16"}, nil)
	must(t, f.Block(pfx("10.3.0.0/25"), 0))
	must(t, f.Block(pfx("10.3.0.128/25"), 0)) // adjacent
	must(t, f.Block(pfx("10.3.1.0/24"), 0))   // adjacent again
	check("adjacent", []string{"10.1.0.0/16", "10.3.0.0/23"}, nil)
	// Touching prefixes of different origins become one range.
	must(t, f.Block(pfx("10.2.0.0/16"), 0))
	check("touching", []string{"10.1.0.0-10.3.1.255"}, nil)
	must(t, f.Unblock(pfx("10.2.0.0/16")))
	// Same prefix, same TTL, again: nothing changes.
	must(t, f.Block(pfx("10.3.1.0/24"), 0))
	check("again", []string{"10.1.0.0/16", "10.3.0.0/23"}, nil)

	// Unblocking one of the merged prefixes leaves the others (still one
	// range: they touch).
	must(t, f.Unblock(pfx("10.3.0.0/25")))
	check("unblock adjacent", []string{"10.1.0.0/16", "10.3.0.128-10.3.1.255"}, nil)
	// Unblocking the inner /24 changes nothing (the /16 still covers it);
	// unblocking the /16 then leaves nothing of 10.1 (the /24 is gone).
	must(t, f.Unblock(pfx("10.1.2.0/24")))
	check("unblock inner", []string{"10.1.0.0/16", "10.3.0.128-10.3.1.255"}, nil)
	must(t, f.Unblock(pfx("10.1.0.0/16")))
	check("unblock outer", []string{"10.3.0.128-10.3.1.255"}, nil)
	// The address set was never touched.
	if got := vals(t, ns.list(t, "sbc"), SetBlocked4); !slices.Equal(got, []string{"10.1.2.3"}) {
		t.Errorf("blocked4 = %q", got)
	}

	// Nested prefixes with different TTLs: the inner one outlives the
	// outer, so the outer is split around it.
	must(t, f.Block(pfx("2001:db8::/32"), time.Hour))
	must(t, f.Block(pfx("2001:db8:5::/48"), 2*time.Hour))
	doc := ns.list(t, "sbc")
	want := map[string]int{
		"2001:db8::-2001:db8:4:ffff:ffff:ffff:ffff:ffff": 3600,
		"2001:db8:5::/48": 7200,
		"2001:db8:6::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff": 3600,
	}
	got := doc.Sets[SetBlocked6Net].elems(t)
	if len(got) != len(want) {
		t.Fatalf("blocked6_net = %+v, want %v", got, want)
	}
	for _, e := range got {
		// The outer parts keep the /32's deadline, set a moment earlier.
		if w, ok := want[e.Val]; !ok || e.Timeout > w || e.Timeout < w-10 {
			t.Errorf("blocked6_net element %+v; want one of %v", e, want)
		}
	}
	// The inner one with a shorter TTL disappears into the outer.
	must(t, f.Block(pfx("2001:db8:5::/48"), time.Minute))
	check("inner shorter", []string{"10.3.0.128-10.3.1.255"}, []string{"2001:db8::/32"})
	// A prefix reaching the top of the address space has no end element.
	must(t, f.Block(pfx("255.255.255.0/24"), 0))
	must(t, f.Block(pfx("ffff::/16"), 0))
	check("top", []string{"10.3.0.128-10.3.1.255", "255.255.255.0/24"}, []string{"2001:db8::/32", "ffff::/16"})
	must(t, f.Unblock(pfx("255.255.255.0/24")))
	must(t, f.Unblock(pfx("ffff::/16")))
	check("top removed", []string{"10.3.0.128-10.3.1.255"}, []string{"2001:db8::/32"})
}

func TestMappedAndInvalid(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{})
	must(t, f.Block(pfx("::ffff:192.0.2.9/128"), time.Hour))
	must(t, f.Block(pfx("::ffff:198.51.100.0/120"), time.Hour))
	doc := ns.list(t, "sbc")
	if got := vals(t, doc, SetBlocked4); !slices.Equal(got, []string{"192.0.2.9"}) {
		t.Errorf("blocked4 = %q", got)
	}
	if got := vals(t, doc, SetBlocked4Net); !slices.Equal(got, []string{"198.51.100.0/24"}) {
		t.Errorf("blocked4_net = %q", got)
	}
	if err := f.Block(netip.Prefix{}, 0); !errors.Is(err, ErrInvalidPrefix) {
		t.Errorf("Block(zero prefix) = %v", err)
	}
	if err := f.Block(pfx("192.0.2.1/32"), -time.Second); !errors.Is(err, ErrInvalidTTL) {
		t.Errorf("Block(negative ttl) = %v", err)
	}
	if err := f.Unblock(netip.Prefix{}); !errors.Is(err, ErrInvalidPrefix) {
		t.Errorf("Unblock(zero prefix) = %v", err)
	}
	if err := f.Sync([]Entry{{Prefix: pfx("192.0.2.1/32")}, {}}); !errors.Is(err, ErrInvalidPrefix) {
		t.Errorf("Sync(zero prefix) = %v", err)
	}
	if err := f.SetTrunks([]netip.Prefix{{}}); !errors.Is(err, ErrInvalidPrefix) {
		t.Errorf("SetTrunks(zero prefix) = %v", err)
	}
	// Unblocking what is not blocked is fine.
	must(t, f.Unblock(pfx("203.0.113.1/32")))
	must(t, f.Unblock(pfx("203.0.113.0/24")))
	// The failed calls changed nothing.
	doc2 := ns.list(t, "sbc")
	if !slices.Equal(vals(t, doc2, SetBlocked4), []string{"192.0.2.9"}) || !slices.Equal(vals(t, doc2, SetBlocked4Net), []string{"198.51.100.0/24"}) {
		t.Errorf("state changed: %q %q", vals(t, doc2, SetBlocked4), vals(t, doc2, SetBlocked4Net))
	}
}

func TestSync(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{})
	must(t, f.Block(pfx("192.0.2.1/32"), time.Hour))
	must(t, f.Block(pfx("192.0.2.2/32"), time.Hour))
	must(t, f.Block(pfx("10.0.0.0/8"), time.Hour))
	must(t, f.Block(pfx("2001:db8::/32"), 0))
	// Changes behind the firewall's back, which Sync must repair: an
	// address, and an interval overlapping one Sync wants.
	ns.sh(t, "nft", "add element inet sbc blocked4 { 203.0.113.5 }")
	ns.sh(t, "nft", "add element inet sbc blocked4_net { 172.16.0.0/16 }")

	entries := []Entry{
		{pfx("192.0.2.2/32"), time.Hour},         // kept (same TTL)
		{pfx("192.0.2.3/32"), 2 * time.Hour},     // added
		{pfx("2001:db8::5/128"), 0},              // added, no timeout
		{pfx("10.0.0.0/8"), 3 * time.Hour},       // refreshed
		{pfx("172.16.0.0/12"), time.Hour},        // covers the foreign /16
		{pfx("172.16.5.0/24"), 30 * time.Minute}, // inside, shorter: merged away
		{pfx("198.51.100.0/24"), -time.Second},   // expired: left out
		{pfx("192.0.2.3/32"), time.Hour},         // duplicate: longest TTL wins
	}
	must(t, f.Sync(entries))
	doc := ns.list(t, "sbc")
	want := map[string]map[string]int{
		SetBlocked4:    {"192.0.2.2": 3600, "192.0.2.3": 7200},
		SetBlocked6:    {"2001:db8::5": 0},
		SetBlocked4Net: {"10.0.0.0/8": 3 * 3600, "172.16.0.0/12": 3600},
		SetBlocked6Net: {},
	}
	for set, w := range want {
		got := doc.Sets[set].elems(t)
		if len(got) != len(w) {
			t.Errorf("%s = %+v, want %v", set, got, w)
			continue
		}
		for _, e := range got {
			if tt, ok := w[e.Val]; !ok || e.Timeout != tt {
				t.Errorf("%s: element %+v, want %v", set, e, w)
			}
		}
	}
	// The firewall's own view follows: blocking a net overlapping one
	// Sync installed works.
	must(t, f.Block(pfx("172.16.0.0/12"), 5*time.Hour))
	if e := elemOf(t, ns.list(t, "sbc"), SetBlocked4Net, "172.16.0.0/12"); e.Timeout != 5*3600 {
		t.Errorf("after Block: %+v", e)
	}
	// Sync to nothing empties the blocked sets, and a second Sync is a
	// no-op.
	must(t, f.Sync(nil))
	must(t, f.Sync(nil))
	doc = ns.list(t, "sbc")
	for _, set := range []string{SetBlocked4, SetBlocked6, SetBlocked4Net, SetBlocked6Net} {
		if n := len(doc.Sets[set].Elem); n != 0 {
			t.Errorf("after Sync(nil): %s has %d elements", set, n)
		}
	}
}

func TestTrunks(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{TrunksOnly: true})
	must(t, f.SetTrunks([]netip.Prefix{pfx("192.0.2.0/25"), pfx("192.0.2.128/25"), pfx("192.0.2.10/32"), pfx("2001:db8::/64")}))
	doc := ns.list(t, "sbc")
	if got := vals(t, doc, SetTrunks4); !slices.Equal(got, []string{"192.0.2.0/24"}) {
		t.Errorf("trunks4 = %q", got)
	}
	if got := vals(t, doc, SetTrunks6); !slices.Equal(got, []string{"2001:db8::/64"}) {
		t.Errorf("trunks6 = %q", got)
	}
	// A trunk can still be blocked: the caller decides.
	must(t, f.Block(pfx("192.0.2.10/32"), time.Hour))
	must(t, f.SetTrunks([]netip.Prefix{pfx("198.51.100.0/24")}))
	doc = ns.list(t, "sbc")
	if got := vals(t, doc, SetTrunks4); !slices.Equal(got, []string{"198.51.100.0/24"}) {
		t.Errorf("trunks4 = %q", got)
	}
	if got := vals(t, doc, SetTrunks6); len(got) != 0 {
		t.Errorf("trunks6 = %q", got)
	}
	if got := vals(t, doc, SetBlocked4); !slices.Equal(got, []string{"192.0.2.10"}) {
		t.Errorf("blocked4 = %q", got)
	}
	must(t, f.SetTrunks(nil))
	if got := vals(t, ns.list(t, "sbc"), SetTrunks4); len(got) != 0 {
		t.Errorf("trunks4 = %q", got)
	}
}

// TestAdoption: a second New on the same namespace (a restart) keeps the
// elements, rebuilds the rules for its options, repairs what an operator
// changed inside the table, and leaves every other table alone.
func TestAdoption(t *testing.T) {
	ns := newNS(t)
	ns.sh(t, "nft", "add table inet other; add chain inet other c { type filter hook input priority 0; }; add rule inet other c udp dport 5060 counter accept")
	ns.sh(t, "nft", "add table ip sbc; add set ip sbc blocked4 { type ipv4_addr; }; add element ip sbc blocked4 { 10.9.9.9 }")
	others := func() string {
		return ns.sh(t, "nft", "list table inet other") + ns.sh(t, "nft", "list table ip sbc")
	}
	before := others()

	f := newFW(t, ns, Options{})
	must(t, f.Block(pfx("192.0.2.1/32"), time.Hour))
	must(t, f.Block(pfx("2001:db8::1/128"), 0))
	must(t, f.Block(pfx("10.0.0.0/16"), 2*time.Hour))
	must(t, f.Block(pfx("10.0.5.0/24"), 3*time.Hour))
	must(t, f.SetTrunks([]netip.Prefix{pfx("198.51.100.0/24")}))
	must(t, f.Close())
	if err := f.Block(pfx("192.0.2.2/32"), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Block after Close = %v", err)
	}
	first := ns.list(t, "sbc")
	// An operator adds a rule and an element inside the SBC's table.
	ns.sh(t, "nft", "add rule inet sbc guard counter accept")
	ns.sh(t, "nft", "add element inet sbc blocked4 { 203.0.113.7 timeout 1h }")

	g := newFW(t, ns, Options{TrunksOnly: true, SIPPorts: []uint16{5070}})
	second := ns.list(t, "sbc")
	for _, set := range []string{SetBlocked4, SetBlocked6, SetBlocked4Net, SetBlocked6Net, SetTrunks4} {
		a, b := first.Sets[set].elems(t), second.Sets[set].elems(t)
		if set == SetBlocked4 {
			a = append(a, elem{Val: "203.0.113.7", Timeout: 3600, Expires: 3600})
		}
		if !sameElems(a, b) {
			t.Errorf("%s: before restart %+v, after %+v", set, a, b)
		}
	}
	if got := vals(t, second, SetSIPPorts); !slices.Equal(got, []string{"5070"}) {
		t.Errorf("sip_ports = %q", got)
	}
	if got := rulesOf(t, second, ChainGuard); len(got) != 6 {
		t.Errorf("guard rules after restart with TrunksOnly: %q", got)
	}
	// The adopted state is the firewall's own: a net overlapping the
	// kept ones can be blocked, and the kept ones unblocked.
	must(t, g.Block(pfx("10.0.0.0/8"), 4*time.Hour))
	must(t, g.Unblock(pfx("10.0.0.0/16")))
	must(t, g.Unblock(pfx("10.0.5.0/24")))
	if got := vals(t, ns.list(t, "sbc"), SetBlocked4Net); !slices.Equal(got, []string{"10.0.0.0/8"}) {
		t.Errorf("blocked4_net = %q", got)
	}

	must(t, g.Remove())
	if ns.tableExists(t, "sbc") {
		t.Error("table inet sbc still there after Remove")
	}
	if err := g.Block(pfx("192.0.2.2/32"), 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Block after Remove = %v", err)
	}
	if after := others(); after != before {
		t.Errorf("other tables changed:\nbefore:\n%s\nafter:\n%s", before, after)
	}

	// Remove when an operator already deleted the table is fine.
	h := newFW(t, ns, Options{})
	ns.sh(t, "nft", "delete table inet sbc")
	must(t, h.Remove())
}

// sameElems compares element lists ignoring order, allowing for the time
// that passed between the two listings.
func sameElems(a, b []elem) bool {
	if len(a) != len(b) {
		return false
	}
	m := map[string]elem{}
	for _, e := range a {
		m[e.Val] = e
	}
	for _, e := range b {
		o, ok := m[e.Val]
		if !ok || o.Timeout == 0 != (e.Timeout == 0) || e.Expires > o.Expires+1 || e.Expires < o.Expires-30 {
			return false
		}
	}
	return true
}

// TestAdoptForeignLayout: a table of the same name with another layout
// (an older version, or hand-made) is rebuilt, keeping the addresses of
// the sets it shares with this one.
func TestAdoptForeignLayout(t *testing.T) {
	ns := newNS(t)
	ns.sh(t, "nft", `add table inet sbc
add set inet sbc blocked4 { type ipv4_addr; flags timeout; elements = { 192.0.2.1 timeout 1h, 192.0.2.2 } }
add set inet sbc blocked4_net { type ipv4_addr; flags interval; elements = { 10.0.0.0/8, 172.16.0.0-172.16.0.9 } }
add set inet sbc blocked6 { type inet_service; elements = { 22 } }
add chain inet sbc input { type filter hook input priority 0; }
add rule inet sbc input ip saddr @blocked4 drop`)
	newFW(t, ns, Options{})
	doc := ns.list(t, "sbc")
	if got := vals(t, doc, SetBlocked4); !slices.Equal(got, []string{"192.0.2.1", "192.0.2.2"}) {
		t.Errorf("blocked4 = %q", got)
	}
	if e := elemOf(t, doc, SetBlocked4, "192.0.2.1"); e.Timeout < 3540 || e.Timeout > 3600 {
		t.Errorf("kept element %+v: timeout should be what it had left", e)
	}
	if got := vals(t, doc, SetBlocked4Net); !slices.Equal(got, []string{"10.0.0.0/8", "172.16.0.0-172.16.0.9"}) {
		t.Errorf("blocked4_net = %q", got)
	}
	if got := vals(t, doc, SetBlocked6); len(got) != 0 {
		t.Errorf("blocked6 = %q (a set of another type must not be copied)", got)
	}
	if _, ok := doc.Chains["input"]; ok {
		t.Error("the old chain survived")
	}
}

func TestFull(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{MaxEntries: 3})
	for i := range 3 {
		must(t, f.Block(netip.PrefixFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 32), time.Hour))
		must(t, f.Block(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i), 0, 0}), 16), time.Hour))
	}
	if err := f.Block(pfx("192.0.2.100/32"), time.Hour); !errors.Is(err, ErrFull) {
		t.Errorf("4th address: %v, want ErrFull", err)
	}
	if err := f.Block(pfx("10.100.0.0/16"), time.Hour); !errors.Is(err, ErrFull) {
		t.Errorf("4th net: %v, want ErrFull", err)
	}
	// Refreshing what is there still works when full.
	must(t, f.Block(pfx("192.0.2.1/32"), 2*time.Hour))
	must(t, f.Block(pfx("10.1.0.0/16"), 2*time.Hour))
	var many []Entry
	for i := range 4 {
		many = append(many, Entry{netip.PrefixFrom(netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}), 32), time.Hour})
	}
	// Sync installs what fits, in the order given, and names the rest.
	err := f.Sync(many)
	var fe *FullError
	if !errors.Is(err, ErrFull) || !errors.As(err, &fe) || len(fe.Missing) != 1 || fe.Missing[0] != many[3].Prefix {
		t.Errorf("Sync of 4: %v, want a *FullError missing %s", err, many[3].Prefix)
	}
	if got := vals(t, ns.list(t, "sbc"), SetBlocked4); !slices.Equal(got, []string{"198.51.100.0", "198.51.100.1", "198.51.100.2"}) {
		t.Errorf("blocked4 = %q, want the first three of the sync", got)
	}
	var nets []Entry
	for i := range 4 {
		nets = append(nets, Entry{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(50 + 2*i), 0, 0}), 16), time.Hour})
	}
	if err := f.Sync(nets); !errors.As(err, &fe) || len(fe.Missing) != 1 || fe.Missing[0] != nets[3].Prefix {
		t.Errorf("Sync of 4 nets: %v, want a *FullError missing %s", err, nets[3].Prefix)
	}
	if got := vals(t, ns.list(t, "sbc"), SetBlocked4Net); len(got) != 3 {
		t.Errorf("blocked4_net = %q, want three ranges", got)
	}
}

// TestExpiredElements: elements the kernel has already timed out do not
// break later changes (deleting a missing element would fail the batch).
func TestExpiredElements(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{})
	must(t, f.Block(pfx("10.9.1.0/24"), 300*time.Millisecond))
	must(t, f.Block(pfx("10.9.2.0/24"), time.Hour))
	must(t, f.Block(pfx("192.0.2.1/32"), 300*time.Millisecond))
	deadline := time.Now().Add(10 * time.Second)
	for {
		doc := ns.list(t, "sbc")
		if len(doc.Sets[SetBlocked4Net].Elem) == 1 && len(doc.Sets[SetBlocked4].Elem) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("elements did not expire: %q %q", vals(t, doc, SetBlocked4Net), vals(t, doc, SetBlocked4))
		}
		time.Sleep(50 * time.Millisecond)
	}
	must(t, f.Unblock(pfx("192.0.2.1/32")))
	must(t, f.Block(pfx("10.9.0.0/16"), time.Hour)) // covers the expired /24
	must(t, f.Unblock(pfx("10.9.1.0/24")))
	if got := vals(t, ns.list(t, "sbc"), SetBlocked4Net); !slices.Equal(got, []string{"10.9.0.0/16"}) {
		t.Errorf("blocked4_net = %q", got)
	}
}

// TestNoIntervalTimeouts runs the mode New falls back to on kernels whose
// interval sets cannot time out elements.
func TestNoIntervalTimeouts(t *testing.T) {
	ns := newNS(t)
	f, err := newFirewall(Options{NetNS: ns.fd, SIPPorts: []uint16{5060}}, false)
	must(t, err)
	defer f.Close()
	must(t, f.Block(pfx("10.0.0.0/16"), time.Hour))
	must(t, f.Block(pfx("10.0.5.0/24"), 2*time.Hour))
	must(t, f.Block(pfx("10.0.0.0/16"), 3*time.Hour))
	must(t, f.Block(pfx("192.0.2.1/32"), time.Hour))
	doc := ns.list(t, "sbc")
	if s := doc.Sets[SetBlocked4Net]; !slices.Equal(s.Flags, []string{"interval"}) {
		t.Errorf("blocked4_net flags %v", s.Flags)
	}
	if got := vals(t, doc, SetBlocked4Net); !slices.Equal(got, []string{"10.0.0.0/16"}) {
		t.Errorf("blocked4_net = %q", got)
	}
	if e := elemOf(t, doc, SetBlocked4, "192.0.2.1"); e.Timeout != 3600 {
		t.Errorf("addresses keep their timeouts: %+v", e)
	}
	must(t, f.Sync([]Entry{{pfx("10.0.0.0/8"), time.Hour}}))
	must(t, f.Unblock(pfx("10.0.0.0/8")))
	if got := vals(t, ns.list(t, "sbc"), SetBlocked4Net); len(got) != 0 {
		t.Errorf("blocked4_net = %q", got)
	}
}

func TestConcurrent(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{})
	const workers, per = 6, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*per*3)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				a := netip.AddrFrom4([4]byte{10, byte(w), byte(i), 1})
				if err := f.Block(netip.PrefixFrom(a, 32), time.Hour); err != nil {
					errs <- err
				}
				if err := f.Block(netip.PrefixFrom(a, 24).Masked(), time.Duration(i+1)*time.Minute); err != nil {
					errs <- err
				}
				if i%5 == 0 {
					if _, err := f.Counters(); err != nil {
						errs <- err
					}
					if err := f.Unblock(netip.PrefixFrom(a, 32)); err != nil {
						errs <- err
					}
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	doc := ns.list(t, "sbc")
	if n := len(doc.Sets[SetBlocked4].Elem); n != workers*(per-per/5) {
		t.Errorf("blocked4 has %d elements, want %d", n, workers*(per-per/5))
	}
	if n := len(doc.Sets[SetBlocked4Net].Elem); n != workers*per {
		t.Errorf("blocked4_net has %d elements, want %d", n, workers*per)
	}
}

// countElems reads a set's elements through netlink (faster than nft for
// large sets) and returns how many there are (start elements only).
func countElems(t *testing.T, f *Firewall, set string) int {
	t.Helper()
	c, err := f.conn()
	must(t, err)
	s, err := c.GetSetByName(f.l.table, set)
	must(t, err)
	els, err := c.GetSetElements(s)
	must(t, err)
	n := 0
	for _, e := range els {
		if !e.IntervalEnd {
			n++
		}
	}
	return n
}

// TestLargeBatch: 60,000 addresses in one transaction (some 2.6 MB, far
// over the default netlink send buffer).
func TestLargeBatch(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{})
	entries := make([]Entry, 60000)
	for i := range entries {
		entries[i] = Entry{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 32), time.Hour}
	}
	if need := len(entries) * elemCost(addrElem(netip.IPv4Unspecified(), time.Hour)); f.batchLimit() < need {
		t.Fatalf("batch limit %d < %d: the netlink send buffer was not raised (%d)", f.batchLimit(), need, f.sndBuf.Load())
	}
	must(t, f.Sync(entries))
	if n := countElems(t, f, SetBlocked4); n != len(entries) {
		t.Errorf("blocked4 has %d elements, want %d", n, len(entries))
	}
}

// TestMultiBatch forces small batches: a Sync split into many
// transactions must still end with exactly the wanted sets, for additions,
// refreshes, interval replacements and removals.
func TestMultiBatch(t *testing.T) {
	ns := newNS(t)
	f := newFW(t, ns, Options{})
	f.maxBatch = 8 << 10 // about 200 elements
	var entries []Entry
	for i := range 1500 {
		entries = append(entries,
			Entry{netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 32), time.Hour},
			Entry{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(i >> 6), byte(i << 2), 0}), 24), time.Hour})
	}
	must(t, f.Sync(entries))
	if a, n := countElems(t, f, SetBlocked4), countElems(t, f, SetBlocked4Net); a != 1500 || n != 1500 {
		t.Fatalf("after sync: %d addresses, %d nets; want 1500 each", a, n)
	}
	// Refresh everything, and cover all the /24s with /16s (interval
	// removals and overlapping additions in different batches).
	for i := range entries {
		entries[i].TTL = 2 * time.Hour
		if entries[i].Prefix.Bits() == 24 {
			entries[i].Prefix = netip.PrefixFrom(entries[i].Prefix.Addr(), 16).Masked()
		}
	}
	must(t, f.Sync(entries))
	doc := ns.list(t, "sbc")
	for _, e := range doc.Sets[SetBlocked4].elems(t) {
		if e.Timeout != 7200 {
			t.Fatalf("element %+v not refreshed", e)
		}
	}
	if got := vals(t, doc, SetBlocked4Net); !slices.Equal(got, []string{"100.0.0.0-100.23.255.255"}) {
		t.Errorf("blocked4_net = %q", got)
	}
	must(t, f.Sync(nil))
	if a, n := countElems(t, f, SetBlocked4), countElems(t, f, SetBlocked4Net); a != 0 || n != 0 {
		t.Errorf("after Sync(nil): %d addresses, %d nets", a, n)
	}
}
