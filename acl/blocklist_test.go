package acl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// fakeClock is a settable clock for Options.Now.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *fakeClock { return &fakeClock{t: t0} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newTestBlocklist(t *testing.T, clk *fakeClock) *Blocklist {
	t.Helper()
	b := NewBlocklist(Options{Now: clk.Now, Logger: slog.New(slog.DiscardHandler)})
	t.Cleanup(func() { b.Close() })
	return b
}

func mustAdd(t *testing.T, b *Blocklist, e Entry) {
	t.Helper()
	if err := b.Add(e); err != nil {
		t.Fatalf("Add(%s): %v", e.Prefix, err)
	}
}

func manual(p, reason string) Entry {
	return Entry{Prefix: netip.MustParsePrefix(p), Reason: reason, Origin: OriginManual}
}

func auto(p, reason string, expires time.Time) Entry {
	return Entry{Prefix: netip.MustParsePrefix(p), Reason: reason, Origin: OriginAuto, Expires: expires}
}

// reasonOf returns the reason of the match for addr, or "-" when not blocked.
func reasonOf(b *Blocklist, addr string) string {
	r, ok := b.BlockedReason(netip.MustParseAddr(addr))
	if !ok {
		return "-"
	}
	return r
}

func TestBlocklistLongestMatch(t *testing.T) {
	b := newTestBlocklist(t, newClock())
	for _, e := range []Entry{
		manual("203.0.113.0/24", "v4/24"),
		manual("203.0.113.7/32", "v4/32"),
		manual("198.51.100.9/24", "host bits masked"),
		manual("::ffff:192.0.2.0/120", "mapped/24"),
		manual("2001:db8::/32", "v6/32"),
		manual("2001:db8:1:2::/64", "v6/64"),
		manual("2001:db8:1:2::9/128", "v6/128"),
		manual("3fff::/20", "v6/20"),
	} {
		mustAdd(t, b, e)
	}
	tests := []struct{ addr, want string }{
		{"203.0.113.7", "v4/32"},
		{"203.0.113.8", "v4/24"},
		{"::ffff:203.0.113.7", "v4/32"},
		{"::ffff:203.0.113.8", "v4/24"},
		{"203.0.114.1", "-"},
		{"198.51.100.200", "host bits masked"},
		{"192.0.2.55", "mapped/24"},
		{"::ffff:192.0.2.55", "mapped/24"},
		{"192.0.3.1", "-"},
		{"2001:db8:1:2::9", "v6/128"},
		{"2001:db8:1:2::a", "v6/64"},
		{"2001:db8:1:3::a", "v6/32"},
		{"2001:db8:1:2::9%eth0", "v6/128"},
		{"2001:db9::1", "-"},
		{"3fff:0fff::1", "v6/20"},
		{"3fff:1000::1", "-"},
		{"::1", "-"},
	}
	for _, tc := range tests {
		if got := reasonOf(b, tc.addr); got != tc.want {
			t.Errorf("BlockedReason(%s) = %q, want %q", tc.addr, got, tc.want)
		}
	}
	if b.Blocked(netip.Addr{}) {
		t.Error("invalid address blocked")
	}
	e, ok := b.Match(netip.MustParseAddr("192.0.2.1"))
	if !ok || e.Prefix != netip.MustParsePrefix("192.0.2.0/24") || e.Origin != OriginManual || !e.Created.Equal(t0) {
		t.Errorf("Match = %+v, %v", e, ok)
	}

	// ::/0 covers all of IPv6 but no IPv4 (nor IPv4-mapped addresses).
	mustAdd(t, b, manual("::/0", "all v6"))
	if got := reasonOf(b, "2a00::1"); got != "all v6" {
		t.Errorf("::/0 does not block 2a00::1: %q", got)
	}
	if got := reasonOf(b, "::ffff:8.8.8.8"); got != "-" {
		t.Errorf("::/0 blocks ::ffff:8.8.8.8: %q", got)
	}
	mustAdd(t, b, manual("0.0.0.0/0", "all v4"))
	if got := reasonOf(b, "8.8.8.8"); got != "all v4" {
		t.Errorf("0.0.0.0/0 does not block 8.8.8.8: %q", got)
	}
}

