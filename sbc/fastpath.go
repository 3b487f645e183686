package sbc

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sbc-project/sbc/acl"
	"github.com/sbc-project/sbc/acl/nft"
	"github.com/sbc-project/sbc/ebpf"
	"github.com/sbc-project/sbc/policy"
)

// The kernel fast path: the blocklist mirrored into the XDP program's
// deny map (packets die in the driver) or, where XDP cannot run, into an
// nftables set; the user-space filter before the parser is always there.
// Order of preference: xdp → nftables → userspace.
//
// Scope: the kernel drops what is sent to the SBC's ports (every listener,
// UDP and TCP, and the media relay ranges over UDP; xdp.scope = "host"
// widens XDP to all the host's traffic).
// Allowed peers: trunk sources and pool targets are never dropped by a
// deny entry or the XDP rate limit, and are what nftables.trunks_only lets
// through.
//
// Capacity: the kernel copies are sized to the blocklist's capacity (plus a
// spare slot, so that refreshing an entry of a full copy works on every
// kernel): the whole list always fits. Should a copy still lack room, its
// Mirror keeps the entries it cannot take in user space (the read filter
// drops their traffic), says so once (WARN, sbc_fastpath_missing_entries,
// sbc_fastpath_overflows_total) and does not resync.

// The paths: the values of sbc_fastpath_info's path label.
const (
	pathXDP       = "xdp"
	pathNftables  = "nftables"
	pathUserspace = "userspace"
)

// fastPaths is every value of sbc_fastpath_info's path label.
var fastPaths = []string{pathXDP, pathNftables, pathUserspace}

type fastPath struct {
	path string // pathXDP, pathNftables or pathUserspace
	xdp  *ebpf.XDP
	nft  *nft.Firewall
}

// xdpSink mirrors the blocklist into the XDP deny maps.
type xdpSink struct{ x *ebpf.XDP }

func (k xdpSink) Sync(es []acl.Entry) error {
	ps := make([]netip.Prefix, len(es))
	for i, e := range es {
		ps[i] = e.Prefix
	}
	err := k.x.SyncDeny(ps)
	// Only room lacked: SyncDeny returns the *FullError itself.
	if fe, ok := err.(*ebpf.FullError); ok {
		return &acl.SinkFullError{Missing: fe.Missing}
	}
	return err
}
func (k xdpSink) Add(e acl.Entry) error       { return sinkErr(k.x.Deny(e.Prefix), ebpf.ErrFull) }
func (k xdpSink) Remove(p netip.Prefix) error { return k.x.Undeny(p) }

// nftSink mirrors the blocklist into the nftables sets.
type nftSink struct{ f *nft.Firewall }

func (k nftSink) Sync(es []acl.Entry) error {
	out := make([]nft.Entry, 0, len(es))
	for _, e := range es {
		out = append(out, nft.Entry{Prefix: e.Prefix, TTL: ttlOf(e)})
	}
	err := k.f.Sync(out)
	// Only room lacked: Sync returns the *FullError itself.
	if fe, ok := err.(*nft.FullError); ok {
		return &acl.SinkFullError{Missing: fe.Missing}
	}
	return err
}
func (k nftSink) Add(e acl.Entry) error       { return sinkErr(k.f.Block(e.Prefix, ttlOf(e)), nft.ErrFull) }
func (k nftSink) Remove(p netip.Prefix) error { return k.f.Unblock(p) }

// sinkErr marks a kernel copy's "no room" error (full) as acl.ErrSinkFull.
func sinkErr(err, full error) error {
	if errors.Is(err, full) {
		return fmt.Errorf("%w: %w", acl.ErrSinkFull, err)
	}
	return err
}

// kernelCapacity is the size of each kernel copy of a blocklist of
// capacity n: n, and a spare slot so that refreshing an entry of a full
// map works on kernels that check the room before looking for the key
// (LPM tries before Linux 6.14).
func kernelCapacity(n int) int { return n + 1 }

// ttlOf is an entry's remaining lifetime (0: none), at least a second so
// an entry about to expire is not sent as "forever".
func ttlOf(e acl.Entry) time.Duration {
	if e.Expires.IsZero() {
		return 0
	}
	return max(time.Until(e.Expires), time.Second)
}

// sipPorts are the ports of every listener, for the kernel rules.
func sipPorts(realms map[string]*endpoint) []uint16 {
	udp, tcp := listenerPorts(realms)
	return compactPorts(append(udp, tcp...))
}

