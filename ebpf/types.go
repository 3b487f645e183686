package ebpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
)

// DefaultPinDir is where maps and links are pinned when Options.PinDir is
// empty. It must be on a bpf filesystem; Load mounts one on /sys/fs/bpf when
// none is mounted there.
const DefaultPinDir = "/sys/fs/bpf/sbc"

// DefaultMaxEntries is the capacity of each deny map (IPv4 and IPv6) when
// Options.MaxEntries is 0: the number compiled into xdp.c.
const DefaultMaxEntries = 262144

// MaxMaxEntries bounds Options.MaxEntries.
const MaxMaxEntries = 1 << 24

// Scope says which frames the deny list applies to.
type Scope string

// Scopes.
const (
	// ScopeSIP (the default, also the empty string): a deny entry drops
	// only frames to the SBC's own ports (Options.UDPPorts over UDP,
	// Options.TCPPorts over TCP). The host's other traffic from a denied
	// source (DNS answers, NTP, SSH, ICMP, the SBC's own outgoing
	// connections) passes: a spoofed source cannot cut the host off.
	ScopeSIP Scope = "sip"
	// ScopeHost: a deny entry drops every frame from the source, whatever
	// its protocol and port, and non-first fragments too.
	ScopeHost Scope = "host"
)

// PortRange is an inclusive range of ports.
type PortRange struct {
	Min, Max uint16
}

// Mode selects how the program is attached to an interface.
type Mode string

// Attach modes.
const (
	// ModeAuto tries ModeNative, then ModeGeneric.
	ModeAuto Mode = "auto"
	// ModeNative runs the program in the driver (fastest; needs driver support).
	ModeNative Mode = "native"
	// ModeGeneric runs the program after the skb is built (any interface,
	// slower, still before the IP stack and the socket).
	ModeGeneric Mode = "generic"
)

// Options configure Load.
type Options struct {
	// Interfaces to attach to. At least one.
	Interfaces []string
	// Mode is "native", "generic" or "auto" (also the empty string).
	Mode Mode
	// PinDir is the bpffs directory for pinned maps and links
	// (DefaultPinDir when empty).
	PinDir string
	// UDPPorts and TCPPorts are the SBC's SIP listening ports, and
	// MediaPorts the port ranges of its media relay (UDP): with ScopeSIP
	// the deny list applies to UDP and TCP frames to them only. The
	// per-source packet-rate limit applies to UDP to UDPPorts (not to
	// media). Empty: nothing is guarded.
	UDPPorts, TCPPorts []uint16
	MediaPorts         []PortRange
	// Scope: ScopeSIP (default) or ScopeHost; see Scope.
	Scope Scope
	// MaxEntries is the capacity of each deny map (IPv4, IPv6); 0 means
	// DefaultMaxEntries. A pinned map of another capacity is replaced at
	// Load (the caller resyncs). Beyond it, Deny and SyncDeny fail with
	// ErrFull.
	MaxEntries int
	// RatePPS is the per-source packet rate (packets/s) allowed to UDPPorts;
	// 0 disables the limiter. Sources are IPv4 /32 and IPv6 /64.
	RatePPS uint32
	// Burst is the number of packets a source may send at once above the
	// rate (bucket depth); 0 is treated as 1.
	Burst uint32
	// Logger receives attach-mode and recovery messages; nil discards them.
	Logger *slog.Logger
}

// Counters are the program's packet counters, summed over all CPUs. They are
// kept in a pinned map and therefore continue across SBC restarts.
//
// Every frame seen is counted exactly once in Passed, DroppedDeny or
// DroppedRateLimit. Malformed, NonIP, Fragments, Allowed and Spared are
// sub-counts of Passed (a passed frame counts in at most one of them).
type Counters struct {
	// Passed: frames handed on to the kernel stack (XDP_PASS).
	Passed uint64
	// DroppedDeny: frames dropped because the source is in the deny list.
	DroppedDeny uint64
	// DroppedRateLimit: UDP frames to an SBC port dropped by the per-source rate limit.
	DroppedRateLimit uint64
	// Malformed: frames too short for their headers, with a bad IP version
	// or IHL, or with more IPv6 extension headers than the program walks.
	Malformed uint64
	// NonIP: frames that are neither IPv4 nor IPv6 (ARP, LLDP, more than two VLAN tags…).
	NonIP uint64
	// Fragments: non-first IP fragments (with ScopeHost: from sources not
	// denied); they carry no port, so no port check applies to them.
	Fragments uint64
	// Allowed: frames passed because the allow list overrode a deny entry or
	// exempted the source from the rate limit.
	Allowed uint64
	// Spared: frames from a denied source passed because they are not to
	// one of the SBC's ports (ScopeSIP).
	Spared uint64
}

// Attachment describes how the program is attached to one interface.
type Attachment struct {
	Interface string
	Ifindex   int
	Mode      Mode // ModeNative or ModeGeneric
	// Reused is true when an existing pinned link (from a previous run) was
	// updated with the new program rather than a new link created.
	Reused bool
}

