//go:build linux && (386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Counter indexes; they mirror enum counter in xdp.c.
const (
	cntPassed         = 0
	cntDropDeny       = 1
	cntDropRateLimit  = 2
	cntMalformed      = 3
	cntNonIP          = 4
	cntFragment       = 5
	cntAllowed        = 6
	cntSpared         = 7
	cntMax            = 8
	maxVerifierLogLen = 4096
	linkPinPrefix     = "link_"
)

// Values of struct config's scope (enum scope in xdp.c).
const (
	scopeSIP  = 0
	scopeHost = 1
)

// obsoletePins are maps of earlier versions of the program, removed from
// the pin directory at Load and by RemovePinned.
var obsoletePins = []string{"sbc_rl_config"}

// bpffsMountPoint is where Load mounts a bpf filesystem when the pin
// directory lies below it and none is mounted.
const bpffsMountPoint = "/sys/fs/bpf"

// XDP is a loaded program with its maps, attached to the configured
// interfaces. Its methods are safe for concurrent use.
type XDP struct {
	mu       sync.Mutex
	objs     xdpObjects
	links    []link.Link
	attached []Attachment
	pinDir   string
	udpPorts []uint16
	tcpPorts []uint16
	media    []PortRange
	scope    Scope
	maxDeny  int
	pps      uint32
	burst    uint32
	log      *slog.Logger
	closed   bool
}

// Load loads the program and its pinned maps (creating them on the first
// run, reusing them afterwards so blocks survive a restart), writes the
// rate-limit configuration and attaches the program to every interface in
// opts.Interfaces. An existing pinned link for an interface is updated with
// the new program instead of attaching a second one.
//
// Errors are *LoadError values; test the cause with errors.Is against
// ErrPermission, ErrNoBPFFS, ErrKernelRefused, ErrNoInterface, ErrAttach or
// ErrUnsupported. On error nothing stays attached (links touched by this call
// are detached); pinned maps are kept.
func Load(opts Options) (*XDP, error) {
	mode, err := opts.mode()
	if err != nil {
		return nil, err
	}
	if _, err := opts.scope(); err != nil {
		return nil, err
	}
	if _, err := opts.maxEntries(); err != nil {
		return nil, err
	}
	ifaces := dedupe(opts.Interfaces)
	if len(ifaces) == 0 {
		return nil, &LoadError{Kind: ErrNoInterface, Detail: "no interface configured"}
	}
	for _, name := range ifaces {
		if _, err := net.InterfaceByName(name); err != nil {
			return nil, &LoadError{Kind: ErrNoInterface, Interface: name, Err: err}
		}
	}
	x, err := loadObjects(opts)
	if err != nil {
		return nil, err
	}
	if err := x.attachAll(ifaces, mode); err != nil {
		x.detachAll()
		_ = x.Close()
		return nil, err
	}
	return x, nil
}

// loadObjects loads program and maps without attaching anything.
func loadObjects(opts Options) (*XDP, error) {
	pinDir := opts.PinDir
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	pinDir = filepath.Clean(pinDir)
	scope, err := opts.scope()
	if err != nil {
		return nil, err
	}
	maxDeny, err := opts.maxEntries()
	if err != nil {
		return nil, err
	}
	if err := checkCaps(); err != nil {
		return nil, err
	}
	// Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK.
	_ = rlimit.RemoveMemlock()
	if err := ensureBPFFS(pinDir, bpffsMountPoint); err != nil {
		return nil, err
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	x := &XDP{
		pinDir:   pinDir,
		udpPorts: slices.Clone(opts.UDPPorts),
		tcpPorts: slices.Clone(opts.TCPPorts),
		media:    slices.Clone(opts.MediaPorts),
		scope:    scope,
		maxDeny:  maxDeny,
		pps:      opts.RatePPS,
		burst:    opts.Burst,
		log:      log,
	}
	if err := x.loadCollection(); err != nil {
		return nil, err
	}
	if err := x.writeConfig(); err != nil {
		_ = x.objs.Close()
		return nil, &LoadError{Kind: ErrKernelRefused, Detail: "writing the configuration", Err: err}
	}
	return x, nil
}

func (x *XDP) loadCollection() error {
	spec, err := loadXdp()
	if err != nil {
		return &LoadError{Kind: ErrKernelRefused, Detail: "parsing the embedded object", Err: err}
	}
	for _, name := range []string{xdpMapSbcDenyV4, xdpMapSbcDenyV6} {
		spec.Maps[name].MaxEntries = uint32(x.maxDeny)
	}
	for _, name := range obsoletePins {
		if err := os.Remove(filepath.Join(x.pinDir, name)); err == nil {
			x.log.Info("ebpf: removed the pinned map of an earlier version", "pin", filepath.Join(x.pinDir, name))
		}
	}
	x.replaceIncompatible(spec)
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: x.pinDir}}
	err = spec.LoadAndAssign(&x.objs, opts)
	if errors.Is(err, ebpf.ErrMapIncompatible) {
		// A previous version pinned maps with another layout: drop them
		// (the caller resyncs the sets) and start afresh.
		x.log.Warn("ebpf: pinned maps incompatible with this program, recreating", "pin_dir", x.pinDir, "err", err)
		for name := range spec.Maps {
			_ = os.Remove(filepath.Join(x.pinDir, name))
		}
		err = spec.LoadAndAssign(&x.objs, opts)
	}
	if err != nil {
		return classifyLoadError(err)
	}
	return nil
}

