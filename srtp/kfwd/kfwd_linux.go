//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package kfwd

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Forwarder is the loaded program, attached at TC ingress (tcx) of its
// interfaces, with its flow map. Its methods are safe for concurrent use
// and satisfy srtp.KernelPath.
type Forwarder struct {
	mu     sync.Mutex
	objs   kfwdObjects
	links  []link.Link
	egress func(dst netip.Addr) int
	closed bool
}

// Config says where to attach and where rewritten packets leave.
type Config struct {
	// Interfaces are the names of the interfaces whose ingress the
	// program watches: those the media arrives on.
	Interfaces []string
	// Egress returns the interface index a packet to dst leaves from
	// (bpf_redirect_neigh), or 0 to pass the rewritten packet on up the
	// ingress interface's stack (a local destination). Nil: 0 for
	// loopback destinations, else the index of the attached interface
	// whose network holds dst, else of the first attached interface.
	Egress func(dst netip.Addr) int
}

// Open loads the program and attaches it. It needs CAP_BPF and
// CAP_NET_ADMIN (root) and a kernel with tcx (6.6 or later).
func Open(cfg Config) (*Forwarder, error) {
	if len(cfg.Interfaces) == 0 {
		return nil, errors.New("kfwd: no interface")
	}
	_ = rlimit.RemoveMemlock()
	f := &Forwarder{egress: cfg.Egress}
	if err := loadKfwdObjects(&f.objs, nil); err != nil {
		return nil, fmt.Errorf("kfwd: load: %w", err)
	}
	var ifaces []*net.Interface
	for _, name := range cfg.Interfaces {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("kfwd: %w", err)
		}
		l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: f.objs.Kfwd, Attach: ebpf.AttachTCXIngress})
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("kfwd: attach to %s: %w", name, err)
		}
		f.links = append(f.links, l)
		ifaces = append(ifaces, ifc)
	}
	if f.egress == nil {
		f.egress = defaultEgress(ifaces)
	}
	return f, nil
}

func defaultEgress(ifaces []*net.Interface) func(netip.Addr) int {
	type onLink struct {
		p     netip.Prefix
		index int
	}
	var nets []onLink
	for _, ifc := range ifaces {
		addrs, _ := ifc.Addrs()
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok {
				if p, err := netip.ParsePrefix(n.String()); err == nil {
					nets = append(nets, onLink{p.Masked(), ifc.Index})
				}
			}
		}
	}
	first := ifaces[0].Index
	return func(dst netip.Addr) int {
		if dst.IsLoopback() {
			return 0
		}
		for _, n := range nets {
			if n.p.Contains(dst) {
				return n.index
			}
		}
		return first
	}
}

// Close detaches the program and frees the map.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var errs []error
	for _, l := range f.links {
		errs = append(errs, l.Close())
	}
	errs = append(errs, f.objs.Close())
	return errors.Join(errs...)
}

func key(src, local netip.AddrPort) (kfwdFlowKey, error) {
	s, l := src.Addr().Unmap(), local.Addr().Unmap()
	if !s.Is4() || !l.Is4() {
		return kfwdFlowKey{}, errors.New("kfwd: IPv4 only")
	}
	return kfwdFlowKey{Saddr: addr4(s), Daddr: addr4(l), Sport: port(src.Port()), Dport: port(local.Port())}, nil
}

// addr4 and port give the uint32/uint16 whose bytes in memory are the
// address or port in network order (what the program compares).
func addr4(a netip.Addr) uint32 {
	b := a.As4()
	return binary.NativeEndian.Uint32(b[:])
}

func port(p uint16) uint16 {
	var b [2]byte
	binary.BigEndian.PutUint16(b[:], p)
	return binary.NativeEndian.Uint16(b[:])
}

// Offload installs a flow: datagrams from src to local (a relay socket)
// leave rewritten as from → to, without reaching the socket.
func (f *Forwarder) Offload(src, local, from, to netip.AddrPort) error {
	k, err := key(src, local)
	if err != nil {
		return err
	}
	fa, ta := from.Addr().Unmap(), to.Addr().Unmap()
	if !fa.Is4() || !ta.Is4() {
		return errors.New("kfwd: IPv4 only")
	}
	v := kfwdFlow{Saddr: addr4(fa), Daddr: addr4(ta), Sport: port(from.Port()), Dport: port(to.Port()), Ifindex: uint32(f.egress(ta))}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return errors.New("kfwd: closed")
	}
	return f.objs.Flows.Update(&k, &v, ebpf.UpdateAny)
}

// Unload removes a flow; its datagrams reach the socket again.
func (f *Forwarder) Unload(src, local netip.AddrPort) {
	k, err := key(src, local)
	if err != nil {
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.closed {
		_ = f.objs.Flows.Delete(&k)
	}
}

// Counters returns what the kernel relayed for a flow: packets, bytes
// (IP length) and when the last one passed.
func (f *Forwarder) Counters(src, local netip.AddrPort) (packets, bytes uint64, last time.Time, ok bool) {
	k, err := key(src, local)
	if err != nil {
		return 0, 0, time.Time{}, false
	}
	var v kfwdFlow
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return 0, 0, time.Time{}, false
	}
	err = f.objs.Flows.Lookup(&k, &v)
	f.mu.Unlock()
	if err != nil {
		return 0, 0, time.Time{}, false
	}
	if v.LastNs != 0 {
		var ts unix.Timespec
		if unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts) == nil {
			ago := time.Duration(ts.Nano() - int64(v.LastNs))
			last = time.Now().Add(-max(ago, 0))
		}
	}
	return v.Packets, v.Bytes, last, true
}