// Sentinel errors for errors.Is: the cause of a failure to run XDP. The caller
// falls back to nftables or the user-space filter on any of them.
var (
	// ErrUnsupported: the platform or kernel lacks what the program needs
	// (not Linux, big-endian, kernel without BPF links or LPM tries).
	ErrUnsupported = errors.New("ebpf: XDP not supported here")
	// ErrPermission: the process lacks CAP_BPF (or CAP_SYS_ADMIN) or
	// CAP_NET_ADMIN, or the kernel refused an operation with EPERM.
	ErrPermission = errors.New("ebpf: missing privileges")
	// ErrNoBPFFS: the pin directory is not on a bpf filesystem and none
	// could be mounted.
	ErrNoBPFFS = errors.New("ebpf: no bpf filesystem")
	// ErrKernelRefused: the kernel refused the program or its maps; the
	// LoadError detail carries the (truncated) verifier log.
	ErrKernelRefused = errors.New("ebpf: kernel refused the program")
	// ErrNoInterface: a configured interface does not exist (or none was configured).
	ErrNoInterface = errors.New("ebpf: interface missing")
	// ErrAttach: the interface exists but the program could not be attached
	// (another XDP program is attached, the driver refuses the mode…).
	ErrAttach = errors.New("ebpf: cannot attach XDP")
	// ErrClosed: the XDP handle was closed.
	ErrClosed = errors.New("ebpf: closed")
	// ErrFull: a deny or allow map has no room for another prefix
	// (Options.MaxEntries for the deny maps).
	ErrFull = errors.New("ebpf: map full")
)

// FullError is SyncDeny's error when the deny maps cannot hold every
// prefix: the others are installed, and Missing lists those that are not,
// in the order given. errors.Is(err, ErrFull) is true. When room was all
// that lacked, SyncDeny returns the *FullError itself (not wrapped).
type FullError struct {
	Missing []netip.Prefix
}

func (e *FullError) Error() string {
	return fmt.Sprintf("%v: %d prefixes not added", ErrFull, len(e.Missing))
}

// Is reports whether target is ErrFull.
func (e *FullError) Is(target error) bool { return target == ErrFull }

// LoadError is returned by Load. errors.Is matches its Kind (one of the
// sentinel errors above) and the underlying error.
type LoadError struct {
	Kind      error  // ErrPermission, ErrNoBPFFS, ErrKernelRefused, …
	Interface string // the interface concerned, if any
	Detail    string // what is missing, or the truncated verifier log
	Err       error  // the underlying error, may be nil
}

func (e *LoadError) Error() string {
	var b strings.Builder
	b.WriteString(e.Kind.Error())
	if e.Interface != "" {
		fmt.Fprintf(&b, " (interface %s)", e.Interface)
	}
	if e.Detail != "" {
		b.WriteString(": ")
		b.WriteString(e.Detail)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap returns the kind and the underlying error.
func (e *LoadError) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Kind}
	}
	return []error{e.Kind, e.Err}
}

// normalizePrefix validates p, stores IPv4-mapped IPv6 prefixes (::ffff:0:0/96
// and longer) as IPv4 and clears the host bits.
func normalizePrefix(p netip.Prefix) (netip.Prefix, error) {
	if !p.IsValid() {
		return netip.Prefix{}, fmt.Errorf("ebpf: invalid prefix %v", p)
	}
	a := p.Addr()
	if a.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("ebpf: prefix %v has a zone", p)
	}
	if a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// normalizeList normalizes prefixes and drops duplicates, keeping the
// order of first appearance.
func normalizeList(ps []netip.Prefix) ([]netip.Prefix, error) {
	seen := make(map[netip.Prefix]bool, len(ps))
	out := make([]netip.Prefix, 0, len(ps))
	for _, p := range ps {
		n, err := normalizePrefix(p)
		if err != nil {
			return nil, err
		}
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out, nil
}

func (o *Options) scope() (Scope, error) {
	switch o.Scope {
	case "", ScopeSIP:
		return ScopeSIP, nil
	case ScopeHost:
		return ScopeHost, nil
	}
	return "", fmt.Errorf("ebpf: unknown scope %q (want sip or host)", o.Scope)
}

func (o *Options) maxEntries() (int, error) {
	switch {
	case o.MaxEntries == 0:
		return DefaultMaxEntries, nil
	case o.MaxEntries < 0 || o.MaxEntries > MaxMaxEntries:
		return 0, fmt.Errorf("ebpf: MaxEntries %d out of range (1..%d)", o.MaxEntries, MaxMaxEntries)
	}
	return o.MaxEntries, nil
}

func (o *Options) mode() (Mode, error) {
	switch o.Mode {
	case "", ModeAuto:
		return ModeAuto, nil
	case ModeNative, ModeGeneric:
		return o.Mode, nil
	}
	return "", fmt.Errorf("ebpf: unknown mode %q (want native, generic or auto)", o.Mode)
}