// replaceIncompatible removes the pins of maps whose layout or capacity
// differs from spec (an earlier version, another MaxEntries), so that
// they are created afresh; the others, counters included, are kept.
func (x *XDP) replaceIncompatible(spec *ebpf.CollectionSpec) {
	for name, ms := range spec.Maps {
		path := filepath.Join(x.pinDir, name)
		m, err := ebpf.LoadPinnedMap(path, nil)
		if err != nil {
			continue // absent, or unreadable: LoadAndAssign decides
		}
		cerr := ms.Compatible(m)
		_ = m.Close()
		if cerr != nil {
			x.log.Info("ebpf: pinned map differs from this program's, recreating it", "pin", path, "reason", cerr.Error())
			_ = os.Remove(path)
		}
	}
}

func classifyLoadError(err error) error {
	var ve *ebpf.VerifierError
	if errors.As(err, &ve) && len(ve.Log) > 0 {
		return &LoadError{Kind: ErrKernelRefused, Detail: "verifier log: " + truncateLog(ve.Log), Err: err}
	}
	switch {
	case errors.Is(err, unix.EPERM):
		return &LoadError{Kind: ErrPermission, Detail: "the kernel refused bpf() with EPERM", Err: err}
	case errors.Is(err, ebpf.ErrNotSupported):
		return &LoadError{Kind: ErrUnsupported, Err: err}
	}
	return &LoadError{Kind: ErrKernelRefused, Err: err}
}

// truncateLog keeps the end of a verifier log (where the reason is), at most
// maxVerifierLogLen bytes.
func truncateLog(lines []string) string {
	s := strings.Join(lines, "\n")
	if len(s) > maxVerifierLogLen {
		s = "…" + s[len(s)-maxVerifierLogLen:]
	}
	return s
}

// checkCaps reports which capabilities the calling thread lacks.
func checkCaps() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return nil // cannot tell: let the kernel decide
	}
	has := func(c int) bool { return data[c/32].Effective&(1<<(uint(c)%32)) != 0 }
	var missing []string
	if !has(unix.CAP_BPF) && !has(unix.CAP_SYS_ADMIN) {
		missing = append(missing, "CAP_BPF (or CAP_SYS_ADMIN)")
	}
	if !has(unix.CAP_NET_ADMIN) {
		missing = append(missing, "CAP_NET_ADMIN")
	}
	if len(missing) > 0 {
		return &LoadError{Kind: ErrPermission, Detail: "missing " + strings.Join(missing, " and ")}
	}
	return nil
}

// ensureBPFFS makes pinDir exist on a bpf filesystem. When its nearest
// existing ancestor is not on bpffs and pinDir lies below mountPoint, a bpf
// filesystem is mounted on mountPoint first.
func ensureBPFFS(pinDir, mountPoint string) error {
	onBPFFS, err := isBPFFS(nearestExisting(pinDir))
	if err != nil {
		return &LoadError{Kind: ErrNoBPFFS, Detail: "statfs " + pinDir, Err: err}
	}
	if !onBPFFS {
		if !isBelow(pinDir, mountPoint) {
			return &LoadError{Kind: ErrNoBPFFS,
				Detail: fmt.Sprintf("pin directory %s is not on a bpf filesystem (mount -t bpf bpf <dir>)", pinDir)}
		}
		if mounted, err := isBPFFS(mountPoint); err == nil && !mounted {
			if err := unix.Mount("bpf", mountPoint, "bpf", 0, "mode=0700"); err != nil {
				kind := ErrNoBPFFS
				return &LoadError{Kind: kind,
					Detail: fmt.Sprintf("%s is not a bpf filesystem and mounting one failed (mount -t bpf bpf %s)", mountPoint, mountPoint),
					Err:    err}
			}
		} else if err != nil {
			return &LoadError{Kind: ErrNoBPFFS, Detail: "statfs " + mountPoint, Err: err}
		}
	}
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return &LoadError{Kind: ErrNoBPFFS, Detail: "creating " + pinDir, Err: err}
	}
	if ok, err := isBPFFS(pinDir); err != nil || !ok {
		return &LoadError{Kind: ErrNoBPFFS, Detail: pinDir + " is not on a bpf filesystem", Err: err}
	}
	return nil
}

