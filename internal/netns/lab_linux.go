//go:build linux

package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"
)

// Bounds of the lab helpers.
const (
	// ipTimeout bounds one run of the ip command.
	ipTimeout = 30 * time.Second
	// DefaultProbeTimeout bounds the wait for a probe path when
	// Veth.ProbeTimeout is 0.
	DefaultProbeTimeout = 10 * time.Second
	// probePort is the UDP port probes are sent to (discard).
	probePort = 9
	// probeInterval is how long one probe is waited for before the next
	// one is sent.
	probeInterval = 50 * time.Millisecond
)

var seq atomic.Int64

// UniqueName returns prefix-PID-N, a name no other call in any running
// process returns (N counts the calls of this process). It suits network
// namespaces; interface names are limited to 15 bytes and need a shorter
// scheme.
func UniqueName(prefix string) string {
	return fmt.Sprintf("%s-%d-%d", prefix, os.Getpid(), seq.Add(1))
}

// IP runs the ip command (iproute2) with args, bounded in time, and
// returns its combined output; the error names the command and carries
// the output.
func IP(args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), ipTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("netns: ip %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// Add creates the named network namespace (`ip netns add`) and sets its
// loopback up. Remove it with [Del].
func Add(name string) error {
	if name == "" || strings.ContainsRune(name, '/') {
		return fmt.Errorf("netns: bad namespace name %q", name)
	}
	if _, err := IP("netns", "add", name); err != nil {
		return err
	}
	if _, err := IP("-n", name, "link", "set", "lo", "up"); err != nil {
		return errors.Join(err, Del(name))
	}
	return nil
}

// Del deletes a named network namespace (`ip netns del`). Links in it go
// with it; sockets still open in it keep it alive, nameless, until they
// are closed.
func Del(name string) error {
	_, err := IP("netns", "del", name)
	return err
}

// End is one end of a veth pair.
type End struct {
	// NS is the namespace the end lives in (a name made by Add).
	NS string
	// Name is the interface name (at most 15 bytes).
	Name string
	// MAC is the hardware address ("02:00:00:00:00:01"); empty: the
	// kernel picks one.
	MAC string
	// Addrs are the addresses given to the interface, with their prefix
	// lengths. IPv6 addresses are added without duplicate address
	// detection (nodad), so they are usable at once.
	Addrs []netip.Prefix
}

// Probe is a path a Veth must carry before AddVeth returns: a UDP datagram
// from Src (an address of end A) to Dst (an address of end B).
type Probe struct {
	Src, Dst netip.Addr
}

// Veth describes a veth pair between two namespaces.
type Veth struct {
	A, B End
	// StaticNeighbours adds a permanent neighbour entry on each end for
	// every address of the other end, so that no ARP or NDP exchange is
	// needed (and none depends on an address a test blocks).
	StaticNeighbours bool
	// Probes are waited for, in order, once both ends are up: link
	// activation is asynchronous and drops what is sent before it is
	// done. Each probe datagram goes to UDP port 9 of Dst.
	Probes []Probe
	// ProbeTimeout bounds the wait for each probe path;
	// DefaultProbeTimeout when 0.
	ProbeTimeout time.Duration
}

// AddVeth creates the veth pair v describes, gives both ends their
// addresses (and neighbours), sets them up and waits for v.Probes. On
// error, what was made stays in the namespaces (it goes when they are
// deleted); a probe failure carries a [Dump] of both namespaces.
func AddVeth(v Veth) error {
	if v.A.NS == "" || v.B.NS == "" || v.A.Name == "" || v.B.Name == "" {
		return errors.New("netns: a veth needs both namespaces and both interface names")
	}
	args := []string{"link", "add", v.A.Name}
	if v.A.MAC != "" {
		args = append(args, "address", v.A.MAC)
	}
	args = append(args, "netns", v.A.NS, "type", "veth", "peer", "name", v.B.Name)
	if v.B.MAC != "" {
		args = append(args, "address", v.B.MAC)
	}
	args = append(args, "netns", v.B.NS)
	if _, err := IP(args...); err != nil {
		return err
	}
	for _, e := range []End{v.A, v.B} {
		for _, p := range e.Addrs {
			args := []string{"-n", e.NS, "addr", "add", p.String(), "dev", e.Name}
			if p.Addr().Is6() {
				args = append(args, "nodad")
			}
			if _, err := IP(args...); err != nil {
				return err
			}
		}
	}
	if v.StaticNeighbours {
		macA, err := mac(v.A)
		if err != nil {
			return err
		}
		macB, err := mac(v.B)
		if err != nil {
			return err
		}
		for _, n := range []struct {
			at     End
			of     End
			lladdr string
		}{{v.A, v.B, macB}, {v.B, v.A, macA}} {
			for _, p := range n.of.Addrs {
				if _, err := IP("-n", n.at.NS, "neigh", "replace", p.Addr().String(),
					"lladdr", n.lladdr, "dev", n.at.Name, "nud", "permanent"); err != nil {
					return err
				}
			}
		}
	}
	for _, e := range []End{v.A, v.B} {
		if _, err := IP("-n", e.NS, "link", "set", e.Name, "up"); err != nil {
			return err
		}
	}
	timeout := v.ProbeTimeout
	if timeout <= 0 {
		timeout = DefaultProbeTimeout
	}
	for _, p := range v.Probes {
		if err := waitPath(v.A.NS, v.B.NS, p, timeout); err != nil {
			return fmt.Errorf("%w\n%s", err, Dump(v.A.NS, v.B.NS))
		}
	}
	return nil
}

// mac returns the hardware address of e: e.MAC, or the one the kernel
// gave the interface.
func mac(e End) (string, error) {
	if e.MAC != "" {
		return e.MAC, nil
	}
	hw, err := HardwareAddr(e.NS, e.Name)
	if err != nil {
		return "", err
	}
	return hw.String(), nil
}

// HardwareAddr returns the hardware address of the interface name in
// the namespace ns.
func HardwareAddr(ns, name string) (net.HardwareAddr, error) {
	var hw net.HardwareAddr
	err := Do(ns, func() error {
		ifc, err := net.InterfaceByName(name)
		if err != nil {
			return err
		}
		hw = ifc.HardwareAddr
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("netns: %s in %s: %w", name, ns, err)
	}
	return hw, nil
}

// waitPath sends probe datagrams from p.Src in namespace from to p.Dst:9
// in namespace to until one arrives, for at most timeout.
func waitPath(from, to string, p Probe, timeout time.Duration) error {
	var rc, sc *net.UDPConn
	err := Do(to, func() error {
		var err error
		rc, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Dst, probePort)))
		return err
	})
	if err != nil {
		return fmt.Errorf("netns: probe receiver: %w", err)
	}
	defer rc.Close()
	err = Do(from, func() error {
		var err error
		sc, err = net.DialUDP("udp", net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Src, 0)),
			net.UDPAddrFromAddrPort(netip.AddrPortFrom(p.Dst, probePort)))
		return err
	})
	if err != nil {
		return fmt.Errorf("netns: probe sender: %w", err)
	}
	defer sc.Close()
	buf := make([]byte, 64)
	deadline := time.Now().Add(timeout)
	for {
		_, _ = sc.Write([]byte("probe"))
		next := time.Now().Add(probeInterval)
		if next.After(deadline) {
			next = deadline
		}
		_ = rc.SetReadDeadline(next)
		if _, _, err := rc.ReadFromUDPAddrPort(buf); err == nil {
			return nil
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("netns: no datagram from %s (%s) reached %s (%s) in %s", p.Src, from, p.Dst, to, timeout)
		}
	}
}

// Dump returns the links (with statistics), addresses and neighbours of
// the named namespaces, to explain a failure.
func Dump(names ...string) string {
	var b strings.Builder
	for _, ns := range names {
		for _, what := range [][]string{{"-s", "-d", "link"}, {"addr"}, {"neigh"}} {
			out, err := IP(append([]string{"-n", ns}, what...)...)
			fmt.Fprintf(&b, "--- %s: ip %s\n%s", ns, strings.Join(what, " "), out)
			if err != nil {
				fmt.Fprintf(&b, "%v\n", err)
			}
		}
	}
	return b.String()
}
