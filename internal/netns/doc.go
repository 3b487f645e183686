// Package netns owns the project's one implementation of working inside
// Linux network namespaces: running a function on an OS thread switched
// into a namespace, making and deleting uniquely named namespaces, and
// joining two of them with a veth pair.
//
// [Do] is the only part used outside tests (bench/attack opens its raw and
// UDP sockets in a namespace with it). It locks the calling goroutine's
// work onto a fresh OS thread, switches that thread into the namespace
// with setns(2), runs the function and switches back. Sockets made by the
// function belong to the namespace for good and may be used from any
// goroutine afterwards. A thread that cannot be switched back stays locked
// and dies with its goroutine, so the Go runtime never reuses it in the
// wrong namespace.
//
// [Add], [Del], [UniqueName] and [AddVeth] build the small labs the kernel
// path tests need (ebpf, e2e, acl/nft, bench/attack):
//
//	a, b := netns.UniqueName("sbc-x"), netns.UniqueName("sbc-x")
//	_ = netns.Add(a) // loopback up
//	_ = netns.Add(b)
//	defer netns.Del(a)
//	defer netns.Del(b)
//	err := netns.AddVeth(netns.Veth{
//		A:                {NS: a, Name: "va", Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.2/24")}},
//		B:                {NS: b, Name: "vb", Addrs: []netip.Prefix{netip.MustParsePrefix("10.9.0.1/24")}},
//		StaticNeighbours: true, // no ARP/NDP depends on an address a test blocks
//		Probes:           []netns.Probe{{Src: …, Dst: …}}, // wait until the link passes traffic
//	})
//
// Creation goes through iproute2 (`ip`), as an operator would do it; every
// call is bounded in time. Tests use the wrappers in
// internal/netns/netnstest, which skip without root (or fail when
// SBC_REQUIRE_PRIV=1) and delete what they made at cleanup.
//
// Everything but [Path] is Linux-only; on other systems [Do] with a
// non-empty namespace returns an error.
package netns