func isBPFFS(path string) (bool, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(path, &st); err != nil {
		return false, err
	}
	return uint32(st.Type) == uint32(unix.BPF_FS_MAGIC), nil
}

func nearestExisting(p string) string {
	for {
		if _, err := os.Stat(p); err == nil {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return p
		}
		p = parent
	}
}

func isBelow(p, dir string) bool {
	rel, err := filepath.Rel(dir, p)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator))
}

func dedupe(names []string) []string {
	var out []string
	for _, n := range names {
		if n != "" && !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

func linkPinName(m Mode, ifname string) string {
	return linkPinPrefix + string(m) + "_" + ifname
}

func xdpFlags(m Mode) link.XDPAttachFlags {
	if m == ModeNative {
		return link.XDPDriverMode
	}
	return link.XDPGenericMode
}

// attachAll attaches to every interface and detaches pinned links of
// interfaces no longer configured.
func (x *XDP) attachAll(ifaces []string, mode Mode) error {
	keep := map[string]bool{}
	for _, name := range ifaces {
		l, att, err := x.attach(name, mode)
		if err != nil {
			return err
		}
		x.links = append(x.links, l)
		x.attached = append(x.attached, att)
		keep[linkPinName(att.Mode, name)] = true
		x.log.Info("ebpf: XDP attached", "interface", name, "mode", att.Mode, "reused_pinned_link", att.Reused)
	}
	entries, err := os.ReadDir(x.pinDir)
	if err != nil {
		return nil
	}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), linkPinPrefix) || keep[e.Name()] {
			continue
		}
		p := filepath.Join(x.pinDir, e.Name())
		if l, err := link.LoadPinnedLink(p, nil); err == nil {
			_ = l.Unpin()
			_ = l.Close()
		} else {
			_ = os.Remove(p)
		}
		x.log.Info("ebpf: detached stale XDP link", "pin", p)
	}
	return nil
}

func (x *XDP) attach(ifname string, mode Mode) (link.Link, Attachment, error) {
	ifc, err := net.InterfaceByName(ifname)
	if err != nil {
		return nil, Attachment{}, &LoadError{Kind: ErrNoInterface, Interface: ifname, Err: err}
	}
	// A pinned link from a previous run: update it in place.
	for _, m := range []Mode{ModeNative, ModeGeneric} {
		path := filepath.Join(x.pinDir, linkPinName(m, ifname))
		l, err := link.LoadPinnedLink(path, nil)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			x.log.Warn("ebpf: unusable pinned link, removing", "pin", path, "err", err)
			_ = os.Remove(path)
			continue
		}
		info, err := l.Info()
		usable := err == nil && info.XDP() != nil && int(info.XDP().Ifindex) == ifc.Index &&
			(mode == ModeAuto || mode == m)
		if usable {
			if err = l.Update(x.objs.SbcXdp); err == nil {
				return l, Attachment{Interface: ifname, Ifindex: ifc.Index, Mode: m, Reused: true}, nil
			}
			x.log.Warn("ebpf: updating pinned link failed, re-attaching", "pin", path, "err", err)
		}
		// Interface recreated, mode changed or update failed: detach it.
		_ = l.Unpin()
		_ = l.Close()
	}

	modes := []Mode{mode}
	if mode == ModeAuto {
		modes = []Mode{ModeNative, ModeGeneric}
	}
	var errs []error
	for _, m := range modes {
		l, err := link.AttachXDP(link.XDPOptions{
			Program:   x.objs.SbcXdp,
			Interface: ifc.Index,
			Flags:     xdpFlags(m),
		})
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", m, err))
			continue
		}
		if err := l.Pin(filepath.Join(x.pinDir, linkPinName(m, ifname))); err != nil {
			_ = l.Close()
			return nil, Attachment{}, &LoadError{Kind: ErrNoBPFFS, Interface: ifname, Detail: "pinning the link", Err: err}
		}
		if len(errs) > 0 {
			x.log.Info("ebpf: native XDP refused, using generic", "interface", ifname, "err", errors.Join(errs...))
		}
		return l, Attachment{Interface: ifname, Ifindex: ifc.Index, Mode: m}, nil
	}
	err = errors.Join(errs...)
	le := &LoadError{Kind: ErrAttach, Interface: ifname, Err: err}
	switch {
	case errors.Is(err, unix.EPERM):
		le.Kind = ErrPermission
	case errors.Is(err, unix.EBUSY) || errors.Is(err, unix.EEXIST):
		le.Detail = "another XDP program is attached (see `ip link show " + ifname + "`)"
	case errors.Is(err, ebpf.ErrNotSupported):
		le.Kind = ErrUnsupported
		le.Detail = "kernel lacks XDP links (Linux >= 5.9)"
	}
	return nil, Attachment{}, le
}

