package nft

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Unit tests of element encoding, decoding and batching; no root needed.

func TestTimeoutFor(t *testing.T) {
	const now = stamp(1000 * time.Hour)
	cases := []struct {
		dl   stamp
		want time.Duration
	}{
		{never, 0},
		{now + stamp(time.Hour), time.Hour},
		{now + stamp(1500*time.Microsecond), 2 * time.Millisecond},
		{now + stamp(200*time.Microsecond), time.Millisecond},
		{now, time.Millisecond},
		{now - stamp(time.Hour), time.Millisecond},
	}
	for _, c := range cases {
		if got := timeoutFor(c.dl, now); got != c.want {
			t.Errorf("timeoutFor(now%+v) = %v, want %v", time.Duration(c.dl-now), got, c.want)
		}
	}
}

func TestSpanElems(t *testing.T) {
	p := func(s string) span {
		lo, hi := prefixSpan(netip.MustParsePrefix(s))
		return span{lo, hi, never}
	}
	cases := []struct {
		s     span
		width int
		want  []nftables.SetElement
	}{
		{p("10.0.0.0/24"), 32, []nftables.SetElement{
			{Key: []byte{10, 0, 0, 0}, Timeout: time.Hour},
			{Key: []byte{10, 0, 1, 0}, IntervalEnd: true},
		}},
		{p("255.255.255.0/24"), 32, []nftables.SetElement{
			{Key: []byte{255, 255, 255, 0}, Timeout: time.Hour}, // open end
		}},
		{p("0.0.0.0/0"), 32, []nftables.SetElement{
			{Key: []byte{0, 0, 0, 0}, Timeout: time.Hour},
		}},
		{p("2001:db8::/32"), 128, []nftables.SetElement{
			{Key: netip.MustParseAddr("2001:db8::").AsSlice(), Timeout: time.Hour},
			{Key: netip.MustParseAddr("2001:db9::").AsSlice(), IntervalEnd: true},
		}},
		{span{u128{0, 5060}, u128{0, 5061}, never}, 16, []nftables.SetElement{
			{Key: []byte{0x13, 0xc4}, Timeout: time.Hour},
			{Key: []byte{0x13, 0xc6}, IntervalEnd: true},
		}},
		{span{u128{0, 65535}, u128{0, 65535}, never}, 16, []nftables.SetElement{
			{Key: []byte{0xff, 0xff}, Timeout: time.Hour},
		}},
	}
	for _, c := range cases {
		got := spanElems(c.s, c.width, time.Hour)
		if !elemsEqual(got, c.want) {
			t.Errorf("spanElems(%v) = %+v, want %+v", c.s, got, c.want)
		}
	}
	if e := addrElem(netip.MustParseAddr("192.0.2.1"), time.Minute); !bytes.Equal(e.Key, []byte{192, 0, 2, 1}) || e.Timeout != time.Minute {
		t.Errorf("addrElem v4 = %+v", e)
	}
	if e := addrElem(netip.MustParseAddr("2001:db8::1"), 0); len(e.Key) != 16 || e.Timeout != 0 {
		t.Errorf("addrElem v6 = %+v", e)
	}
}

func elemsEqual(a, b []nftables.SetElement) bool {
	return slices.EqualFunc(a, b, func(x, y nftables.SetElement) bool {
		return bytes.Equal(x.Key, y.Key) && x.IntervalEnd == y.IntervalEnd && x.Timeout == y.Timeout
	})
}

// kernelView turns encoded elements into what a dump returns: descending
// order, time left in Expires.
func kernelView(els []nftables.SetElement) []nftables.SetElement {
	out := slices.Clone(els)
	for i := range out {
		out[i].Expires = out[i].Timeout
	}
	slices.Reverse(out)
	return out
}