func TestBlocklistAddRemoveListLen(t *testing.T) {
	b := newTestBlocklist(t, newClock())
	for _, p := range []string{"2001:db8::/64", "10.0.0.0/8", "10.0.0.0/24", "9.9.9.9/32", "::/0", "10.0.0.1/32"} {
		mustAdd(t, b, manual(p, p))
	}
	var got []string
	for _, e := range b.List() {
		got = append(got, e.Prefix.String())
	}
	want := []string{"9.9.9.9/32", "10.0.0.0/8", "10.0.0.0/24", "10.0.0.1/32", "::/0", "2001:db8::/64"}
	if !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
	if b.Len() != 6 {
		t.Errorf("Len = %d, want 6", b.Len())
	}
	if !b.Remove(netip.MustParsePrefix("10.0.0.1/32")) {
		t.Error("Remove(10.0.0.1/32) = false")
	}
	if b.Remove(netip.MustParsePrefix("10.0.0.1/32")) {
		t.Error("second Remove(10.0.0.1/32) = true")
	}
	if b.Remove(netip.MustParsePrefix("10.0.0.0/16")) {
		t.Error("Remove of a prefix not held = true")
	}
	if b.Remove(netip.Prefix{}) {
		t.Error("Remove(invalid) = true")
	}
	if got := reasonOf(b, "10.0.0.1"); got != "10.0.0.0/24" {
		t.Errorf("after Remove, 10.0.0.1 matched %q", got)
	}
	if !b.Remove(netip.MustParsePrefix("::ffff:10.0.0.0/104")) { // mapped form of 10.0.0.0/8
		t.Error("Remove(mapped 10.0.0.0/8) = false")
	}
	if b.Len() != 4 {
		t.Errorf("Len = %d, want 4", b.Len())
	}
	if _, ok := b.Get(netip.MustParsePrefix("10.0.0.0/24")); !ok {
		t.Error("Get(10.0.0.0/24) missing")
	}
	if _, ok := b.Get(netip.MustParsePrefix("10.0.0.0/25")); ok {
		t.Error("Get(10.0.0.0/25) found")
	}
}

func TestBlocklistAddInvalid(t *testing.T) {
	clk := newClock()
	b := newTestBlocklist(t, clk)
	long := make([]byte, MaxReasonLen+1)
	for i := range long {
		long[i] = 'x'
	}
	tests := []struct {
		name string
		e    Entry
	}{
		{"invalid prefix", Entry{Origin: OriginManual}},
		{"no origin", Entry{Prefix: netip.MustParsePrefix("192.0.2.1/32")}},
		{"bad origin", Entry{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Origin: 9}},
		{"long reason", Entry{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Origin: OriginAuto, Reason: string(long)}},
		{"expires now", auto("192.0.2.1/32", "x", t0)},
		{"expired", auto("192.0.2.1/32", "x", t0.Add(-time.Second))},
	}
	for _, tc := range tests {
		if err := b.Add(tc.e); !errors.Is(err, ErrInvalidEntry) {
			t.Errorf("%s: Add err = %v, want ErrInvalidEntry", tc.name, err)
		}
	}
	if b.Len() != 0 {
		t.Errorf("Len = %d after invalid adds", b.Len())
	}
	mustAdd(t, b, manual("192.0.2.1/32", "bad utf8 \xff"))
	if got := reasonOf(b, "192.0.2.1"); got != "bad utf8 \uFFFD" {
		t.Errorf("reason = %q", got)
	}
}