// detachAll unpins and closes the links of this handle (used on a failed Load).
func (x *XDP) detachAll() {
	for _, l := range x.links {
		_ = l.Unpin()
		_ = l.Close()
	}
	x.links, x.attached = nil, nil
}

// Attachments reports the interfaces the program is attached to and how.
func (x *XDP) Attachments() []Attachment {
	x.mu.Lock()
	defer x.mu.Unlock()
	return slices.Clone(x.attached)
}

// PinDir returns the directory holding the pinned maps and links.
func (x *XDP) PinDir() string { return x.pinDir }

// Deny adds p to the deny list: packets from sources inside p (to the
// SBC's ports, with ScopeSIP) are dropped unless the allow list also covers
// them. IPv4-mapped IPv6 prefixes are stored as IPv4. A full map gives an
// error wrapping ErrFull.
func (x *XDP) Deny(p netip.Prefix) error {
	return x.put(p, x.objs.SbcDenyV4, x.objs.SbcDenyV6)
}

// Undeny removes p (exactly, not covered sub-prefixes) from the deny list.
// Removing an absent prefix is not an error.
func (x *XDP) Undeny(p netip.Prefix) error {
	return x.del(p, x.objs.SbcDenyV4, x.objs.SbcDenyV6)
}

// SyncDeny makes the deny list equal to ps: deletes the prefixes not in
// ps first, then adds the missing ones in the order of ps. Use it after a
// resync or a restart. When the maps cannot hold them all, the error is
// (or joins) a *FullError listing the prefixes left out.
func (x *XDP) SyncDeny(ps []netip.Prefix) error {
	return x.sync(ps, x.objs.SbcDenyV4, x.objs.SbcDenyV6)
}

// Denied returns the prefixes in the deny list.
func (x *XDP) Denied() ([]netip.Prefix, error) {
	return x.list(x.objs.SbcDenyV4, x.objs.SbcDenyV6)
}

// SetAllow makes the allow list (trunk prefixes never dropped, neither by the
// deny list nor by the rate limit) equal to ps.
func (x *XDP) SetAllow(ps []netip.Prefix) error {
	return x.sync(ps, x.objs.SbcAllowV4, x.objs.SbcAllowV6)
}

// Allowed returns the prefixes in the allow list.
func (x *XDP) Allowed() ([]netip.Prefix, error) {
	return x.list(x.objs.SbcAllowV4, x.objs.SbcAllowV6)
}

// SetRateLimit sets the per-source packet rate for UDP to the SBC's ports;
// pps 0 disables the limiter, burst 0 is treated as 1. Existing per-source
// state is kept.
func (x *XDP) SetRateLimit(pps, burst uint32) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return ErrClosed
	}
	x.pps, x.burst = pps, burst
	return x.writeConfig()
}

// SetPorts replaces the SBC's SIP ports and media ranges (see
// Options.UDPPorts).
func (x *XDP) SetPorts(udp, tcp []uint16, media []PortRange) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return ErrClosed
	}
	x.udpPorts, x.tcpPorts, x.media = slices.Clone(udp), slices.Clone(tcp), slices.Clone(media)
	return x.writeConfig()
}

// SetScope changes where deny entries apply (see Scope).
func (x *XDP) SetScope(s Scope) error {
	o := Options{Scope: s}
	scope, err := o.scope()
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return ErrClosed
	}
	x.scope = scope
	return x.writeConfig()
}

