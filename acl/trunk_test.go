package acl

import (
	"net/netip"
	"strings"
	"testing"
)

func pfxs(ss ...string) []netip.Prefix {
	out := make([]netip.Prefix, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParsePrefix(s)
	}
	return out
}

func TestTrunkTableLookup(t *testing.T) {
	tt, err := NewTrunkTable([]TrunkEntry{
		{Name: "carrier-a", Prefixes: pfxs("192.0.2.0/24", "2001:db8:a::/48")},
		{Name: "carrier-a-sbc2", Prefixes: pfxs("192.0.2.128/25", "2001:db8:a:1::5/128")},
		{Name: "carrier-b", Prefixes: pfxs("198.51.100.7/32", "198.51.100.7/32", "::ffff:203.0.113.0/120")},
		{Name: "wide", Prefixes: pfxs("10.0.0.0/8")},
		{Name: "narrow", Prefixes: pfxs("10.1.2.3/32", "10.1.0.0/16")},
		{Name: "tls-only"},
	})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := tt.Len(), 9; got != want {
		t.Errorf("Len = %d, want %d", got, want)
	}
	tests := []struct {
		addr string
		want string // "" = no match
	}{
		{"192.0.2.1", "carrier-a"},
		{"192.0.2.127", "carrier-a"},
		{"192.0.2.128", "carrier-a-sbc2"},
		{"192.0.2.255", "carrier-a-sbc2"},
		{"::ffff:192.0.2.200", "carrier-a-sbc2"},
		{"::ffff:192.0.2.1", "carrier-a"},
		{"192.0.3.1", ""},
		{"198.51.100.7", "carrier-b"},
		{"198.51.100.8", ""},
		{"203.0.113.9", "carrier-b"},
		{"::ffff:203.0.113.9", "carrier-b"},
		{"2001:db8:a::1", "carrier-a"},
		{"2001:db8:a:1::5", "carrier-a-sbc2"},
		{"2001:db8:a:1::5%eth0", "carrier-a-sbc2"},
		{"2001:db8:a:1::6", "carrier-a"},
		{"2001:db8:b::1", ""},
		{"10.9.9.9", "wide"},
		{"10.1.9.9", "narrow"},
		{"10.1.2.3", "narrow"},
		{"11.0.0.0", ""},
		{"::", ""},
		{"::1", ""},
	}
	for _, tc := range tests {
		name, ok := tt.Lookup(netip.MustParseAddr(tc.addr))
		if ok != (tc.want != "") || name != tc.want {
			t.Errorf("Lookup(%s) = %q, %v; want %q", tc.addr, name, ok, tc.want)
		}
	}
	if _, ok := tt.Lookup(netip.Addr{}); ok {
		t.Error("Lookup(invalid addr) matched")
	}
	var nilTable *TrunkTable
	if _, ok := nilTable.Lookup(netip.MustParseAddr("192.0.2.1")); ok || nilTable.Len() != 0 {
		t.Error("nil table matched")
	}
}

func TestTrunkTableErrors(t *testing.T) {
	tests := []struct {
		name    string
		entries []TrunkEntry
		want    string
	}{
		{"empty name", []TrunkEntry{{Name: "", Prefixes: pfxs("10.0.0.0/8")}}, "empty name"},
		{"duplicate name", []TrunkEntry{{Name: "a"}, {Name: "a"}}, "duplicate trunk"},
		{"invalid prefix", []TrunkEntry{{Name: "a", Prefixes: []netip.Prefix{{}}}}, "invalid prefix"},
		{"shared prefix", []TrunkEntry{
			{Name: "a", Prefixes: pfxs("10.0.0.0/8")},
			{Name: "b", Prefixes: pfxs("10.1.2.3/8")}, // masks to the same prefix
		}, "claimed by trunks"},
		{"shared mapped prefix", []TrunkEntry{
			{Name: "a", Prefixes: pfxs("192.0.2.1/32")},
			{Name: "b", Prefixes: pfxs("::ffff:192.0.2.1/128")},
		}, "claimed by trunks"},
	}
	for _, tc := range tests {
		_, err := NewTrunkTable(tc.entries)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestTrunkTableLookupNoAlloc(t *testing.T) {
	tt, err := NewTrunkTable([]TrunkEntry{
		{Name: "a", Prefixes: pfxs("192.0.2.0/24", "2001:db8::/32")},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"192.0.2.1", "192.0.3.1", "::ffff:192.0.2.1", "2001:db8::1", "2001:db9::1", "2001:db8::1%eth0"} {
		a := netip.MustParseAddr(s)
		if n := testing.AllocsPerRun(100, func() { tt.Lookup(a) }); n != 0 {
			t.Errorf("Lookup(%s) allocates %.1f times", s, n)
		}
	}
}