// listenerPorts are the ports of the UDP listeners and those of the
// stream listeners (tcp, tls, wss), sorted, each once.
func listenerPorts(realms map[string]*endpoint) (udp, tcp []uint16) {
	for _, ep := range realms {
		for t, la := range ep.laddr {
			if t == "udp" {
				udp = append(udp, la.Port())
			} else {
				tcp = append(tcp, la.Port())
			}
		}
	}
	return compactPorts(udp), compactPorts(tcp)
}

func rangesString(rs []ebpf.PortRange) string {
	var b strings.Builder
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%d-%d", r.Min, r.Max)
	}
	return b.String()
}

// mediaRanges are the port ranges of the realms' media relays (those with
// a relay address, as newMediaPlane builds them).
func mediaRanges(p *policy.Policy) []ebpf.PortRange {
	var out []ebpf.PortRange
	for _, r := range p.Realms {
		if !r.Media.Addr.IsValid() || r.Media.Addr.IsUnspecified() || r.Media.Min < 1 || r.Media.Max > 65535 {
			continue
		}
		out = append(out, ebpf.PortRange{Min: uint16(r.Media.Min), Max: uint16(r.Media.Max)})
	}
	return out
}

// ephemeralClash reports the part of the media ranges that the kernel may
// also hand out as ephemeral ports (ip_local_port_range, minus
// ip_local_reserved_ports): the host's own UDP answers (DNS, NTP) landing
// there from a blocked source are dropped with the media. portRange and
// reserved are the contents of the two sysctl files.
func ephemeralClash(media []ebpf.PortRange, portRange, reserved string) (clash []ebpf.PortRange) {
	var lo, hi int
	if _, err := fmt.Sscan(portRange, &lo, &hi); err != nil || lo < 1 || hi > 65535 || lo > hi {
		return nil
	}
	var res []ebpf.PortRange
	for _, f := range strings.Split(strings.TrimSpace(reserved), ",") {
		a, b, isRange := strings.Cut(strings.TrimSpace(f), "-")
		var x, y int
		if _, err := fmt.Sscan(a, &x); err != nil {
			continue
		}
		y = x
		if isRange {
			if _, err := fmt.Sscan(b, &y); err != nil {
				continue
			}
		}
		res = append(res, ebpf.PortRange{Min: uint16(x), Max: uint16(y)})
	}
	for _, m := range media {
		start := -1
		for port := max(int(m.Min), lo); port <= min(int(m.Max), hi)+1; port++ {
			free := port <= min(int(m.Max), hi) && !slices.ContainsFunc(res, func(r ebpf.PortRange) bool {
				return int(r.Min) <= port && port <= int(r.Max)
			})
			switch {
			case free && start < 0:
				start = port
			case !free && start >= 0:
				clash = append(clash, ebpf.PortRange{Min: uint16(start), Max: uint16(port - 1)})
				start = -1
			}
		}
	}
	return clash
}

// warnEphemeralClash logs, once at start, media ranges a kernel path
// guards that overlap the kernel's ephemeral ports.
func (s *SBC) warnEphemeralClash(path string, media []ebpf.PortRange) {
	pr, err1 := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	rs, err2 := os.ReadFile("/proc/sys/net/ipv4/ip_local_reserved_ports")
	if err1 != nil || err2 != nil {
		return
	}
	for _, c := range ephemeralClash(media, string(pr), string(rs)) {
		s.log.Warn("media relay ports are also the kernel's ephemeral ports: answers to the host's own UDP (DNS, NTP) from a blocked source landing there are dropped with the media, and the relay may find them taken; reserve them (sysctl net.ipv4.ip_local_reserved_ports) or move the range",
			"path", path, "ports", fmt.Sprintf("%d-%d", c.Min, c.Max), "ip_local_port_range", strings.TrimSpace(string(pr)))
	}
}

func compactPorts(ps []uint16) []uint16 {
	slices.Sort(ps)
	return slices.Compact(ps)
}

// allowedPeers are the prefixes the kernel never drops, neither for a
// deny entry nor for the XDP rate limit, and the only sources
// nftables.trunks_only lets reach the SIP ports: the trunks' sources and
// the pool targets (the backends' replies and requests come from them).
func allowedPeers(p *policy.Policy) []netip.Prefix {
	var out []netip.Prefix
	for _, t := range p.Trunks {
		out = append(out, t.Prefixes...)
	}
	for _, pl := range p.Pools {
		for _, t := range pl.Targets {
			a := t.Addr.Addr().Unmap()
			out = append(out, netip.PrefixFrom(a, a.BitLen()))
		}
	}
	return out
}

