package ratelimit

import (
	"fmt"
	"net/netip"
	"testing"
	"time"
)

func mustGuard(t *testing.T, cfg GuardConfig) *Guard {
	t.Helper()
	g, err := NewGuard(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestGuardDefaults(t *testing.T) {
	c := mustGuard(t, GuardConfig{}).Config()
	if c.PerIdentity != 5 || c.PerSource != 20 || c.Window != 10*time.Minute || c.LockFor != 15*time.Minute || c.MaxSources != DefaultMaxSources {
		t.Fatalf("defaults: %+v", c)
	}
	for _, bad := range []GuardConfig{{PerIdentity: -1}, {PerSource: 70000}, {Window: 3}, {LockFor: -time.Second}, {MaxSources: -1}, {PromoteAge: -1}} {
		if _, err := NewGuard(bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
}

// One identity guessed from one source: locked at the PerIdentity-th
// failure, for LockFor; the other identities of the same source (a NAT's
// other phones) are not.
func TestGuardLocksTheIdentityNotTheSource(t *testing.T) {
	g := mustGuard(t, GuardConfig{PerIdentity: 5, PerSource: 20})
	nat := netip.MustParsePrefix("198.51.100.7/32")
	var d GuardDecision
	for i := range 5 {
		d = g.Fail(nat, "1001@pbx", at(time.Duration(i)*time.Second))
		if i < 4 && (d.Locked || d.Block) {
			t.Fatalf("failure %d: %+v", i+1, d)
		}
	}
	if !d.Locked || d.IdentityFailures != 5 || d.SourceFailures != 5 || d.Block || !d.LockedUntil.Equal(at(4*time.Second+15*time.Minute)) {
		t.Fatalf("5th failure: %+v", d)
	}
	if ok, _ := g.Locked(nat, "1001@pbx", at(10*time.Minute)); !ok {
		t.Fatal("not locked inside LockFor")
	}
	if ok, _ := g.Locked(nat, "1002@pbx", at(10*time.Minute)); ok {
		t.Fatal("another identity of the same source locked")
	}
	if ok, _ := g.Locked(netip.MustParsePrefix("198.51.100.8/32"), "1001@pbx", at(10*time.Minute)); ok {
		t.Fatal("the identity locked for another source")
	}
	if ok, _ := g.Locked(nat, "1001@pbx", at(4*time.Second+15*time.Minute)); ok {
		t.Fatal("still locked after LockFor")
	}
	// After the lock a fresh count starts.
	if d := g.Fail(nat, "1001@pbx", at(20*time.Minute)); d.IdentityFailures != 1 || d.Locked {
		t.Fatalf("after the lock: %+v", d)
	}
}

// Guesses spread over identities reach PerSource: Block, once.
func TestGuardBlocksASprayingSource(t *testing.T) {
	g := mustGuard(t, GuardConfig{PerIdentity: 5, PerSource: 12})
	src := netip.MustParsePrefix("2001:db8:7::5/128")
	blocks, locks := 0, 0
	for i := range 12 {
		d := g.Fail(SourceKey(src.Addr()), fmt.Sprintf("%d@pbx", 100+i%6), at(time.Duration(i)*time.Second))
		if d.Locked {
			locks++
		}
		if d.Block {
			blocks++
			if i != 11 || d.SourceFailures != 12 || d.Prefix.String() != "2001:db8:7::/64" {
				t.Fatalf("block at %d: %+v", i, d)
			}
		}
	}
	if blocks != 1 || locks != 0 {
		t.Fatalf("blocks %d locks %d; want 1 block, no lock (2 guesses per identity)", blocks, locks)
	}
	if d := g.Fail(SourceKey(src.Addr()), "100@pbx", at(13*time.Second)); d.Block || d.SourceFailures != 1 {
		t.Fatalf("count not restarted after the block: %+v", d)
	}
}

// The source count slides: guesses slower than PerSource per Window never
// block, an identity's count is forgotten Window after its first failure.
func TestGuardWindow(t *testing.T) {
	g := mustGuard(t, GuardConfig{PerIdentity: 3, PerSource: 5, Window: time.Minute})
	src := netip.MustParsePrefix("192.0.2.9/32")
	for i := range 20 {
		d := g.Fail(src, fmt.Sprint(i), at(time.Duration(i)*15*time.Second))
		if d.Block || d.Locked {
			t.Fatalf("slow guess %d: %+v", i, d)
		}
	}
	g.Fail(src, "a", at(time.Hour))
	g.Fail(src, "a", at(time.Hour+30*time.Second))
	if d := g.Fail(src, "a", at(time.Hour+61*time.Second)); d.IdentityFailures != 1 || d.Locked {
		t.Fatalf("identity count not forgotten: %+v", d)
	}
}

// A success forgets the identity's count (not the source's).
func TestGuardSuccess(t *testing.T) {
	g := mustGuard(t, GuardConfig{PerIdentity: 3, PerSource: 100})
	src := netip.MustParsePrefix("192.0.2.10/32")
	g.Fail(src, "a", t0)
	g.Fail(src, "a", at(time.Second))
	g.Success(src, "a", at(2*time.Second))
	if d := g.Fail(src, "a", at(3*time.Second)); d.IdentityFailures != 1 || d.SourceFailures != 3 {
		t.Fatalf("after a success: %+v", d)
	}
}

// Only the nonces challenged to a source are Issued to it, the last
// guardNonces of them.
func TestGuardNonces(t *testing.T) {
	g := mustGuard(t, GuardConfig{})
	a, b := netip.MustParsePrefix("192.0.2.1/32"), netip.MustParsePrefix("192.0.2.2/32")
	g.Challenged(a, "n0", t0)
	if !g.Issued(a, "n0") || g.Issued(b, "n0") || g.Issued(a, "n1") || g.Issued(a, "") {
		t.Fatal("Issued wrong")
	}
	for i := 1; i <= guardNonces; i++ {
		g.Challenged(a, fmt.Sprintf("n%d", i), at(time.Duration(i)*time.Millisecond))
	}
	if g.Issued(a, "n0") || !g.Issued(a, "n1") || !g.Issued(a, fmt.Sprintf("n%d", guardNonces)) {
		t.Fatal("the ring does not keep the last nonces")
	}
	g.Challenged(a, "n5", at(time.Second)) // a repeat takes no slot
	if !g.Issued(a, "n1") {
		t.Fatal("a repeated nonce evicted another")
	}
}

// With all identity slots locked, a new identity takes the slot whose
// lock ends first; a lock is never silently lost while others are free.
func TestGuardIdentitySlots(t *testing.T) {
	g := mustGuard(t, GuardConfig{PerIdentity: 1, PerSource: 1000})
	src := netip.MustParsePrefix("192.0.2.11/32")
	for i := range guardIdentities {
		if d := g.Fail(src, fmt.Sprint(i), at(time.Duration(i)*time.Second)); !d.Locked {
			t.Fatalf("identity %d not locked", i)
		}
	}
	g.Fail(src, "new", at(10*time.Second))
	if ok, _ := g.Locked(src, "0", at(11*time.Second)); ok {
		t.Fatal("the lock ending first was kept")
	}
	for i := 1; i < guardIdentities; i++ {
		if ok, _ := g.Locked(src, fmt.Sprint(i), at(11*time.Second)); !ok {
			t.Fatalf("identity %d lost its lock", i)
		}
	}
}

func TestGuardUpdateKeepsLocks(t *testing.T) {
	g := mustGuard(t, GuardConfig{PerIdentity: 2})
	src := netip.MustParsePrefix("192.0.2.12/32")
	g.Fail(src, "a", t0)
	g.Fail(src, "a", t0)
	u, err := g.Prepare(GuardConfig{PerIdentity: 10, MaxSources: 64})
	if err != nil {
		t.Fatal(err)
	}
	u.Apply()
	if ok, _ := g.Locked(src, "a", at(time.Minute)); !ok {
		t.Fatal("lock lost on update")
	}
	if g.Config().PerIdentity != 10 || g.Stats().Capacity != 64 {
		t.Fatalf("update not applied: %+v %+v", g.Config(), g.Stats())
	}
	if _, err := g.Prepare(GuardConfig{PerSource: -2}); err == nil {
		t.Fatal("bad update accepted")
	}
	if !g.Forget(src) || g.Forget(src) {
		t.Fatal("Forget")
	}
}

func TestGuardInvalidSource(t *testing.T) {
	g := mustGuard(t, GuardConfig{})
	if d := g.Fail(netip.Prefix{}, "a", t0); d != (GuardDecision{}) {
		t.Fatalf("%+v", d)
	}
	g.Challenged(netip.Prefix{}, "n", t0)
	if g.Issued(netip.Prefix{}, "n") {
		t.Fatal("invalid source issued")
	}
	if ok, _ := g.Locked(netip.Prefix{}, "a", t0); ok {
		t.Fatal("invalid source locked")
	}
}

// A flood of spoofed sources cannot flush a source with a lock.
func TestGuardFloodKeepsLocks(t *testing.T) {
	g := mustGuard(t, GuardConfig{PerIdentity: 1, MaxSources: 256, Shards: 1})
	src := netip.MustParsePrefix("192.0.2.13/32")
	g.Fail(src, "a", t0)
	for i := range 10000 {
		g.Challenged(v4(1000+i), "x", at(time.Millisecond))
	}
	if ok, _ := g.Locked(src, "a", at(time.Second)); !ok {
		t.Fatal("a flood of new sources flushed the lock")
	}
	if st := g.Stats(); st.Len > 256 {
		t.Fatalf("table grew to %d", st.Len)
	}
}
