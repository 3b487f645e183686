// Package netnstest wraps package netns for tests: a privilege check that
// skips without root (and fails instead when SBC_REQUIRE_PRIV=1, as CI
// sets it), and namespace and veth constructors that fail the test on
// error and delete what they made at cleanup.
//
//	func TestX(t *testing.T) {
//		a := netnstest.New(t, "sbc-x") // skips without root; deleted at cleanup
//		b := netnstest.New(t, "sbc-x")
//		netnstest.Veth(t, netns.Veth{A: netns.End{NS: a, Name: "va"}, B: netns.End{NS: b, Name: "vb"}})
//		err := netns.Do(a, func() error { /* sockets made here live in a */ return nil })
//	}
package netnstest
