package nft

import (
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// cpuTime is the process's user+system CPU time. The kernel applies an
// nftables batch inside the sendmsg call, so its work is included; on a
// loaded machine this is steadier than wall time.
func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportCPU adds a cpu-ms/op metric measured from start.
func reportCPU(b *testing.B, start time.Duration, n int) {
	b.ReportMetric(float64(cpuTime(b)-start)/float64(time.Millisecond)/float64(n), "cpu-ms/op")
}

// Benchmarks against the kernel (root; each in its own namespace). One
// operation is one call, that is one kernel transaction (one batch) for
// everything below 1 MiB of elements.

func benchFW(b *testing.B) *Firewall {
	b.Helper()
	ns := newNS(b)
	f, err := New(Options{SIPPorts: []uint16{5060}, MediaPorts: [2]uint16{10000, 20000}, NetNS: ns.fd})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { f.Close() })
	return f
}

func addr4(i int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
}

// addrEntries returns n single IPv4 addresses.
func addrEntries(n int, ttl time.Duration) []Entry {
	out := make([]Entry, n)
	for i := range out {
		out[i] = Entry{netip.PrefixFrom(addr4(i), 32), ttl}
	}
	return out
}

// netEntries returns n IPv4 /24s with gaps between them (no merging).
func netEntries(n int, ttl time.Duration) []Entry {
	out := make([]Entry, n)
	for i := range out {
		out[i] = Entry{netip.PrefixFrom(netip.AddrFrom4([4]byte{100, byte(i >> 7), byte(i << 1), 0}), 24), ttl}
	}
	return out
}

// BenchmarkBlock: one address (remove-then-add of one element).
func BenchmarkBlock(b *testing.B) {
	f := benchFW(b)
	b.ReportAllocs()
	i := 0
	start := cpuTime(b)
	for b.Loop() {
		if err := f.Block(netip.PrefixFrom(addr4(i%100000), 32), time.Hour); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportCPU(b, start, i)
}

// BenchmarkBlockNet10k: one /24 into an interval set already holding 10k
// prefixes (the envelope is recomputed over all of them).
func BenchmarkBlockNet10k(b *testing.B) {
	f := benchFW(b)
	if err := f.Sync(netEntries(10000, time.Hour)); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	i := 0
	start := cpuTime(b)
	for b.Loop() {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, 16 + byte(i>>8%16), byte(i), 0}), 24)
		if err := f.Block(p, time.Duration(i%7+1)*time.Hour); err != nil {
			b.Fatal(err)
		}
		i++
	}
	reportCPU(b, start, i)
}

// benchSync measures Sync(entries) into sets emptied before each round
// (outside the timer).
func benchSync(b *testing.B, entries []Entry) {
	f := benchFW(b)
	b.ReportAllocs()
	var cpu time.Duration
	n := 0
	for b.Loop() {
		b.StopTimer()
		if err := f.Sync(nil); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		start := cpuTime(b)
		if err := f.Sync(entries); err != nil {
			b.Fatal(err)
		}
		cpu += cpuTime(b) - start
		n++
	}
	b.ReportMetric(float64(cpu)/float64(time.Millisecond)/float64(n), "cpu-ms/op")
	b.ReportMetric(float64(len(entries)), "entries/op")
}

func BenchmarkSync10kAddrs(b *testing.B) { benchSync(b, addrEntries(10000, time.Hour)) }
func BenchmarkSync10kNets(b *testing.B)  { benchSync(b, netEntries(10000, time.Hour)) }

// BenchmarkSync10kRefresh: every element's TTL changes each round, so
// every element is removed and added again (3 element operations each).
func BenchmarkSync10kRefresh(b *testing.B) {
	f := benchFW(b)
	b.ReportAllocs()
	i := 0
	start := cpuTime(b)
	for b.Loop() {
		i++
		if err := f.Sync(addrEntries(10000, time.Duration(i%2+1)*time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	reportCPU(b, start, i)
}

// BenchmarkSync10kUnchanged: the kernel already holds the list; Sync reads
// it back and sends nothing.
func BenchmarkSync10kUnchanged(b *testing.B) {
	f := benchFW(b)
	entries := append(addrEntries(5000, 0), netEntries(5000, 0)...)
	if err := f.Sync(entries); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	n := 0
	start := cpuTime(b)
	for b.Loop() {
		if err := f.Sync(entries); err != nil {
			b.Fatal(err)
		}
		n++
	}
	reportCPU(b, start, n)
}