// Scope returns where deny entries apply.
func (x *XDP) Scope() Scope {
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.scope
}

// MaxEntries returns the capacity of each deny map.
func (x *XDP) MaxEntries() int { return x.maxDeny }

// writeConfig writes the configuration map; x.mu held or exclusive.
func (x *XDP) writeConfig() error {
	var interval, tolerance uint64
	if x.pps > 0 {
		interval = max(uint64(1_000_000_000)/uint64(x.pps), 1)
		tolerance = uint64(max(x.burst, 1)-1) * interval
	}
	return x.writeRawConfig(interval, tolerance)
}

func (x *XDP) writeRawConfig(interval, tolerance uint64) error {
	cfg := &xdpConfig{IntervalNs: interval, ToleranceNs: tolerance, Scope: scopeSIP}
	if x.scope == ScopeHost {
		cfg.Scope = scopeHost
	}
	for _, p := range x.udpPorts {
		cfg.UdpPorts[p>>6] |= 1 << (p & 63)
	}
	for _, p := range x.tcpPorts {
		cfg.TcpPorts[p>>6] |= 1 << (p & 63)
	}
	for _, r := range x.media {
		for p := int(r.Min); p <= int(r.Max); p++ {
			cfg.MediaPorts[p>>6] |= 1 << (p & 63)
		}
	}
	if err := x.objs.SbcConfig.Put(uint32(0), cfg); err != nil {
		return fmt.Errorf("ebpf: writing the configuration: %w", err)
	}
	return nil
}

// Counters returns the packet counters summed over all CPUs.
func (x *XDP) Counters() (Counters, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return Counters{}, ErrClosed
	}
	var v [cntMax]uint64
	var perCPU []uint64
	for i := range uint32(cntMax) {
		if err := x.objs.SbcCounters.Lookup(i, &perCPU); err != nil {
			return Counters{}, fmt.Errorf("ebpf: reading counters: %w", err)
		}
		for _, n := range perCPU {
			v[i] += n
		}
	}
	return Counters{
		Passed:           v[cntPassed],
		DroppedDeny:      v[cntDropDeny],
		DroppedRateLimit: v[cntDropRateLimit],
		Malformed:        v[cntMalformed],
		NonIP:            v[cntNonIP],
		Fragments:        v[cntFragment],
		Allowed:          v[cntAllowed],
		Spared:           v[cntSpared],
	}, nil
}

// Close releases the handle. Pinned maps and links stay: the program keeps
// dropping the denied sources while the SBC is down, and the next Load
// reuses them. Use Remove to detach and delete everything.
func (x *XDP) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return nil
	}
	x.closed = true
	var errs []error
	for _, l := range x.links {
		errs = append(errs, l.Close())
	}
	errs = append(errs, x.objs.Close())
	return errors.Join(errs...)
}

// Remove detaches the program from every interface, deletes the pinned maps
// and links and the pin directory (if then empty), and closes the handle.
func (x *XDP) Remove() error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return ErrClosed
	}
	var errs []error
	for _, l := range x.links {
		errs = append(errs, l.Unpin())
	}
	for _, m := range []*ebpf.Map{x.objs.SbcDenyV4, x.objs.SbcDenyV6, x.objs.SbcAllowV4, x.objs.SbcAllowV6,
		x.objs.SbcRlState, x.objs.SbcConfig, x.objs.SbcCounters} {
		errs = append(errs, m.Unpin())
	}
	x.mu.Unlock()
	errs = append(errs, x.Close())
	if err := os.Remove(x.pinDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// RemovePinned detaches and deletes what a previous run left pinned in
// pinDir (DefaultPinDir when empty) without loading anything: use it when
// XDP is turned off in the configuration, so that a program attached by an
// earlier run does not keep dropping with a stale deny list. A missing
// directory is not an error.
func RemovePinned(pinDir string) error {
	if pinDir == "" {
		pinDir = DefaultPinDir
	}
	entries, err := os.ReadDir(pinDir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("ebpf: %w", err)
	}
	spec, err := loadXdp()
	if err != nil {
		return err
	}
	var errs []error
	for _, e := range entries {
		_, isMap := spec.Maps[e.Name()]
		isMap = isMap || slices.Contains(obsoletePins, e.Name())
		if !isMap && !strings.HasPrefix(e.Name(), linkPinPrefix) {
			continue
		}
		// Removing the pin drops the last reference: a link detaches.
		if err := os.Remove(filepath.Join(pinDir, e.Name())); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := os.Remove(pinDir); err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// ---- LPM map helpers ----

func keyV4(p netip.Prefix) xdpLpmV4Key {
	return xdpLpmV4Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As4()}
}

func keyV6(p netip.Prefix) xdpLpmV6Key {
	return xdpLpmV6Key{Prefixlen: uint32(p.Bits()), Addr: p.Addr().As16()}
}

func (x *XDP) put(p netip.Prefix, m4, m6 *ebpf.Map) error {
	return x.onPrefix(p, m4, m6, putPrefix)
}

// onPrefix normalizes p and applies f to the maps under the lock, unless
// the XDP handle is closed.
func (x *XDP) onPrefix(p netip.Prefix, m4, m6 *ebpf.Map, f func(netip.Prefix, *ebpf.Map, *ebpf.Map) error) error {
	p, err := normalizePrefix(p)
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return ErrClosed
	}
	return f(p, m4, m6)
}

func putPrefix(p netip.Prefix, m4, m6 *ebpf.Map) error {
	var err error
	one := uint8(1)
	if p.Addr().Is4() {
		k := keyV4(p)
		err = m4.Put(&k, &one)
	} else {
		k := keyV6(p)
		err = m6.Put(&k, &one)
	}
	switch {
	case errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.E2BIG):
		return fmt.Errorf("%w: adding %v: %w", ErrFull, p, err)
	case err != nil:
		return fmt.Errorf("ebpf: adding %v: %w", p, err)
	}
	return nil
}