// TestDecodeSpans: what spanElems writes, decodeSpans reads back, in any
// order, ignoring nft's stray end markers.
func TestDecodeSpans(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const now = stamp(time.Hour)
	for iter := range 500 {
		for _, width := range []int{32, 128} {
			var in []span
			for range r.IntN(10) {
				in = append(in, span{u128{0, r.Uint64N(1000)}, u128{}, stamp(r.IntN(3)+2) * now})
				in[len(in)-1].hi = u128{0, in[len(in)-1].lo.lo + r.Uint64N(50)}
				if r.IntN(4) == 0 {
					in[len(in)-1].dl = never
				}
			}
			if r.IntN(3) == 0 {
				in = append(in, span{maxOf(width).dec(), maxOf(width), never})
			}
			pieces := envelope(in, width)
			var els []nftables.SetElement
			for _, s := range pieces {
				timeout := time.Duration(0)
				if s.dl != never {
					timeout = time.Duration(s.dl - now)
				}
				els = append(els, spanElems(s, width, timeout)...)
			}
			els = kernelView(els)
			if r.IntN(2) == 0 {
				r.Shuffle(len(els), func(i, j int) { els[i], els[j] = els[j], els[i] })
			}
			els = append(els, nftables.SetElement{Key: keyBytes(u128{}, width), IntervalEnd: true})
			got := decodeSpans(els, width, now)
			if !slices.Equal(got, pieces) {
				t.Fatalf("iter %d width %d:\n got %v\nwant %v", iter, width, got, pieces)
			}
		}
	}
	// Keys of the wrong size are ignored.
	if got := decodeSpans([]nftables.SetElement{{Key: []byte{1, 2}}}, 32, 0); got != nil {
		t.Errorf("decodeSpans(short key) = %v", got)
	}
}

func TestDecodeAddrs(t *testing.T) {
	els := []nftables.SetElement{
		{Key: []byte{192, 0, 2, 1}, Timeout: time.Hour, Expires: 30 * time.Minute},
		{Key: []byte{192, 0, 2, 2}},
		{Key: []byte{1, 2, 3}}, // wrong size
	}
	got := decodeAddrs(els, 32, 100)
	want := map[netip.Addr]stamp{
		netip.MustParseAddr("192.0.2.1"): 100 + stamp(30*time.Minute),
		netip.MustParseAddr("192.0.2.2"): never,
	}
	if len(got) != len(want) {
		t.Fatalf("decodeAddrs = %v", got)
	}
	for a, dl := range want {
		if got[a] != dl {
			t.Errorf("%s: %d, want %d", a, got[a], dl)
		}
	}
}

func TestPack(t *testing.T) {
	mk := func(n int) unit {
		u := unit{}
		for range n {
			u.add = append(u.add, nftables.SetElement{Key: make([]byte, 4)})
		}
		return u
	}
	per := elemCost(nftables.SetElement{Key: make([]byte, 4)})
	units := []unit{mk(3), mk(3), mk(3), mk(20), mk(1)}
	got := pack(units, 7*per)
	var sizes [][]int
	for _, b := range got {
		var s []int
		for _, u := range b {
			s = append(s, len(u.add))
		}
		sizes = append(sizes, s)
	}
	want := [][]int{{3, 3}, {3}, {20}, {1}}
	if !slices.EqualFunc(sizes, want, slices.Equal) {
		t.Errorf("pack = %v, want %v", sizes, want)
	}
	if got := pack(nil, 100); got != nil {
		t.Errorf("pack(nil) = %v", got)
	}
}

