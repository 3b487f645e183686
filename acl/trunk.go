package acl

import (
	"fmt"
	"net/netip"

	"github.com/gaissmai/bart"
)

// TrunkEntry names a trunk and the source prefixes it sends from.
type TrunkEntry struct {
	Name     string
	Prefixes []netip.Prefix
}

// TrunkTable maps a source address to the trunk it belongs to, by longest
// prefix match over the prefixes of all trunks. It is immutable after
// NewTrunkTable and safe for concurrent use; a policy reload builds a new
// table and the owner swaps it in (atomic.Pointer[TrunkTable]).
type TrunkTable struct {
	tbl *bart.Fast[string]
	n   int
}

// NewTrunkTable builds a table from entries. Prefixes are canonicalized as by
// ParsePrefix (masked; IPv4-mapped IPv6 prefixes of length >= 96 become IPv4).
// It fails on an empty or duplicate trunk name, an invalid prefix, or one
// prefix claimed by two different trunks (the same prefix twice in one trunk
// is accepted). Overlapping prefixes of different lengths are fine: the
// longest match wins. A trunk without prefixes is accepted and never matched
// by address.
func NewTrunkTable(entries []TrunkEntry) (*TrunkTable, error) {
	t := &TrunkTable{tbl: new(bart.Fast[string])}
	seen := make(map[string]bool, len(entries))
	for _, e := range entries {
		if e.Name == "" {
			return nil, fmt.Errorf("acl: trunk with an empty name")
		}
		if seen[e.Name] {
			return nil, fmt.Errorf("acl: duplicate trunk name %q", e.Name)
		}
		seen[e.Name] = true
		for _, p := range e.Prefixes {
			cp, err := canonicalPrefix(p)
			if err != nil {
				return nil, fmt.Errorf("acl: trunk %q: %w", e.Name, err)
			}
			if other, ok := t.tbl.Get(cp); ok {
				if other == e.Name {
					continue
				}
				return nil, fmt.Errorf("acl: prefix %s is claimed by trunks %q and %q", cp, other, e.Name)
			}
			t.tbl.Insert(cp, e.Name)
			t.n++
		}
	}
	return t, nil
}

// Lookup returns the name of the trunk whose prefix is the longest match for
// addr. IPv4-mapped IPv6 addresses are looked up as IPv4; IPv6 zones are
// ignored. An invalid addr or a nil table matches nothing. It does not
// allocate.
func (t *TrunkTable) Lookup(addr netip.Addr) (name string, ok bool) {
	if t == nil {
		return "", false
	}
	return t.tbl.Lookup(addr.Unmap())
}

// Len returns the number of distinct prefixes in the table.
func (t *TrunkTable) Len() int {
	if t == nil {
		return 0
	}
	return t.n
}