func TestBlocklistRefresh(t *testing.T) {
	at := func(d time.Duration) time.Time { return t0.Add(d) }
	never := time.Time{}
	tests := []struct {
		name        string
		old, new    Entry
		wantExpires time.Time
		wantReason  string
		wantOrigin  Origin
	}{
		{"later expiry wins", auto("192.0.2.1/32", "a", at(time.Minute)), auto("192.0.2.1/32", "b", at(time.Hour)), at(time.Hour), "b", OriginAuto},
		{"earlier expiry loses", auto("192.0.2.1/32", "a", at(time.Hour)), auto("192.0.2.1/32", "b", at(time.Minute)), at(time.Hour), "b", OriginAuto},
		{"never beats expiry", auto("192.0.2.1/32", "a", at(time.Hour)), manual("192.0.2.1/32", "b"), never, "b", OriginManual},
		{"never kept", manual("192.0.2.1/32", "a"), auto("192.0.2.1/32", "b", at(time.Minute)), never, "b", OriginManual},
		{"empty reason keeps old", auto("192.0.2.1/32", "a", at(time.Minute)), auto("192.0.2.1/32", "", at(time.Hour)), at(time.Hour), "a", OriginAuto},
		{"manual stays manual", Entry{Prefix: netip.MustParsePrefix("192.0.2.1/32"), Origin: OriginManual, Expires: at(time.Hour)}, auto("192.0.2.1/32", "b", at(2*time.Hour)), at(2 * time.Hour), "b", OriginManual},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			clk := newClock()
			b := newTestBlocklist(t, clk)
			mustAdd(t, b, tc.old)
			clk.Advance(time.Second)
			mustAdd(t, b, tc.new)
			e, ok := b.Get(tc.new.Prefix)
			if !ok {
				t.Fatal("entry missing")
			}
			if !e.Expires.Equal(tc.wantExpires) || e.Reason != tc.wantReason || e.Origin != tc.wantOrigin {
				t.Errorf("got expires=%v reason=%q origin=%v; want %v %q %v", e.Expires, e.Reason, e.Origin, tc.wantExpires, tc.wantReason, tc.wantOrigin)
			}
			if !e.Created.Equal(t0) {
				t.Errorf("Created = %v, want the first add's %v", e.Created, t0)
			}
			if b.Len() != 1 {
				t.Errorf("Len = %d", b.Len())
			}
		})
	}
}

func TestBlocklistExpiry(t *testing.T) {
	clk := newClock()
	b := newTestBlocklist(t, clk)
	sub, snap := b.Subscribe(64)
	if len(snap) != 0 {
		t.Fatalf("snapshot = %v", snap)
	}
	mustAdd(t, b, manual("10.0.0.0/8", "/8 never"))
	mustAdd(t, b, auto("10.1.0.0/16", "/16 +30s", t0.Add(30*time.Second)))
	mustAdd(t, b, auto("10.1.2.0/24", "/24 +10s", t0.Add(10*time.Second)))
	mustAdd(t, b, auto("10.1.2.3/32", "/32 +10s", t0.Add(10*time.Second)))
	mustAdd(t, b, auto("2001:db8::/64", "v6 +20s", t0.Add(20*time.Second)))
	for range 5 {
		<-sub.C() // the adds
	}

	if got := reasonOf(b, "10.1.2.3"); got != "/32 +10s" {
		t.Fatalf("at t0: %q", got)
	}
	if n := b.Sweep(clk.Now()); n != 0 {
		t.Errorf("Sweep at t0 removed %d", n)
	}

	clk.Advance(10 * time.Second) // the /32 and /24 expire now
	// Expired entries stop matching at once, before any sweep; the longest
	// live covering prefix matches instead.
	if got := reasonOf(b, "10.1.2.3"); got != "/16 +30s" {
		t.Errorf("at +10s: 10.1.2.3 matched %q, want the /16", got)
	}
	if got := reasonOf(b, "2001:db8::1"); got != "v6 +20s" {
		t.Errorf("at +10s: 2001:db8::1 matched %q", got)
	}
	a := netip.MustParseAddr("10.1.2.3")
	if n := testing.AllocsPerRun(100, func() { b.Blocked(a) }); n != 0 {
		t.Errorf("Blocked over expired entries allocates %.1f times", n)
	}
	if _, ok := b.Get(netip.MustParsePrefix("10.1.2.3/32")); ok {
		t.Error("Get returns an expired entry")
	}
	if got := len(b.List()); got != 3 {
		t.Errorf("List has %d live entries, want 3", got)
	}
	if b.Len() != 5 {
		t.Errorf("Len before sweep = %d, want 5", b.Len())
	}
	if n := b.Sweep(clk.Now()); n != 2 {
		t.Errorf("Sweep at +10s removed %d, want 2", n)
	}
	if b.Len() != 3 {
		t.Errorf("Len after sweep = %d, want 3", b.Len())
	}
	var removed []string
	for range 2 {
		c := <-sub.C()
		if c.Op != OpRemove || c.Cause != CauseExpired {
			t.Errorf("change = %v %v, want remove expired", c.Op, c.Cause)
		}
		removed = append(removed, c.Entry.Prefix.String())
	}
	if want := []string{"10.1.2.0/24", "10.1.2.3/32"}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}

	clk.Advance(20 * time.Second) // +30s: everything but the /8 has expired
	if got := reasonOf(b, "10.1.2.3"); got != "/8 never" {
		t.Errorf("at +30s: %q", got)
	}
	if b.Blocked(netip.MustParseAddr("2001:db8::1")) {
		t.Error("at +30s: expired v6 /64 still blocks")
	}
	if n := b.Sweep(clk.Now()); n != 2 {
		t.Errorf("Sweep at +30s removed %d, want 2", n)
	}
	if n := b.Sweep(clk.Now().Add(time.Hour)); n != 0 {
		t.Errorf("third Sweep removed %d", n)
	}
	// Re-adding a prefix whose entry expired but was not swept starts afresh.
	mustAdd(t, b, auto("10.9.0.0/16", "old", clk.Now().Add(time.Second)))
	clk.Advance(time.Second)
	mustAdd(t, b, auto("10.9.0.0/16", "new", clk.Now().Add(time.Minute)))
	e, _ := b.Get(netip.MustParsePrefix("10.9.0.0/16"))
	if e.Reason != "new" || !e.Created.Equal(clk.Now()) {
		t.Errorf("re-added entry = %+v", e)
	}
}