func (x *XDP) del(p netip.Prefix, m4, m6 *ebpf.Map) error {
	return x.onPrefix(p, m4, m6, delPrefix)
}

func delPrefix(p netip.Prefix, m4, m6 *ebpf.Map) error {
	var err error
	if p.Addr().Is4() {
		k := keyV4(p)
		err = m4.Delete(&k)
	} else {
		k := keyV6(p)
		err = m6.Delete(&k)
	}
	if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("ebpf: deleting %v: %w", p, err)
	}
	return nil
}

func (x *XDP) list(m4, m6 *ebpf.Map) ([]netip.Prefix, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return nil, ErrClosed
	}
	return listPrefixes(m4, m6)
}

func listPrefixes(m4, m6 *ebpf.Map) ([]netip.Prefix, error) {
	var out []netip.Prefix
	var k4 xdpLpmV4Key
	var k6 xdpLpmV6Key
	var v uint8
	it := m4.Iterate()
	for it.Next(&k4, &v) {
		out = append(out, netip.PrefixFrom(netip.AddrFrom4(k4.Addr), int(k4.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("ebpf: listing %s: %w", m4, err)
	}
	it = m6.Iterate()
	for it.Next(&k6, &v) {
		out = append(out, netip.PrefixFrom(netip.AddrFrom16(k6.Addr), int(k6.Prefixlen)))
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("ebpf: listing %s: %w", m6, err)
	}
	return out, nil
}

func (x *XDP) sync(ps []netip.Prefix, m4, m6 *ebpf.Map) error {
	want, err := normalizeList(ps)
	if err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.closed {
		return ErrClosed
	}
	have, err := listPrefixes(m4, m6)
	if err != nil {
		return err
	}
	wanted := make(map[netip.Prefix]bool, len(want))
	for _, p := range want {
		wanted[p] = true
	}
	var errs []error
	present := make(map[netip.Prefix]bool, len(have))
	// Delete first: it frees room for the additions.
	for _, p := range have {
		if wanted[p] {
			present[p] = true
			continue
		}
		if err := delPrefix(p, m4, m6); err != nil {
			errs = append(errs, err)
		}
	}
	var full *FullError
	failed := 0
	for _, p := range want {
		if present[p] {
			continue
		}
		err := putPrefix(p, m4, m6)
		switch {
		case err == nil:
		case errors.Is(err, ErrFull):
			if full == nil {
				full = &FullError{}
			}
			full.Missing = append(full.Missing, p)
		default:
			if failed == 0 {
				errs = append(errs, err)
			}
			failed++
		}
	}
	if failed > 1 {
		errs = append(errs, fmt.Errorf("ebpf: %d prefixes not added", failed))
	}
	if full != nil && len(errs) == 0 {
		return full // only room was lacking: the error is the *FullError itself
	}
	if full != nil {
		errs = append(errs, full)
	}
	return errors.Join(errs...)
}
