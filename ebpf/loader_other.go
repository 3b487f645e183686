//go:build !linux || !(386 || amd64 || arm || arm64 || loong64 || mips64le || mipsle || ppc64le || riscv64)

package ebpf

import "net/netip"

// XDP is the loaded program. On this platform it cannot be loaded: Load
// always fails with ErrUnsupported and the caller falls back to nftables or
// the user-space filter.
type XDP struct{}

// Load always fails with ErrUnsupported on this platform.
func Load(opts Options) (*XDP, error) {
	return nil, &LoadError{Kind: ErrUnsupported, Detail: "needs Linux on a little-endian CPU"}
}

// Attachments returns nil.
func (x *XDP) Attachments() []Attachment { return nil }

// PinDir returns "".
func (x *XDP) PinDir() string { return "" }

// Deny returns ErrUnsupported.
func (x *XDP) Deny(netip.Prefix) error { return ErrUnsupported }

// Undeny returns ErrUnsupported.
func (x *XDP) Undeny(netip.Prefix) error { return ErrUnsupported }

// SyncDeny returns ErrUnsupported.
func (x *XDP) SyncDeny([]netip.Prefix) error { return ErrUnsupported }

// Denied returns ErrUnsupported.
func (x *XDP) Denied() ([]netip.Prefix, error) { return nil, ErrUnsupported }

// SetAllow returns ErrUnsupported.
func (x *XDP) SetAllow([]netip.Prefix) error { return ErrUnsupported }

// Allowed returns ErrUnsupported.
func (x *XDP) Allowed() ([]netip.Prefix, error) { return nil, ErrUnsupported }

// SetRateLimit returns ErrUnsupported.
func (x *XDP) SetRateLimit(pps, burst uint32) error { return ErrUnsupported }

// SetPorts returns ErrUnsupported.
func (x *XDP) SetPorts(udp, tcp []uint16, media []PortRange) error { return ErrUnsupported }

// SetScope returns ErrUnsupported.
func (x *XDP) SetScope(Scope) error { return ErrUnsupported }

// Scope returns "".
func (x *XDP) Scope() Scope { return "" }

// MaxEntries returns 0.
func (x *XDP) MaxEntries() int { return 0 }

// Counters returns ErrUnsupported.
func (x *XDP) Counters() (Counters, error) { return Counters{}, ErrUnsupported }

// Close does nothing.
func (x *XDP) Close() error { return nil }

// Remove does nothing.
func (x *XDP) Remove() error { return nil }

// RemovePinned does nothing on this platform.
func RemovePinned(pinDir string) error { return nil }
