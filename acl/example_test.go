package acl_test

import (
	"fmt"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/sbc-project/sbc/acl"
)

func Example() {
	// Trunks, built from the policy; a reload builds a new table and swaps it.
	var trunks atomic.Pointer[acl.TrunkTable]
	tt, err := acl.NewTrunkTable([]acl.TrunkEntry{
		{Name: "carrier-a", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}},
		{Name: "carrier-a-edge", Prefixes: []netip.Prefix{netip.MustParsePrefix("192.0.2.128/25")}},
	})
	if err != nil {
		panic(err)
	}
	trunks.Store(tt)

	// The blocklist, with the trunks protected from being blocked.
	bl := acl.NewBlocklist(acl.Options{})
	defer bl.Close()
	if _, err := bl.SetNeverBlock([]netip.Prefix{netip.MustParsePrefix("192.0.2.0/24")}); err != nil {
		panic(err)
	}

	// A mirror (XDP map, nftables set) starts from a snapshot and follows
	// the changes.
	sub, snapshot := bl.Subscribe(0)
	defer sub.Close()
	fmt.Println("snapshot:", len(snapshot))

	scanner := netip.MustParseAddr("203.0.113.9")
	err = bl.Add(acl.Entry{
		Prefix:  acl.SourceKey(scanner),
		Reason:  "sip-scan",
		Origin:  acl.OriginAuto,
		Expires: time.Now().Add(time.Hour),
	})
	fmt.Println("add:", err)
	c := <-sub.C()
	fmt.Println("change:", c.Op, c.Entry.Prefix, c.Entry.Reason)

	p, _ := acl.ParsePrefix("192.0.2.7")
	fmt.Println("block a trunk:", bl.Add(acl.Entry{Prefix: p, Origin: acl.OriginManual}))

	// The read filter, for every packet:
	for _, s := range []string{"203.0.113.9", "::ffff:203.0.113.9", "192.0.2.200", "198.51.100.1"} {
		src := netip.MustParseAddr(s)
		if reason, blocked := bl.BlockedReason(src); blocked {
			fmt.Println(s, "dropped:", reason)
			continue
		}
		if name, ok := trunks.Load().Lookup(src); ok {
			fmt.Println(s, "trunk:", name)
			continue
		}
		fmt.Println(s, "unknown source")
	}
	// Output:
	// snapshot: 0
	// add: <nil>
	// change: add 203.0.113.9/32 sip-scan
	// block a trunk: acl: prefix overlaps the never-block list: 192.0.2.7/32 overlaps never-block 192.0.2.0/24
	// 203.0.113.9 dropped: sip-scan
	// ::ffff:203.0.113.9 dropped: sip-scan
	// 192.0.2.200 trunk: carrier-a-edge
	// 198.51.100.1 unknown source
}