// startFastPath loads what the policy asks for, falling back with a log
// line that says why, and starts mirroring the blocklist.
func (s *SBC) startFastPath(ctx context.Context, p *policy.Policy) *fastPath {
	fp := &fastPath{path: pathUserspace}
	ports := sipPorts(s.realms)
	media := mediaRanges(p)
	if p.XDP.Enabled {
		udp, tcp := listenerPorts(s.realms)
		x, err := ebpf.Load(ebpf.Options{
			Interfaces: p.XDP.Interfaces, Mode: ebpf.Mode(p.XDP.Mode), PinDir: p.XDP.PinDir,
			UDPPorts: udp, TCPPorts: tcp, MediaPorts: media, Scope: ebpf.Scope(p.XDP.Scope),
			MaxEntries: kernelCapacity(s.def.blocklist.Cap()),
			RatePPS:    uint32(p.XDP.RatePPS), Burst: uint32(p.XDP.Burst), Logger: s.log,
		})
		if err == nil {
			err = x.SetAllow(allowedPeers(p))
			if err != nil {
				x.Close()
			}
		}
		if err != nil {
			s.log.Error("xdp fast path unavailable; falling back", "error", err.Error(), "next", fallbackName(p))
		} else {
			fp.path, fp.xdp = pathXDP, x
			var modes []string
			for _, a := range x.Attachments() {
				modes = append(modes, a.Interface+":"+string(a.Mode))
			}
			s.log.Info("xdp fast path attached", "attachments", strings.Join(modes, ","), "pin_dir", x.PinDir(),
				"scope", string(x.Scope()), "udp_ports", udp, "tcp_ports", tcp, "media_ports", rangesString(media),
				"capacity", x.MaxEntries())
			if x.Scope() == ebpf.ScopeSIP {
				s.warnEphemeralClash(pathXDP, media)
			}
			s.metrics.Registry.MustRegister(xdpCollectors(x.Counters)...)
			startMirror(ctx, &s.wg, s.log, s.metrics.Registry, s.def.blocklist, pathXDP, xdpSink{x}, x.MaxEntries())
		}
	} else if _, err := os.Stat(p.XDP.PinDir); err == nil {
		// XDP turned off: a previous run's program must not keep dropping
		// with an old deny list.
		if err := ebpf.RemovePinned(p.XDP.PinDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("could not remove the previous run's XDP program", "pin_dir", p.XDP.PinDir, "error", err.Error())
		}
	}
	if fp.xdp == nil && p.Nftables.Enabled {
		opt := nft.Options{Table: p.Nftables.Table, SIPPorts: ports, TrunksOnly: p.Nftables.TrunksOnly,
			MaxEntries: kernelCapacity(s.def.blocklist.Cap())}
		if len(p.Nftables.MediaPorts) == 2 {
			opt.MediaPorts = [2]uint16{uint16(p.Nftables.MediaPorts[0]), uint16(p.Nftables.MediaPorts[1])}
		}
		for _, r := range media {
			opt.UDPMediaPorts = append(opt.UDPMediaPorts, [2]uint16{r.Min, r.Max})
		}
		f, err := nft.New(opt)
		if err == nil {
			if err = f.SetTrunks(allowedPeers(p)); err != nil {
				f.Close()
			}
		}
		if err != nil {
			s.log.Error("nftables fast path unavailable; falling back to the user-space filter", "error", err.Error())
		} else {
			fp.path, fp.nft = pathNftables, f
			s.log.Info("nftables fast path installed", "table", "inet "+p.Nftables.Table,
				"ports", ports, "media_ports", rangesString(media), "trunks_only", p.Nftables.TrunksOnly, "capacity", opt.MaxEntries)
			s.warnEphemeralClash(pathNftables, media)
			s.metrics.Registry.MustRegister(nftCollectors(f.Counters)...)
			startMirror(ctx, &s.wg, s.log, s.metrics.Registry, s.def.blocklist, pathNftables, nftSink{f}, opt.MaxEntries)
		}
	}
	if fp.path == pathUserspace {
		s.log.Info("blocked sources are dropped by the user-space filter before the SIP parser")
	}
	s.metrics.FastPath.WithLabelValues(fp.path).Set(1)
	return fp
}

// startMirror keeps the kernel copy sink (path name, room for capacity
// entries) of bl until ctx ends, and registers its metrics in reg.
func startMirror(ctx context.Context, wg *sync.WaitGroup, log *slog.Logger, reg prometheus.Registerer,
	bl *acl.Blocklist, name string, sink acl.Sink, capacity int) {
	m := acl.NewMirror(bl, sink, acl.MirrorOptions{
		OnError: func(err error) {
			log.Error("kernel mirror of the blocklist failed; resyncing", "path", name, "error", err.Error())
		},
		OnOverflow: func(missing int) {
			if missing > 0 {
				log.Warn("kernel copy of the blocklist is full: entries it cannot take are dropped by the user-space filter only, and installed as removals free room",
					"path", name, "capacity", capacity, "missing", missing)
				return
			}
			log.Info("kernel copy of the blocklist holds every entry again", "path", name, "capacity", capacity)
		},
	})
	reg.MustRegister(mirrorCollectors(name, m.Stats)...)
	wg.Add(1)
	go func() {
		defer wg.Done()
		m.Run(ctx)
	}()
}