// TestEmitChunks sends a large batch to a fake netlink socket and decodes
// every message: the element lists must survive the 16-bit attribute
// length (the library truncates silently), and the phases must come in
// order: pre-adds, deletes, adds.
func TestEmitChunks(t *testing.T) {
	var sent []netlink.Message
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		sent = append(sent, req...)
		return nil, nil
	}))
	must(t, err)
	l := newLayout("sbc", 1000, true)
	const nRemove, nAdd = 1500, 2100
	var units []unit
	for i := range nRemove {
		s := span{u128{uint64(i), 0}, u128{uint64(i), 1<<64 - 1}, never}
		units = append(units, unit{set: l.blocked6Net, remove: spanElems(s, 128, 0)})
	}
	for i := range nAdd {
		s := span{u128{uint64(i) + 1<<32, 0}, u128{uint64(i) + 1<<32, 1<<64 - 1}, never}
		units = append(units, unit{set: l.blocked6Net, add: spanElems(s, 128, 10000*time.Hour)})
		units = append(units, unit{set: l.blocked4, add: []nftables.SetElement{addrElem(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), time.Hour)}})
	}
	must(t, emit(c, units))
	must(t, c.Flush())

	type phase struct {
		op   string
		set  string
		elts int
	}
	var phases []phase
	for _, m := range sent {
		typ := m.Header.Type & 0xff
		if m.Header.Type>>8 != unix.NFNL_SUBSYS_NFTABLES {
			continue // batch begin/end
		}
		op := map[netlink.HeaderType]string{unix.NFT_MSG_NEWSETELEM: "add", unix.NFT_MSG_DELSETELEM: "del"}[typ]
		ad, err := netlink.NewAttributeDecoder(m.Data[4:])
		must(t, err)
		var p phase
		p.op = op
		for ad.Next() {
			switch ad.Type() {
			case unix.NFTA_SET_ELEM_LIST_SET:
				p.set = strings.TrimRight(ad.String(), "\x00")
			case unix.NFTA_SET_ELEM_LIST_ELEMENTS:
				inner, err := netlink.NewAttributeDecoder(ad.Bytes())
				must(t, err)
				for inner.Next() {
					p.elts++
				}
				must(t, inner.Err())
			}
		}
		if err := ad.Err(); err != nil {
			t.Fatalf("message %d: %v", len(phases), err)
		}
		if p.elts > maxMsgElems {
			t.Errorf("message with %d elements", p.elts)
		}
		if n := len(phases); n > 0 && phases[n-1].op == p.op && phases[n-1].set == p.set {
			phases[n-1].elts += p.elts
		} else {
			phases = append(phases, p)
		}
	}
	want := []phase{
		{"add", SetBlocked6Net, 2 * nRemove},
		{"del", SetBlocked6Net, 2 * nRemove},
		{"add", SetBlocked6Net, 2 * nAdd},
		{"add", SetBlocked4, nAdd},
	}
	if !slices.Equal(phases, want) {
		t.Errorf("phases = %+v, want %+v", phases, want)
	}
}

// TestOptions checks validation, which happens before any netlink call.
func TestOptions(t *testing.T) {
	bad := []Options{
		{},                              // nothing to guard
		{SIPPorts: []uint16{0}},         // port 0
		{MediaPorts: [2]uint16{0, 10}},  // range from 0
		{MediaPorts: [2]uint16{20, 10}}, // reversed
		{TrunksOnly: true, MediaPorts: [2]uint16{10, 20}}, // TrunksOnly without SIP ports
		{SIPPorts: []uint16{5060}, Table: strings.Repeat("x", 65)},
		{SIPPorts: []uint16{5060}, Table: "a\x00b"},
		{SIPPorts: []uint16{5060}, MaxEntries: -1},
	}
	for _, o := range bad {
		if f, err := New(o); err == nil {
			f.Remove()
			t.Errorf("New(%+v) accepted", o)
		}
	}
}

func TestExplain(t *testing.T) {
	err := explain(errors.Join(errors.New("conn.Receive"), unix.ENFILE))
	if !errors.Is(err, ErrFull) || !errors.Is(err, unix.ENFILE) {
		t.Errorf("ENFILE: %v", err)
	}
	if err := explain(unix.EEXIST); !strings.Contains(err.Error(), "overlaps") || !errors.Is(err, unix.EEXIST) {
		t.Errorf("EEXIST: %v", err)
	}
}