func TestBlocklistRun(t *testing.T) {
	clk := newClock()
	b := NewBlocklist(Options{Now: clk.Now, SweepInterval: time.Millisecond})
	defer b.Close()
	sub, _ := b.Subscribe(8)
	mustAdd(t, b, auto("192.0.2.1/32", "x", t0.Add(time.Second)))
	if c := <-sub.C(); c.Op != OpAdd {
		t.Fatalf("got %v", c.Op)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	clk.Advance(time.Second)
	select {
	case c := <-sub.C():
		if c.Op != OpRemove || c.Cause != CauseExpired {
			t.Errorf("got %v %v, want remove expired", c.Op, c.Cause)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not sweep the expired entry")
	}
	cancel()
	<-done
}

func TestBlocklistNeverBlock(t *testing.T) {
	b := newTestBlocklist(t, newClock())
	sub, _ := b.Subscribe(64)
	for _, p := range []string{"10.5.0.0/16", "0.0.0.0/0", "192.0.2.0/24", "2001:db8:1::/48", "::/0", "2001:db9::/32"} {
		mustAdd(t, b, manual(p, p))
		<-sub.C()
	}
	removed, err := b.SetNeverBlock(pfxs("10.0.0.0/8", "::ffff:198.51.100.0/120", "2001:db8::/32", "10.0.0.0/8"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range removed {
		got = append(got, e.Prefix.String())
	}
	want := []string{"0.0.0.0/0", "10.5.0.0/16", "::/0", "2001:db8:1::/48"}
	if !slices.Equal(got, want) {
		t.Errorf("removed %v, want %v", got, want)
	}
	for range want {
		if c := <-sub.C(); c.Op != OpRemove || c.Cause != CauseNeverBlock {
			t.Errorf("change %v %v, want remove never-block", c.Op, c.Cause)
		}
	}
	if nb := b.NeverBlock(); len(nb) != 3 || nb[1] != netip.MustParsePrefix("198.51.100.0/24") {
		t.Errorf("NeverBlock = %v", nb)
	}
	for _, p := range []string{"10.1.2.3/32", "10.0.0.0/8", "8.0.0.0/6", "0.0.0.0/0", "198.51.100.7/32", "::ffff:10.0.0.1/128", "2001:db8::1/128", "2001::/16", "::/0"} {
		if err := b.Add(manual(p, "x")); !errors.Is(err, ErrNeverBlock) {
			t.Errorf("Add(%s) err = %v, want ErrNeverBlock", p, err)
		}
	}
	for _, p := range []string{"11.0.0.0/8", "198.51.101.0/24", "2001:db9:1::/48"} {
		mustAdd(t, b, manual(p, "x"))
	}
	if _, err := b.SetNeverBlock([]netip.Prefix{{}}); err == nil {
		t.Error("SetNeverBlock(invalid) succeeded")
	}
	if len(b.NeverBlock()) != 3 {
		t.Error("failed SetNeverBlock changed the list")
	}
	if _, err := b.SetNeverBlock(nil); err != nil {
		t.Fatal(err)
	}
	mustAdd(t, b, manual("10.1.2.3/32", "allowed again"))
}

// A forced entry overlaps the never-block list on purpose: Add takes it,
// a new never-block list keeps it, a refresh keeps it forced, a restart
// (Save/Load) keeps it. NeverBlocked and Within answer for callers that
// must say why a block was refused or widen blocks.
func TestBlocklistForcedAndQueries(t *testing.T) {
	b := newTestBlocklist(t, newClock())
	if _, err := b.SetNeverBlock(pfxs("192.0.2.0/24", "2001:db8::/32")); err != nil {
		t.Fatal(err)
	}
	if nb, ok := b.NeverBlocked(netip.MustParsePrefix("192.0.2.7/32")); !ok || nb.String() != "192.0.2.0/24" {
		t.Fatalf("NeverBlocked(192.0.2.7/32) = %v %v", nb, ok)
	}
	if _, ok := b.NeverBlocked(netip.MustParsePrefix("192.0.3.0/24")); ok {
		t.Fatal("NeverBlocked too broad")
	}
	if _, ok := b.NeverBlocked(netip.MustParsePrefix("192.0.0.0/16")); !ok {
		t.Fatal("a prefix containing a never-block prefix not reported")
	}
	e := manual("192.0.2.128/25", "carrier gone rogue")
	if err := b.Add(e); !errors.Is(err, ErrNeverBlock) {
		t.Fatalf("unforced: %v", err)
	}
	e.Forced = true
	mustAdd(t, b, e)
	// An auto refresh of the same prefix keeps it forced and manual.
	mustAdd(t, b, Entry{Prefix: e.Prefix, Origin: OriginAuto, Reason: "again", Forced: true})
	if got, _ := b.Get(e.Prefix); !got.Forced || got.Origin != OriginManual {
		t.Fatalf("after refresh: %+v", got)
	}
	if removed, err := b.SetNeverBlock(pfxs("192.0.2.0/24", "198.51.100.0/24")); err != nil || len(removed) != 0 {
		t.Fatalf("a new never-block list removed %v (%v)", removed, err)
	}
	if reasonOf(b, "192.0.2.200") != "again" {
		t.Fatal("forced entry not matching")
	}
	path := t.TempDir() + "/state.json"
	if err := b.Save(path); err != nil {
		t.Fatal(err)
	}
	b2 := newTestBlocklist(t, newClock())
	if _, err := b2.SetNeverBlock(pfxs("192.0.2.0/24")); err != nil {
		t.Fatal(err)
	}
	if n, err := b2.Load(path); err != nil || n != 1 {
		t.Fatalf("Load: %d %v", n, err)
	}
	if got, ok := b2.Get(e.Prefix); !ok || !got.Forced {
		t.Fatalf("after Load: %+v %v", got, ok)
	}

	for _, p := range []string{"2001:db9:0:1::/64", "2001:db9:0:2::/64", "2001:db9:0:100::/64", "2001:db9::/48"} {
		mustAdd(t, b, auto(p, "x", time.Time{}))
	}
	var got []string
	for _, w := range b.Within(netip.MustParsePrefix("2001:db9::/56")) {
		got = append(got, w.Prefix.String())
	}
	if want := []string{"2001:db9:0:1::/64", "2001:db9:0:2::/64"}; !slices.Equal(got, want) {
		t.Fatalf("Within /56 = %v, want %v (strictly inside, not the /48 around it)", got, want)
	}
	if n := len(b.Within(netip.MustParsePrefix("2001:db9::/48"))); n != 3 {
		t.Fatalf("Within /48: %d entries, want 3", n)
	}
}

// TestNeverBlockListPrepared: building the list is where every error is;
// building it changes no blocklist; installing it fails only once closed.
func TestNeverBlockListPrepared(t *testing.T) {
	b := newTestBlocklist(t, newClock())
	mustAdd(t, b, manual("10.5.0.0/16", "x"))
	if _, err := NewNeverBlockList([]netip.Prefix{{}}); err == nil {
		t.Fatal("NewNeverBlockList(invalid) succeeded")
	}
	n, err := NewNeverBlockList(pfxs("10.0.0.0/8", "::ffff:198.51.100.0/120", "10.0.0.0/8"))
	if err != nil {
		t.Fatal(err)
	}
	if got := n.Prefixes(); len(got) != 2 || got[1] != netip.MustParsePrefix("198.51.100.0/24") {
		t.Fatalf("Prefixes = %v", got)
	}
	if len(b.NeverBlock()) != 0 || b.Len() != 1 {
		t.Fatal("preparing a list changed the blocklist")
	}
	removed, err := b.SetNeverBlockList(n)
	if err != nil || len(removed) != 1 || len(b.NeverBlock()) != 2 {
		t.Fatalf("SetNeverBlockList: removed %v, err %v, list %v", removed, err, b.NeverBlock())
	}
	b.Close()
	if _, err := b.SetNeverBlockList(n); !errors.Is(err, ErrClosed) {
		t.Fatalf("SetNeverBlockList after Close: %v, want ErrClosed", err)
	}
}

func TestBlocklistMaxEntries(t *testing.T) {
	b := NewBlocklist(Options{MaxEntries: 3})
	defer b.Close()
	for i := range 3 {
		mustAdd(t, b, manual(fmt.Sprintf("192.0.2.%d/32", i), "x"))
	}
	if err := b.Add(manual("192.0.2.9/32", "x")); !errors.Is(err, ErrFull) {
		t.Errorf("Add beyond MaxEntries err = %v, want ErrFull", err)
	}
	mustAdd(t, b, manual("192.0.2.1/32", "refresh is fine"))
}

// TestBlocklistFullReported: refusals for lack of room are counted; the
// start of a full episode is logged once however many refusals follow, and
// its end once, when a tenth of the room is free again.
func TestBlocklistFullReported(t *testing.T) {
	var logs lockedBuffer
	b := NewBlocklist(Options{MaxEntries: 100, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	defer b.Close()
	addr := func(i int) netip.Prefix {
		return netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 2, byte(i >> 8), byte(i)}), 32)
	}
	add := func(i int) error { return b.Add(Entry{Prefix: addr(i), Reason: "x", Origin: OriginAuto}) }
	for i := range 100 {
		if err := add(i); err != nil {
			t.Fatal(err)
		}
	}
	for i := 100; i < 150; i++ {
		if err := add(i); !errors.Is(err, ErrFull) {
			t.Fatalf("add %d: %v, want ErrFull", i, err)
		}
	}
	// A little room, filled again: the same episode.
	for i := range 5 {
		b.Remove(addr(i))
	}
	for i := range 5 {
		if err := add(i); err != nil {
			t.Fatal(err)
		}
	}
	for i := 150; i < 160; i++ {
		_ = add(i)
	}
	if got := strings.Count(logs.String(), "blocklist full"); got != 1 {
		t.Errorf("%d \"blocklist full\" lines for one episode, want 1:\n%s", got, logs.String())
	}
	if got := b.Stats().Refused; got != 60 {
		t.Errorf("Refused = %d, want 60", got)
	}
	// A tenth free: the episode ends; the next refusal starts another.
	for i := range 10 {
		b.Remove(addr(i))
	}
	if got := strings.Count(logs.String(), "has room again"); got != 1 {
		t.Errorf("%d \"room again\" lines, want 1:\n%s", got, logs.String())
	}
	for i := range 10 {
		if err := add(i); err != nil {
			t.Fatal(err)
		}
	}
	if err := add(200); !errors.Is(err, ErrFull) {
		t.Fatalf("add when full again: %v", err)
	}
	if got := strings.Count(logs.String(), "blocklist full"); got != 2 {
		t.Errorf("%d \"blocklist full\" lines after a second episode, want 2", got)
	}
	if st := b.Stats(); st.Capacity != 100 || st.Refused != 61 || b.Cap() != 100 {
		t.Errorf("stats %+v", st)
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func TestBlocklistClosed(t *testing.T) {
	b := NewBlocklist(Options{})
	mustAdd(t, b, manual("192.0.2.1/32", "x"))
	sub, _ := b.Subscribe(4)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-sub.C(); ok {
		t.Error("subscription channel not closed by Close")
	}
	if sub.Resync() != nil {
		t.Error("Resync on a closed subscription returned entries")
	}
	sub.Close()
	if err := b.Add(manual("192.0.2.2/32", "x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close err = %v", err)
	}
	if b.Remove(netip.MustParsePrefix("192.0.2.1/32")) {
		t.Error("Remove after Close succeeded")
	}
	if !b.Blocked(netip.MustParseAddr("192.0.2.1")) {
		t.Error("lookups stopped working after Close")
	}
	sub2, snap := b.Subscribe(4)
	if _, ok := <-sub2.C(); ok || snap != nil {
		t.Error("Subscribe after Close gave an open subscription")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func TestBlockedNoAlloc(t *testing.T) {
	clk := newClock()
	b := newTestBlocklist(t, clk)
	mustAdd(t, b, manual("192.0.2.0/24", "x"))
	mustAdd(t, b, auto("198.51.100.7/32", "x", t0.Add(time.Hour)))
	mustAdd(t, b, manual("2001:db8::/64", "x"))
	mustAdd(t, b, auto("203.0.113.0/24", "far future", time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)))
	if got := reasonOf(b, "203.0.113.1"); got != "far future" {
		t.Errorf("entry expiring in 9999 does not match: %q", got)
	}
	for _, s := range []string{"192.0.2.1", "192.0.3.1", "198.51.100.7", "::ffff:192.0.2.1", "2001:db8::1", "2001:db9::1"} {
		a := netip.MustParseAddr(s)
		if n := testing.AllocsPerRun(100, func() { b.Blocked(a) }); n != 0 {
			t.Errorf("Blocked(%s) allocates %.1f times", s, n)
		}
		if n := testing.AllocsPerRun(100, func() { b.BlockedReason(a) }); n != 0 {
			t.Errorf("BlockedReason(%s) allocates %.1f times", s, n)
		}
	}
}

// TestBlocklistConcurrentReaders runs lookups while writers change the list
// (for the race detector) and checks that a prefix never added is never
// reported blocked.
func TestBlocklistConcurrentReaders(t *testing.T) {
	b := newTestBlocklist(t, newClock())
	var wg sync.WaitGroup
	stop := make(chan struct{})
	var bad error
	var badOnce sync.Once
	for range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if b.Blocked(netip.AddrFrom4([4]byte{10, 0, byte(i), 1})) {
					badOnce.Do(func() { bad = fmt.Errorf("10.0.%d.1 blocked", byte(i)) })
				}
				b.Blocked(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}))
			}
		}()
	}
	for i := range 500 {
		mustAdd(t, b, manual(fmt.Sprintf("192.0.2.%d/32", i%256), "x"))
		if i%3 == 0 {
			b.Remove(netip.MustParsePrefix(fmt.Sprintf("192.0.2.%d/32", (i/2)%256)))
		}
	}
	close(stop)
	wg.Wait()
	if bad != nil {
		t.Error(bad)
	}
}

// mirror is what a subscriber builds from a snapshot and the change feed.
type mirror map[netip.Prefix]Entry

func (m mirror) reset(list []Entry) {
	clear(m)
	for _, e := range list {
		m[e.Prefix] = e
	}
}

func (m mirror) equal(list []Entry) error {
	if len(m) != len(list) {
		return fmt.Errorf("mirror has %d entries, blocklist %d", len(m), len(list))
	}
	for _, e := range list {
		me, ok := m[e.Prefix]
		if !ok {
			return fmt.Errorf("mirror lacks %s", e.Prefix)
		}
		if me.Reason != e.Reason || !me.Expires.Equal(e.Expires) || me.Origin != e.Origin {
			return fmt.Errorf("mirror has %+v, blocklist %+v", me, e)
		}
	}
	return nil
}

// TestSubscribeNoGap subscribes while several goroutines add and remove
// entries, mirrors snapshot + changes, and checks that the mirror equals
// the blocklist at the end, with a buffer large enough never to overflow and
// with a tiny one that forces resyncs.
func TestSubscribeNoGap(t *testing.T) {
	for _, buf := range []int{1 << 14, 2} {
		t.Run(fmt.Sprint("buffer=", buf), func(t *testing.T) {
			b := newTestBlocklist(t, newClock())
			for i := range 100 {
				mustAdd(t, b, manual(fmt.Sprintf("10.255.0.%d/32", i), "before"))
			}
			const writers, perWriter = 4, 400
			started := make(chan struct{}, writers)
			var wg sync.WaitGroup
			for w := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range perWriter {
						if i == perWriter/4 {
							started <- struct{}{}
						}
						p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(w), byte(i >> 8), byte(i)}), 32)
						if err := b.Add(Entry{Prefix: p, Reason: fmt.Sprint("w", w, " i", i), Origin: OriginAuto}); err != nil {
							t.Error(err)
							return
						}
						if i%5 == 0 {
							b.Remove(p)
						}
						if i%7 == 0 {
							b.Remove(netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 255, 0, byte(i % 100)}), 32))
						}
						if i%11 == 0 { // refresh: an OpAdd for a held prefix
							b.Add(Entry{Prefix: netip.PrefixFrom(netip.AddrFrom4([4]byte{10, byte(w), 0, 1}), 32), Reason: fmt.Sprint("refresh ", i), Origin: OriginAuto})
						}
					}
				}()
			}
			for range writers {
				<-started // subscribe while every writer is mid-way
			}
			sub, snap := b.Subscribe(buf)
			defer sub.Close()
			m := mirror{}
			m.reset(snap)

			sentinel := netip.MustParsePrefix("172.16.0.1/32")
			done := make(chan error, 1)
			resyncs := 0
			go func() {
				for c := range sub.C() {
					switch c.Op {
					case OpAdd:
						m[c.Entry.Prefix] = c.Entry
						if c.Entry.Prefix == sentinel {
							done <- nil
							return
						}
					case OpRemove:
						delete(m, c.Entry.Prefix)
					case OpResync:
						resyncs++
						m.reset(sub.Resync())
						if _, ok := m[sentinel]; ok {
							done <- nil
							return
						}
					}
				}
				done <- errors.New("channel closed before the sentinel")
			}()
			wg.Wait()
			mustAdd(t, b, manual(sentinel.String(), "sentinel"))
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("subscriber did not see the sentinel")
			}
			if err := m.equal(b.List()); err != nil {
				t.Error(err)
			}
			if buf >= 1<<14 && resyncs != 0 {
				t.Errorf("%d resyncs with a buffer that cannot overflow", resyncs)
			}
			t.Logf("buffer %d: %d resyncs, %d entries", buf, resyncs, len(m))
		})
	}
}

