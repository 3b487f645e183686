package acl

import (
	"fmt"
	"math/rand/v2"
	"net/netip"
	"testing"
	"time"

	"github.com/gaissmai/bart"
)

// benchSet is a deterministic set of prefixes plus probe addresses that hit
// and miss them. IPv4 prefixes are drawn inside 10.0.0.0/8 (80% /32, 20%
// /24), IPv6 inside 2001:db8::/32 (80% /64, 10% /128, 10% /48); misses are
// drawn from the same ranges, so a miss walks as deep as a real one.
type benchSet struct {
	prefixes     []netip.Prefix
	hits, misses []netip.Addr
}

const benchProbes = 1024

func randAddr(r *rand.Rand, v6 bool) netip.Addr {
	if !v6 {
		return netip.AddrFrom4([4]byte{10, byte(r.Uint32()), byte(r.Uint32()), byte(r.Uint32())})
	}
	var b [16]byte
	b[0], b[1], b[2], b[3] = 0x20, 0x01, 0x0d, 0xb8
	for i := 4; i < 16; i++ {
		b[i] = byte(r.Uint32())
	}
	return netip.AddrFrom16(b)
}

func randBits(r *rand.Rand, v6 bool) int {
	x := r.IntN(10)
	switch {
	case !v6 && x < 8:
		return 32
	case !v6:
		return 24
	case x < 8:
		return 64
	case x < 9:
		return 128
	default:
		return 48
	}
}

func makeBenchSet(n int, v6 bool) benchSet {
	r := rand.New(rand.NewPCG(uint64(n), 42))
	seen := make(map[netip.Prefix]bool, n)
	ref := new(bart.Lite)
	var s benchSet
	for len(s.prefixes) < n {
		p, _ := randAddr(r, v6).Prefix(randBits(r, v6))
		if seen[p] {
			continue
		}
		seen[p] = true
		ref.Insert(p)
		s.prefixes = append(s.prefixes, p)
	}
	for len(s.hits) < benchProbes {
		p := s.prefixes[r.IntN(len(s.prefixes))]
		a := randAddr(r, v6)
		// Keep the prefix bits of p and random host bits of a.
		pb, ab := p.Addr().As16(), a.As16()
		if !v6 {
			pb = netip.AddrFrom4(p.Addr().As4()).As16()
		}
		off := 0
		if !v6 {
			off = 96
		}
		for bit := 0; bit < p.Bits(); bit++ {
			i, m := (off+bit)/8, byte(0x80>>((off+bit)%8))
			ab[i] = ab[i]&^m | pb[i]&m
		}
		h := netip.AddrFrom16(ab)
		if !v6 {
			h = h.Unmap()
		}
		s.hits = append(s.hits, h)
	}
	for len(s.misses) < benchProbes {
		if a := randAddr(r, v6); !ref.Contains(a) {
			s.misses = append(s.misses, a)
		}
	}
	return s
}

var benchSizes = []struct {
	name string
	n    int
}{{"10", 10}, {"1k", 1000}, {"100k", 100_000}}

var (
	sinkBool   bool
	sinkString string
)

func BenchmarkTrunkTableLookup(b *testing.B) {
	for _, fam := range []string{"v4", "v6"} {
		for _, size := range benchSizes {
			set := makeBenchSet(size.n, fam == "v6")
			var entries []TrunkEntry
			for i := 0; i < len(set.prefixes); i += 10 {
				entries = append(entries, TrunkEntry{
					Name:     fmt.Sprintf("trunk-%d", i/10),
					Prefixes: set.prefixes[i:min(i+10, len(set.prefixes))],
				})
			}
			tt, err := NewTrunkTable(entries)
			if err != nil {
				b.Fatal(err)
			}
			for _, kind := range []string{"hit", "miss"} {
				probes := set.hits
				if kind == "miss" {
					probes = set.misses
				}
				b.Run(fmt.Sprintf("%s/n=%s/%s", fam, size.name, kind), func(b *testing.B) {
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						sinkString, sinkBool = tt.Lookup(probes[i%benchProbes])
						i++
					}
				})
			}
		}
	}
}

func BenchmarkBlocklistBlocked(b *testing.B) {
	for _, fam := range []string{"v4", "v6"} {
		for _, size := range benchSizes {
			set := makeBenchSet(size.n, fam == "v6")
			// Manual entries never expire; auto entries do, so a hit on
			// them reads the clock.
			never := NewBlocklist(Options{})
			expiring := NewBlocklist(Options{})
			exp := time.Now().Add(24 * time.Hour)
			for _, p := range set.prefixes {
				if err := never.Add(Entry{Prefix: p, Origin: OriginManual, Reason: "bench"}); err != nil {
					b.Fatal(err)
				}
				if err := expiring.Add(Entry{Prefix: p, Origin: OriginAuto, Reason: "bench", Expires: exp}); err != nil {
					b.Fatal(err)
				}
			}
			for _, kind := range []string{"hit", "hit-expiring", "miss"} {
				bl, probes := never, set.hits
				switch kind {
				case "hit-expiring":
					bl = expiring
				case "miss":
					probes = set.misses
				}
				b.Run(fmt.Sprintf("%s/n=%s/%s", fam, size.name, kind), func(b *testing.B) {
					b.ReportAllocs()
					i := 0
					for b.Loop() {
						sinkBool = bl.Blocked(probes[i%benchProbes])
						i++
					}
					if kind != "miss" && !sinkBool {
						b.Fatal("probe did not hit")
					}
				})
			}
			never.Close()
			expiring.Close()
		}
	}
}

// BenchmarkBlocklistAddRemove measures a writer: one Add of a new /32 (or
// /64) plus its Remove, on a blocklist of n entries, with one subscriber
// that drains the feed.
func BenchmarkBlocklistAddRemove(b *testing.B) {
	for _, fam := range []string{"v4", "v6"} {
		for _, size := range benchSizes {
			set := makeBenchSet(size.n, fam == "v6")
			bl := NewBlocklist(Options{})
			for _, p := range set.prefixes {
				bl.Add(Entry{Prefix: p, Origin: OriginAuto})
			}
			sub, _ := bl.Subscribe(1 << 16)
			done := make(chan struct{})
			go func() {
				defer close(done)
				for range sub.C() {
				}
			}()
			b.Run(fmt.Sprintf("%s/n=%s", fam, size.name), func(b *testing.B) {
				b.ReportAllocs()
				i := 0
				for b.Loop() {
					p := SourceKey(set.misses[i%benchProbes])
					if err := bl.Add(Entry{Prefix: p, Origin: OriginAuto, Reason: "bench"}); err != nil {
						b.Fatal(err)
					}
					bl.Remove(p)
					i++
				}
			})
			bl.Close()
			<-done
		}
	}
}