func fallbackName(p *policy.Policy) string {
	if p.Nftables.Enabled {
		return pathNftables
	}
	return pathUserspace
}

// setPeers updates the kernel allow-lists (allowedPeers) on reload.
func (fp *fastPath) setPeers(p *policy.Policy) error {
	switch {
	case fp.xdp != nil:
		return fp.xdp.SetAllow(allowedPeers(p))
	case fp.nft != nil:
		return fp.nft.SetTrunks(allowedPeers(p))
	}
	return nil
}

// close leaves the kernel state in place: pinned XDP maps and the
// nftables table keep blocking across a restart.
func (fp *fastPath) close() {
	if fp.xdp != nil {
		fp.xdp.Close()
	}
	if fp.nft != nil {
		fp.nft.Close()
	}
}

// xdpActions are the values of sbc_xdp_packets_total's action label,
// each read from the XDP program's counters.
var xdpActions = []struct {
	action string
	get    func(ebpf.Counters) uint64
}{
	{"pass", func(c ebpf.Counters) uint64 { return c.Passed }},
	{"drop_deny", func(c ebpf.Counters) uint64 { return c.DroppedDeny }},
	{"drop_ratelimit", func(c ebpf.Counters) uint64 { return c.DroppedRateLimit }},
	{"malformed", func(c ebpf.Counters) uint64 { return c.Malformed }},
	{"non_ip", func(c ebpf.Counters) uint64 { return c.NonIP }},
	{"fragment", func(c ebpf.Counters) uint64 { return c.Fragments }},
	{"allowed", func(c ebpf.Counters) uint64 { return c.Allowed }},
	{"spared", func(c ebpf.Counters) uint64 { return c.Spared }},
}

// xdpCollectors are the metrics of the XDP program whose counters read
// returns (registered only when XDP is the fast path).
func xdpCollectors(read func() (ebpf.Counters, error)) []prometheus.Collector {
	var out []prometheus.Collector
	for _, a := range xdpActions {
		get := a.get
		out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sbc_xdp_packets_total", Help: "Packets seen by the XDP program, by action.",
			ConstLabels: prometheus.Labels{"action": a.action},
		}, func() float64 {
			c, err := read()
			if err != nil {
				return 0
			}
			return float64(get(c))
		}))
	}
	return out
}

// mirrorCollectors are the metrics of the mirror of the kernel copy path
// whose counters stats returns.
func mirrorCollectors(path string, stats func() acl.MirrorStats) []prometheus.Collector {
	labels := prometheus.Labels{"path": path}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sbc_fastpath_missing_entries", ConstLabels: labels,
			Help: "Blocklist entries the kernel copy lacks for want of room: their sources are dropped by the user-space filter only.",
		}, func() float64 { return float64(stats().Missing) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sbc_fastpath_overflows_total", ConstLabels: labels,
			Help: "Times the kernel copy of the blocklist ran out of room.",
		}, func() float64 { return float64(stats().Overflows) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "sbc_fastpath_syncs_total", ConstLabels: labels,
			Help: "Full syncs of the kernel copy of the blocklist: one at start, one after each lost change or kernel error.",
		}, func() float64 { return float64(stats().Syncs) }),
	}
}

// mirrorPaths are the values of the path label of the mirror metrics.
var mirrorPaths = []string{pathXDP, pathNftables}

// nftCollectors are the metrics of the nftables rules whose counters read
// returns (registered only when nftables is the fast path).
func nftCollectors(read func() (nft.Counters, error)) []prometheus.Collector {
	counter := func(get func(nft.Counters) uint64) func() float64 {
		return func() float64 {
			c, err := read()
			if err != nil {
				return 0
			}
			return float64(get(c))
		}
	}
	return []prometheus.Collector{
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sbc_nft_dropped_packets_total", Help: "Packets from blocked sources dropped by the nftables rule."}, counter(func(c nft.Counters) uint64 { return c.BlockedPackets })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sbc_nft_dropped_bytes_total", Help: "Bytes from blocked sources dropped by the nftables rule."}, counter(func(c nft.Counters) uint64 { return c.BlockedBytes })),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "sbc_nft_not_trunk_packets_total", Help: "SIP packets from non-trunk sources dropped (trunks_only)."}, counter(func(c nft.Counters) uint64 { return c.NotTrunkPackets })),
	}
}