func TestSubscribeOverflow(t *testing.T) {
	b := newTestBlocklist(t, newClock())
	mustAdd(t, b, manual("192.0.2.0/32", "before"))
	sub, snap := b.Subscribe(2)
	if len(snap) != 1 {
		t.Fatalf("snapshot = %v", snap)
	}
	// Nobody reads: writers must not block, and the subscriber must learn
	// that it missed changes.
	for i := 1; i <= 100; i++ {
		mustAdd(t, b, manual(fmt.Sprintf("192.0.2.%d/32", i), "x"))
	}
	var ops []Op
	for len(ops) < 3 {
		ops = append(ops, (<-sub.C()).Op)
	}
	if want := []Op{OpAdd, OpAdd, OpResync}; !slices.Equal(ops, want) {
		t.Fatalf("ops = %v, want %v", ops, want)
	}
	select {
	case c := <-sub.C():
		t.Fatalf("change %v after OpResync before Resync", c.Op)
	default:
	}
	m := mirror{}
	m.reset(sub.Resync())
	if err := m.equal(b.List()); err != nil {
		t.Fatal(err)
	}
	// The feed works again after Resync.
	b.Remove(netip.MustParsePrefix("192.0.2.0/32"))
	if c := <-sub.C(); c.Op != OpRemove || c.Entry.Prefix != netip.MustParsePrefix("192.0.2.0/32") {
		t.Errorf("after Resync got %v %s", c.Op, c.Entry.Prefix)
	}

	// Resync drops queued changes that the returned list already covers.
	mustAdd(t, b, manual("198.51.100.1/32", "x"))
	if len(sub.Resync()) != 101 {
		t.Error("Resync list wrong")
	}
	select {
	case c := <-sub.C():
		t.Errorf("stale change %v left after Resync", c.Op)
	default:
	}
}
