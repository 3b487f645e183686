package sbc

import (
	"context"
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"slices"
	"strings"
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
	return k.x.SyncDeny(ps)
}
func (k xdpSink) Add(e acl.Entry) error       { return k.x.Deny(e.Prefix) }
func (k xdpSink) Remove(p netip.Prefix) error { return k.x.Undeny(p) }

// nftSink mirrors the blocklist into the nftables sets.
type nftSink struct{ f *nft.Firewall }

func (k nftSink) Sync(es []acl.Entry) error {
	out := make([]nft.Entry, 0, len(es))
	for _, e := range es {
		out = append(out, nft.Entry{Prefix: e.Prefix, TTL: ttlOf(e)})
	}
	return k.f.Sync(out)
}
func (k nftSink) Add(e acl.Entry) error       { return k.f.Block(e.Prefix, ttlOf(e)) }
func (k nftSink) Remove(p netip.Prefix) error { return k.f.Unblock(p) }

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

func compactPorts(ps []uint16) []uint16 {
	slices.Sort(ps)
	return slices.Compact(ps)
}

func trunkPrefixes(p *policy.Policy) []netip.Prefix {
	var out []netip.Prefix
	for _, t := range p.Trunks {
		out = append(out, t.Prefixes...)
	}
	return out
}

// startFastPath loads what the policy asks for, falling back with a log
// line that says why, and starts mirroring the blocklist.
func (s *SBC) startFastPath(ctx context.Context, p *policy.Policy) *fastPath {
	fp := &fastPath{path: pathUserspace}
	ports := sipPorts(s.realms)
	if p.XDP.Enabled {
		udp, tcp := listenerPorts(s.realms)
		x, err := ebpf.Load(ebpf.Options{
			Interfaces: p.XDP.Interfaces, Mode: ebpf.Mode(p.XDP.Mode), PinDir: p.XDP.PinDir,
			UDPPorts: udp, TCPPorts: tcp,
			RatePPS: uint32(p.XDP.RatePPS), Burst: uint32(p.XDP.Burst), Logger: s.log,
		})
		if err == nil {
			err = x.SetAllow(trunkPrefixes(p))
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
			s.log.Info("xdp fast path attached", "attachments", strings.Join(modes, ","), "pin_dir", x.PinDir())
			s.metrics.Registry.MustRegister(xdpCollectors(x.Counters)...)
			s.mirror(ctx, pathXDP, xdpSink{x})
		}
	} else if _, err := os.Stat(p.XDP.PinDir); err == nil {
		// XDP turned off: a previous run's program must not keep dropping
		// with an old deny list.
		if err := ebpf.RemovePinned(p.XDP.PinDir); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("could not remove the previous run's XDP program", "pin_dir", p.XDP.PinDir, "error", err.Error())
		}
	}
	if fp.xdp == nil && p.Nftables.Enabled {
		opt := nft.Options{Table: p.Nftables.Table, SIPPorts: ports, TrunksOnly: p.Nftables.TrunksOnly}
		if len(p.Nftables.MediaPorts) == 2 {
			opt.MediaPorts = [2]uint16{uint16(p.Nftables.MediaPorts[0]), uint16(p.Nftables.MediaPorts[1])}
		}
		f, err := nft.New(opt)
		if err == nil {
			if err = f.SetTrunks(trunkPrefixes(p)); err != nil {
				f.Close()
			}
		}
		if err != nil {
			s.log.Error("nftables fast path unavailable; falling back to the user-space filter", "error", err.Error())
		} else {
			fp.path, fp.nft = pathNftables, f
			s.log.Info("nftables fast path installed", "table", "inet "+p.Nftables.Table)
			s.metrics.Registry.MustRegister(nftCollectors(f.Counters)...)
			s.mirror(ctx, pathNftables, nftSink{f})
		}
	}
	if fp.path == pathUserspace {
		s.log.Info("blocked sources are dropped by the user-space filter before the SIP parser")
	}
	s.metrics.FastPath.WithLabelValues(fp.path).Set(1)
	return fp
}

// mirror keeps a kernel copy of the blocklist until ctx ends.
func (s *SBC) mirror(ctx context.Context, name string, sink acl.Sink) {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		acl.NewMirror(s.def.blocklist, sink, acl.MirrorOptions{OnError: func(err error) {
			s.log.Error("kernel mirror of the blocklist failed; resyncing", "path", name, "error", err.Error())
		}}).Run(ctx)
	}()
}

func fallbackName(p *policy.Policy) string {
	if p.Nftables.Enabled {
		return pathNftables
	}
	return pathUserspace
}

// setTrunks updates the kernel allow-lists on reload.
func (fp *fastPath) setTrunks(p *policy.Policy) error {
	switch {
	case fp.xdp != nil:
		return fp.xdp.SetAllow(trunkPrefixes(p))
	case fp.nft != nil:
		return fp.nft.SetTrunks(trunkPrefixes(p))
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
